"""The SQL files under sql/: listed in build order and run statement by statement."""

from __future__ import annotations

from pathlib import Path

import duckdb

from .errors import BuildError


def _sql_dir() -> Path:
    """engine/sql/ once installed (pyproject.toml makes the files package data there),
    else sql/ beside engine/ in a clone of the repository."""
    here = Path(__file__).resolve().parent
    for folder in (here / "sql", here.parent / "sql"):
        if (folder / "00_schema.sql").is_file():
            return folder
    raise BuildError(f"the model's SQL files are missing: neither {here / 'sql'} nor {here.parent / 'sql'} has them")


SQL_DIR = _sql_dir()


# A file's first digit says its layer: 0 schema, 1 load (validate the CSVs),
# 2 and up the model, computed from the validated tables.
LAYERS = {"schema": "0", "load": "1", "model": "23456789"}


def build_files(layer: str | None = None) -> list[Path]:
    """The numbered .sql files of one layer (default: all), in the order a build runs them."""
    files = sorted(SQL_DIR.glob("[0-9][0-9]_*.sql"))
    if layer is None:
        return files
    return [path for path in files if path.name[0] in LAYERS[layer]]


def run_file(con: duckdb.DuckDBPyConnection, path: Path, params: dict | None = None) -> None:
    """Run every statement of one file; a failure names the file and its line.

    Each statement is given the named parameters ($name) it mentions.
    """
    text = path.read_text(encoding="utf-8")
    offset = 0
    for statement in duckdb.extract_statements(text):
        query = statement.query
        start = text.find(query.strip()[:40], offset)
        line = text.count("\n", 0, max(start, 0)) + 1
        offset = max(start, offset)
        bound = {name: value for name, value in (params or {}).items() if name in statement.named_parameters}
        try:
            con.execute(query, bound or None)
        except duckdb.Error as error:
            first = str(error).splitlines()[0]
            raise BuildError(f"{path.name}, statement at line {line}: {first}") from error
