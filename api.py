"""JSON web API over the recommender: a thin FastAPI layer over engine/.

    python cli.py serve --port 8000            # builds recs.db first if needed
    RECS_DB=recs.db RECS_DATA_DIR=data uvicorn api:app --port 8000

One engine.Recommender is shared by the whole app (created in the lifespan
handler, building recs.db first when it is missing or stale). Endpoints are
plain `def`: FastAPI runs them in its threadpool and the Recommender gives
each thread its own DuckDB cursor. A rebuild (`python cli.py build`) swaps a
new recs.db in atomically; the Recommender notices the new file on the next
query, so the server never needs a restart.

Every answer is JSON, errors included: 404 for an unknown user or item, 422
for a bad parameter (the message says what is allowed), 503 when the
database cannot be opened, and a bare 500 (logged here, never a stack trace
in the response) for anything unexpected. See docs/api.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from datetime import datetime
from decimal import Decimal
from contextlib import asynccontextmanager
from typing import Annotated, Any, AsyncIterator, Optional

from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import engine
from engine import config, settings
from engine.watcher import Watcher

log = logging.getLogger("recs.api")
access = logging.getLogger("recs.access")
"""One line per request (method, path, status, ms), at info: `serve --log-level info`."""

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
    "exclude": "item ids of the catalogue, comma-separated or repeated, e.g. i1,i2",
    "offset": f"a whole number from 0 to {engine.recommend.MAX_OFFSET}: how many of the list to skip",
    "user_ids": f"from 1 to {engine.MAX_BATCH} user ids",
}

# Engine errors as HTTP answers, most specific first: (status, error code).
ERROR_STATUS: list[tuple[type[engine.RecsError], int, str]] = [
    (engine.UnknownUser, 404, "unknown_user"),
    (engine.UnknownItem, 404, "unknown_item"),
    (engine.UnknownFilter, 422, "invalid_parameter"),
    (engine.IdempotencyConflict, 422, "idempotency_conflict"),
    (engine.BadArgument, 422, "invalid_parameter"),
    (engine.StorageFull, 507, "insufficient_storage"),
    (engine.LogDamaged, 503, "log_damaged"),
    (engine.RecsError, 503, "unavailable"),  # DatabaseMissing, DatabaseLocked, ...: cannot answer now
]


# --- response shapes: the engine's own results (engine/results.py) ----------------


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


def _ok(name: str) -> dict:
    return {"content": {"application/json": {"example": EXAMPLES[name]}}}


def _error_example(error: str, message: str) -> dict:
    model = ValidationErrorResponse if error == "invalid_parameter" else ErrorResponse
    example = {"error": error, "message": message}
    if model is ValidationErrorResponse:
        example["details"] = []
    return {"model": model, "description": message, "content": {"application/json": {"example": example}}}


BAD_K = _error_example(
    "invalid_parameter", f"k: Input should be less than or equal to {MAX_K} (allowed: {ALLOWED['k']})"
)
BAD_FILTER = _error_example(
    "invalid_parameter", "no item has genre 'western'; known: action, drama, family, romance"
)
UNKNOWN_USER = _error_example("unknown_user", "user 'nobody' is not known: not in users.csv and no events")
UNKNOWN_ITEM = _error_example("unknown_item", "item 'i999' is not in the catalogue")
UNAVAILABLE = _error_example("unavailable", "recs.db does not exist; run 'python cli.py build'")

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


# --- the routes: each calls the engine once and prints its result's to_dict() --------

router = APIRouter()


async def get_recommender(request: Request) -> engine.Recommender:
    """The app's one Recommender (made in the lifespan handler); async: no thread needed."""
    return request.app.state.recommender


async def _from_memory_or_thread(recommender: engine.Recommender, ask):
    """ask() on the event loop when the serving index answers from memory (microseconds), else
    (a file or live events to take in first, or the SQL macros) in the threadpool."""
    if recommender.serving_current():
        return ask()
    return await run_in_threadpool(ask)


RecommenderDep = Annotated[engine.Recommender, Depends(get_recommender)]


