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

import logging
import math
import os
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Annotated, Any, AsyncIterator, Optional

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import engine
from engine import config

log = logging.getLogger("recs.api")

MAX_K = 1000
"""The largest k accepted: more is refused with 422, not silently capped."""

# What each parameter accepts: quoted in 422 messages and in the OpenAPI docs.
ALLOWED = {
    "k": f"a whole number from 1 to {MAX_K}",
    "user_id": "a user id such as u1; an unknown id gets popular items",
    "item_id": "an item id such as i1",
    "genre": "a genre of the catalogue, e.g. drama (case-insensitive; empty means any)",
    "content_type": "a content type of the catalogue: tv, movie, series or microdrama (case-insensitive; empty means any)",
}


# --- response shapes ----------------------------------------------------------


class Item(BaseModel):
    """One recommended or popular item."""

    rank: int = Field(description="1 = best.")
    item_id: str
    title: str
    content_type: str
    genre: str
    score: Optional[float] = Field(description="Popularity, or the personalised score; higher is better.")
    reason: str = Field(description="Why the item was picked, for display.")
    source: str = Field(description="'personalised' or 'popular'.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "rank": 1, "item_id": "i2", "title": "Family Show B", "content_type": "tv",
                    "genre": "family", "score": 1.841541, "reason": "popular on the platform (2 viewers)",
                    "source": "popular",
                }
            ]
        }
    )


class SimilarItem(Item):
    """One neighbour of an item: cosine similarity over watch strength, with its support."""

    support: int = Field(description="Users who watched both items.")


class PopularResponse(BaseModel):
    k: int
    items: list[Item]


class RecommendationsResponse(BaseModel):
    user_id: str
    k: int
    items: list[Item]
    fallback_used: bool = Field(
        description="True when nothing could be personalised (unknown user, or no usable history): "
        "the items are the popular list."
    )
    user_known: bool = Field(description="True when the user is in users.csv or has events.")


class HistoryEntry(BaseModel):
    item_id: str
    title: str
    content_type: str
    genre: str
    count_plays: int
    watch_seconds: float
    completion: float = Field(description="Share of the item watched, 0..1 (summed over sessions).")
    is_heavy: bool = Field(description="Watched heavily: never recommended back.")
    strength: float = Field(description="The interaction strength the model uses.")
    last_watched_at: datetime = Field(description="UTC.")


class HistoryResponse(BaseModel):
    user_id: str
    items: list[HistoryEntry]


class SimilarResponse(BaseModel):
    item_id: str
    k: int
    items: list[SimilarItem]


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' when the database answers.")
    built_at: Optional[str] = Field(description="When recs.db was built (UTC, ISO 8601).")
    rows: dict[str, int] = Field(description="Row counts of the users, items and events tables.")
    duckdb_version: Optional[str] = None


class ErrorResponse(BaseModel):
    error: str = Field(description="A stable code: not_found, invalid_parameter, unavailable, internal_error.")
    message: str = Field(description="One line for a human: what was wrong and what is allowed.")


class ValidationErrorResponse(ErrorResponse):
    details: list[dict[str, Any]] = Field(description="FastAPI's per-parameter errors.")


# --- examples for the OpenAPI docs (the tiny example data of the tests) --------

EXAMPLE_ITEMS = [
    {
        "rank": 1, "item_id": "i2", "title": "Family Show B", "content_type": "tv", "genre": "family",
        "score": 1.841541, "reason": "popular on the platform (2 viewers)", "source": "popular",
    },
    {
        "rank": 2, "item_id": "i1", "title": "Drama Series A", "content_type": "series", "genre": "drama",
        "score": 1.647528, "reason": "popular on the platform (2 viewers)", "source": "popular",
    },
]


def _json_example(example: dict, description: str = "") -> dict:
    return {"description": description, "content": {"application/json": {"example": example}}}


def _error_example(error: str, message: str) -> dict:
    model = ValidationErrorResponse if error == "invalid_parameter" else ErrorResponse
    example = {"error": error, "message": message}
    if model is ValidationErrorResponse:
        example["details"] = []
    return {"model": model, **_json_example(example, message)}


