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
from typing import Callable, Iterator

import duckdb

from . import load, sqlfiles
from .config import ModelParams
from .db import configure, open_read_only

Progress = Callable[[str], None]
"""Called with the name of each build step as it starts."""

TABLES_COUNTED = ("users", "items", "events", "user_item_strength", "item_neighbors")


@dataclass
class BuildReport:
    """What a build loaded and what it reported."""

    seconds: float
    rows: dict[str, int]
    issues_by_file: dict[str, int] = field(default_factory=dict)
    issues_by_problem: list[tuple[str, str, int]] = field(default_factory=list)
    events_of_unlisted_users: int = 0


def fingerprint(folder: Path, params: ModelParams) -> str:
    """A digest of everything a build depends on: the CSVs, the SQL and the parameters.

    A CSV counts by size, modification time and its first and last 64 KiB, so
    checking freshness stays cheap at millions of rows.
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
    digest.update(json.dumps(params.as_dict(), sort_keys=True).encode())
    digest.update(duckdb.__version__.encode())
    return digest.hexdigest()


def built_fingerprint(db: Path) -> str | None:
    """The fingerprint stored in db, or None when db is missing or not a database we built."""
    if not db.exists():
        return None
    try:
        con = open_read_only(db)
    except duckdb.Error:
        return None
    try:
        row = con.execute("select value from recs.build_info where key = 'fingerprint'").fetchone()
        return row[0] if row else None
    except duckdb.Error:
        return None
    finally:
        con.close()


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
    db: Path, folder: Path, params: ModelParams, progress: Progress | None = None
) -> BuildReport | None:
    """Build db when it is missing or older than the CSVs; return the report, or None if fresh."""
    wanted = fingerprint(folder, params)
    if built_fingerprint(db) == wanted:
        return None
    with build_lock(db):
        if built_fingerprint(db) == wanted:  # another process built it while we waited
            return None
        return _build_unlocked(db, folder, params, progress)


def build(
    db: Path, folder: Path, params: ModelParams, progress: Progress | None = None
) -> BuildReport:
    """Build db from the CSVs in folder, whatever state it is in."""
    load.data_files(folder)
    with build_lock(db):
        return _build_unlocked(db, folder, params, progress)


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
    con: duckdb.DuckDBPyConnection, params: ModelParams, progress: Progress | None = None, start_at: str = "20"
) -> None:
    """(Re)create model_params and the model tables from the tables load_into made.

    start_at names the first sql/ file prefix to run: the tuner, having
    changed only parameters that later files read (ModelParams.layer_of),
    re-runs those files alone and reuses the tables before them.
    """
    step = progress or (lambda name: None)
    values = params.as_dict()
    # Column names are our own field names; the values are bound.
    columns = ", ".join(f"${name} as {name}" for name in values)
    con.execute(f"create or replace table model_params as select {columns}", values)
    _keep_row_order(con, False)
    for path in sqlfiles.build_files(layer="model"):
        if path.name[:2] < start_at:
            continue
        step(STEP_NAMES.get(path.name[:2], path.stem))
        sqlfiles.run_file(con, path)
        if path.name.startswith(EASE_AFTER) and params.neighbor_model == "ease":
            from . import ease  # numpy, loaded only for this model

            step("computing EASE weights")
            ease.ease_weights(con, l2=params.ease_lambda, max_neighbors=params.max_neighbors)
    _keep_row_order(con, True)


EASE_AFTER = "40"
"""EASE's weights are computed from the tables of this file, before 45 reads them."""


def _keep_row_order(con: duckdb.DuckDBPyConnection, keep: bool) -> None:
    """Whether results keep the order rows were read in. Only staging needs it
    (record numbers); without it DuckDB writes tables in parallel, with less memory.
    Tables that must be sorted say so with order by."""
    con.execute(f"set preserve_insertion_order = {'true' if keep else 'false'}")


def _build_unlocked(db: Path, folder: Path, params: ModelParams, progress: Progress | None) -> BuildReport:
    started = time.perf_counter()
    wanted = fingerprint(folder, params)
    temp = db.with_name(f"{db.name}.building-{os.getpid()}")
    _remove(temp, Path(f"{temp}.wal"))
    con = duckdb.connect(str(temp))
    try:
        configure(con, spill_to=db.with_name(f"{db.name}.spill"))
        load_into(con, folder, progress)
        model_into(con, params, progress)
        if progress:
            progress("saving")
        report = _report(con, time.perf_counter() - started)
        _write_build_info(con, wanted, folder, params, report)
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


def _write_build_info(
    con: duckdb.DuckDBPyConnection, wanted: str, folder: Path, params: ModelParams, report: BuildReport
) -> None:
    info = {
        "fingerprint": wanted,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_dir": str(folder.resolve()),
        "duckdb_version": duckdb.__version__,
        "model_params": json.dumps(params.as_dict(), sort_keys=True),
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

