"""What the web API takes and answers: limits, parameter descriptions, request and response
shapes, and the examples of the OpenAPI docs, all in one place (the tests' tiny data)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Query
from pydantic import BaseModel, Field

import engine

MAX_K = 1000
"""The largest k accepted: more is refused with 422, not silently capped."""
MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest request body read: 10,000 events with long ids fit; more is 413 before parsing."""
MAX_KEY_LENGTH = 200
"""The longest Idempotency-Key accepted."""

# What each parameter accepts: quoted in 422 messages and in the OpenAPI docs.
ALLOWED = {
    "k": f"a whole number from 1 to {MAX_K}",
    "user_id": "a user id such as u1; an unknown id gets popular items",
    "item_id": "an item id such as i1",
    "genre": "a genre of the catalogue, e.g. drama (case-insensitive; empty means any)",
    "content_type": "a content type of the catalogue: tv, movie, series or microdrama (case-insensitive; empty means any)",
    "exclude": "item ids, comma-separated or repeated, e.g. i1,i2 (an id not in the catalogue is ignored, "
    "and the answer's notes say so)",
    "offset": f"a whole number from 0 to {engine.recommend.MAX_OFFSET}: how many of the list to skip",
    "user_ids": f"from 1 to {engine.MAX_BATCH} user ids",
}




class HealthResponse(BaseModel):
    status: str = Field(description="'ok' when the database answers.")
    built_at: Optional[str] = Field(description="When recs.db was built (UTC, ISO 8601).")
    rows: dict[str, int] = Field(description="Row counts of the users, items and events tables.")
    duckdb_version: Optional[str] = None
    stale: bool = Field(
        False, description="true when the last rebuild failed and the service answers from the model built at built_at."
    )
    stale_reason: Optional[str] = Field(None, description="Why that rebuild failed (one line); null when not stale.")
    live_events: int = Field(0, description="Events accepted since the build (POST /events, ingest), overlaid on it.")


class ErrorResponse(BaseModel):
    error: str = Field(
        description="A stable code: not_found, unknown_user, unknown_item, invalid_parameter, unavailable, "
        "internal_error."
    )
    message: str = Field(description="One line for a human: what was wrong and what is allowed.")


class ValidationErrorResponse(ErrorResponse):
    details: list[dict[str, Any]] = Field(description="FastAPI's per-parameter errors.")


# --- examples for the OpenAPI docs, all in one place (the tests' tiny data) --------

EXAMPLES = {
    "health": {
        "status": "ok", "built_at": "2026-11-26T12:05:47+00:00",
        "rows": {"users": 3, "items": 4, "events": 5}, "duckdb_version": "1.5.6",
        "stale": False, "stale_reason": None, "live_events": 0,
    },
    "popular": {
        "k": 2,
        "items": [
            {
                "rank": 1, "item_id": "i2", "title": "Family Show B", "content_type": "tv", "genre": "family",
                "score": 1.841541, "reason": "popular on the platform (2 viewers)", "source": "popular",
            },
            {
                "rank": 2, "item_id": "i1", "title": "Drama Series A", "content_type": "series", "genre": "drama",
                "score": 1.647528, "reason": "popular on the platform (2 viewers)", "source": "popular",
            },
        ],
    },
    "recommendations": {
        "user_id": "u1", "k": 2, "fallback_used": False, "user_known": True,
        "items": [
            {
                "rank": 1, "item_id": "i3", "title": "Action Movie C", "content_type": "movie",
                "genre": "action", "score": 0.640172,
                "reason": "similar to Family Show B, which you watched", "source": "personalised",
            },
            {
                "rank": 2, "item_id": "i4", "title": "Romance Micro D", "content_type": "microdrama",
                "genre": "romance", "score": 0.0, "reason": "in the catalogue, not watched yet", "source": "popular",
            },
        ],
    },
    "history": {
        "user_id": "u1",
        "items": [
            {
                "item_id": "i2", "title": "Family Show B", "content_type": "tv", "genre": "family",
                "count_plays": 1, "watch_seconds": 900.0, "completion": 0.769231,
                "is_heavy": False, "strength": 0.823122, "last_watched_at": "2024-01-02T10:00:00Z",
            }
        ],
    },
    "similar": {
        "item_id": "i2", "k": 1,
        "items": [
            {
                "rank": 1, "item_id": "i1", "title": "Drama Series A", "content_type": "series",
                "genre": "drama", "score": 0.625484, "reason": "watched by 1 viewer who also watched Family Show B",
                "source": "similar", "support": 1,
            }
        ],
    },
}


def ok_example(name: str) -> dict:
    return {"content": {"application/json": {"example": EXAMPLES[name]}}}


def error_example(error: str, message: str) -> dict:
    model = ValidationErrorResponse if error == "invalid_parameter" else ErrorResponse
    example = {"error": error, "message": message}
    if model is ValidationErrorResponse:
        example["details"] = []
    return {"model": model, "description": message, "content": {"application/json": {"example": example}}}


