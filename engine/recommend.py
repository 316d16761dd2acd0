"""Answering questions from a built recs.db: popular items, a user's next
watch, their history, an item's neighbours, a batch export. Each answer runs
a named table macro of sql/50_serving.sql with its parameters bound and comes
back as a typed result (engine/results.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from . import config, live, serving
from .build import Progress, built_state, ensure_built
from .config import ModelParams
from .db import ReadOnlyDatabase, open_read_only
from .errors import (
    BadArgument, BuildError, DataFileError, DiskFull, InvalidEvents, UnknownFilter, UnknownItem, UnknownUser,
)
from .results import History, HistoryEntry, Pick, PopularList, Recommendations, SimilarItems

EXPORT_FORMATS = {
    ".csv": "format csv",
    ".tsv": "format csv, delimiter '\t'",
    ".json": "format json",  # one object per line
    ".parquet": "format parquet",
}
"""COPY options of each file suffix export writes (a suffix it does not know is refused)."""

FILTERS = "only_genre := $genre, only_content_type := $content_type"
"""The filter arguments every filtered macro takes, bound by name."""


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
    fast:
        Answer recommend and popular from the in-memory serving index
        (engine/serving.py: loaded at the first question, a second or two at
        10M events), as a server does; else from the SQL macros, as a
        one-shot command does. The answers are the same.

    When a build it needs fails on the data (a CSV missing, unreadable or
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
        fast: bool = False,
    ):
        self.db = config.db_path(db)
        self.data_dir = config.data_dir(data_dir)
        self.build_report = None
        self.stale: str | None = None
        self.stale_built_at: str | None = None
        if auto_build:
            try:
                self.build_report = ensure_built(self.db, self.data_dir, params, progress)
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

    def popular(self, k: int = 10, genre: str | None = None, content_type: str | None = None) -> PopularList:
        """The k most popular items, best first, optionally of one genre / content type."""
        _check_k(k)
        if self.fast:
            items = self.serving_index().popular(k, genre, content_type)
            if not items:
                self._check_filters(genre, content_type)
            return PopularList(k, items)
        rows = self.database.rows(
            f"select * from popular($k, {FILTERS})", {"k": k, "genre": genre, "content_type": content_type}
        )
        if not rows:
            self._check_filters(genre, content_type)
        return PopularList(k, [Pick.from_row(row) for row in rows])

    def recommend(
        self, user_id: str, k: int = 10, genre: str | None = None, content_type: str | None = None
    ) -> Recommendations:
        """The k items user_id should watch next, personalised first, then popular fill."""
        _check_k(k)
        if self.fast:
            items, has_history, known = self.serving_index().recommend(user_id, k, genre, content_type)
            if not items:
                self._check_filters(genre, content_type)
            return Recommendations(user_id, k, items, fallback_used=not has_history, user_known=known)
        known, has_history = self._user_state(user_id)
        params = {"user_id": user_id, "k": k, "genre": genre, "content_type": content_type}
        rows = []
        if has_history:
            # most lists are full without the popular fill: the smaller query first
            rows = self.database.rows(f"select * from recommend_personal($user_id, $k, {FILTERS})", params)
        if len(rows) < k:
            rows = self.database.rows(f"select * from recommend($user_id, $k, {FILTERS})", params)
        if not rows:
            self._check_filters(genre, content_type)
        items = [Pick.from_row(row) for row in rows]
        return Recommendations(user_id, k, items, fallback_used=not has_history, user_known=known)

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

    def add_events(self, events: list[dict]) -> int:
        """Check a batch of events (dicts with the columns of events.csv) by the loader's rules and
        append it to the live log, durably; all or nothing. Returns how many were accepted;
        InvalidEvents (naming each bad event's index, field and problem) when any is invalid."""
        live.check_batch_size(events)
        good, problems = live.check_rows(self.database.cursor(), events)
        if problems:
            raise InvalidEvents(problems)
        if good:
            start, end = self.live.log.append(good)
            self.live.add_checked(good, start, end)
            if self.fast:
                self.serving_index()  # the index takes them in here, not in the next reader's request
        return len(good)

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

    def export(self, out: Path, k: int = 20, user_ids: list[str] | None = None) -> int:
        """Write every user's top k (or the given users') to out, in the format its suffix names
        (EXPORT_FORMATS: CSV, TSV, JSON lines or Parquet).

        One row per user and rank: user_id, rank, item_id, score, source, reason
        (the macro recommend_many). A user without events gets the popular list.
        Returns the rows written.
        """
        _check_k(k)
        options = EXPORT_FORMATS.get(out.suffix.lower())
        if options is None:
            raise BadArgument(
                f"cannot tell the format of {out} from its suffix; use one of {', '.join(EXPORT_FORMATS)}"
            )
        query = f"""
            copy (
                select user_id, rank, item_id, score, source, reason
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

    def _check_filters(self, genre: str | None, content_type: str | None) -> None:
        """Raise UnknownFilter when a filter names a genre or content type no item has."""
        for column, value in (("genre", genre), ("content_type", content_type)):
            if value is None:
                continue
            # column is one of two names of ours, never user input
            known = [row["value"] for row in self.database.rows(
                f"select distinct {column} as value from items order by value"
            )]
            if value.lower() not in known:
                raise UnknownFilter(f"no item has {column} {value!r}; known: {', '.join(known)}")

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


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadArgument(f"k must be a whole number of at least 1, not {k!r}")
