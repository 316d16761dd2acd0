"""Requests and latency by endpoint for /metrics (Prometheus text format), and the one log
line per request, both from one plain ASGI middleware."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import engine

from .logs import printable

access = logging.getLogger("recs.access")
"""One line per request (method, path, status, ms), at info: `serve --log-level info`."""

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
