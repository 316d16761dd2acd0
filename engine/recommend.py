"""Answering questions from a built recs.db: popular items, a user's next
watch, their history, an item's neighbours, a batch export. Each answer runs
a named table macro of sql/50_serving.sql with its parameters bound and comes
back as a typed result (engine/results.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from . import config, eventlog, live, serving
from .build import Progress, built_state, ensure_built
from .config import ModelParams
from .db import ReadOnlyDatabase, open_read_only
from .load import InputFormat
from .errors import (
    BadArgument, BuildError, DataFileError, DiskFull, InvalidEvents, UnknownFilter, UnknownItem, UnknownUser,
)
from .results import History, HistoryEntry, Pick, PopularList, Recommendations, SimilarItems

EXPORT_FORMATS = {
    "csv": "format csv",
    "tsv": "format csv, delimiter '\t'",
    "json": "format json, array true",  # one JSON document: an array of row objects
    "jsonl": "format json",  # one object per line
    "parquet": "format parquet",
}
"""COPY options of each format export writes, by name; a file suffix names its format."""


def export_format(out: Path, format: str | None = None) -> str:
    """The format export writes to out: format when given, else the one out's suffix names.

    BadArgument names the formats for an unknown one, or for a suffix that names none.
    """
    known = ", ".join(EXPORT_FORMATS)
    if format is not None:
        if format.lower() not in EXPORT_FORMATS:
            raise BadArgument(f"unknown export format {format!r}; use one of {known}")
        return format.lower()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in EXPORT_FORMATS:
        raise BadArgument(f"cannot tell the format of {out} from its suffix; name the file .csv, .tsv, .json, "
                          f".jsonl or .parquet, or give --format ({known})")
    return suffix


FILTERS = "only_genre := $genre, only_content_type := $content_type, except_items := $exclude"
"""The filter arguments every filtered macro takes, bound by name."""

Filter = str | list[str] | tuple[str, ...] | None
"""A genre or content type filter: None (any), one value, or several (any of them)."""

MAX_BATCH = 1000
"""The most users one recommend_batch call answers."""
MAX_OFFSET = 100_000
"""The deepest page: offset + k beyond any catalogue we serve is refused, not sent to SQL."""
MAX_BATCH_ITEMS = 100_000
"""The most items one recommend_batch call returns (users x (offset + k)): about 7 MB of JSON."""


class Recommender:
    """Read-only access to a recs.db, building it first when it is missing or stale.

    Parameters
    ----------
    db, data_dir:
        Paths; default to $RECS_DB / $RECS_DATA_DIR, else ./recs.db and ./data.
    params:
        Model parameters used if a build is needed.
    auto_build:
        Build when recs.db is missing or older than the CSVs.
    progress:
        Called with each build step's name.
    input_format:
        How the CSVs are written (delimiter, encoding), if a build is needed;
        None reads them as the last build did, else as $RECS_DELIMITER /
        $RECS_ENCODING say, else delimiter from each header and UTF-8.
    fast:
        Answer recommend and popular from the in-memory serving index
        (engine/serving.py: loaded at the first question, a second or two at
        10M events), as a server does; else from the SQL macros, as a
        one-shot command does. The answers are the same.

    When the data folder does not exist and db holds a model a build of ours
    finished (a recs.db shipped to a server on its own), it answers from
    that model as built: standalone says so (one line), and nothing is
    rebuilt. When a build it needs fails on the data (a CSV missing, unreadable or
    with the wrong header, a SQL file failing, the disk full) and db holds a
    model a build of ours finished, it answers from that model: stale says
    why (one line) and stale_built_at when that model was built. With no
    such model the error is raised.
    """

    STALE_ON = (DataFileError, BuildError, DiskFull)
    """Build failures after which the last good model still answers."""

    def __init__(
        self,
        db: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        params: ModelParams | None = None,
        auto_build: bool = True,
        progress: Progress | None = None,
        input_format: InputFormat | None = None,
        fast: bool = False,
    ):
        self.db = config.db_path(db)
        self.data_dir = config.data_dir(data_dir)
        self.params = params
        """The parameters pinned for this model (None: as built); a background rebuild keeps them."""
        self.input_format = input_format
        """How the CSVs are read (None: as the last build did); a background rebuild keeps it."""
        self.build_report = None
        self.stale: str | None = None
        self.stale_built_at: str | None = None
        self.standalone: str | None = None
        if auto_build and not self.data_dir.exists():
            shipped = built_state(self.db)
            if shipped is not None:  # a model shipped on its own: answer as built
                auto_build = False
                self.standalone = (
                    f"no data folder {self.data_dir}: answering from {self.db} as built at {shipped.built_at}; "
                    "freshness is not checked"
                )
        if auto_build:
            try:
                self.build_report = ensure_built(self.db, self.data_dir, params, progress, input_format)
            except self.STALE_ON as error:
                last_good = built_state(self.db)
                if last_good is None:
                    raise
                self.stale, self.stale_built_at = str(error), last_good.built_at
                self._stale_file = _identity(self.db)
        self.live = live.LiveOverlay(self.db)
        self.database = ReadOnlyDatabase(self.db, self.live)
        self.fast = fast
        self._serving = serving.ServingState()

    def popular(
        self,
        k: int = 10,
        genre: Filter = None,
        content_type: Filter = None,
        exclude: list[str] | None = None,
        offset: int = 0,
    ) -> PopularList:
        """The k most popular items, best first, optionally of some genres / content types
        (any of them), never those in exclude; offset skips that many first (paging)."""
        _check_k(k)
        _check_offset(offset)
        filters, notes = self._filters(genre, content_type, exclude)
        if self.fast:
            items = self.serving_index().popular(offset + k, genre, content_type, filters["exclude"])
            if not items or _several(genre) or _several(content_type):
                self._check_filters(genre, content_type)
            return PopularList(k, items[offset:], notes)
        rows = self.database.rows(f"select * from popular($k, {FILTERS})", {"k": offset + k, **filters})
        if not rows or _several(genre) or _several(content_type):
            self._check_filters(genre, content_type)
        return PopularList(k, [Pick.from_row(row) for row in rows[offset:]], notes)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        genre: Filter = None,
        content_type: Filter = None,
        exclude: list[str] | None = None,
        offset: int = 0,
    ) -> Recommendations:
        """The k items user_id should watch next, personalised first, then popular fill.

        genre and content_type: one value or several (any of them); exclude:
        item ids never to pick (e.g. already on screen; an id not in the
        catalogue is ignored, and the answer's notes say so); offset: skip that
        many of the list first, so offset=10, k=10 is ranks 11-20 of the k=20 list.
        """
        _check_k(k)
        _check_offset(offset)
        filters, notes = self._filters(genre, content_type, exclude)
        if self.fast:
            items, has_history, known = self.serving_index().recommend(
                user_id, offset + k, genre, content_type, filters["exclude"]
            )
            if not items or _several(genre) or _several(content_type):
                self._check_filters(genre, content_type)
            return Recommendations(
                user_id, k, items[offset:], fallback_used=not has_history, user_known=known, notes=notes
            )
        known, has_history = self._user_state(user_id)
        wanted = offset + k
        params = {"user_id": user_id, "k": wanted, **filters}
        rows = []
        if has_history:
            # most lists are full without the popular fill: the smaller query first
            rows = self.database.rows(f"select * from recommend_personal($user_id, $k, {FILTERS})", params)
        if len(rows) < wanted:
            rows = self.database.rows(f"select * from recommend($user_id, $k, {FILTERS})", params)
        if not rows or _several(genre) or _several(content_type):
            self._check_filters(genre, content_type)
        items = [Pick.from_row(row) for row in rows[offset:]]
        return Recommendations(user_id, k, items, fallback_used=not has_history, user_known=known, notes=notes)

    def recommend_batch(
        self,
        user_ids: list[str],
        k: int = 10,
        genre: Filter = None,
        content_type: Filter = None,
        exclude: list[str] | None = None,
        offset: int = 0,
    ) -> list[Recommendations]:
        """What recommend() answers for each of user_ids (at most MAX_BATCH), in their order, with
        the same filters for all: one set-based query (the macro recommend_many) instead of one per user."""
        if not isinstance(user_ids, (list, tuple)) or not all(isinstance(user, str) for user in user_ids):
            raise BadArgument("user_ids must be a list of user ids")
        if not 1 <= len(user_ids) <= MAX_BATCH:
            raise BadArgument(f"a batch has from 1 to {MAX_BATCH:,} user ids, not {len(user_ids):,}")
        _check_k(k)
        _check_offset(offset)
        if len(user_ids) * (offset + k) > MAX_BATCH_ITEMS:
            raise BadArgument(
                f"a batch returns at most {MAX_BATCH_ITEMS:,} items (users x (offset + k)), not "
                f"{len(user_ids):,} x {offset + k:,}: ask for fewer users or a smaller k"
            )
        filters, notes = self._filters(genre, content_type, exclude)
        params = {"user_ids": list(user_ids), "k": offset + k, **filters}
        rows = self.database.rows(f"select * from recommend_many($user_ids, $k, {FILTERS})", params)
        if not rows or _several(genre) or _several(content_type):
            self._check_filters(genre, content_type)
        states = {
            row["user_id"]: (row["known"], row["has_history"])
            for row in self.database.rows(
                """
                select
                    wanted.user_id,
                    users.user_id is not null or user_keys.user_id is not null as known,
                    coalesce(user_keys.has_history, false) as has_history
                from (select distinct unnest($user_ids) as user_id) as wanted
                left join users on users.user_id = wanted.user_id
                left join user_keys on user_keys.user_id = wanted.user_id
                """,
                {"user_ids": list(user_ids)},
            )
        }
        picks: dict[str, list[Pick]] = {user: [] for user in user_ids}
        for row in rows:
            picks[row["user_id"]].append(Pick.from_row(row))
        answers = []
        for user in user_ids:
            known, has_history = states[user]
            answers.append(Recommendations(
                user, k, picks[user][offset:], fallback_used=not has_history, user_known=known, notes=notes
            ))
        return answers

    def history(self, user_id: str) -> History:
        """What user_id watched, one row per item, latest first; UnknownUser for an unknown user."""
        rows = self.database.rows("select * from user_history($user_id)", {"user_id": user_id})
        if not rows and not self.user_known(user_id):
            raise UnknownUser(f"user {user_id!r} is not known: not in users.csv and no events")
        return History(user_id, [HistoryEntry(**row) for row in rows])

    def similar(self, item_id: str, k: int = 10) -> SimilarItems:
        """The k items most similar to item_id; UnknownItem for an item not in the catalogue."""
        _check_k(k)
        rows = self.database.rows("select * from similar_items($item_id, $k)", {"item_id": item_id, "k": k})
        if not rows and not self.database.rows("select 1 from items where item_id = $id", {"id": item_id}):
            raise UnknownItem(f"item {item_id!r} is not in the catalogue")
        return SimilarItems(item_id, k, [Pick.from_row(row) for row in rows])

    def serving_index(self) -> serving.ServingIndex:
        """The in-memory index of the open model with the live events (loaded on first use)."""
        return self._serving.current(self.database, self.live)

    def serving_current(self) -> bool:
        """Whether recommend and popular answer from memory now, with no file to open and no live
        events to take in first (two stats): a server may then answer without a thread."""
        index = self._serving.index
        return (
            self.fast and index is not None and self.database.is_current() and self.live.is_current()
            and index.generation == self.database.generation and index.live.version == self.live.version
        )

    def add_events(self, events: list[dict], idempotency_key: str | None = None) -> int:
        """Check a batch of events (dicts with the columns of events.csv) by the loader's rules and
        append it to the live log, durably; all or nothing. Returns how many were accepted;
        InvalidEvents (naming each bad event's index, field and problem) when any is invalid.

        idempotency_key: a batch sent again with the same key within a day (a retry whose answer
        was lost) is not added again; its first answer is returned. The same key with another
        batch is IdempotencyConflict."""
        live.check_batch_size(events)
        good, problems = live.check_rows(self.database.cursor(), events)
        if problems:
            raise InvalidEvents(problems)
        if not good:
            return 0
        digest = eventlog.batch_digest(events) if idempotency_key is not None else None
        appended = self.live.log.append(good, idempotency_key, digest)
        if not appended.replayed:
            self.live.add_checked(good, appended.start, appended.end)
            if self.fast:
                self.serving_index()  # the index takes them in here, not in the next reader's request
        return appended.accepted

    def check_live_log(self) -> None:
        """Read and check every record of the live log now (a server does before it answers):
        LogDamaged, naming the file and byte, when any does not check out."""
        self.live.log.load_keys()
        self.database.cursor()  # the overlay: what the build did not fold

    def ingest(self, path: Path) -> live.IngestReport:
        """Append the good events of a CSV file (the columns of events.csv) to the live log; the
        bad rows are reported by line, as a build reports events.csv."""
        self.database.cursor()  # the usual checks: the file exists and is not locked
        report = live.ingest(self.db, Path(path))
        self.live.sync(wait=True)
        return report

    def user_known(self, user_id: str) -> bool:
        """True when user_id is in users.csv or has events."""
        return self._user_state(user_id)[0]

    def _user_state(self, user_id: str) -> tuple[bool, bool]:
        """(known: in users.csv or has events, has_history: some event with strength > 0)."""
        row = self.database.rows(
            """
            select
                exists (select 1 from users where user_id = $user_id)
                    or exists (select 1 from user_keys where user_id = $user_id) as known,
                exists (select 1 from user_keys where user_id = $user_id and has_history) as has_history
            """,
            {"user_id": user_id},
        )[0]
        return row["known"], row["has_history"]

    def export(self, out: Path, k: int = 20, user_ids: list[str] | None = None, format: str | None = None) -> int:
        """Write every user's top k (or the given users') to out, in format (default: the one
        out's suffix names; EXPORT_FORMATS: CSV, TSV, JSON, JSON lines or Parquet).

        One row per user and rank: user_id, rank, item_id, title, score, source,
        reason (the macro recommend_many), in the order of user_ids when given,
        else by user_id, each user's rows by rank. A user without events gets
        the popular list. Returns the rows written.
        """
        _check_k(k)
        options = EXPORT_FORMATS[export_format(out, format)]
        query = f"""
            copy (
                select user_id, rank, item_id, title, score, source, reason
                from recommend_many($user_ids, $k)
            ) to $out ({options})
        """
        self.database.cursor()  # the usual checks: the file exists and is not locked
        batch = open_read_only(self.db, threads=None)  # every core, apart from the serving instance
        try:
            batch.execute("use recs")
            return batch.execute(query, {"k": k, "out": str(out), "user_ids": user_ids}).fetchone()[0]
        except duckdb.IOException as error:
            raise BadArgument(f"cannot write {out}: {str(error).splitlines()[0]}") from None
        finally:
            batch.close()

    def info(self) -> dict:
        """When the database was built, with which DuckDB, its row counts, and whether it is
        stale (a rebuild failed: stale_reason says why) or current."""
        info = self.database.rows(
            """
            select
                (select value from build_info where key = 'built_at') as built_at,
                (select value from build_info where key = 'duckdb_version') as duckdb_version,
                (select count(*) from users) as users,
                (select count(*) from items) as items,
                (select count(*) from events) as events
            """
        )[0]
        info["live_events"] = self.live.events
        if self.stale is not None and _identity(self.db) != self._stale_file:
            self.stale = self.stale_built_at = None  # a later build swapped a new model in
        return {**info, "stale": self.stale is not None, "stale_reason": self.stale}

    def mark_stale(self, reason: str) -> None:
        """A rebuild of the current files failed: answers go on from the model there is, and
        info() says why until a new model is swapped in."""
        last_good = built_state(self.db)
        self.stale, self.stale_built_at = reason, last_good.built_at if last_good else None
        self._stale_file = _identity(self.db)

    def load_issues(self, limit: int = 20) -> list[dict]:
        """The first load issues, by file and line."""
        return self.database.rows("select * from load_issues order by file, line limit $limit", {"limit": limit})

    def _filters(self, genre: Filter, content_type: Filter, exclude: list[str] | None) -> tuple[dict, list[str]]:
        """The bound filter parameters of FILTERS, and the answer's notes; BadArgument for a filter
        of the wrong kind. An id in exclude that is not in the catalogue cannot be shown anyway:
        it is left out, and a note names it (a typo, or an item gone since the list was made)."""
        for name, value in (("genre", genre), ("content_type", content_type), ("exclude", exclude)):
            if value is None or isinstance(value, str) and name != "exclude":
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(part, str) for part in value):
                kind = "a list of item ids" if name == "exclude" else "a value or a list of values"
                raise BadArgument(f"{name} must be {kind}, not {value!r}")
        notes: list[str] = []
        exclude = [item for item in exclude or () if item.strip()] or None
        if exclude:
            if self.fast:  # the serving index knows the catalogue: no query
                unknown = sorted(set(exclude) - self.serving_index().key_of_item.keys())
            else:
                unknown = [row["item_id"] for row in self.database.rows(
                    "select unnest($ids) as item_id except select item_id from items order by item_id",
                    {"ids": exclude},
                )]
            if unknown:
                notes.append(_unknown_excluded(unknown))
                ignored = set(unknown)
                exclude = [item for item in exclude if item not in ignored] or None
        listed = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731
        return {"genre": listed(genre), "content_type": listed(content_type), "exclude": exclude}, notes

    def _check_filters(self, genre: Filter, content_type: Filter) -> None:
        """Raise UnknownFilter when a filter names a genre or content type no item has
        (an item's genre field may hold several, separated by '|')."""
        for column, value in (("genre", genre), ("content_type", content_type)):
            wanted = [value] if isinstance(value, str) else list(value or ())
            wanted = [part for part in wanted if part.strip()]
            if not wanted:
                continue
            if self.fast:
                known = self.serving_index().filter_values(column)
            else:
                # column is one of two names of ours, never user input
                known = [row["value"] for row in self.database.rows(
                    f"select distinct unnest(string_split({column}, '|')) as value from items order by value"
                )]
            unknown = [part for part in wanted if part.strip().lower() not in known]
            if unknown:
                shown = " or ".join(repr(part) for part in unknown)
                raise UnknownFilter(f"no item has {column} {shown}; known: {', '.join(known)}")

    def close(self) -> None:
        """Drop every cursor and the instance; the next query opens afresh."""
        self.database.close()


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at path now (a build swaps in a new one), or None when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


SHOWN_IDS = 5
"""The most unknown excluded ids a note names; the rest are counted."""


def _unknown_excluded(unknown: list[str]) -> str:
    """The note for excluded ids not in the catalogue: a few of them, each cut to 40 characters."""
    shown = ", ".join(repr(item_id[:40] + "..." if len(item_id) > 40 else item_id) for item_id in unknown[:SHOWN_IDS])
    more = f" and {len(unknown) - SHOWN_IDS:,} more" if len(unknown) > SHOWN_IDS else ""
    return f"exclude {shown}{more}: not in the catalogue, ignored"


def _several(value: Filter) -> bool:
    """Whether a filter lists more than one value: a list of any length may hide an unknown one."""
    return not isinstance(value, str) and value is not None and len(value) > 1


def _check_offset(offset: int) -> None:
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise BadArgument(f"offset must be a whole number from 0 to {MAX_OFFSET:,}, not {str(offset)[:20]}")


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadArgument(f"k must be a whole number of at least 1, not {k!r}")