BAD_K = error_example(
    "invalid_parameter", f"k: Input should be less than or equal to {MAX_K} (allowed: {ALLOWED['k']})"
)
BAD_FILTER = error_example(
    "invalid_parameter", "no item has genre 'western'; known: action, drama, family, romance"
)
UNKNOWN_USER = error_example("unknown_user", "user 'nobody' is not known: not in users.csv and no events")
UNKNOWN_ITEM = error_example("unknown_item", "item 'i999' is not in the catalogue")
UNAVAILABLE = error_example("unavailable", "recs.db does not exist; run 'python cli.py build'")

K_QUERY = Query(
    ge=1, le=MAX_K, description=f"How many items: {ALLOWED['k']}.",
    openapi_examples={"five": {"summary": "five items", "value": 5}},
)
GENRE_QUERY = Query(
    description=f"Only items of this genre: {ALLOWED['genre']}. Repeat it (or separate by commas) for any of several.",
    openapi_examples={
        "any": {"summary": "no filter", "value": ""},
        "drama": {"summary": "drama only", "value": "drama"},
    },
)
CONTENT_TYPE_QUERY = Query(
    description=f"Only items of this content type: {ALLOWED['content_type']}. Repeat it (or separate by commas) "
    "for any of several.",
    openapi_examples={
        "any": {"summary": "no filter", "value": ""},
        "series": {"summary": "series only", "value": "series"},
    },
)
EXCLUDE_QUERY = Query(
    description=f"Never these items (e.g. those already on screen): {ALLOWED['exclude']}.",
    openapi_examples={"none": {"summary": "exclude nothing", "value": ""}, "two": {"summary": "two items", "value": "i1,i2"}},
)
OFFSET_QUERY = Query(ge=0, le=engine.recommend.MAX_OFFSET, description=f"For paging: {ALLOWED['offset']}; offset=10&k=10 is ranks 11-20.")
USER_QUERY = Query(
    min_length=1, description=f"The user: {ALLOWED['user_id']}.",
    openapi_examples={
        "known": {"summary": "a user with history", "value": "u1"},
        "unknown": {"summary": "an unknown user (falls back to popular)", "value": "nobody"},
    },
)


class BatchRequest(BaseModel):
    """Several users' recommendations in one request, with the same k, filters and exclusions."""

    user_ids: list[str] = Field(
        min_length=1, max_length=engine.MAX_BATCH, description=f"The users: {ALLOWED['user_ids']}.",
        examples=[["u1", "u2", "nobody"]],
    )
    k: int = Field(10, ge=1, le=MAX_K, description=f"How many items each: {ALLOWED['k']}.")
    genre: list[str] = Field(default_factory=list, description="Only items of any of these genres; [] = any.")
    content_type: list[str] = Field(default_factory=list, description="Only any of these content types; [] = any.")
    exclude: list[str] = Field(default_factory=list, description="Item ids never to pick, for every user.")
    offset: int = Field(0, ge=0, le=engine.recommend.MAX_OFFSET, description=f"For paging: {ALLOWED['offset']}.")


class BatchResponse(BaseModel):
    results: list[engine.Recommendations] = Field(description="One answer per user id, in the order asked.")


class EventsBody(BaseModel):
    """The body of POST /events (for the docs: the route reads the body itself, after the token)."""

    events: list[dict[str, Any]] = Field(
        min_length=1, max_length=engine.live.MAX_BATCH,
        description=f"1 to {engine.live.MAX_BATCH:,} events, each with the columns of events.csv: user_id, "
        "item_id, event_type, watch_seconds, timestamp (ISO 8601; Z or an offset, else UTC).",
    )


class AcceptedResponse(BaseModel):
    accepted: int = Field(description="How many events were appended to the live log (the whole batch).")


EVENTS_EXAMPLE = {
    "events": [
        {"user_id": "u1", "item_id": "i3", "event_type": "play", "watch_seconds": 1800,
         "timestamp": "2026-12-01T10:00:00Z"},
    ]
}
BAD_EVENTS = {
    "model": ValidationErrorResponse,
    "description": "Some events are invalid; none of the batch was kept.",
    "content": {"application/json": {"example": {
        "error": "invalid_events",
        "message": "1 invalid event(s), none of the batch was kept: event 0, item_id: item_id 'i9' is not in items.csv",
        "details": [{"index": 0, "field": "item_id", "problem": "item_id 'i9' is not in items.csv"}],
    }}},
}
UNAUTHORIZED = error_example("unauthorized", "POST /events needs the header Authorization: Bearer <RECS_API_TOKEN>")
NOT_LOCAL = (
    "writes from beyond this machine need a token: set RECS_API_TOKEN on the server "
    "(clients then send Authorization: Bearer <token>)"
)
FORBIDDEN = error_example("forbidden", NOT_LOCAL)
TOO_LARGE = error_example("too_large", f"the request body is over {MAX_BODY_BYTES:,} bytes: send smaller batches")
STORAGE_FULL = error_example("insufficient_storage", "recs.db.live-events.log: the disk is full; the batch was not kept")
