"""Building recs.db from the CSVs: into a new file, then swapped in atomically.

Readers never see a half-built database: the build writes recs.db.building-<pid>,
checkpoints and closes it, removes a stale recs.db.wal (DuckDB would replay it
onto the new file), then os.replace()s it over recs.db. Connections already
open keep reading the old file; new ones see the new one. Builds are
serialised by an flock on recs.db.lock.

A build never replaces or deletes a file it did not make: a --db path that
holds something else (not a DuckDB file, or a DuckDB database without our
build_info) is refused unless forced; a recs.db of ours that cannot be read
is moved aside to recs.db.corrupt-<UTC time>. Under the lock it removes the
temp files of earlier builds whose process is gone, and nothing else.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from . import live, load, sqlfiles, tune as tuning
from .config import ModelParams
from .layers import SCRATCH_TABLES, Progress, load_into, model_into
from .db import configure, open_read_only
from .errors import BuildError, DiskFull, NotOurDatabase, RecsError

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
    tuning: "tuning.TuneResult | None" = None
    moved_aside: Path | None = None
    """Where an unreadable recs.db of ours was moved before this build, if one was."""


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
    built_at: str | None = None
    input_format: dict = field(default_factory=dict)
    """How the CSVs were read (load.InputFormat's fields); {} for a file of an older build: the defaults."""
    model_dir: str | None = None
    """The Parquet model it was assembled from (build --from-model / --model-out), if any."""


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
        return BuiltState(
            info["fingerprint"], json.loads(info["model_params"]), info.get("params_source", "pinned"),
            info.get("built_at"), json.loads(info.get("input_format", "{}")), info.get("model_dir"),
        )
    except (duckdb.Error, KeyError, ValueError):
        return None
    finally:
        con.close()


DUCKDB_MAGIC = b"DUCK"
"""Bytes 8-11 of every DuckDB database file (after an 8-byte checksum)."""


def inspect_target(db: Path) -> tuple[str, str]:
    """What the file at db is: (kind, why), kind one of missing, ours, foreign, corrupt.

    ours: a DuckDB database with our build_info table. foreign: anything
    else that is readable (not a DuckDB file; a DuckDB database without
    build_info; a DuckDB file of another version). corrupt: a DuckDB file
    that cannot be read, which only a build of ours would have left at
    this path; it is moved aside, never deleted.
    """
    if not db.exists():
        return "missing", ""
    if not db.is_file():
        return "foreign", "not a file"
    with db.open("rb") as handle:
        magic = handle.read(12)[8:12]
    if magic != DUCKDB_MAGIC:
        return "foreign", "not a DuckDB database file"
    try:
        con = open_read_only(db)
    except duckdb.Error as error:
        first = str(error).splitlines()[0]
        if "version" in first.lower():
            return "foreign", f"a DuckDB file of another version: {first}"
        return "corrupt", first
    try:
        tables = con.execute(
            "select count(*) from duckdb_tables() where database_name = 'recs' and table_name = 'build_info'"
        ).fetchone()[0]
    except duckdb.Error as error:
        return "corrupt", str(error).splitlines()[0]
    finally:
        con.close()
    if not tables:
        return "foreign", "a DuckDB database without a build_info table"
    return "ours", ""


def claim_target(db: Path, force: bool) -> Path | None:
    """Make sure a build may replace db: refuse a file that is not ours (unless force),
    move an unreadable one of ours aside. Returns where it was moved, if it was."""
    kind, why = inspect_target(db)
    if kind == "foreign" and not force:
        raise NotOurDatabase(
            f"{db} is not a recs database built by this app ({why}); pick another --db, "
            f"or 'python cli.py build --force' to replace it"
        )
    if kind != "corrupt":
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = db.with_name(f"{db.name}.corrupt-{stamp}")
    os.replace(db, aside)
    wal = Path(f"{db}.wal")
    if wal.exists():  # the damaged file's own log goes with it
        os.replace(wal, Path(f"{aside}.wal"))
    return aside


def _remove_leftovers(db: Path) -> None:
    """Remove <db>.building-<pid> files (and their .wal) of builds whose process is gone.

    Only names of that exact form; a file whose process is alive (another
    build, on a machine sharing the folder, say) is left alone. Run while
    holding the build lock.
    """
    own = re.compile(rf"{re.escape(db.name)}\.building-([0-9]+)(\.wal)?")
    for path in db.parent.iterdir():
        match = own.fullmatch(path.name)
        if match and path.is_file() and not _process_alive(int(match[1])):
            _remove(path)
    # Only builds spill here, one at a time: under the lock, what is left is a dead build's.
    spill = spill_folder(db)
    if spill.is_dir():
        for path in spill.glob("duckdb_temp_*"):
            if path.is_file():
                _remove(path)
        try:
            spill.rmdir()
        except OSError:  # something else is in it: not ours to remove
            pass


def spill_folder(db: Path) -> Path:
    """Where a build of db spills past its memory limit (DuckDB removes it when the build ends)."""
    return db.with_name(f"{db.name}.spill")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a file of ours from before: this build starts afresh
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or no pid at all): not ours to judge
    return True


