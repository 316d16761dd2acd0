"""Live events: checked by the loader's rules, kept in a log beside recs.db, overlaid on the model.

An event accepted by `POST /events` or `python cli.py ingest` passes the
first statement of sql/12_events.sql (the rules events.csv is loaded with),
then its batch is appended to <db>.live-events.log as one framed, checksummed
record and made durable before it is acknowledged (engine/eventlog.py: the
format, what counts as damage, and repair). A batch is all or nothing.
Appends are serialised by an flock on the log, so concurrent writers
(threads or processes) lose nothing.

Every process that opens recs.db reads the log past what the build folded
(build_info.live_folded_bytes) into an in-memory catalog, runs
sql/live_overlay.sql, and puts temp views in front of the built tables: the
serving macros then answer with the live events. A build folds the log's
committed part into the model (engine/build.py stages it like events.csv)
and records how far it read, so no event counts twice.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb

from . import clock, load, sqlfiles
from .errors import BadArgument, DataFileError
from .eventlog import EventLog, log_path  # noqa: F401 (the log's home; re-exported for callers of live)

COLUMNS = ("user_id", "item_id", "event_type", "watch_seconds", "timestamp")
MAX_BATCH = 10_000
"""The most events one POST /events may carry."""

OVERLAY_SQL = sqlfiles.SQL_DIR / "live_overlay.sql"
OVERLAY_TABLES_SQL = sqlfiles.SQL_DIR / "live_tables.sql"
EVENTS_SQL = sqlfiles.SQL_DIR / "12_events.sql"


def _check_statement() -> str:
    """The first statement of sql/12_events.sql: every rule an event must pass, as one query."""
    return duckdb.extract_statements(EVENTS_SQL.read_text(encoding="utf-8"))[0].query


CHECK_EVENTS = _check_statement()

# The temp views that put the live rows in front of the built tables (see sql/live_overlay.sql).
OVERLAY_VIEWS = (
    """
    create or replace temp view user_item_strength as
    select * from recs.main.user_item_strength
    where user_key not in (select user_key from live.user_keys)
    union all by name
    select * from live.user_item_strength
    """,
    """
    create or replace temp view user_keys as
    select * from recs.main.user_keys
    where user_id not in (select user_id from live.user_keys)
    union all by name
    select * from live.user_keys
    """,
    "create or replace temp view item_popularity as select * from live.item_popularity",
)


@dataclass(frozen=True)
class Problem:
    """One problem of an invalid event: its position in the batch (0-based), the field, what is wrong."""

    index: int
    field: str
    problem: str

    def to_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "problem": self.problem}


# --- checking events with the loader's own rules -------------------------------------


def as_text(value) -> str | None:
    """A JSON value as the text a CSV field would hold (None stays None: a blank field).

    A number is kept as it was written where it is plain (the API parses JSON numbers
    as text, see api.parse_events); a float becomes positional text, 1e-05 as 0.00001.
    TypeError for anything else, ValueError for text that is not valid Unicode (a lone
    surrogate, which JSON can spell but no file can hold)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode text (a lone surrogate)") from None
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, Decimal)):
        number = Decimal(repr(value)) if isinstance(value, float) else value
        if not number.is_finite() or abs(number.adjusted()) > 15:
            return str(value)[:40]  # no positional form worth writing out: the rules refuse it
        return format(number, "f")
    raise TypeError(type(value).__name__)


def _shown(name: str) -> str:
    """A field name from a request, short enough to quote back."""
    return repr(name[:40] + "..." if len(name) > 40 else name)


FIELD_PROBLEMS = (
    ("user_id", "problem_user_id"),
    ("item_id", "problem_item_id"),
    ("item_id", "problem_item_listed"),
    ("event_type", "problem_event_type"),
    ("watch_seconds", "problem_watch_seconds"),
    ("timestamp", "problem_timestamp"),
)
"""Each field and the column of sql/12's events_checked that says what is wrong with it."""

