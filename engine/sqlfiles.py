"""The SQL files under sql/: listed in build order and run statement by statement."""

from __future__ import annotations

from pathlib import Path

import duckdb

from .errors import BuildError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def build_files() -> list[Path]:
    """The numbered .sql files, in the order a build runs them."""
    return sorted(SQL_DIR.glob("[0-9][0-9]_*.sql"))


def run_file(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Run every statement of one file; a failure names the file and its line."""
    text = path.read_text(encoding="utf-8")
    offset = 0
    for statement in duckdb.extract_statements(text):
        query = statement.query
        start = text.find(query.strip()[:40], offset)
        line = text.count("\n", 0, max(start, 0)) + 1
        offset = max(start, offset)
        try:
            con.execute(query)
        except duckdb.Error as error:
            first = str(error).splitlines()[0]
            raise BuildError(f"{path.name}, statement at line {line}: {first}") from error
