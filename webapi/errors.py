"""Errors as answers: always JSON `{"error": code, "message": one line}`, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import engine

from .logs import printable
from .schemas import ALLOWED, NOT_LOCAL

log = logging.getLogger("recs.api")

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


class Unauthorized(Exception):
    """A write without the API token."""


class NotLocal(Exception):
    """A write from beyond this machine while no API token is set."""




def error_response(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
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


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # what was wrong and where, never the input itself: a 422 does not echo a hostile body back
        details = [{key: value for key, value in error.items() if key in ("loc", "msg", "type")} for error in errors]
        return error_response(422, "invalid_parameter", _validation_message(errors), details=jsonable_encoder(details))

    @app.exception_handler(engine.RecsError)
    async def engineerror_response(request: Request, exc: engine.RecsError) -> JSONResponse:
        status, code = next((status, code) for kind, status, code in ERROR_STATUS if isinstance(exc, kind))
        if status >= 500:
            log.warning("%s %s: %s", request.method, printable(request.url.path), printable(str(exc)))
        return error_response(status, code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors: 404 for an unknown path, 405 for a wrong method.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(
            {"error": code, "message": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        response = error_response(401, "unauthorized", "POST /events needs the header Authorization: Bearer <RECS_API_TOKEN>")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(NotLocal)
    async def not_local(request: Request, exc: NotLocal) -> JSONResponse:
        return error_response(403, "forbidden", NOT_LOCAL)

    @app.exception_handler(Exception)
    async def internalerror_response(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback here; the client only learns that it failed.
        app.state.internal_errors += 1
        log.error("unexpected error on %s %s", request.method, printable(request.url.path), exc_info=exc)
        return error_response(500, "internal_error", "unexpected server error; it has been logged")