MAX_UNEXPECTED = 5
"""The most unexpected fields of one event named one by one; the rest are counted."""


def check_rows(cursor: duckdb.DuckDBPyConnection, rows: list[dict]) -> tuple[list[tuple], list[Problem]]:
    """Check events (dicts of the columns of events.csv) by the rules of sql/12_events.sql.

    Returns the good events as log rows and the problems: every problem of each bad event (its
    index in rows, the field, what is wrong), by index and then in the order of the columns.
    cursor reads the model's items and event types; the check runs in its temp catalog.
    """
    problems: list[Problem] = []
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    not_objects = set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append(Problem(index, "event", "must be an object with the fields " + ", ".join(COLUMNS)))
            not_objects.add(index)
            row = {}
        extra = sorted(set(row) - set(COLUMNS))
        for name in extra[:MAX_UNEXPECTED]:
            expected = ", ".join(COLUMNS)
            problems.append(Problem(index, name[:40], f"unexpected field {_shown(name)} (expected {expected})"))
        if len(extra) > MAX_UNEXPECTED:
            problems.append(Problem(index, "event", f"{len(extra) - MAX_UNEXPECTED:,} more unexpected fields"))
        for name in COLUMNS:
            try:
                columns[name].append(as_text(row.get(name)))
            except TypeError as error:
                problems.append(Problem(index, name, f"{name} must be text or a number, not {error}"))
                columns[name].append(None)
            except ValueError as error:
                problems.append(Problem(index, name, f"{name} {error}"))
                columns[name].append(None)
    cursor.execute("drop table if exists temp.events_checked")
    cursor.execute(clock.view_sql())
    stage_events(cursor, "raw_events", "request", columns)
    try:
        cursor.execute(CHECK_EVENTS)
        checked = cursor.execute(
            f"""
            select
                rec_no,
                row_problem,
                {", ".join(column for _, column in FIELD_PROBLEMS)},
                user_id,
                item_id,
                event_type,
                seconds_text,
                watched_at
            from temp.events_checked
            order by rec_no
            """
        ).fetchall()
    finally:
        cursor.execute("drop table if exists temp.events_checked")
        cursor.execute("drop table if exists temp.raw_events")
    # a field Python refused already (not text, say) reads as blank here: its problem is Python's
    named = {(problem.index, problem.field) for problem in problems}
    refused = {problem.index for problem in problems}
    good = []
    for rec_no, row_problem, *rest in checked:
        field_problems, values = rest[:len(FIELD_PROBLEMS)], rest[len(FIELD_PROBLEMS):]
        if row_problem is None:
            if rec_no not in refused:
                user_id, item_id, event_type, seconds, watched_at = values
                good.append((user_id, item_id, event_type, seconds, _utc_text(watched_at)))
            continue
        if rec_no in not_objects:
            continue  # "must be an object" says it all
        for (field, _), problem in zip(FIELD_PROBLEMS, field_problems):
            if problem is not None and (rec_no, field) not in named:
                problems.append(Problem(rec_no, field, problem))
    order = {name: position for position, name in enumerate(COLUMNS)}
    problems.sort(key=lambda problem: (problem.index, order.get(problem.field, len(COLUMNS))))
    return good, problems


def stage_events(cursor: duckdb.DuckDBPyConnection, table: str, file: str, columns: dict[str, list]) -> None:
    """Events as the temp table `table` (file, rec_no and the columns of events.csv, as text), the
    shape a staged events.csv has: what the first statement of sql/12_events.sql reads."""
    cursor.execute(
        f"""
        create or replace temp table {table} as
        select
            $file as file,
            unnest(range($count)) as rec_no,
            unnest($user_id::varchar[]) as user_id,
            unnest($item_id::varchar[]) as item_id,
            unnest($event_type::varchar[]) as event_type,
            unnest($watch_seconds::varchar[]) as watch_seconds,
            unnest($timestamp::varchar[]) as "timestamp"
        """,
        {"file": file, "count": len(columns["user_id"]), **{name: list(columns[name]) for name in COLUMNS}},
    )