def _values(values: Optional[list[str]]) -> Optional[list[str]]:
    """A repeatable parameter's values, each split on commas; None (no filter) when all are
    empty: `?genre=` means no filter, as an HTML form sends it."""
    parts = [part.strip() for value in values or () for part in value.split(",") if part.strip()]
    return parts or None


def _answer(result) -> JSONResponse:
    """An engine result as the response body, exactly as `python cli.py ... --json` prints it."""
    return JSONResponse(result.to_dict())


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Is the service up, and on which data?",
    description="Opens the database and reads `build_info` and the row counts. "
    "200 with `status: ok` when it answers, 503 otherwise. `stale: true` when the last rebuild "
    "failed (`stale_reason` says why) and the answers come from the model built at `built_at`.",
    responses={200: _ok("health"), 503: UNAVAILABLE},
    tags=["service"],
)
def health(recommender: RecommenderDep) -> dict:
    rows = recommender.info()
    return {
        "status": "ok",
        "built_at": rows["built_at"],
        "duckdb_version": rows["duckdb_version"],
        "rows": {name: rows[name] for name in ("users", "items", "events")},
        "stale": rows["stale"],
        "stale_reason": rows["stale_reason"],
        "live_events": rows["live_events"],
    }


@router.get(
    "/ready",
    summary="Is the model loaded and answering?",
    description="For readiness probes: 503 until the model is loaded (the serving index in memory) and "
    "while the database cannot be opened; then 200 `{\"ready\": true}`. `/health` says which model "
    "answers and how many live events are overlaid on it.",
    responses={200: {"content": {"application/json": {"example": {"ready": True}}}}, 503: UNAVAILABLE},
    tags=["service"],
)
def ready(request: Request) -> JSONResponse:
    recommender = getattr(request.app.state, "recommender", None)
    if not request.app.state.ready or recommender is None:
        return _error(503, "unavailable", "the model is still loading")
    recommender.database.cursor()  # DatabaseMissing / DatabaseLocked: 503 through the engine's handler
    return JSONResponse({"ready": True})


# HEAD for probes that send it: the same answer without a body (not listed twice in the docs)
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/ready", ready, methods=["HEAD"], include_in_schema=False)


@router.get(
    "/metrics",
    summary="Counters for Prometheus",
    description="Prometheus text format: requests and latency by endpoint, when the model was built, "
    "its events and the live events since. Per process (each of `serve --workers` counts its own).",
    response_class=PlainTextResponse,
    tags=["service"],
)
def metrics(request: Request) -> PlainTextResponse:
    recommender = getattr(request.app.state, "recommender", None)
    return PlainTextResponse(request.app.state.metrics.text(recommender), media_type="text/plain; version=0.0.4")


@router.get(
    "/popular",
    response_model=engine.PopularList,
    summary="The most popular items",
    description="The k most popular items, best first, optionally of one genre and/or content type. "
    "Popularity is the sum of every viewer's watch strength (full views, log-damped).",
    responses={200: _ok("popular"), 422: BAD_FILTER},
    tags=["recommendations"],
)
async def popular(
    recommender: RecommenderDep,
    k: Annotated[int, K_QUERY] = 10,
    genre: Annotated[Optional[list[str]], GENRE_QUERY] = None,
    content_type: Annotated[Optional[list[str]], CONTENT_TYPE_QUERY] = None,
    exclude: Annotated[Optional[list[str]], EXCLUDE_QUERY] = None,
    offset: Annotated[int, OFFSET_QUERY] = 0,
) -> JSONResponse:
    return await _from_memory_or_thread(
        recommender,
        lambda: _answer(recommender.popular(k, _values(genre), _values(content_type), _values(exclude), offset)),
    )


