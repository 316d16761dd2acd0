"""The layers of a build, run into an open DuckDB connection: load (sql/00-12 over the CSVs
and the live log) and model (sql/20-50 over the loaded tables).

engine/build.py runs them into a new recs.db; engine/tune.py re-runs the model layers on
validation splits; engine/evaluate.py on a training part. One runner for all three, and no
module here imports those.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from . import clock, live, load, sqlfiles
from .config import ModelParams

Progress = Callable[[str], None]
"""Called with the name of each build step as it starts."""


class Milestone(str):
    """A progress message that is worth a line of its own in a log (a tuning trial done), not
    only the current step: a display that shows no spinner (stderr piped) prints these."""


class Alert(str):
    """A progress message every display prints as a line of its own, at once (a warning
    before a long build goes on)."""

def load_into(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    progress: Progress | None = None,
    input_format: load.InputFormat | None = None,
    live_log: "live.EventLog | None" = None,
) -> dict[str, str]:
    """Create the validated tables users, items, events and load_issues from the CSVs in folder,
    and from the committed part of live_log (checked by the same rules as events.csv).

    Returns what to record of the live log in build_info: how many bytes were
    read (live_folded_bytes), a digest of their end, and the events kept.
    """
    step = progress or (lambda name: None)
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_progress_bar = false")  # progress is ours to show, on stderr
    folded = {"live_folded_bytes": "0", "live_folded_check": "", "live_folded_events": "0"}
    with tempfile.TemporaryDirectory(prefix="recs-build-") as scratch:
        for path in sqlfiles.build_files(layer="schema"):
            sqlfiles.run_file(con, path)
        step("reading CSV files")
        paths_read = load.stage_all(con, folder, Path(scratch), input_format)
        live_file = None
        if live_log is not None and live_log.committed() > 0:
            # what is committed now: appends during the build are for the overlay
            end = live_log.committed()
            live_file = _stage_live(con, live_log, end)
            con.execute("alter view raw_events rename to raw_events_csv")
            con.execute(
                "create temp view raw_events as "
                "select * from raw_events_csv union all by name select * from raw_live_events"
            )
            folded.update(live_folded_bytes=str(end), live_folded_check=live_log.tail_digest(end))
        step("validating rows")
        con.execute(clock.view_sql())  # the present the timestamp rule reads
        _keep_row_order(con, False)
        for path in sqlfiles.build_files(layer="load"):
            sqlfiles.run_file(con, path)
        _keep_row_order(con, True)  # line numbers are counted in file order
        load.finish_issues(con, paths_read)
        if live_file is not None:
            con.execute(
                """
                insert into load_issues
                select issue.file, lines.line, issue.column_name, issue.problem, issue.action, lines.raw_text
                from load_issue_records as issue
                join live_event_lines as lines on lines.rec_no = issue.rec_no
                where issue.file = $file
                """,
                {"file": live_file},
            )
            kept = con.execute(
                "select count(*) from events_checked where file = $file and row_problem is null",
                {"file": live_file},
            ).fetchone()[0]
            folded["live_folded_events"] = str(kept)
    return folded


def _stage_live(con: duckdb.DuckDBPyConnection, live_log: "live.EventLog", end: int) -> str:
    """The events of the log's first end bytes as raw_live_events (text columns, like a staged
    CSV), each with the log line of its batch for load_issues. Returns the file name reported."""
    events, lines = [], []
    for record in live_log.records(0, end):
        events += record.events
        lines += [record.line] * len(record.events)
    file = live_log.path.name
    columns = list(zip(*events)) if events else [[] for _ in live.COLUMNS]
    live.stage_events(con, "raw_live_events", file, dict(zip(live.COLUMNS, columns)))
    con.execute(
        """
        create temp table live_event_lines as
        select unnest(range($count)) as rec_no, unnest($lines::bigint[]) as line, unnest($raw::varchar[]) as raw_text
        """,
        {"count": len(events), "lines": lines, "raw": [",".join(event) for event in events]},
    )
    return file


def model_into(
    con: duckdb.DuckDBPyConnection,
    params: ModelParams,
    progress: Progress | None = None,
    only: set[str] | None = None,
    pair_users: str | None = None,
) -> None:
    """(Re)create model_params and the model tables from the tables load_into made.

    only names the sql/ file prefixes to run (default: all). The tuner,
    having changed parameters that only some files read, re-runs those
    (layers_after) and reuses the tables of the others. pair_users names a
    table of user_id: the item-pair join (sql/40, and EASE's Gram matrix)
    then reads only those users' rows of user_item_strength, while every
    other layer (popularity, the trend) reads all of them: the tuner's sample.
    """
    step = progress or (lambda name: None)
    values = params.as_dict()
    # Column names are our own field names; the values are bound.
    columns = ", ".join(f"${name} as {name}" for name in values)
    con.execute(f"create or replace table model_params as select {columns}", values)
    _keep_row_order(con, False)
    for path in sqlfiles.build_files(layer="model"):
        if only is not None and path.name[:2] not in only:
            continue
        step(STEP_NAMES.get(path.name[:2], path.stem))
        with _strengths_of(con, pair_users if path.name.startswith(PAIR_JOIN) else None):
            sqlfiles.run_file(con, path)
            if path.name.startswith(EASE_AFTER) and params.neighbor_model == "ease":
                from . import ease  # numpy, loaded only for this model

                step("computing EASE weights")
                ease.ease_weights(con, l2=params.ease_lambda, max_neighbors=params.max_neighbors)
    _keep_row_order(con, True)


PAIR_JOIN = "40"
"""The sql/ file of the item-pair self-join: what a sample of users restricts (model_into's pair_users)."""


@contextmanager
def _strengths_of(con: duckdb.DuckDBPyConnection, users: str | None) -> Iterator[None]:
    """While inside, user_item_strength holds only the rows of the users in table users (a view
    in front of the whole table, put back after); users None: nothing changes."""
    if users is None:
        yield
        return
    con.execute("alter table user_item_strength rename to user_item_strength_all")
    try:
        con.execute(
            f"create view user_item_strength as select * from user_item_strength_all "
            f"where user_id in (select user_id from {users})"
        )
        yield
    finally:
        con.execute("drop view if exists user_item_strength")
        con.execute("alter table user_item_strength_all rename to user_item_strength")


SCRATCH_TABLES = ("item_pairs", "item_weights")
"""Tables of sql/40 that only a tuning run reuses (between trials): a build drops them before
saving, so recs.db keeps its size (they doubled it at 1M events) and a 10M build writes no pair table."""

LAYER_INPUTS = {"20": (), "30": ("20",), "40": ("20",), "45": ("40",), "50": ()}
"""The model layers (sql/ file prefixes) whose tables each layer reads; 50 only stores macros."""


def layers_after(changed: set[str]) -> set[str]:
    """The changed layers and every layer that reads their tables, directly or not; 50 always."""
    result = set(changed) | {"50"}
    while True:
        more = {layer for layer, inputs in LAYER_INPUTS.items() if result & set(inputs)} - result
        if not more:
            return result
        result |= more


EASE_AFTER = "40"
"""EASE's weights are computed from the tables of this file, before 45 reads them."""


def _keep_row_order(con: duckdb.DuckDBPyConnection, keep: bool) -> None:
    """Whether results keep the order rows were read in. Only staging needs it
    (record numbers); without it DuckDB writes tables in parallel, with less memory.
    Tables that must be sorted say so with order by."""
    con.execute(f"set preserve_insertion_order = {'true' if keep else 'false'}")


STEP_NAMES = {
    "20": "computing interaction strength",
    "30": "computing popularity",
    "40": "computing item pairs",
    "45": "computing item-item similarity",
    "50": "storing serving queries",
}