def _utc_text(value) -> str:
    """A checked event time (a naive UTC datetime) as the log writes it."""
    return value.isoformat() + "Z"


@dataclass(frozen=True)
class IngestReport:
    """What `ingest` kept and what it reported, by line of the file."""

    accepted: int
    issues: list[dict]
    """file, line, column_name, problem, action, raw_text: as load_issues."""


def check_file(db: Path, path: Path, input_format: load.InputFormat | None = None) -> tuple[list[tuple], list[dict]]:
    """Check a CSV of events as the loader checks events.csv, against the model in db, read
    as input_format says (None: as db's build read its events file, column names included).

    Returns the good events as log rows and the bad rows as load issues
    (file, line, column_name, problem, action, raw_text).
    """
    if not path.is_file():
        raise DataFileError(f"{path} not found")
    spec = load.SPEC_OF["events"]
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach '{str(db).replace(chr(39), chr(39) * 2)}' as recs (read_only)")
        for schema in sqlfiles.build_files(layer="schema"):
            sqlfiles.run_file(con, schema)
        con.execute("create temp view items as select * from recs.items")
        if input_format is None:
            built = con.execute("select value from recs.build_info where key = 'input_format'").fetchone()
            input_format = load.InputFormat(**json.loads(built[0])) if built else load.InputFormat()
            input_format = dataclasses.replace(input_format, files=())  # the file is the one given
        with tempfile.TemporaryDirectory(prefix="recs-ingest-") as scratch:
            read = load.stage(con, path, spec, Path(scratch), input_format, path.name)
            con.execute(clock.view_sql())
            con.execute(CHECK_EVENTS)
            con.execute(
                """
                insert into load_issue_records (file, rec_no, column_name, problem, action)
                select file, rec_no, problem_column, row_problem, 'row skipped'
                from events_checked
                where row_problem is not null
                """
            )
            load.finish_issues(con, {path.name: read})
        good = [
            (user_id, item_id, event_type, seconds, _utc_text(watched_at))
            for user_id, item_id, event_type, seconds, watched_at in con.execute(
                """
                select user_id, item_id, event_type, seconds_text, watched_at
                from events_checked where row_problem is null order by rec_no
                """
            ).fetchall()
        ]
        result = con.execute("select * from load_issues order by line")
        names = [column[0] for column in result.description]
        issues = [dict(zip(names, row)) for row in result.fetchall()]
        return good, issues
    finally:
        con.close()


# --- the overlay a reading process keeps ------------------------------------------------


