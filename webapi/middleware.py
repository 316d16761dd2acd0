"""ASGI middleware of the app besides the metrics: the body limit and one-line startup errors."""

from __future__ import annotations

from .errors import error_response

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
        response = error_response(413, "too_large", f"the request body is over {self.limit:,} bytes: send smaller batches")
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