def is_fresh(
    state: BuiltState | None, wanted: str, params: ModelParams | None, input_format: load.InputFormat | None = None
) -> bool:
    """Whether a build in state answers for the data with fingerprint wanted, params and input_format
    (None: whichever parameters, or input format, the build used)."""
    if state is None or state.fingerprint != wanted:
        return False
    if input_format is not None and load.InputFormat(**state.input_format) != input_format:
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
    db: Path,
    folder: Path,
    params: ModelParams | None = None,
    progress: Progress | None = None,
    input_format: load.InputFormat | None = None,
    tune: bool | None = None,
) -> BuildReport | None:
    """Build db when it is missing, older than the CSVs or SQL, or built with other params.

    params None accepts any parameters a build chose (tuned or not); a build
    it starts chooses them as build() does (tune as there: False reuses the
    last tuned parameters, which a server's background rebuild does). input_format: how the CSVs are
    written; None accepts the one the last build used, and a build it starts
    reads them as that one did (else load.InputFormat.from_env()). Returns the
    report, or None if fresh.
    """
    state = built_state(db)
    if state is not None and state.model_dir and params is None and not folder.is_dir():
        return None  # assembled from a model (a serving replica): there are no CSVs to be fresh against
    wanted = fingerprint(folder)
    if is_fresh(state, wanted, params, input_format):
        return None
    with build_lock(db):
        if is_fresh(built_state(db), wanted, params, input_format):  # another process built it while we waited
            return None
        return _build_unlocked(db, folder, params, progress, tune, input_format=input_format)


def build(
    db: Path,
    folder: Path,
    params: ModelParams | None = None,
    progress: Progress | None = None,
    tune: bool | None = None,
    force: bool = False,
    input_format: load.InputFormat | None = None,
) -> BuildReport:
    """Build db from the CSVs in folder, whatever state it is in.

    A file at db that this app did not build is refused (NotOurDatabase)
    unless force is True, when it is replaced.

    params pins the model's parameters. Without them the build chooses:
    it tunes on the data (engine/tune.py) when tune is True, or when tune
    is None and the data has at most tune.MAX_EVENTS events; otherwise it
    reuses the parameters the last build tuned (kept in db), else the
    defaults. BuildReport.params_source says which.
    """
    load.data_files(folder)
    with build_lock(db):
        return _build_unlocked(db, folder, params, progress, tune, force, input_format)


Fill = Callable[[duckdb.DuckDBPyConnection], "tuple[str, ModelParams, str, dict]"]
"""Fills a new database in place of load + model: returns its fingerprint, parameters, their
source and extra build_info (engine/spark/model.py assembles recs.db from Parquet this way)."""


def build_filled(db: Path, folder: Path, fill: "Fill", progress: Progress | None = None, force: bool = False) -> BuildReport:
    """A recs.db whose tables fill makes (instead of loading the CSVs and running the model),
    claimed, written and swapped in as build() does."""
    with build_lock(db):
        return _build_unlocked(db, folder, None, progress, force=force, fill=fill)