@router.get(
    "/recommendations",
    response_model=engine.Recommendations,
    summary="What a user should watch next",
    description="Personalised picks first (each with the watched item that contributed most as its "
    "reason), then popular items within the same filters when fewer than k remain. Items the user "
    "already watched are not recommended back. An unknown user, or one with no usable history, gets "
    "the popular list with `fallback_used: true` (still 200).",
    responses={200: _ok("recommendations"), 422: BAD_K},
    tags=["recommendations"],
)
async def recommendations(
    recommender: RecommenderDep,
    user_id: Annotated[str, USER_QUERY],
    k: Annotated[int, K_QUERY] = 10,
    genre: Annotated[Optional[list[str]], GENRE_QUERY] = None,
    content_type: Annotated[Optional[list[str]], CONTENT_TYPE_QUERY] = None,
    exclude: Annotated[Optional[list[str]], EXCLUDE_QUERY] = None,
    offset: Annotated[int, OFFSET_QUERY] = 0,
) -> JSONResponse:
    return await _from_memory_or_thread(
        recommender,
        lambda: _answer(
            recommender.recommend(user_id, k, _values(genre), _values(content_type), _values(exclude), offset)
        ),
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


@router.post(
    "/recommendations/batch",
    response_model=BatchResponse,
    summary="What each of several users should watch next",
    description=f"What `/recommendations` answers, for each of up to {engine.MAX_BATCH} users in one request: "
    "`{\"results\": [...]}`, one answer per user id in the order given (unknown users get popular items, "
    "as there). A bad filter is one 422 for the whole batch.",
    responses={422: BAD_K},
    tags=["recommendations"],
)
def recommendations_batch(recommender: RecommenderDep, request: BatchRequest) -> JSONResponse:
    answers = recommender.recommend_batch(
        request.user_ids, request.k, _values(request.genre), _values(request.content_type),
        _values(request.exclude), request.offset,
    )
    return JSONResponse({"results": [answer.to_dict() for answer in answers]})


@router.get(
    "/users/{user_id}/history",
    response_model=engine.History,
    summary="What a user has watched",
    description="One row per item the user watched, latest first: plays, seconds, completion, "
    "whether it counts as heavily watched, and its strength. 404 for a user that is neither in "
    "users.csv nor in the events; a listed user without events gets an empty list.",
    responses={200: _ok("history"), 404: UNKNOWN_USER},
    tags=["explanations"],
)
def history(
    recommender: RecommenderDep,
    user_id: Annotated[str, PathParam(description="The user, e.g. u1.", openapi_examples={"u1": {"value": "u1"}})],
) -> JSONResponse:
    return _answer(recommender.history(user_id))


@router.get(
    "/items/{item_id}/similar",
    response_model=engine.SimilarItems,
    summary="Items most similar to one item",
    description="The k nearest neighbours of an item by similarity over users' watch strength, with "
    "their support (users who watched both). 404 for an item not in the catalogue; an item nobody "
    "else's viewers watched gets an empty list.",
    responses={200: _ok("similar"), 404: UNKNOWN_ITEM, 422: BAD_K},
    tags=["explanations"],
)
def similar(
    recommender: RecommenderDep,
    item_id: Annotated[str, PathParam(description="The item, e.g. i1.", openapi_examples={"i2": {"value": "i2"}})],
    k: Annotated[int, K_QUERY] = 10,
) -> JSONResponse:
    return _answer(recommender.similar(item_id, k))


# --- live events in ---------------------------------------------------------------


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
UNAUTHORIZED = _error_example("unauthorized", "POST /events needs the header Authorization: Bearer <RECS_API_TOKEN>")
NOT_LOCAL = (
    "writes from beyond this machine need a token: set RECS_API_TOKEN on the server "
    "(clients then send Authorization: Bearer <token>)"
)
FORBIDDEN = _error_example("forbidden", NOT_LOCAL)
TOO_LARGE = _error_example("too_large", f"the request body is over {MAX_BODY_BYTES:,} bytes: send smaller batches")
STORAGE_FULL = _error_example("insufficient_storage", "recs.db.live-events.log: the disk is full; the batch was not kept")


def check_write_token(request: Request) -> None:
    """Who may write: with RECS_API_TOKEN set (read when the app was made), whoever sends it as a
    Bearer token (else Unauthorized); without it, only clients on this machine (else NotLocal),
    whichever way the app was started (`recs serve`, `uvicorn api:app --host 0.0.0.0`)."""
    token = request.app.state.api_token
    if not token:
        if not is_local_client(request):
            raise NotLocal()
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized()


def is_local_client(request: Request) -> bool:
    """Whether the request comes from this machine: the client's address is loopback (Starlette's
    TestClient calls itself 'testclient') and so is every address a proxy forwarded it for. A
    reverse proxy on this host passes a remote client on in X-Forwarded-For, which uvicorn
    trusts from 127.0.0.1 by default; either way it is not local."""
    client = request.client.host if request.client else ""
    if client != "testclient" and not is_loopback(client):
        return False
    forwarded = [part.strip() for value in request.headers.getlist("x-forwarded-for") for part in value.split(",")]
    forwarded += [part.strip() for value in request.headers.getlist("x-real-ip") for part in value.split(",")]
    return all(is_loopback(address) for address in forwarded if address)


class Unauthorized(Exception):
    """A write without the API token."""


class NotLocal(Exception):
    """A write from beyond this machine while no API token is set."""


def parse_events(body: bytes) -> list:
    """The events of a POST /events body, or BadArgument (422) saying what is wrong with it.

    Numbers are kept as the text they were written as (a 5,000-digit watch_seconds is then
    refused by the rules of sql/12, by field, instead of failing Python's int parser)."""
    try:
        data = json.loads(body, parse_int=str, parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, RecursionError) as error:
        raise engine.BadArgument(f"the body is not JSON: {str(error)[:100]}") from None
    if not isinstance(data, dict) or "events" not in data:
        raise engine.BadArgument('the body must be a JSON object {"events": [...]}')
    unexpected = sorted(set(data) - {"events"})
    if unexpected:
        raise engine.BadArgument(f"unexpected field {unexpected[0][:40]!r} in the body (expected: events)")
    events = data["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= engine.live.MAX_BATCH:
        count = f"{len(events):,}" if isinstance(events, list) else type(events).__name__
        raise engine.BadArgument(f"events: from 1 to {engine.live.MAX_BATCH:,} events, not {count}")
    return events


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header: 1 to MAX_KEY_LENGTH visible ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all("!" <= char <= "~" for char in key):
        raise engine.BadArgument(
            f"Idempotency-Key: 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces), e.g. a UUID"
        )
    return key


@router.post(
    "/events",
    response_model=AcceptedResponse,
    summary="Add watch events, live",
    description="Appends a batch of events to the live log, durably (written and fsynced before the "
    "200), checked by the rules events.csv is loaded with. A batch with any invalid event is refused "
    "whole (422, `details` names each bad event's index, field and problem): retry the whole batch. "
    "Unknown items are invalid; unknown users are fine (new users arrive this way). The events count "
    "at once: the user's history, exclusions, personal scores and popularity; item neighbours at the "
    "next build. With `RECS_API_TOKEN` set, needs `Authorization: Bearer <token>` (401 otherwise); "
    "without it, only clients on this machine may write (403). An `Idempotency-Key` header makes a "
    "retry safe: the same key within 24 hours returns the first answer and counts once. "
    f"Bodies over {MAX_BODY_BYTES:,} bytes get 413; a full disk 507, with nothing of the batch kept.",
    responses={200: {"content": {"application/json": {"example": {"accepted": 1}}}}, 401: UNAUTHORIZED,
               403: FORBIDDEN, 413: TOO_LARGE, 422: BAD_EVENTS, 507: STORAGE_FULL},
    tags=["events"],
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": EventsBody.model_json_schema(), "example": EVENTS_EXAMPLE,
    }}}},
)
async def post_events(request: Request, recommender: RecommenderDep) -> JSONResponse:
    check_write_token(request)  # before a byte of the body is read
    if not recommender_writes(recommender):
        return _error(403, "read_only", "this server was started with --read-only: POST /events is off")
    key = idempotency_key(request)
    events = parse_events(await request.body())
    try:
        accepted = await run_in_threadpool(recommender.add_events, events, key)
    except engine.InvalidEvents as error:
        return _error(422, "invalid_events", str(error), details=[problem.to_dict() for problem in error.problems])
    return JSONResponse({"accepted": accepted})