BAD_K = _error_example(
    "invalid_parameter", f"k: Input should be less than or equal to {MAX_K} (allowed: {ALLOWED['k']})"
)
BAD_FILTER = _error_example(
    "invalid_parameter", "no item has genre 'western'; known: action, drama, family, romance"
)
UNAVAILABLE = _error_example("unavailable", "recs.db does not exist; run 'python cli.py build'")

K_QUERY = Query(
    ge=1, le=MAX_K, description=f"How many items: {ALLOWED['k']}.",
    openapi_examples={"five": {"summary": "five items", "value": 5}},
)
GENRE_QUERY = Query(
    description=f"Only items of this genre: {ALLOWED['genre']}.",
    openapi_examples={
        "any": {"summary": "no filter", "value": ""},
        "drama": {"summary": "drama only", "value": "drama"},
    },
)
CONTENT_TYPE_QUERY = Query(
    description=f"Only items of this content type: {ALLOWED['content_type']}.",
    openapi_examples={
        "any": {"summary": "no filter", "value": ""},
        "series": {"summary": "series only", "value": "series"},
    },
)


# --- the app --------------------------------------------------------------------

DESCRIPTION = """
What to watch next on a streaming platform, from watch history, in SQL (DuckDB).

* **/popular**: the most popular items (sum of every viewer's watch strength).
* **/recommendations**: a user's next watch, personalised by item-item cosine
  similarity, filled with popular items when fewer than k remain; an unknown
  or history-less user gets popular items with `fallback_used: true`.
* **/users/{user_id}/history**, **/items/{item_id}/similar**: what is behind a pick.
* **/health**: for probes: when the database was built and its row counts.

Errors are JSON `{"error": code, "message": text}`: 404 for an unknown user or
item, 422 for a bad parameter (the message says what is allowed), 503 when the
database cannot be opened. The database is rebuilt with `python cli.py build`;
the server picks the new file up without a restart or a failed request.
"""


