"""The routes: each calls the engine once and answers with its result's to_dict()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Path as PathParam, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

import engine

from .errors import error_response
from .schemas import (
    BAD_EVENTS, BAD_FILTER, BAD_K, CONTENT_TYPE_QUERY, EVENTS_EXAMPLE, EXCLUDE_QUERY, FORBIDDEN, GENRE_QUERY, K_QUERY,
    MAX_BODY_BYTES, OFFSET_QUERY, STORAGE_FULL, TOO_LARGE, UNAUTHORIZED, UNAVAILABLE, UNKNOWN_ITEM, UNKNOWN_USER,
    USER_QUERY, AcceptedResponse, BatchRequest, BatchResponse, EventsBody, HealthResponse, ok_example,
)
from .writes import check_write_token, idempotency_key, parse_events


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
USER_PATH = PathParam(description="The user, e.g. u1.", openapi_examples={"u1": {"value": "u1"}})


def _values(values: Optional[list[str]]) -> Optional[list[str]]:
    """A repeatable parameter's values, each split on commas; None (no filter) when all are
    empty: `?genre=` means no filter, as an HTML form sends it."""
    parts = [part.strip() for value in values or () for part in value.split(",") if part.strip()]
    return parts or None


@dataclass(frozen=True)
class ListShape:
    """How a list is asked for: k, the filters, the exclusions and the page (the same query
    parameters on /popular and /recommendations)."""

    k: int
    genre: Optional[list[str]]
    content_type: Optional[list[str]]
    exclude: Optional[list[str]]
    offset: int

    def args(self) -> tuple:
        """The engine's arguments after the user: k, genre, content_type, exclude, offset."""
        return self.k, self.genre, self.content_type, self.exclude, self.offset


async def list_shape(
    k: Annotated[int, K_QUERY] = 10,
    genre: Annotated[Optional[list[str]], GENRE_QUERY] = None,
    content_type: Annotated[Optional[list[str]], CONTENT_TYPE_QUERY] = None,
    exclude: Annotated[Optional[list[str]], EXCLUDE_QUERY] = None,
    offset: Annotated[int, OFFSET_QUERY] = 0,
) -> ListShape:
    return ListShape(k, _values(genre), _values(content_type), _values(exclude), offset)


ShapeDep = Annotated[ListShape, Depends(list_shape)]


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
    responses={200: ok_example("health"), 503: UNAVAILABLE},
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
        return error_response(503, "unavailable", "the model is still loading")
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
    responses={200: ok_example("popular"), 422: BAD_FILTER},
    tags=["recommendations"],
)
async def popular(recommender: RecommenderDep, shape: ShapeDep) -> JSONResponse:
    return await _from_memory_or_thread(recommender, lambda: _answer(recommender.popular(*shape.args())))


@router.get(
    "/recommendations",
    response_model=engine.Recommendations,
    summary="What a user should watch next",
    description="Personalised picks first (each with the watched item that contributed most as its "
    "reason), then popular items within the same filters when fewer than k remain. Items the user "
    "already watched are not recommended back. An unknown user, or one with no usable history, gets "
    "the popular list with `fallback_used: true` (still 200).",
    responses={200: ok_example("recommendations"), 422: BAD_K},
    tags=["recommendations"],
)
async def recommendations(
    recommender: RecommenderDep, user_id: Annotated[str, USER_QUERY], shape: ShapeDep
) -> JSONResponse:
    return await _from_memory_or_thread(recommender, lambda: _answer(recommender.recommend(user_id, *shape.args())))


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
    "/recommendations/{user_id}",
    response_model=engine.Recommendations,
    summary="What a user should watch next (the user in the path)",
    description="The same answer as `/recommendations?user_id=...`, with the same parameters, for the user "
    "named in the path, as `/users/{user_id}/history` names them. An id holding a `/` is asked with the "
    "query form.",
    responses={200: ok_example("recommendations"), 422: BAD_K},
    tags=["recommendations"],
)
async def recommendations_of(
    recommender: RecommenderDep, user_id: Annotated[str, USER_PATH], shape: ShapeDep
) -> JSONResponse:
    return await recommendations(recommender, user_id, shape)


@router.get(
    "/users/{user_id}/history",
    response_model=engine.History,
    summary="What a user has watched",
    description="One row per item the user watched, latest first: plays, seconds, completion, "
    "whether it counts as heavily watched, and its strength. 404 for a user that is neither in "
    "users.csv nor in the events; a listed user without events gets an empty list.",
    responses={200: ok_example("history"), 404: UNKNOWN_USER},
    tags=["explanations"],
)
def history(recommender: RecommenderDep, user_id: Annotated[str, USER_PATH]) -> JSONResponse:
    return _answer(recommender.history(user_id))


@router.get(
    "/items/{item_id}/similar",
    response_model=engine.SimilarItems,
    summary="Items most similar to one item",
    description="The k nearest neighbours of an item by similarity over users' watch strength, with "
    "their support (users who watched both). 404 for an item not in the catalogue; an item nobody "
    "else's viewers watched gets an empty list.",
    responses={200: ok_example("similar"), 404: UNKNOWN_ITEM, 422: BAD_K},
    tags=["explanations"],
)
def similar(
    recommender: RecommenderDep,
    item_id: Annotated[str, PathParam(description="The item, e.g. i1.", openapi_examples={"i2": {"value": "i2"}})],
    k: Annotated[int, K_QUERY] = 10,
) -> JSONResponse:
    return _answer(recommender.similar(item_id, k))


@router.post(
    "/events",
    response_model=AcceptedResponse,
    summary="Add watch events, live",
    description="Appends a batch of events to the live log, durably (written and fsynced before the "
    "200), checked by the rules events.csv is loaded with. A batch with any invalid event is refused "
    "whole (422, `details` names every problem of each bad event: its index, the field and the problem): "
    "retry the whole batch once fixed. "
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
        return error_response(403, "read_only", "this server was started with --read-only: POST /events is off")
    key = idempotency_key(request)
    events = parse_events(await request.body())
    try:
        accepted = await run_in_threadpool(recommender.add_events, events, key)
    except engine.InvalidEvents as error:
        return error_response(422, "invalid_events", str(error), details=[problem.to_dict() for problem in error.problems])
    return JSONResponse({"accepted": accepted})


def recommender_writes(recommender: engine.Recommender) -> bool:
    return getattr(recommender, "writes", True)
