"""Building recs.db from the CSVs: into a new file, then swapped in atomically.

Readers never see a half-built database: the build writes recs.db.building-<pid>,
checkpoints and closes it, removes a stale recs.db.wal (DuckDB would replay it
onto the new file), then os.replace()s it over recs.db. Connections already
open keep reading the old file; new ones see the new one. Builds are
serialised by an flock on recs.db.lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import duckdb

from . import load, sqlfiles
from .config import ModelParams
from .db import configure, open_read_only
from .errors import RecsError

if TYPE_CHECKING:
    from .tune import TuneResult

Progress = Callable[[str], None]
"""Called with the name of each build step as it starts."""

TABLES_COUNTED = ("users", "items", "events", "user_item_strength", "item_neighbors")


@dataclass
class BuildReport:
    """What a build loaded, which parameters it used and why, and what it reported."""

    seconds: float
    rows: dict[str, int]
    issues_by_file: dict[str, int] = field(default_factory=dict)
    issues_by_problem: list[tuple[str, str, int]] = field(default_factory=list)
    events_of_unlisted_users: int = 0
    params: ModelParams | None = None
    params_source: str = "pinned"
    """'pinned' (given), 'tuned' (on this data), or why tuning was skipped and what was used instead."""
    tuning: "TuneResult | None" = None


def fingerprint(folder: Path) -> str:
    """A digest of the data and code a build depends on: the CSVs, the SQL and DuckDB's version.

    A CSV counts by size, modification time and its first and last 64 KiB, so
    checking freshness stays cheap at millions of rows. The parameters are
    stored beside it (build_info.model_params) and compared apart.
    """
    digest = hashlib.sha256()
    for path in load.data_files(folder):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(65536))
            handle.seek(max(0, stat.st_size - 65536))
            digest.update(handle.read(65536))
    for path in sqlfiles.build_files():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(duckdb.__version__.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuiltState:
    """What a built recs.db says it was built from."""

    fingerprint: str
    params: dict
    params_source: str


def built_state(db: Path) -> BuiltState | None:
    """The build_info of db, or None when db is missing or not a database we built."""
    if not db.exists():
        return None
    try:
        con = open_read_only(db)
    except duckdb.Error:
        return None
    try:
        info = dict(con.execute("select key, value from recs.build_info").fetchall())
        return BuiltState(info["fingerprint"], json.loads(info["model_params"]), info.get("params_source", "pinned"))
    except (duckdb.Error, KeyError, ValueError):
        return None
    finally:
        con.close()


def is_fresh(state: BuiltState | None, wanted: str, params: ModelParams | None) -> bool:
    """Whether a build in state answers for the data with fingerprint wanted and params
    (None: whichever parameters the build chose)."""
    if state is None or state.fingerprint != wanted:
        return False
    return params is None or state.params == params.as_dict()


@contextmanager
def build_lock(db: Path) -> Iterator[None]:
    """Hold an exclusive lock on <db>.lock while building; waits for a running build."""
    lock_path = db.with_name(db.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built(
    db: Path, folder: Path, params: ModelParams | None = None, progress: Progress | None = None
) -> BuildReport | None:
    """Build db when it is missing, older than the CSVs or SQL, or built with other params.

    params None accepts any parameters a build chose (tuned or not); a build
    it starts chooses them as build() does. Returns the report, or None if fresh.
    """
    wanted = fingerprint(folder)
    if is_fresh(built_state(db), wanted, params):
        return None
    with build_lock(db):
        if is_fresh(built_state(db), wanted, params):  # another process built it while we waited
            return None
        return _build_unlocked(db, folder, params, progress)


def build(
    db: Path,
    folder: Path,
    params: ModelParams | None = None,
    progress: Progress | None = None,
    tune: bool | None = None,
) -> BuildReport:
    """Build db from the CSVs in folder, whatever state it is in.

    params pins the model's parameters. Without them the build chooses:
    it tunes on the data (engine/tune.py) when tune is True, or when tune
    is None and the data has at most tune.MAX_EVENTS events; otherwise it
    reuses the parameters the last build tuned (kept in db), else the
    defaults. BuildReport.params_source says which.
    """
    load.data_files(folder)
    with build_lock(db):
        return _build_unlocked(db, folder, params, progress, tune)


def load_into(con: duckdb.DuckDBPyConnection, folder: Path, progress: Progress | None = None) -> None:
    """Create the validated tables users, items, events and load_issues from the CSVs in folder."""
    step = progress or (lambda name: None)
    con.execute("set TimeZone = 'UTC'")
    con.execute("set enable_progress_bar = false")  # progress is ours to show, on stderr
    with tempfile.TemporaryDirectory(prefix="recs-build-") as scratch:
        for path in sqlfiles.build_files(layer="schema"):
            sqlfiles.run_file(con, path)
        step("reading CSV files")
        paths_read = load.stage_all(con, folder, Path(scratch))
        step("validating rows")
        _keep_row_order(con, False)
        for path in sqlfiles.build_files(layer="load"):
            sqlfiles.run_file(con, path)
        _keep_row_order(con, True)  # line numbers are counted in file order
        load.finish_issues(con, paths_read)


def model_into(
    con: duckdb.DuckDBPyConnection,
    params: ModelParams,
    progress: Progress | None = None,
    only: set[str] | None = None,
) -> None:
    """(Re)create model_params and the model tables from the tables load_into made.

    only names the sql/ file prefixes to run (default: all). The tuner,
    having changed parameters that only some files read, re-runs those
    (layers_after) and reuses the tables of the others.
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
        sqlfiles.run_file(con, path)
        if path.name.startswith(EASE_AFTER) and params.neighbor_model == "ease":
            from . import ease  # numpy, loaded only for this model

            step("computing EASE weights")
            ease.ease_weights(con, l2=params.ease_lambda, max_neighbors=params.max_neighbors)
    _keep_row_order(con, True)


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