def recommender_writes(recommender: engine.Recommender) -> bool:
    return getattr(recommender, "writes", True)


# --- the app --------------------------------------------------------------------

DESCRIPTION = """
What to watch next on a streaming platform, from watch history, in SQL (DuckDB).

* **/popular**: the most popular items (sum of every viewer's watch strength).
* **/recommendations**: a user's next watch, personalised by item-item
  similarity, filled with popular items when fewer than k remain; an unknown
  or history-less user gets popular items with `fallback_used: true`.
* **/users/{user_id}/history**, **/items/{item_id}/similar**: what is behind a pick.
* **/health**: for probes: when the database was built and its row counts.

Errors are JSON `{"error": code, "message": text}`: 404 for an unknown user or
item, 422 for a bad parameter (the message says what is allowed), 503 when the
database cannot be opened. The database is rebuilt with `python cli.py build`;
the server picks the new file up without a restart or a failed request.
"""


def _open_checked(
    recommender: engine.Recommender | None, db: str | os.PathLike | None, data_dir: str | os.PathLike | None
) -> engine.Recommender:
    """The Recommender to serve (made here unless given: building recs.db first if missing or
    stale, which can take a while), with every record of its live log checked."""
    serving = recommender
    if serving is None:
        resolved = settings.load()  # the environment and recs.toml, as the command line reads them
        serving = engine.Recommender(
            db if db is not None else resolved.db, data_dir if data_dir is not None else resolved.data_dir,
            resolved.params, input_format=resolved.input_format, fast=config.serving_fast(),
        )
    serving.check_live_log()
    return serving


