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
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from . import live, load, sqlfiles, tune as tuning
from .config import ModelParams
from .layers import SCRATCH_TABLES, Alert, Progress, load_into, model_into
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
    current: bool = False
    """Nothing was built: recs.db was already built from this data, SQL and input format with the
    parameters this build would use, and no live events wait to be folded in (build(rebuild=True)
    builds anyway)."""
    replaced_data_dir: str | None = None
    """The other data folder the recs.db this build replaced was built from, if it was."""


def fingerprint(folder: Path, input_format: load.InputFormat | None = None) -> str:
    """A digest of the data and code a build depends on: the CSVs, the SQL and DuckDB's version.

    A CSV counts by size, modification time and its first and last 64 KiB, so
    checking freshness stays cheap at millions of rows. The parameters are
    stored beside it (build_info.model_params) and compared apart.
    """
    digest = hashlib.sha256()
    for path in load.data_files(folder, input_format):
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
    info: dict = field(default_factory=dict)
    """Every row of its build_info (data_dir, the live events folded in, what the tuning was keyed on...)."""

    @property
    def data_dir(self) -> str | None:
        """The data folder it was built from (absolute), if it says."""
        return self.info.get("data_dir")


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
            info.get("built_at"), json.loads(info.get("input_format", "{}")), info.get("model_dir"), info,
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


def reading_format(state: BuiltState | None, input_format: load.InputFormat | None) -> load.InputFormat:
    """How to read the CSVs: input_format, else as the build in state read them, else as the environment says."""
    if input_format is not None:
        return input_format
    return load.InputFormat(**state.input_format) if state is not None else load.InputFormat.from_env()


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
    wanted = fingerprint(folder, reading_format(state, input_format))
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
    rebuild: bool = False,
    tune_sample: int | None = None,
) -> BuildReport:
    """Build db from the CSVs in folder, unless it is current.

    A file at db that this app did not build is refused (NotOurDatabase)
    unless force is True, when it is replaced. db is current (current_state:
    nothing is built, BuildReport.current is True) when it was built from
    this data, SQL and input format with the parameters this build would
    choose and no live events wait; rebuild or force builds anyway.

    params pins the model's parameters. Without them the build chooses
    (_choose_params): tune True searches afresh; tune False reuses the
    parameters the last build tuned (kept in db), else the defaults; tune
    None reuses tuned parameters whose key (tuning_key) and data still hold
    (the same data, or within NEAR_CHANGE of it), else tunes: on every event
    up to tune.MAX_EVENTS, above it on a sample of tune.SAMPLE_EVENTS events;
    tune_sample N samples about N events whenever there are more (0: never
    sample). BuildReport.params_source says which.
    """
    load.data_files(folder, reading_format(built_state(db), input_format))
    with build_lock(db):
        _remove_leftovers(db)  # a dead build's files go, whether or not this one builds
        if not (rebuild or force):
            state = current_state(db, folder, params, tune, input_format, tune_sample)
            if state is not None:
                return _current_report(db, state)
        return _build_unlocked(db, folder, params, progress, tune, force, input_format, tune_sample=tune_sample)


