"""JSON web API over the recommender: a thin FastAPI layer over engine/ (its pieces in webapi/).

    python cli.py serve --port 8000            # builds recs.db first if needed
    RECS_DB=recs.db RECS_DATA_DIR=data uvicorn api:app --port 8000

One engine.Recommender is shared by the whole app (created in the lifespan
handler, building recs.db first when it is missing or stale, from the same
settings the command line reads: the environment and recs.toml). Requests
answered from the in-memory serving index run on the event loop; the rest in
FastAPI's threadpool, where the Recommender gives each thread its own DuckDB
cursor. A rebuild (`python cli.py build`) swaps a new recs.db in atomically;
the Recommender notices the new file on the next query, so the server never
needs a restart.

Every answer is JSON, errors included: 404 for an unknown user or item, 422
for a bad parameter (the message says what is allowed), 503 when the
database cannot be opened, and a bare 500 (logged, never a stack trace in
the response) for anything unexpected. See docs/api.md.
"""

from __future__ import annotations

from webapi.app import configure_logging, create_app, serve
from webapi.schemas import MAX_BODY_BYTES, MAX_K
from webapi.writes import check_writes_allowed, is_loopback

configure_logging()
app = create_app()
"""For `uvicorn api:app`: paths from $RECS_DB and $RECS_DATA_DIR (or recs.toml), read at startup."""


__all__ = ["app", "create_app", "serve", "MAX_K", "MAX_BODY_BYTES", "check_writes_allowed", "is_loopback"]