def create_app(
    db: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    recommender: engine.Recommender | None = None,
) -> FastAPI:
    """The API on the given paths (else $RECS_DB / $RECS_DATA_DIR, else ./recs.db and ./data).

    With recommender given (python cli.py serve, which has built recs.db
    already) the app serves it; otherwise the app's startup (its lifespan)
    resolves the paths and builds recs.db if it is missing or stale.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            serving = await run_in_threadpool(_open_checked, recommender, db, data_dir)
        except engine.RecsError as error:
            app.state.startup_error = printable(str(error))  # uvicorn logs it, in one line
            raise
        if recommender is None:
            serving.writes = os.environ.get("RECS_READ_ONLY", "") != "1"
            if serving.build_report is not None:
                log.info("built %s in %.1f s", serving.db, serving.build_report.seconds)
            if serving.standalone is not None:
                log.info("%s", serving.standalone)
            if serving.stale is not None:
                log.warning("answering from the model built at %s: %s", serving.stale_built_at, serving.stale)
        app.state.recommender = serving
        if serving.fast:
            await run_in_threadpool(serving.serving_index)  # loaded before the first request, not during it
        app.state.ready = True
        watcher = (
            Watcher(serving, config.watch_seconds(), config.fold_seconds())
            if config.watch_seconds() and serving.standalone is None else None
        )
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            serving.close()

    app = FastAPI(title="recs: what to watch next", description=DESCRIPTION, version=engine.__version__, lifespan=lifespan)
    app.state.internal_errors = 0  # how often the catch-all 500 handler ran (tests assert 0)
    app.state.api_token = os.environ.get("RECS_API_TOKEN") or None
    app.state.ready = False
    app.state.metrics = Metrics()
    _add_error_handlers(app)
    app.include_router(router)
    origins = [origin.strip() for origin in os.environ.get("RECS_CORS_ORIGINS", "").split(",") if origin.strip()]
    if origins:  # off unless configured
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "HEAD"],
                           allow_headers=["Authorization", "Content-Type"])

    app.add_middleware(Measured, metrics=app.state.metrics)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(OneLineStartupError, state=app.state)
    return app


class BodyLimit:
    """413 for a request body over limit bytes: at once when Content-Length says so, else as soon
    as the bytes read pass it. Nothing past the limit is read or parsed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(scope, receive, send)
        seen = 0

        async def receiving():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, receiving, send)
        except BodyTooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        response = _error(413, "too_large", f"the request body is over {self.limit:,} bytes: send smaller batches")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    """A request body that passed the limit while it was read."""