def tuning_key(input_format: load.InputFormat, tune_sample: int | None) -> str:
    """A digest of what tuned parameters depend on besides the data: the SQL (the model's files
    and the hold-out's), DuckDB's version, the tuning plan and its rules (tune.plan_digest), the
    input format (every field of load.InputFormat) and the sample asked for."""
    digest = hashlib.sha256()
    for path in [*sqlfiles.build_files(), sqlfiles.SQL_DIR / "evaluation.sql"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    form = json.dumps(dataclasses.asdict(input_format), sort_keys=True, default=str)
    for part in (duckdb.__version__, tuning.plan_digest(), form, json.dumps(tune_sample)):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()


NEAR_CHANGE = 0.05
"""A build reuses parameters tuned on data of the same folder whose events, users and items each
differ from this data's by at most this share (a few percent more events); beyond it, it tunes
again. Counted against the data they were tuned on, not the last build's, so small changes do
not add up unnoticed."""


def current_state(
    db: Path,
    folder: Path,
    params: ModelParams | None,
    tune: bool | None,
    input_format: load.InputFormat | None,
    tune_sample: int | None = None,
) -> BuiltState | None:
    """db's state when a build with these arguments would make the same model again, else None:
    the same CSVs, SQL, input format and data folder, no live events waiting to be folded in, and
    the same parameters (pinned: equal; tune False: not pinned before; tune None: chosen under the
    same tuning_key). tune True (a fresh search) is never current, nor is a db with a WAL beside it
    (left by a writer that is not a build of ours; the rebuild removes it)."""
    if tune is True or Path(f"{db}.wal").exists():  # a log our builds never leave: a rebuild removes it
        return None
    state = built_state(db)
    if state is None or state.model_dir:
        return None
    form = reading_format(state, input_format)
    try:
        if load.InputFormat(**state.input_format) != form or state.fingerprint != fingerprint(folder, form):
            return None
        if state.data_dir != str(folder.resolve()) or _live_events_waiting(db, state):
            return None
    except RecsError:  # a file or the live log that cannot be read: the build says what is wrong
        return None
    if params is not None:
        return state if state.params == params.as_dict() else None
    if tune is False:
        return state if state.params_source != "pinned" else None
    return state if state.info.get("params_key") == tuning_key(form, tune_sample) else None


def next_tuning(
    db: Path,
    folder: Path,
    params: ModelParams | None = None,
    input_format: load.InputFormat | None = None,
    tune_sample: int | None = None,
) -> str:
    """What the next plain build does about its parameters, in words: current, reuse or tune, and why."""
    if params is not None:
        return "none: the parameters are pinned"
    state = built_state(db)
    form = reading_format(state, input_format)
    if current_state(db, folder, None, None, input_format, tune_sample) is not None:
        return "none: recs.db is current (build --rebuild builds it again with the same parameters)"
    info = state.info if state is not None else {}
    sample = (
        f"on a sample of about {tune_sample:,} events when there are more" if tune_sample
        else "on every event" if tune_sample == 0
        else f"on every event up to {tuning.MAX_EVENTS:,}, above on a sample of {tuning.SAMPLE_EVENTS:,}"
    )
    why_not = _why_not_reused(info, tuning_key(form, tune_sample), folder)
    if why_not:
        return f"tune ({sample}): {why_not}"
    try:
        same = info.get("tuned_fingerprint") == fingerprint(folder, form)
    except RecsError as error:
        return f"unknown: {error}"
    if same:
        return f"reuse ({info.get('tuned_source')}): the data is unchanged since"
    return (
        f"reuse ({info.get('tuned_source')}) if events, users and items each changed by at most "
        f"{NEAR_CHANGE:.0%} since ({int(info.get('tuned_events', 0)):,} events), else tune ({sample})"
    )


def _why_not_reused(info: dict, key: str, folder: Path) -> str | None:
    """Why the parameters tuned before (build_info's TUNED_INFO) cannot be reused under key for
    folder, or None when they can, the data permitting (the same, or within NEAR_CHANGE)."""
    if not info.get("tuned_key"):
        return "no tuned parameters to reuse"
    if info["tuned_key"] != key:
        return "the SQL, the tuning plan, the input format or the sample changed since the last tuning"
    if info.get("tuned_data_dir") != str(folder.resolve()):
        return "the last tuning was on another data folder"
    return None


def _live_events_waiting(db: Path, state: BuiltState) -> bool:
    """Whether the live log holds committed events the build in state did not fold in."""
    log = live.EventLog(live.log_path(db))
    committed = log.committed()
    folded = int(state.info.get("live_folded_bytes", "0") or 0)
    if committed != folded:
        return True
    return committed > 0 and log.tail_digest(committed) != state.info.get("live_folded_check", "")


def _current_report(db: Path, state: BuiltState) -> BuildReport:
    """The report of a build that found db current: what db holds, nothing built."""
    started = time.perf_counter()
    con = open_read_only(db)
    try:
        con.execute("use recs")
        report = _report(con, 0.0)
    finally:
        con.close()
    report.params = ModelParams.from_dict(state.params)
    report.params_source = state.params_source
    report.current = True
    report.seconds = time.perf_counter() - started
    return report


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
    tune_sample: int | None = None,
) -> BuildReport:
    started = time.perf_counter()
    extra_info: dict = {}
    _remove_leftovers(db)
    moved_aside = claim_target(db, force)
    previous = built_state(db)
    input_format = reading_format(previous, input_format)
    wanted = fingerprint(folder, input_format) if fill is None else None
    replaced_data_dir = None
    if fill is None and previous is not None and previous.data_dir and previous.data_dir != str(folder.resolve()):
        replaced_data_dir = previous.data_dir  # the data decides: the build goes on, but says so first
        if progress:
            progress(Alert(
                f"Warning: {db} was built from the data folder {previous.data_dir}; "
                f"this build replaces it with a model of {folder.resolve()}"
            ))
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
            key = tuning_key(input_format, tune_sample)
            chosen, source, tuning, tuned_info = _choose_params(
                con, db, folder, params, previous, tune, progress, key, wanted, tune_sample
            )
            extra_info = {**extra_info, **tuned_info}
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
    report.replaced_data_dir = replaced_data_dir
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


TUNED_INFO = ("tuned_key", "tuned_fingerprint", "tuned_events", "tuned_users", "tuned_items", "tuned_data_dir", "tuned_source")
"""What build_info keeps of the tuning run behind a model's parameters, carried along while a later
build reuses them: its tuning_key, the data it ran on (fingerprint, counts, folder) and what it chose."""