def create_app(
    db: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> FastAPI:
    """The API on the given paths (else $RECS_DB / $RECS_DATA_DIR, else ./recs.db and ./data).

    The paths are resolved when the app starts (its lifespan), which also
    builds recs.db if it is missing or stale.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db_path, folder = config.db_path(db), config.data_dir(data_dir)
        # Building can take a while on big data: keep the event loop free meanwhile.
        recommender = await run_in_threadpool(engine.Recommender, db_path, folder)
        if recommender.build_report is not None:
            log.info("built %s in %.1f s", recommender.db, recommender.build_report.seconds)
        app.state.recommender = recommender
        try:
            yield
        finally:
            recommender.close()

    app = FastAPI(
        title="recs: what to watch next",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=lifespan,
    )
    app.state.internal_errors = 0  # how often the catch-all 500 handler ran (tests assert 0)
    _add_error_handlers(app)
    _add_routes(app)
    return app


def recommender_of(request: Request) -> engine.Recommender:
    return request.app.state.recommender


def _blank_to_none(value: Optional[str]) -> Optional[str]:
    """An empty filter (`?genre=`) means no filter, as an HTML form sends it."""
    return value if value else None


class NotFound(Exception):
    """An id in the path names no user or item: 404."""

    def __init__(self, error: str, message: str):
        super().__init__(message)
        self.error, self.message = error, message


def _add_routes(app: FastAPI) -> None:
    @app.get(
        "/health",
        response_model=HealthResponse,
        summary="Is the service up, and on which data?",
        description="Opens the database and reads `build_info` and the row counts. "
        "200 with `status: ok` when it answers, 503 otherwise.",
        responses={
            200: _json_example(
                {
                    "status": "ok", "built_at": "2026-11-26T12:05:47+00:00",
                    "rows": {"users": 3, "items": 4, "events": 5}, "duckdb_version": "1.5.6",
                }
            ),
            503: UNAVAILABLE,
        },
        tags=["service"],
    )
    def health(request: Request) -> dict:
        info = database_info(recommender_of(request))
        return {"status": "ok", **info}

    @app.get(
        "/popular",
        response_model=PopularResponse,
        summary="The most popular items",
        description="The k most popular items, best first, optionally of one genre and/or content type. "
        "Popularity is the sum of every viewer's watch strength (full views, log-damped).",
        responses={200: _json_example({"k": 2, "items": EXAMPLE_ITEMS}), 422: BAD_FILTER},
        tags=["recommendations"],
    )
    def popular(
        request: Request,
        k: Annotated[int, K_QUERY] = 10,
        genre: Annotated[Optional[str], GENRE_QUERY] = None,
        content_type: Annotated[Optional[str], CONTENT_TYPE_QUERY] = None,
    ) -> dict:
        items = recommender_of(request).popular(k, _blank_to_none(genre), _blank_to_none(content_type))
        return {"k": k, "items": api_items(items)}

    @app.get(
        "/recommendations",
        response_model=RecommendationsResponse,
        summary="What a user should watch next",
        description="Personalised picks first (each with the watched item that contributed most as its "
        "reason), then popular items within the same filters when fewer than k remain. Items the user "
        "already watched are not recommended back. An unknown user, or one with no usable history, gets "
        "the popular list with `fallback_used: true` (still 200).",
        responses={
            200: _json_example(
                {
                    "user_id": "u1", "k": 2, "fallback_used": False, "user_known": True,
                    "items": [
                        {
                            "rank": 1, "item_id": "i3", "title": "Action Movie C", "content_type": "movie",
                            "genre": "action", "score": 0.640172,
                            "reason": "similar to Family Show B, which you watched", "source": "personalised",
                        },
                        {
                            "rank": 2, "item_id": "i4", "title": "Romance Micro D",
                            "content_type": "microdrama", "genre": "romance", "score": 0.0,
                            "reason": "in the catalogue, not watched yet", "source": "popular",
                        },
                    ],
                }
            ),
            422: BAD_K,
        },
        tags=["recommendations"],
    )
    def recommendations(
        request: Request,
        user_id: Annotated[
            str,
            Query(
                min_length=1, description=f"The user: {ALLOWED['user_id']}.",
                openapi_examples={
                    "known": {"summary": "a user with history", "value": "u1"},
                    "unknown": {"summary": "an unknown user (falls back to popular)", "value": "nobody"},
                },
            ),
        ],
        k: Annotated[int, K_QUERY] = 10,
        genre: Annotated[Optional[str], GENRE_QUERY] = None,
        content_type: Annotated[Optional[str], CONTENT_TYPE_QUERY] = None,
    ) -> dict:
        recs = recommender_of(request).recommend(
            user_id, k, _blank_to_none(genre), _blank_to_none(content_type)
        )
        return {
            "user_id": user_id,
            "k": k,
            "items": api_items(recs),
            "fallback_used": recs.fallback_used,
            "user_known": recs.user_known,
        }

    @app.get(
        "/users/{user_id}/history",
        response_model=HistoryResponse,
        summary="What a user has watched",
        description="One row per item the user watched, latest first: plays, seconds, completion, "
        "whether it counts as heavily watched, and its strength. 404 for a user that is neither in "
        "users.csv nor in the events; a listed user without events gets an empty list.",
        responses={
            200: _json_example(
                {
                    "user_id": "u1",
                    "items": [
                        {
                            "item_id": "i2", "title": "Family Show B", "content_type": "tv", "genre": "family",
                            "count_plays": 1, "watch_seconds": 900.0, "completion": 0.769231,
                            "is_heavy": False, "strength": 0.823122, "last_watched_at": "2024-01-02T10:00:00Z",
                        }
                    ],
                }
            ),
            404: _error_example("unknown_user", "user 'nobody' is not known: not in users.csv and no events"),
        },
        tags=["explanations"],
    )
    def history(
        request: Request,
        user_id: Annotated[
            str, PathParam(description="The user, e.g. u1.", openapi_examples={"u1": {"value": "u1"}})
        ],
    ) -> dict:
        recommender = recommender_of(request)
        if not recommender.user_known(user_id):
            raise NotFound("unknown_user", f"user {user_id!r} is not known: not in users.csv and no events")
        rows = recommender.history(user_id)
        for row in rows:
            row["last_watched_at"] = _utc(row["last_watched_at"])
        return {"user_id": user_id, "items": rows}

    @app.get(
        "/items/{item_id}/similar",
        response_model=SimilarResponse,
        summary="Items most similar to one item",
        description="The k nearest neighbours of an item by cosine similarity over users' watch "
        "strength, with their support (users who watched both). 404 for an item not in the catalogue; "
        "an item nobody else's viewers watched gets an empty list.",
        responses={
            200: _json_example(
                {
                    "item_id": "i2", "k": 1,
                    "items": [
                        {
                            "rank": 1, "item_id": "i1", "title": "Drama Series A", "content_type": "series",
                            "genre": "drama", "score": 0.625484, "support": 1, "source": "similar",
                            "reason": "watched by 1 viewer who also watched Family Show B",
                        }
                    ],
                }
            ),
            404: _error_example("unknown_item", "item 'i999' is not in the catalogue"),
            422: BAD_K,
        },
        tags=["explanations"],
    )
    def similar(
        request: Request,
        item_id: Annotated[
            str, PathParam(description="The item, e.g. i1.", openapi_examples={"i2": {"value": "i2"}})
        ],
        k: Annotated[int, K_QUERY] = 10,
    ) -> dict:
        try:
            items = recommender_of(request).similar(item_id, k)
        except engine.UnknownValue as error:
            raise NotFound("unknown_item", str(error)) from None
        return {"item_id": item_id, "k": k, "items": api_items(items, extra=("support",))}


ITEM_KEYS = ("rank", "item_id", "title", "content_type", "genre", "score", "reason", "source")


def api_items(items: list[dict], extra: tuple[str, ...] = ()) -> list[dict]:
    """Items as the API shapes them: the CLI's JSON keys plus rank; scores rounded to 6 places."""
    shaped = []
    for item in items:
        row = {key: item[key] for key in ITEM_KEYS + extra}
        score = row["score"]
        row["score"] = round(score, 6) if score is not None and math.isfinite(score) else None
        shaped.append(row)
    return shaped


def _utc(value: datetime) -> datetime:
    """The engine's timestamps are naive UTC: say so, so JSON carries the offset."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def database_info(recommender: engine.Recommender) -> dict:
    """built_at and row counts, for /health."""
    rows = recommender.info()
    return {
        "built_at": rows["built_at"],
        "duckdb_version": rows["duckdb_version"],
        "rows": {name: rows[name] for name in ("users", "items", "events")},
    }


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
        details = [
            {key: value for key, value in error.items() if key in ("loc", "msg", "type", "input")}
            for error in errors
        ]
        return _error(422, "invalid_parameter", _validation_message(errors), details=jsonable_encoder(details))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, exc.error, exc.message)

    @app.exception_handler(engine.UnknownValue)
    async def unknown_value(request: Request, exc: engine.UnknownValue) -> JSONResponse:
        # A filter naming a genre or content type no item has; the message lists the known ones.
        return _error(422, "invalid_parameter", str(exc))

    @app.exception_handler(engine.BadArgument)
    async def bad_argument(request: Request, exc: engine.BadArgument) -> JSONResponse:
        return _error(422, "invalid_parameter", str(exc))

    @app.exception_handler(engine.RecsError)
    async def unavailable(request: Request, exc: engine.RecsError) -> JSONResponse:
        # DatabaseMissing, DatabaseLocked, ...: the database cannot answer right now.
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(503, "unavailable", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors: 404 for an unknown path, 405 for a wrong method.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(
            {"error": code, "message": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback here; the client only learns that it failed.
        app.state.internal_errors += 1
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "unexpected server error; it has been logged")


# --- running it -----------------------------------------------------------------------


def serve(
    db: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Build recs.db if needed, then serve the API with uvicorn until interrupted.

    Raises engine.RecsError (e.g. DataFileError) when the database cannot be built.
    """
    import uvicorn

    db_path, folder = config.db_path(db), config.data_dir(data_dir)
    report = engine.ensure_built(db_path, folder, engine.ModelParams())
    if report is not None:
        log.info("built %s in %.1f s", db_path, report.seconds)
    uvicorn.run(create_app(db_path, folder), host=host, port=port, log_level=log_level)


app = create_app()
"""For `uvicorn api:app`: paths from $RECS_DB and $RECS_DATA_DIR, read at startup."""


__all__ = ["app", "create_app", "serve", "MAX_K"]
