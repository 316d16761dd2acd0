"""What the engine answers: small typed results, each with one to_dict().

The command line's --json and the web API both print to_dict(), so the same
question gives the same JSON from either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

SCORE_DIGITS = 6
"""Scores are shown rounded to this many decimal places."""


def shown_score(score: float | None) -> float | None:
    """A score as shown: rounded; None when missing or not finite."""
    return round(score, SCORE_DIGITS) if score is not None and math.isfinite(score) else None


def utc_text(value: datetime) -> str:
    """A timestamp as ISO 8601 UTC with a Z (the engine's timestamps are naive UTC)."""
    aware = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return aware.isoformat().replace("+00:00", "Z")


def with_notes(shaped: dict, notes: list[str]) -> dict:
    """An answer with its notes, when there are any: without them it is exactly as before."""
    return {**shaped, "notes": list(notes)} if notes else shaped


@dataclass(frozen=True)
class Pick:
    """One item in a list: popular, recommended or similar, with why it is there."""

    rank: int
    item_id: str
    title: str
    content_type: str
    genre: str
    score: float | None
    reason: str
    source: str
    """'personalised', 'popular' or 'similar'."""
    support: int | None = None
    """For similar items only: users who watched both."""

    @classmethod
    def from_row(cls, row: dict) -> "Pick":
        return cls(
            rank=row["rank"], item_id=row["item_id"], title=row["title"], content_type=row["content_type"],
            genre=row["genre"], score=row["score"], reason=row["reason"], source=row["source"],
            support=row.get("support"),
        )

    def to_dict(self) -> dict:
        shaped = {
            "rank": self.rank,
            "item_id": self.item_id,
            "title": self.title,
            "content_type": self.content_type,
            "genre": self.genre,
            "score": shown_score(self.score),
            "reason": self.reason,
            "source": self.source,
        }
        if self.support is not None:
            shaped["support"] = self.support
        return shaped


@dataclass(frozen=True)
class PopularList:
    """The k most popular items, best first."""

    k: int
    items: list[Pick] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What was asked for and set aside (an excluded id not in the catalogue), one line each."""

    def to_dict(self) -> dict:
        return with_notes({"k": self.k, "items": [item.to_dict() for item in self.items]}, self.notes)


@dataclass(frozen=True)
class Recommendations:
    """A user's next watch, best first, and how the list was made.

    fallback_used is True when nothing was personalised because the user is
    unknown or has no usable history; user_known tells the two apart.
    """

    user_id: str
    k: int
    items: list[Pick]
    fallback_used: bool
    user_known: bool
    notes: list[str] = field(default_factory=list)
    """What was asked for and set aside (an excluded id not in the catalogue), one line each."""

    def to_dict(self) -> dict:
        shaped = {
            "user_id": self.user_id,
            "k": self.k,
            "items": [item.to_dict() for item in self.items],
            "fallback_used": self.fallback_used,
            "user_known": self.user_known,
        }
        return with_notes(shaped, self.notes)


@dataclass(frozen=True)
class HistoryEntry:
    """One item a user watched, with what the model made of it."""

    item_id: str
    title: str
    content_type: str
    genre: str
    count_plays: int
    watch_seconds: float
    completion: float
    """Share of the item watched, 0..1 (summed over sessions)."""
    is_heavy: bool
    """Watched heavily: never recommended back."""
    strength: float
    """The interaction strength the model uses."""
    last_watched_at: datetime
    """UTC."""

    def to_dict(self) -> dict:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "content_type": self.content_type,
            "genre": self.genre,
            "count_plays": self.count_plays,
            "watch_seconds": self.watch_seconds,
            "completion": shown_score(self.completion),
            "is_heavy": self.is_heavy,
            "strength": shown_score(self.strength),
            "last_watched_at": utc_text(self.last_watched_at),
        }


@dataclass(frozen=True)
class History:
    """What a user watched, latest first."""

    user_id: str
    items: list[HistoryEntry]

    def to_dict(self) -> dict:
        return {"user_id": self.user_id, "items": [item.to_dict() for item in self.items]}


@dataclass(frozen=True)
class SimilarItems:
    """The items most similar to one item, most similar first."""

    item_id: str
    k: int
    items: list[Pick]

    def to_dict(self) -> dict:
        return {"item_id": self.item_id, "k": self.k, "items": [item.to_dict() for item in self.items]}
