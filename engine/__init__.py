"""A small SQL-centric recommender for a streaming platform, on DuckDB.

The model lives in sql/; this package loads the CSVs, runs the SQL files in
order into recs.db, and answers questions with the named queries stored there.

    >>> from engine import recommend_popular, recommend_for_user
    >>> recommend_popular(k=5).items           # Picks, best first
    >>> recs = recommend_for_user("u1", k=5)
    >>> recs.items[0].reason, recs.fallback_used
    >>> recs.to_dict()                         # what --json and the web API print
"""

from __future__ import annotations

__version__ = "1.1.0"
"""The app's version: what `python cli.py --version` prints and the web API reports."""

from functools import lru_cache

from .build import BuildReport, Progress, build, ensure_built
from .config import ModelParams
from .evaluate import evaluate
from .load import InputFormat
from .errors import (
    BadArgument,
    BuildError,
    DatabaseLocked,
    DatabaseMissing,
    DataFileError,
    DiskFull,
    IdempotencyConflict,
    InvalidEvents,
    LogDamaged,
    NotOurDatabase,
    RecsError,
    StorageFull,
    UnknownFilter,
    UnknownItem,
    UnknownUser,
    UnknownValue,
)
from .recommend import EXPORT_FORMATS, MAX_BATCH, Recommender, export_format
from .results import History, HistoryEntry, Pick, PopularList, Recommendations, SimilarItems


@lru_cache(maxsize=1)
def _default() -> Recommender:
    """One Recommender on the default paths ($RECS_DB, $RECS_DATA_DIR or ./recs.db, ./data)."""
    return Recommender()


def recommend_popular(k: int = 10) -> PopularList:
    """The k most popular items: Picks with item_id, title, score, reason, source."""
    return _default().popular(k)


def recommend_for_user(user_id: str, k: int = 10) -> Recommendations:
    """The k items user_id should watch next; .fallback_used says if popular items stood in."""
    return _default().recommend(user_id, k)


__all__ = [
    "BadArgument",
    "BuildError",
    "BuildReport",
    "DataFileError",
    "EXPORT_FORMATS",
    "MAX_BATCH",
    "DatabaseLocked",
    "DatabaseMissing",
    "DiskFull",
    "IdempotencyConflict",
    "InvalidEvents",
    "LogDamaged",
    "NotOurDatabase",
    "History",
    "InputFormat",
    "HistoryEntry",
    "ModelParams",
    "Pick",
    "PopularList",
    "Progress",
    "Recommendations",
    "Recommender",
    "RecsError",
    "SimilarItems",
    "StorageFull",
    "UnknownFilter",
    "UnknownItem",
    "UnknownUser",
    "UnknownValue",
    "build",
    "ensure_built",
    "evaluate",
    "export_format",
    "recommend_for_user",
    "recommend_popular",
]