def _build_unlocked(
    db: Path, folder: Path, params: ModelParams | None, progress: Progress | None, tune: bool | None = None
) -> BuildReport:
    started = time.perf_counter()
    wanted = fingerprint(folder)
    previous = built_state(db)
    temp = db.with_name(f"{db.name}.building-{os.getpid()}")
    _remove(temp, Path(f"{temp}.wal"))
    con = duckdb.connect(str(temp))
    try:
        configure(con, spill_to=db.with_name(f"{db.name}.spill"))
        load_into(con, folder, progress)
        chosen, source, tuning = _choose_params(con, params, previous, tune, progress)
        model_into(con, chosen, progress)
        for table in SCRATCH_TABLES:  # the tuner's, not the app's: 6.5M rows at 1M events
            con.execute(f"drop table {table}")
        if progress:
            progress("saving")
        report = _report(con, time.perf_counter() - started)
        report.params, report.params_source, report.tuning = chosen, source, tuning
        _write_build_info(con, wanted, folder, report)
        con.execute("checkpoint")
    except BaseException:
        con.close()
        _remove(temp, Path(f"{temp}.wal"))
        raise
    con.close()
    _remove(Path(f"{db}.wal"))  # belongs to the file being replaced; never replay it on the new one
    os.replace(temp, db)
    report.seconds = time.perf_counter() - started
    return report


def _choose_params(
    con: duckdb.DuckDBPyConnection,
    params: ModelParams | None,
    previous: BuiltState | None,
    tune: bool | None,
    progress: Progress | None,
) -> tuple[ModelParams, str, "TuneResult | None"]:
    """The parameters a build uses, why, and the tuning run behind them (see build())."""
    from . import tune as tuning  # tune.py builds on this module

    if params is not None:
        return params, "pinned", None
    events = con.execute("select count(*) from events").fetchone()[0]
    if tune or (tune is None and events <= tuning.MAX_EVENTS):
        result = tuning.tune(con, progress=progress)
        tuning.store_trials(con, result)
        if result.skipped:
            return result.params, f"defaults ({result.skipped})", result
        return result.params, "tuned", result
    why = "tuning off" if tune is False else f"not tuned: {events:,} events > {tuning.MAX_EVENTS:,}"
    if previous is not None and previous.params_source.startswith("tuned"):
        try:
            return ModelParams.from_dict(previous.params), f"tuned earlier ({why})", None
        except RecsError:  # parameters of an older version of the model
            pass
    return ModelParams(), f"defaults ({why})", None


STEP_NAMES = {
    "20": "computing interaction strength",
    "30": "computing popularity",
    "40": "computing item pairs",
    "45": "computing item-item similarity",
    "50": "storing serving queries",
}


def _report(con: duckdb.DuckDBPyConnection, seconds: float) -> BuildReport:
    rows = {
        table: con.execute(f"select count(*) from {table}").fetchone()[0] for table in TABLES_COUNTED
    }
    by_file = dict(con.execute("select file, count(*) from load_issues group by file order by file").fetchall())
    by_problem = con.execute(
        """
        select file, regexp_replace(problem, '''[^'']*''', '''…''', 'g') as kind, count(*)
        from load_issues group by all order by file, count(*) desc, kind
        """
    ).fetchall()
    unlisted = con.execute(
        "select count(*) from events where user_id not in (select user_id from users)"
    ).fetchone()[0]
    return BuildReport(seconds, rows, by_file, by_problem, unlisted)


def _write_build_info(con: duckdb.DuckDBPyConnection, wanted: str, folder: Path, report: BuildReport) -> None:
    info = {
        "fingerprint": wanted,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_dir": str(folder.resolve()),
        "duckdb_version": duckdb.__version__,
        "model_params": json.dumps(report.params.as_dict(), sort_keys=True),
        "params_source": report.params_source,
        "build_seconds": f"{report.seconds:.2f}",
    }
    con.execute("create table build_info (key varchar primary key, value varchar not null)")
    con.executemany("insert into build_info values (?, ?)", list(info.items()))


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

