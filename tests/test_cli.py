"""The command line, end to end: output shapes, filters, argument checks, data-file
errors as one line without a traceback, environment variables, help, a real
subprocess and the duckdb shell reading the same file.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cli as cli_module
import engine
from engine.config import PLAIN
from conftest import (
    EVENTS_HEADER,
    ROOT,
    TINY_EVENTS,
    TINY_ITEMS,
    TINY_USERS,
    write_csv,
    write_dataset,
)

API_KEYS = {"rank", "item_id", "title", "content_type", "genre", "score", "reason", "source"}


def assert_no_traceback(result) -> None:
    """Nothing escaped as an exception: no traceback printed, none caught by the runner."""
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def one_error_line(result) -> str:
    """The single stderr line of a failed command, checked to start with 'Error:'."""
    assert result.exit_code == 1, result.stdout + result.stderr
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:")
    return lines[0]


def ids(payload: dict) -> list[str]:
    return [item["item_id"] for item in payload["items"]]




def test_popular_table_lists_top_items_in_popularity_order(run):
    result = run("popular", "--k", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Top 3 Popular Items:")
    out = result.stdout
    assert out.index("i2") < out.index("i1") < out.index("i3")
    assert "i4" not in out


def test_popular_json_is_one_object_with_api_item_fields(run):
    result = run("popular", "--k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1
    payload = json.loads(result.stdout)
    assert set(payload) == {"k", "items"} and payload["k"] == 2
    assert ids(payload) == ["i2", "i1"]
    for item in payload["items"]:
        assert set(item) >= {"item_id", "title", "score", "reason", "source"}
        assert set(item) == API_KEYS


@pytest.mark.parametrize("flag", ["--user_id", "--user-id"])
def test_recommend_accepts_both_user_id_spellings_and_shows_reasons(run, flag):
    result = run("recommend", flag, "u1", "--k", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Recommendations for user u1:")
    header = next(line for line in result.stdout.splitlines() if "item_id" in line)
    assert "reason" in header
    # by hand (tests/test_recommend.py): i3 for its similarity to i2, then the popular i4
    rows = [line for line in result.stdout.splitlines() if " i3 " in line or " i4 " in line]
    assert len(rows) == 2 and "i3" in rows[0] and "similar to" in rows[0]  # the reason wraps at 80 columns
    assert "0.607" in rows[0] and "i4" in rows[1]


def test_recommend_json_for_known_user_is_personalised(run):
    result = run("recommend", "--user_id", "u1", "--k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"user_id", "k", "items", "fallback_used", "user_known"}
    assert payload["user_id"] == "u1" and payload["k"] == 2
    assert payload["fallback_used"] is False and payload["user_known"] is True
    # by hand (tests/test_recommend.py): u1 gets i3 from its neighbours, then the popular i4
    assert [(item["item_id"], item["source"]) for item in payload["items"]] == [("i3", "personalised"), ("i4", "popular")]


def test_recommend_for_unknown_user_falls_back_to_popular_with_a_note(run):
    as_json = run("recommend", "--user_id", "nobody", "--k", "3", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["fallback_used"] is True
    assert ids(payload) == ["i2", "i1", "i3"]

    as_table = run("recommend", "--user_id", "nobody", "--k", "3")
    assert as_table.exit_code == 0
    assert "nobody is not a known user" in as_table.stderr
    assert "showing popular items" in as_table.stderr


def test_recommend_says_on_stderr_that_an_unknown_excluded_id_was_ignored(run):
    note = "Note: exclude 'nope': not in the catalogue, ignored."
    as_table = run("recommend", "--user_id", "u1", "--k", "1", "--exclude", "nope")
    assert as_table.exit_code == 0, as_table.stderr
    assert as_table.stderr.splitlines() == [note]
    assert as_table.stdout.startswith("Recommendations for user u1:") and "i3" in as_table.stdout
    as_json = run("recommend", "--user_id", "u1", "--k", "1", "--exclude", "nope", "--json")
    assert as_json.exit_code == 0 and as_json.stderr.splitlines() == [note]
    payload = json.loads(as_json.stdout)
    assert payload["notes"] == ["exclude 'nope': not in the catalogue, ignored"] and ids(payload) == ["i3"]


@pytest.mark.parametrize(
    "args, key, value",
    [
        (("popular", "--genre", "drama"), "genre", "drama"),
        (("recommend", "--user_id", "u1", "--genre", "drama"), "genre", "drama"),
        (("popular", "--content-type", "series"), "content_type", "series"),
        (("popular", "--content_type", "series"), "content_type", "series"),
        (("recommend", "--user-id", "u1", "--content_type", "series"), "content_type", "series"),
    ],
)
def test_filters_return_only_matching_items(run_bundled, args, key, value):
    result = run_bundled(*args, "--k", "15", "--json")
    assert result.exit_code == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert len(items) == 15
    assert {item[key] for item in items} == {value}


@pytest.mark.parametrize("command", [("popular",), ("recommend", "--user_id", "u1")])
def test_unknown_genre_is_one_error_line_naming_known_genres(run, command):
    line = one_error_line(run(*command, "--genre", "western"))
    assert "western" in line
    assert "action, drama, family, romance" in line


@pytest.mark.parametrize("k", ["0", "-1"])
@pytest.mark.parametrize("command", [("popular",), ("recommend", "--user_id", "u1"), ("similar", "--item_id", "i1")])
def test_k_below_one_is_a_usage_error(cli, tmp_path, command, k):
    result = cli("--db", tmp_path / "recs.db", "--data-dir", tmp_path, *command, "--k", k)
    assert result.exit_code == 2
    assert_no_traceback(result)


def test_k_larger_than_catalogue_returns_every_item(run):
    result = run("popular", "--k", "1000", "--json")
    assert result.exit_code == 0, result.stderr
    assert ids(json.loads(result.stdout)) == ["i2", "i1", "i3", "i4"]


def test_history_json_lists_the_users_items_latest_first(run):
    result = run("history", "--user_id", "u1", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["user_id"] == "u1"
    assert ids(payload) == ["i2", "i1"]


def test_similar_json_gives_items_with_support(run):
    result = run("similar", "--item_id", "i1", "--json")
    assert result.exit_code == 0, result.stderr
    items = json.loads(result.stdout)["items"]
    assert items
    assert all(isinstance(item["support"], int) and item["support"] >= 1 for item in items)
    assert "i1" not in [item["item_id"] for item in items]


def test_similar_for_unknown_item_is_one_error_line(run):
    line = one_error_line(run("similar", "--item_id", "nope"))
    assert "nope" in line


def _missing_folder(folder):
    shutil.rmtree(folder)
    return [str(folder)]


def _missing_events(folder):
    (folder / "events.csv").unlink()
    return ["events.csv", str(folder)]


def _empty_users(folder):
    (folder / "users.csv").write_bytes(b"")
    return ["users.csv", "empty"]


def _missing_column(folder):
    """A required column (an optional one is said once and kept as blank; one nothing reads is
    ignored: tests/test_own_data.py)."""
    write_csv(folder / "events.csv", EVENTS_HEADER[:4], [row[:4] for row in TINY_EVENTS])
    return ["events.csv", "missing column(s) timestamp"]


@pytest.mark.parametrize("breakage", [_missing_folder, _missing_events, _empty_users, _missing_column])
def test_bad_data_folder_is_one_error_line_naming_the_problem(cli, tiny_dir, breakage):
    expected = breakage(tiny_dir)
    result = cli("--db", tiny_dir.parent / "recs.db", "--data-dir", tiny_dir, "popular")
    line = one_error_line(result)
    for text in expected:
        assert text in line
    assert not (tiny_dir.parent / "recs.db").exists()


def test_build_reports_bad_rows_and_loaded_counts(cli, tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, [])
    with (folder / "events.csv").open("a", newline="") as handle:
        handle.write("".join(",".join(map(str, row)) + "\n" for row in TINY_EVENTS))
        handle.write("u1,i3,play,100,2024-01-04T10:00:00Z,extra\n")  # ragged: 6 fields
        handle.write("u1,i3,play,lots,2024-01-04T10:00:00Z\n")  # watch_seconds not a number
        handle.write("u1,i9,play,100,2024-01-04T10:00:00Z\n")  # i9 is not in items.csv
    result = cli("--db", tmp_path / "recs.db", "--data-dir", folder, "build")
    assert result.exit_code == 0, result.stderr
    assert_no_traceback(result)
    out = result.stdout
    assert "Loaded" in out
    for table, count in (("users", 3), ("items", 4), ("events", 5)):
        assert re.search(rf"│ {table} +│ +{count} │", out), (table, out)
    assert "6 fields, expected 5" in out
    assert "not a number of seconds" in out
    assert "not in items.csv" in out


def test_environment_variables_choose_db_and_data_dir(cli, tiny_dir, monkeypatch):
    db = tiny_dir.parent / "from_env.db"
    monkeypatch.setenv("RECS_DB", str(db))
    monkeypatch.setenv("RECS_DATA_DIR", str(tiny_dir))
    result = cli("popular", "--k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert ids(json.loads(result.stdout)) == ["i2", "i1"]
    assert db.exists()


def _commands():
    for info in cli_module.app.registered_commands:
        yield info.name or info.callback.__name__.replace("_", "-"), info.callback
    for group in cli_module.app.registered_groups:  # `live check`, `live repair`
        for info in group.typer_instance.registered_commands:
            yield f"{group.name} {info.name}", info.callback


def test_app_has_the_expected_commands():
    assert {name for name, _ in _commands()} >= {"popular", "recommend", "history", "similar", "build"}


@pytest.mark.parametrize("name, callback", list(_commands()), ids=[name for name, _ in _commands()])
def test_every_command_has_help_with_summary_and_example(cli, name, callback):
    doc = inspect.getdoc(callback)
    assert doc, f"{name} has no docstring"
    result = cli(*name.split(), "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # Rich wraps long lines
    assert doc.splitlines()[0] in text
    assert "Example:" in text


def test_cli_runs_as_a_real_subprocess(bundled_db):
    env = {key: value for key, value in os.environ.items() if key not in ("RECS_DB", "RECS_DATA_DIR")}
    completed = subprocess.run(
        [sys.executable, "cli.py", "--db", str(bundled_db), "--data-dir", str(bundled_db.parent / "data"),
         "recommend", "--user_id", "u1", "--k", "3", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(completed.stdout)
    in_process = engine.Recommender(bundled_db, auto_build=False).recommend("u1", 3).to_dict()
    assert payload == in_process
    assert [item["source"] for item in payload["items"]] == ["personalised"] * 3


def test_duckdb_shell_reads_the_database_and_its_macros(tiny):
    # the duckdb-cli package puts the shell beside this Python, which may not be on PATH
    beside = Path(sys.executable).parent / "duckdb"
    shell = str(beside) if beside.is_file() else shutil.which("duckdb")
    if shell is None:
        pytest.skip("the duckdb shell (duckdb-cli package) is neither beside this Python nor on PATH")
    tiny.popular(1)  # built by the fixture
    completed = subprocess.run(
        [shell, "-readonly", str(tiny.db), "-csv", "-c", "select item_id from popular(3)"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["item_id", "i2", "i1", "i3"]


@pytest.mark.parametrize("source", ["typed_item_id", "title_in_items_csv"])
def test_square_brackets_in_ids_and_titles_are_shown_verbatim(cli, tmp_path, source):
    items = [("i1", "Family [/b] Show", "tv", "family")] + TINY_ITEMS[1:]
    folder = write_dataset(tmp_path / "data", TINY_USERS, items, TINY_EVENTS)
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    base = ("--db", tmp_path / "recs.db", "--data-dir", folder)
    if source == "typed_item_id":
        result = cli(*base, "similar", "--item_id", "[/x]")
        assert "[/x]" in one_error_line(result)
    else:
        result = cli(*base, "popular", "--k", "4")
        assert_no_traceback(result)
        assert result.exit_code == 0
        assert "Family [/b] Show" in result.stdout


def test_history_of_an_unknown_user_is_an_error(cli, tiny_dir, tmp_path):
    result = cli("--db", tmp_path / "recs.db", "--data-dir", tiny_dir, "history", "--user_id", "nobody")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "Error: user 'nobody' is not known: not in users.csv and no events"


def test_version_prints_the_apps_and_duckdbs_version(cli):
    import duckdb

    result = cli("--version")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"recs {engine.__version__} (DuckDB {duckdb.__version__})"