class LiveOverlay:
    """The live events of one recs.db in one process, and the overlay tables made from them.

    attach() is called with each DuckDB instance a ReadOnlyDatabase opens
    (a new build: a new instance); sync() reads what was committed since and
    re-runs sql/live_overlay.sql; prepare() gives a cursor the temp views.
    """

    def __init__(self, db: Path):
        self.log = EventLog(log_path(db))
        self._lock = threading.Lock()
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._stamp = None
        self.consumed = 0
        self.events = 0
        """Live events in the overlay (past what the build folded)."""
        self.skipped = 0
        """Logged events the current model cannot use (their item left the catalogue)."""
        self.version = 0
        """Bumped each time the overlay tables change."""
        self.user_versions: dict[str, int] = {}
        """Each user with live events, and the version at which their rows last changed."""
        self._first_at: float | None = None

    def attach(self, instance: duckdb.DuckDBPyConnection) -> None:
        """Start over on a newly opened model: read the log past what its build folded."""
        with self._lock:
            instance.execute("attach ':memory:' as live")
            cursor = instance.cursor()
            try:
                cursor.execute("use recs")
                sqlfiles.run_file(cursor, OVERLAY_TABLES_SQL)
            finally:
                cursor.close()
            self._instance, self._stamp = instance, None
            self.consumed = self._folded(instance)
            self.events = self.skipped = 0
            self.user_versions = {}
            self.version += 1
        self.sync(wait=True)

    def _folded(self, instance: duckdb.DuckDBPyConnection) -> int:
        """Where the build of this model stopped reading the log (0: from the start)."""
        try:
            info = dict(
                instance.execute(
                    "select key, value from recs.build_info where key in ('live_folded_bytes', 'live_folded_check')"
                ).fetchall()
            )
        except duckdb.Error:
            return 0
        folded = int(info.get("live_folded_bytes") or 0)
        if folded and self.log.tail_digest(folded) != info.get("live_folded_check"):
            return 0  # another log than the one the build read: all of it is new to this model
        return folded

    def sync(self, wait: bool = False) -> bool:
        """Take in what was committed to the log since the last look; True when the overlay changed.

        When another thread is taking events in already, returns at once (unless wait): a
        reader answers from the overlay as it is, a few milliseconds old, instead of queueing.
        """
        stamp = self.log.stamp()
        if stamp is None:
            self.log.committed()  # a log without its committed length: LogDamaged, never "no events"
        if stamp == self._stamp or self._instance is None:
            return False
        if not self._lock.acquire(blocking=wait):
            return False
        try:
            if stamp == self._stamp:
                return False
            end = self.log.committed()
            rows = self.log.read(self.consumed, end) if end > self.consumed else []
            cursor = self._instance.cursor()
            try:
                cursor.execute("use recs")
                cursor.execute("set TimeZone = 'UTC'")
                if rows:
                    events = [dict(zip(COLUMNS, row)) for row in rows]
                    good, problems = check_rows(cursor, events)
                    self.skipped += len(problems)
                    if good:
                        self._take_in(cursor, good)
            finally:
                cursor.close()
            self.consumed = max(self.consumed, end)
            self._stamp = stamp
            return bool(rows)
        finally:
            self._lock.release()

    def add_checked(self, good: list[tuple], start: int, end: int) -> None:
        """Take in rows this process checked and appended at [start, end) of the log without
        reading them back, when nothing else was appended before them; else sync()."""
        with self._lock:
            if self._instance is not None and self.consumed == start:
                cursor = self._instance.cursor()
                try:
                    cursor.execute("use recs")
                    cursor.execute("set TimeZone = 'UTC'")
                    self._take_in(cursor, good)
                finally:
                    cursor.close()
                self.consumed = end
                stamp = self.log.stamp()  # first: an append after it makes committed() larger
                if self.log.committed() == end:
                    self._stamp = stamp
                return
        self.sync(wait=True)

    def _take_in(self, cursor: duckdb.DuckDBPyConnection, good: list[tuple]) -> None:
        """Add checked events to live.events and recompute the overlay for their users, in one
        transaction: a reader (another cursor) sees the overlay before the batch or after it,
        never half of it (sql/live_overlay.sql deletes a user's rows, then inserts new ones)."""
        cursor.execute("begin transaction")
        try:
            self._recompute(cursor, good)
            cursor.execute("commit")
        except BaseException:
            cursor.execute("rollback")
            raise
        changed = {row[0] for row in good}
        version = self.version + 1
        if not self.events:
            self._first_at = time.monotonic()
        # published after the commit, each by one assignment: what a reader sees is never newer
        # than the rows it reads (apply_live takes user_versions, then reads)
        self.user_versions = {**self.user_versions, **{user_id: version for user_id in changed}}
        self.events += len(good)
        self.version = version

    def _recompute(self, cursor: duckdb.DuckDBPyConnection, good: list[tuple]) -> None:
        cursor.execute(
            """
            insert into live.events
            select
                unnest($user_id::varchar[]),
                unnest($item_id::varchar[]),
                unnest($event_type::varchar[]),
                unnest($seconds::varchar[])::double,
                unnest($at::varchar[])::timestamptz::timestamp
            """,
            {
                "user_id": [row[0] for row in good],
                "item_id": [row[1] for row in good],
                "event_type": [row[2] for row in good],
                "seconds": [row[3] for row in good],
                "at": [row[4] for row in good],
            },
        )
        changed = sorted({row[0] for row in good})
        cursor.execute("delete from live.changed")
        cursor.execute("insert into live.changed select unnest($ids::varchar[])", {"ids": changed})
        fresh = [user_id for user_id in changed if user_id not in self.user_versions]
        if fresh:
            keys = cursor.execute(
                "select user_id, user_key from recs.main.user_keys where user_id in (select unnest($ids::varchar[]))",
                {"ids": fresh},
            ).fetchall()
            if keys:
                cursor.execute(
                    "insert into live.built_keys select unnest($ids::varchar[]), unnest($keys::integer[])",
                    {"ids": [row[0] for row in keys], "keys": [row[1] for row in keys]},
                )
                self._copy_built_rows(cursor, [int(row[1]) for row in keys])
        sqlfiles.run_file(cursor, OVERLAY_SQL)

    @staticmethod
    def _copy_built_rows(cursor: duckdb.DuckDBPyConnection, keys: list[int]) -> None:
        """Copy the built rows of these users into live.built_rows, one key lookup each.

        user_item_strength is sorted by user_key, so `user_key = n` reads one
        row group; a filter on a list of keys reads the whole table (45 ms
        at 1M events against 0.8 ms per key). Past a few hundred users one
        scan is cheaper."""
        columns = "user_key, item_key, count_plays, watch_seconds, last_watched_at, base_strength, days_before_end"
        if len(keys) > 200:
            cursor.execute(
                f"insert into live.built_rows select {columns} from recs.main.user_item_strength "
                "where user_key in (select unnest($keys::integer[]))",
                {"keys": keys},
            )
            return
        for start in range(0, len(keys), 50):
            # integers of ours, written into the query: each branch keeps its own equality filter
            branches = " union all ".join(
                f"select {columns} from recs.main.user_item_strength where user_key = {int(key)}"
                for key in keys[start:start + 50]
            )
            cursor.execute(f"insert into live.built_rows {branches}")

    def waiting_seconds(self) -> float | None:
        """How long the oldest live event of the overlay has waited for a build (None: none waits)."""
        if not self.events or self._first_at is None:
            return None
        return time.monotonic() - self._first_at

    def is_current(self) -> bool:
        """Whether nothing was committed to the log since the last sync()."""
        return self._instance is not None and self.log.stamp() == self._stamp

    def changed_since(self, version: int) -> list[str]:
        """The users whose overlay rows changed after version."""
        versions = self.user_versions  # one snapshot: a writer replaces the dict, never changes it
        return [user_id for user_id, changed in versions.items() if changed > version]

    def prepare(self, cursor: duckdb.DuckDBPyConnection, state) -> None:
        """Give cursor the temp views once there are live events (state: the thread's store)."""
        if self.events and not getattr(state, "overlaid", False):
            for view in OVERLAY_VIEWS:
                cursor.execute(view)
            state.overlaid = True


def ingest(db: Path, path: Path, input_format: load.InputFormat | None = None) -> IngestReport:
    """Append the good events of a CSV file to db's live log; report the bad ones by line
    (input_format: as check_file)."""
    good, issues = check_file(db, path, input_format)
    log = EventLog(log_path(db))
    for start in range(0, len(good), MAX_BATCH):  # records of a bounded size
        log.append(good[start:start + MAX_BATCH])
    return IngestReport(len(good), issues)


def check_batch_size(rows: list) -> None:
    if len(rows) > MAX_BATCH:
        raise BadArgument(f"at most {MAX_BATCH:,} events per request, not {len(rows):,}")