class OneLineStartupError:
    """When the model cannot be opened at startup (a damaged live log, say), uvicorn prints the
    engine's one-line message, not a traceback, and exits."""

    def __init__(self, app, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def sending(message):
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error:
                message = {**message, "message": error}
            await send(message)

        await self.app(scope, receive, sending)


def printable(text: str) -> str:
    """text with every control character escaped (a newline as \\n): a logged path or value
    cannot start a forged log line."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


class Measured:
    """Plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware): each request's
    status and time into the metrics, and one log line per request at info."""

    def __init__(self, app, metrics: "Metrics"):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], endpoint, status[0], seconds)
            if access.isEnabledFor(logging.INFO):
                access.info("%s %s %d %.1f ms", scope["method"], printable(scope["path"]), status[0], seconds * 1000)


class Metrics:
    """Requests and latency by endpoint, for /metrics (Prometheus text format). Per process."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list] = {}  # [bucket counts..., sum, count]

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            series = self.latency.setdefault((method, endpoint), [0] * len(self.BUCKETS) + [0.0, 0])
            for index, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    series[index] += 1
            series[-2] += seconds
            series[-1] += 1

    def text(self, recommender: engine.Recommender | None) -> str:
        lines = [
            "# HELP recs_requests_total HTTP requests answered, by method, endpoint and status.",
            "# TYPE recs_requests_total counter",
        ]
        with self._lock:
            for (method, endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'recs_requests_total{{method="{method}",endpoint="{endpoint}",status="{status}"}} {count}')
            lines += [
                "# HELP recs_request_seconds Time to answer, by method and endpoint.",
                "# TYPE recs_request_seconds histogram",
            ]
            for (method, endpoint), series in sorted(self.latency.items()):
                labels = f'method="{method}",endpoint="{endpoint}"'
                for bound, count in zip(self.BUCKETS, series):
                    lines.append(f'recs_request_seconds_bucket{{{labels},le="{bound}"}} {count}')
                lines.append(f'recs_request_seconds_bucket{{{labels},le="+Inf"}} {series[-1]}')
                lines.append(f"recs_request_seconds_sum{{{labels}}} {series[-2]:.6f}")
                lines.append(f"recs_request_seconds_count{{{labels}}} {series[-1]}")
        if recommender is not None:
            try:
                info = recommender.info()
            except engine.RecsError:
                info = None
            if info is not None:
                built = datetime.fromisoformat(info["built_at"]).timestamp() if info.get("built_at") else 0
                lines += [
                    "# HELP recs_model_built_at_seconds When the model being served was built (Unix time).",
                    "# TYPE recs_model_built_at_seconds gauge",
                    f"recs_model_built_at_seconds {built:.0f}",
                    "# HELP recs_model_events Events in the built model.",
                    "# TYPE recs_model_events gauge",
                    f"recs_model_events {info['events']}",
                    "# HELP recs_live_events Events accepted since the build (overlaid on it).",
                    "# TYPE recs_live_events gauge",
                    f"recs_live_events {info['live_events']}",
                    "# HELP recs_model_stale 1 when the last rebuild failed and an older model answers.",
                    "# TYPE recs_model_stale gauge",
                    f"recs_model_stale {int(info['stale'])}",
                ]
        return "\n".join(lines) + "\n"



