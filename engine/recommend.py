"""Answering questions from a built recs.db: popular items, a user's next
watch, their history, an item's neighbours. Every answer is one named table
macro of sql/50_serving.sql with its parameters bound.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb

from . import config
from .build import Progress, ensure_built, open_read_only
from .config import ModelParams
from .errors import BadArgument, DatabaseMissing, UnknownValue


class Recommendations(list):
    """A list of recommended items (dicts) that also says how it was made.

    fallback_used is True when nothing was personalised because the user is
    unknown or has no usable history; user_known tells the two apart.
    """

    def __init__(self, items: list[dict], fallback_used: bool, user_known: bool):
        super().__init__(items)
        self.fallback_used = fallback_used
        self.user_known = user_known


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
    """

    def __init__(
        self,
        db: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        params: ModelParams | None = None,
        auto_build: bool = True,
        progress: Progress | None = None,
    ):
        self.db = config.db_path(db)
        self.data_dir = config.data_dir(data_dir)
        self.build_report = None
        if auto_build:
            self.build_report = ensure_built(self.db, self.data_dir, params or ModelParams(), progress)
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._opened: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the current recs.db; a rebuild swapped in is picked up.

        The file is attached to a private in-memory DuckDB instance: DuckDB
        keeps one instance per path in a process, so connecting by path again
        after a swap could hand back the old file while anything still holds it.
        """
        try:
            stat = self.db.stat()
        except FileNotFoundError:
            raise DatabaseMissing(f"{self.db} does not exist; run 'python cli.py build'") from None
        stamp = (stat.st_ino, stat.st_mtime_ns)
        with self._lock:
            if stamp != self._opened:
                self._instance, self._opened = open_read_only(self.db), stamp
            instance = self._instance
        local = self._local
        if getattr(local, "instance", None) is not instance:
            local.cursor = instance.cursor()  # one cursor per thread: never shared across threads
            local.cursor.execute("use recs")
            local.instance = instance
        return local.cursor

    def _rows(self, query: str, params: dict) -> list[dict]:
        result = self._cursor().execute(query, params)
        names = [column[0] for column in result.description]
        return [dict(zip(names, row)) for row in result.fetchall()]

    def popular(self, k: int = 10, genre: str | None = None, content_type: str | None = None) -> list[dict]:
        """The k most popular items, best first, optionally of one genre / content type."""
        _check_k(k)
        items = self._rows(
            "select * from popular($k, only_genre := $genre, only_content_type := $content_type)",
            {"k": k, "genre": genre, "content_type": content_type},
        )
        if not items:
            self._check_filters(genre, content_type)
        return items

    def recommend(
        self, user_id: str, k: int = 10, genre: str | None = None, content_type: str | None = None
    ) -> Recommendations:
        """The k items user_id should watch next, personalised first, then popular fill."""
        _check_k(k)
        known, has_history = self._user_state(user_id)
        params = {"user_id": user_id, "k": k, "genre": genre, "content_type": content_type}
        items = []
        if has_history:
            # most lists are full without the popular fill: the smaller query first
            items = self._rows(
                "select * from recommend_personal($user_id, $k, only_genre := $genre, only_content_type := $content_type)",
                params,
            )
        if len(items) < k:
            items = self._rows(
                "select * from recommend($user_id, $k, only_genre := $genre, only_content_type := $content_type)",
                params,
            )
        if not items:
            self._check_filters(genre, content_type)
        return Recommendations(items, fallback_used=not has_history, user_known=known)

    def history(self, user_id: str) -> list[dict]:
        """What user_id watched, one row per item, latest first; UnknownValue for an unknown user."""
        rows = self._rows("select * from user_history($user_id)", {"user_id": user_id})
        if not rows and not self.user_known(user_id):
            raise UnknownValue(f"user {user_id!r} is not known: not in users.csv and no events")
        return rows

    def similar(self, item_id: str, k: int = 10) -> list[dict]:
        """The k items most similar to item_id."""
        _check_k(k)
        items = self._rows("select * from similar_items($item_id, $k)", {"item_id": item_id, "k": k})
        if not items and not self._rows("select 1 from items where item_id = $id", {"id": item_id}):
            raise UnknownValue(f"item {item_id!r} is not in the catalogue")
        return items

    def user_known(self, user_id: str) -> bool:
        """True when user_id is in users.csv or has events."""
        return self._user_state(user_id)[0]

    def _user_state(self, user_id: str) -> tuple[bool, bool]:
        """(known: in users.csv or has events, has_history: some event with strength > 0)."""
        row = self._rows(
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
        """Write every user's top k (or the given users') to out, CSV or Parquet by its suffix.

        One row per user and rank: user_id, rank, item_id, score, source, reason.
        A user without events gets the popular list. Returns the rows written.
        """
        _check_k(k)
        file_format = "parquet" if out.suffix.lower() == ".parquet" else "csv"
        wanted = (
            "select unnest($user_ids) as user_id"
            if user_ids is not None
            else "select user_id from users union select user_id from user_item_strength"
        )
        query = f"""
            copy (
                with wanted as ({wanted})
                select wanted.user_id, picks.rank, picks.item_id, picks.score, picks.source, picks.reason
                from wanted
                join recommend_all($k) as picks on picks.user_id = wanted.user_id
                union all
                select wanted.user_id, picks.rank, picks.item_id, picks.score, picks.source, picks.reason
                from wanted
                cross join popular($k) as picks
                where wanted.user_id not in (select user_id from user_item_strength)
                order by user_id, rank
            ) to $out (format {file_format})
        """
        params = {"k": k, "out": str(out)}
        if user_ids is not None:
            params["user_ids"] = user_ids
        self._cursor()  # the usual checks: the file exists and is not locked
        batch = open_read_only(self.db, threads=None)  # every core, apart from the serving instance
        try:
            batch.execute("use recs")
            return batch.execute(query, params).fetchone()[0]
        except duckdb.IOException as error:
            raise BadArgument(f"cannot write {out}: {str(error).splitlines()[0]}") from None
        finally:
            batch.close()

    def info(self) -> dict:
        """When the database was built, with which DuckDB, and its row counts."""
        return self._rows(
            """
            select
                (select value from build_info where key = 'built_at') as built_at,
                (select value from build_info where key = 'duckdb_version') as duckdb_version,
                (select count(*) from users) as users,
                (select count(*) from items) as items,
                (select count(*) from events) as events
            """,
            {},
        )[0]

    def load_issues(self, limit: int = 20) -> list[dict]:
        """The first load issues, by file and line."""
        return self._rows("select * from load_issues order by file, line limit $limit", {"limit": limit})

    def _check_filters(self, genre: str | None, content_type: str | None) -> None:
        """Raise UnknownValue when a filter names a genre or content type no item has."""
        for column, value in (("genre", genre), ("content_type", content_type)):
            if value is None:
                continue
            known = [row["value"] for row in self._rows(
                f"select distinct {column} as value from items order by value", {}
            )]
            if value.lower() not in known:
                raise UnknownValue(f"no item has {column} {value!r}; known: {', '.join(known)}")

    def close(self) -> None:
        """Drop this thread's cursor and the instance; the next query opens afresh."""
        with self._lock:
            self._instance, self._opened = None, None
        self._local = threading.local()


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise BadArgument(f"k must be a whole number of at least 1, not {k!r}")
