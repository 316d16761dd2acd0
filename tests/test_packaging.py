"""The app as an installed package: `pip install .` gives a `recs` command that
finds its SQL files inside the package, away from the repository.

The package is installed with pip into a folder of the test's own (--target,
no dependencies: they are this Python's), which takes a few seconds; a whole
virtualenv with its dependencies would take a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from conftest import ROOT, TINY_EVENTS, TINY_ITEMS, TINY_USERS, write_dataset

SOURCES = ("pyproject.toml", "README.md", "cli.py", "api.py", "engine", "webapi", "sql")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder pip installed the package into (a copy of the sources is installed: a build
    writes into the folder it builds from)."""
    folder = tmp_path_factory.mktemp("package")
    source = folder / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    target = folder / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return target


def run_recs(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed `recs` command, as a user's shell runs it (only the package on the path)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECS_")}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run(
        [str(installed / "bin" / "recs"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_sql_files_are_installed_as_package_data(installed):
    names = sorted(path.name for path in (installed / "engine" / "sql").glob("*.sql"))
    assert names == sorted(path.name for path in (ROOT / "sql").glob("*.sql"))


def test_the_installed_recs_command_builds_and_answers_away_from_the_repository(installed, tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    version = run_recs(installed, "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"recs {engine.__version__} (DuckDB ")

    built = run_recs(installed, "build", "--param", "popularity_prior=0", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "recs.db").is_file()  # ./recs.db from ./data, the defaults

    answer = run_recs(installed, "recommend", "--user_id", "u1", "--k", "2", "--json", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    in_process = engine.Recommender(tmp_path / "recs.db", folder, auto_build=False).recommend("u1", 2)
    assert json.loads(answer.stdout) == in_process.to_dict()

    where = subprocess.run(
        [sys.executable, "-c", "import engine.sqlfiles as s; print(s.SQL_DIR)"],
        cwd=tmp_path, env={"PYTHONPATH": str(installed), "PATH": os.environ.get("PATH", "")},
        capture_output=True, text=True, timeout=60,
    )
    assert Path(where.stdout.strip()) == installed / "engine" / "sql", where.stderr


def test_the_installed_command_reports_errors_as_the_script_does(installed, tmp_path):
    result = run_recs(installed, "popular", cwd=tmp_path)  # no data folder, no recs.db here
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: data folder not found: data (set --data-dir or RECS_DATA_DIR)"
    assert "Traceback" not in result.stderr
