"""The app: made once per process (create_app), its startup (the lifespan: open and check the
model, load the serving index, start the watcher) and how `recs serve` runs it with uvicorn."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import engine
from engine import config, settings
from engine.watcher import Watcher

from .errors import add_error_handlers
from .logs import printable
from .metrics import Measured, Metrics
from .middleware import BodyLimit, OneLineStartupError
from .routes import router
from .schemas import MAX_BODY_BYTES
from .writes import check_writes_allowed

log = logging.getLogger("recs.api")

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
    add_error_handlers(app)
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




def configure_logging() -> None:
    """Our loggers at $RECS_LOG_LEVEL (set by serve), on stderr with a time stamp."""
    level = os.environ.get("RECS_LOG_LEVEL", "").upper()
    if level:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("recs").setLevel(level)




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