def _build_unlocked(
    db: Path,
    folder: Path,
    params: ModelParams | None,
    progress: Progress | None,
    tune: bool | None = None,
    force: bool = False,
    input_format: load.InputFormat | None = None,
    fill: Fill | None = None,
) -> BuildReport:
    started = time.perf_counter()
    wanted = fingerprint(folder) if fill is None else None
    extra_info: dict = {}
    _remove_leftovers(db)
    moved_aside = claim_target(db, force)
    previous = built_state(db)
    if input_format is None:  # read the CSVs as the last build did, else as the environment says
        input_format = load.InputFormat(**previous.input_format) if previous else load.InputFormat.from_env()
    temp = db.with_name(f"{db.name}.building-{os.getpid()}")
    _remove(temp, Path(f"{temp}.wal"))
    try:
        con = duckdb.connect(str(temp))
    except duckdb.Error as error:
        _remove(temp, Path(f"{temp}.wal"))
        _raise_if_disk_full(error, db)
        raise
    try:
        configure(con, spill_to=spill_folder(db))
        if fill is None:
            extra_info = load_into(con, folder, progress, input_format, live.EventLog(live.log_path(db)))
            chosen, source, tuning = _choose_params(con, params, previous, tune, progress)
            model_into(con, chosen, progress)
            for table in SCRATCH_TABLES:  # the tuner's, not the app's: 6.5M rows at 1M events
                con.execute(f"drop table {table}")
        else:
            (wanted, chosen, source, extra_info), tuning = fill(con), None
        if progress:
            progress("saving")
        report = _report(con, time.perf_counter() - started)
        report.params, report.params_source, report.tuning = chosen, source, tuning
        _write_build_info(con, wanted, folder, report, input_format, extra_info)
        con.execute("checkpoint")
        con.close()
    except BaseException as error:
        try:
            con.close()
        except duckdb.Error:  # a connection a write error invalidated
            pass
        _remove(temp, Path(f"{temp}.wal"))
        _raise_if_disk_full(error, db)
        raise
    _remove(Path(f"{db}.wal"))  # belongs to the file being replaced; never replay it on the new one
    os.replace(temp, db)
    report.seconds = time.perf_counter() - started
    report.moved_aside = moved_aside
    return report


def _raise_if_disk_full(error: BaseException, db: Path) -> None:
    """DiskFull naming the folder that filled up, when error is a write that found no space."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = Path(error.filename).parent if error.filename else db.parent
    elif isinstance(error, (duckdb.Error, BuildError)) and "no space left on device" in str(error).lower():
        named = re.search(r'"([^"]+)"', str(error))  # DuckDB quotes the file it could not write
        where = Path(named[1]).parent if named else db.parent
    else:
        return
    raise DiskFull(
        f"no space left on the disk of {where}: the build stopped and removed its partial file; "
        f"{db.name} was left as it was (free some space, or put --db on another disk)"
    ) from None


def _choose_params(
    con: duckdb.DuckDBPyConnection,
    params: ModelParams | None,
    previous: BuiltState | None,
    tune: bool | None,
    progress: Progress | None,
) -> tuple[ModelParams, str, "tuning.TuneResult | None"]:
    """The parameters a build uses, why, and the tuning run behind them (see build())."""
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
    con: duckdb.DuckDBPyConnection,
    wanted: str,
    folder: Path,
    report: BuildReport,
    input_format: load.InputFormat | None,
    extra: dict | None = None,
) -> None:
    info = {
        "fingerprint": wanted,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_dir": str(folder.resolve()),
        "duckdb_version": duckdb.__version__,
        "model_params": json.dumps(report.params.as_dict(), sort_keys=True),
        "params_source": report.params_source,
        "build_seconds": f"{report.seconds:.2f}",
        "input_format": json.dumps(dataclasses.asdict(input_format or load.InputFormat()), sort_keys=True),
        **(extra or {}),  # the live events folded in (load_into), or where a build from a Parquet model came from
    }
    con.execute("create table build_info (key varchar primary key, value varchar not null)")
    con.executemany("insert into build_info values (?, ?)", list(info.items()))


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

