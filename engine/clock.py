"""The present, from one clock: what "now" means to every rule that reads it.

An event dated more than a day after now is refused (timestamp_problem in
sql/05_rules.sql), by the loader and the live path alike. Tests and replays
set the present with RECS_NOW (an ISO 8601 date and time, UTC unless it says
otherwise), so that a fixture does not depend on the day it runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from .errors import BadArgument

ENV = "RECS_NOW"


def now() -> datetime:
    """The present as a naive UTC datetime: $RECS_NOW when set, else the system clock."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadArgument(f"{ENV}={text!r} is not an ISO 8601 date and time (e.g. 2026-12-04T18:00:00Z)") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def view_sql() -> str:
    """The statement that makes the one-row view clock(now_at) the rules read (DuckDB and Spark)."""
    return f"create or replace temp view clock as select cast('{now():%Y-%m-%d %H:%M:%S}' as timestamp) as now_at"