def _choose_params(
    con: duckdb.DuckDBPyConnection,
    db: Path,
    folder: Path,
    params: ModelParams | None,
    previous: BuiltState | None,
    tune: bool | None,
    progress: Progress | None,
    key: str,
    wanted: str,
    tune_sample: int | None,
) -> tuple[ModelParams, str, "tuning.TuneResult | None", dict]:
    """The parameters a build uses, why, the tuning run behind them (see build()) and what to
    keep of it in build_info: TUNED_INFO, and params_key when the plain rule (tune None) would
    choose them again under key."""
    if params is not None:
        return params, "pinned", None, {}
    events, users, items = con.execute(
        "select count(*), count(distinct user_id), (select count(*) from items) from events"
    ).fetchone()
    info = previous.info if previous is not None else {}
    earlier = _tuned_params(previous)
    carried = {name: info[name] for name in TUNED_INFO if name in info} if earlier is not None else {}
    if tune is False:
        if earlier is not None:
            _copy_trials(con, db)
            return earlier, "tuned earlier (tuning off)", None, carried
        return ModelParams(), "defaults (tuning off)", None, {}
    if tune is None and _why_not_reused(info, key, folder) is None:
        same = info.get("tuned_fingerprint") == wanted and info.get("tuned_events") == str(events)
        if same and earlier is None and previous.params_source.startswith("defaults (too little data"):
            return ModelParams(), previous.params_source, None, {"params_key": key}  # it would say so again
        change = _change(info, events, users, items)
        if earlier is not None and (same or change is not None):
            _copy_trials(con, db)
            why = "the data is unchanged" if same else f"{events:,} events now, {change:+.1%} since"
            return earlier, f"{info['tuned_source']}; reused: {why}", None, {**carried, "params_key": key}
    sample = tuning.sample_for(events, tune_sample)
    result = tuning.tune(con, progress=progress, sample_events=sample)
    tuning.store_trials(con, result)
    tuned = {
        "tuned_key": key, "tuned_fingerprint": wanted, "tuned_events": str(events), "tuned_users": str(users),
        "tuned_items": str(items), "tuned_data_dir": str(folder.resolve()), "tuned_source": result.source,
        "params_key": key,
    }
    return result.params, result.source, result, tuned


def chosen_params(
    db: Path | None,
    folder: Path,
    params: ModelParams | None = None,
    tune: bool | None = None,
    input_format: load.InputFormat | None = None,
    tune_sample: int | None = None,
    progress: Progress | None = None,
) -> tuple[ModelParams, str, dict]:
    """The parameters a DuckDB build of folder into db would choose, by the same rule
    (_choose_params: pinned, reused while their key holds, else tuned, on a sample above
    tune.MAX_EVENTS), why, and what build_info keeps of the tuning: for a build on another
    engine (Spark), which tunes nothing itself. The CSVs (not the live log, which such a
    build does not read) are loaded into a scratch DuckDB file beside db and the tuner runs
    there, in this process."""
    if params is not None:
        return params, "pinned", {}
    previous = built_state(db) if db is not None else None
    input_format = reading_format(previous, input_format)
    key, wanted = tuning_key(input_format, tune_sample), fingerprint(folder, input_format)
    parent = db.parent if db is not None else None
    with tempfile.TemporaryDirectory(prefix="recs-tuning-", dir=parent) as scratch:
        con = duckdb.connect(str(Path(scratch) / "tuning.db"))
        try:
            configure(con, spill_to=Path(scratch) / "spill")
            load_into(con, folder, progress, input_format)
            chosen, source, _, info = _choose_params(
                con, db, folder, None, previous, tune, progress, key, wanted, tune_sample
            )
        finally:
            con.close()
    return chosen, source, info


def _tuned_params(previous: BuiltState | None) -> ModelParams | None:
    """The parameters of the build in previous when they were tuned (then or earlier), else None."""
    if previous is None or not previous.params_source.startswith("tuned"):
        return None
    try:
        return ModelParams.from_dict(previous.params)
    except RecsError:  # parameters of an older version of the model
        return None


def _change(info: dict, events: int, users: int, items: int) -> float | None:
    """The change in events since the tuning run info describes, when events, users and items
    each changed by at most NEAR_CHANGE; else None."""
    try:
        before = [int(info[name]) for name in ("tuned_events", "tuned_users", "tuned_items")]
    except (KeyError, ValueError):
        return None
    shares = [abs(now - then) / max(then, 1) for now, then in zip((events, users, items), before)]
    if max(shares) > NEAR_CHANGE:
        return None
    return (events - before[0]) / max(before[0], 1)


def _copy_trials(con: duckdb.DuckDBPyConnection, db: Path) -> None:
    """Keep the tuning_trials of the recs.db being replaced (the run behind reused parameters)."""
    try:
        old = open_read_only(db)
    except duckdb.Error:
        return
    try:
        rows = old.execute("select * from recs.tuning_trials order by trial").fetchall()
    except duckdb.Error:  # a build that kept none
        return
    finally:
        old.close()
    tuning.store_trials(con, tuning.TuneResult(ModelParams()))
    if rows:
        con.executemany(f"insert into tuning_trials values ({', '.join('?' * len(rows[0]))})", rows)


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