# --- errors: always JSON, never a stack trace ----------------------------------------


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")]
        name = ".".join(loc) or "request"
        allowed = ALLOWED.get(loc[0]) if loc else None
        text = f"{name}: {error.get('msg', 'invalid')}"
        if error.get("type") == "missing":
            text = f"{name} is required"
        if allowed:
            text += f" (allowed: {allowed})"
        parts.append(text)
    return "; ".join(parts) or "invalid request"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # what was wrong and where, never the input itself: a 422 does not echo a hostile body back
        details = [{key: value for key, value in error.items() if key in ("loc", "msg", "type")} for error in errors]
        return _error(422, "invalid_parameter", _validation_message(errors), details=jsonable_encoder(details))

    @app.exception_handler(engine.RecsError)
    async def engine_error(request: Request, exc: engine.RecsError) -> JSONResponse:
        status, code = next((status, code) for kind, status, code in ERROR_STATUS if isinstance(exc, kind))
        if status >= 500:
            log.warning("%s %s: %s", request.method, printable(request.url.path), printable(str(exc)))
        return _error(status, code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors: 404 for an unknown path, 405 for a wrong method.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(
            {"error": code, "message": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        response = _error(401, "unauthorized", "POST /events needs the header Authorization: Bearer <RECS_API_TOKEN>")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(NotLocal)
    async def not_local(request: Request, exc: NotLocal) -> JSONResponse:
        return _error(403, "forbidden", NOT_LOCAL)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback here; the client only learns that it failed.
        app.state.internal_errors += 1
        log.error("unexpected error on %s %s", request.method, printable(request.url.path), exc_info=exc)
        return _error(500, "internal_error", "unexpected server error; it has been logged")


# --- running it -----------------------------------------------------------------------


def configure_logging() -> None:
    """Our loggers at $RECS_LOG_LEVEL (set by serve), on stderr with a time stamp."""
    level = os.environ.get("RECS_LOG_LEVEL", "").upper()
    if level:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("recs").setLevel(level)


def is_loopback(host: str) -> bool:
    """Whether host is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_writes_allowed(host: str, writes: bool = True) -> None:
    """Refuse to open POST /events beyond this machine without RECS_API_TOKEN."""
    if writes and not is_loopback(host) and not os.environ.get("RECS_API_TOKEN"):
        raise engine.BadArgument(
            f"refusing to serve POST /events on {host} without a token: set RECS_API_TOKEN "
            "(clients then send Authorization: Bearer <token>), or serve --read-only"
        )


def serve(
    recommender: engine.Recommender, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
    writes: bool = True, workers: int = 1,
) -> None:
    """Serve the API over an open (already built) Recommender with uvicorn until interrupted.

    workers > 1 runs that many processes (uvicorn's), each opening the model on the
    Recommender's paths; live events reach every one through the live log.
    """
    import uvicorn

    check_writes_allowed(host, writes)
    recommender.check_live_log()  # a damaged log: one line, before the port opens
    recommender.writes = writes
    os.environ["RECS_LOG_LEVEL"] = log_level  # for each worker process too
    configure_logging()
    if workers > 1:
        # each worker resolves its settings from the environment: give it this process's
        os.environ.update({
            "RECS_DB": str(recommender.db), "RECS_DATA_DIR": str(recommender.data_dir),
            "RECS_SERVING": "index" if recommender.fast else "sql", "RECS_READ_ONLY": "" if writes else "1",
        })
        if recommender.params is not None:
            os.environ.update({
                settings.param_env_name(name): str(value) for name, value in recommender.params.as_dict().items()
            })
        if recommender.input_format is not None:
            os.environ.update({
                "RECS_DELIMITER": recommender.input_format.delimiter or "", "RECS_ENCODING": recommender.input_format.encoding,
            })
        recommender.close()
        uvicorn.run("api:app", host=host, port=port, log_level=log_level, workers=workers, access_log=False)
        return
    if recommender.fast:
        recommender.serving_index()

    uvicorn.run(create_app(recommender=recommender), host=host, port=port, log_level=log_level, access_log=False)


configure_logging()
app = create_app()
"""For `uvicorn api:app`: paths from $RECS_DB and $RECS_DATA_DIR, read at startup."""


__all__ = ["app", "create_app", "serve", "MAX_K"]
