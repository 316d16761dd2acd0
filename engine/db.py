"""Connections to recs.db: a private read-only instance per file, swap
detection, one cursor per thread, and the settings of a build connection.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb

from . import config
from .errors import DatabaseLocked, DatabaseMissing


def quoted(path: Path) -> str:
    """A path inside a SQL string literal (ATTACH and settings take no bound parameters)."""
    return str(path).replace("'", "''")


def open_read_only(db: Path, threads: int | None = 1) -> duckdb.DuckDBPyConnection:
    """A private in-memory instance with db attached read-only as catalog 'recs'.

    One thread by default: a single recommendation is a small query that runs
    faster without parallel scheduling, and concurrent requests spread over
    the cores on their own. Batch work passes threads=None (one per core).
    """
    con = duckdb.connect()
    if threads:
        con.execute(f"set threads = {int(threads)}")
    try:
        con.execute(f"attach '{quoted(db)}' as recs (read_only)")
    except duckdb.IOException as error:
        con.close()
        if "lock" in str(error).lower():
            raise DatabaseLocked(locked_message(db, error)) from None
        raise
    return con


def locked_message(db: Path, error: Exception) -> str:
    """One line for a database another process holds open for writing."""
    holder = str(error).split("Conflicting lock is held in", 1)[-1].strip().splitlines()[0]
    return (
        f"{db.resolve()} is locked for writing by another process ({holder}); close that "
        f"program (a 'duckdb {db.name}' shell takes this lock: use 'duckdb -readonly {db.name}')"
    )


def configure(con: duckdb.DuckDBPyConnection, spill_to: Path) -> None:
    """Threads and memory limit ($RECS_MEMORY_LIMIT, else default_memory_limit());
    spill past the limit into spill_to."""
    con.execute(f"set temp_directory = '{quoted(spill_to)}'")
    limit = config.memory_limit() or default_memory_limit()
    con.execute(f"set memory_limit = '{limit}'")  # validated by config.memory_limit, or ours
    count = config.threads()
    if count:
        con.execute(f"set threads = {count}")


BUILD_MEMORY_SHARE = 1 / 8
"""A default build lets DuckDB use this share of the memory it may have (3 GB of 24 GB): a
build shares the machine with the service it feeds, and past the limit it spills to disk."""
MIN_BUILD_MEMORY = 512 * 2**20

CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
"""cgroup v2, then v1: the memory a container may use, when it is limited."""


def available_memory() -> int | None:
    """Bytes of memory this process may use: the machine's RAM, or its cgroup's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):  # v2 says "max" when unlimited
            total = int(text)
    return total


def default_memory_limit() -> str:
    """DuckDB's memory limit for a build without $RECS_MEMORY_LIMIT: BUILD_MEMORY_SHARE of
    available_memory(), at least MIN_BUILD_MEMORY."""
    total = available_memory() or 8 * 2**30
    return f"{max(MIN_BUILD_MEMORY, int(total * BUILD_MEMORY_SHARE)) // 2**20}MiB"


class ReadOnlyDatabase:
    """recs.db opened read-only, reopened when a rebuild swaps a new file in.

    The file is attached to a private in-memory DuckDB instance: DuckDB keeps
    one instance per path in a process, so connecting by path again after a
    swap could hand back the old file while anything still holds it. Each
    thread gets its own cursor: cursors are never shared across threads.
    """

    def __init__(self, path: Path, overlay=None):
        self.path = path
        self.overlay = overlay
        """An engine.live.LiveOverlay: the live events put in front of the built tables."""
        self.generation = 0
        """Bumped each time a new file is opened (a rebuild swapped one in)."""
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._opened: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the current file, with 'recs' as the default catalog."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise DatabaseMissing(f"{self.path} does not exist; run 'python cli.py build'") from None
        stamp = (stat.st_ino, stat.st_mtime_ns)
        with self._lock:
            if stamp != self._opened:
                self._instance, self._opened = open_read_only(self.path), stamp
                self.generation += 1
                if self.overlay is not None:
                    self.overlay.attach(self._instance)
            instance = self._instance
        if self.overlay is not None:
            self.overlay.sync()
        local = self._local
        if getattr(local, "instance", None) is not instance:
            local.cursor = instance.cursor()
            local.cursor.execute("use recs")
            local.instance = instance
            local.overlaid = False
        if self.overlay is not None:
            self.overlay.prepare(local.cursor, local)
        return local.cursor

    def is_current(self) -> bool:
        """Whether the open instance is of the file at path now (no swap since)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return self._instance is not None and (stat.st_ino, stat.st_mtime_ns) == self._opened

    def rows(self, query: str, params: dict | None = None) -> list[dict]:
        """Run one query with bound parameters; each row as a dict of column name to value."""
        result = self.cursor().execute(query, params or {})
        names = [column[0] for column in result.description]
        return [dict(zip(names, row)) for row in result.fetchall()]

    def close(self) -> None:
        """Drop the instance and every thread's cursor; the next query opens afresh."""
        with self._lock:
            self._instance, self._opened = None, None
        self._local = threading.local()
