"""What the command line prints: --format table|json|csv|tsv on every query
command, a table that fits 80 columns, and export's formats, columns and row order.
"""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest
from rich.cells import cell_len

import cli as cli_module
import engine
from engine.config import PLAIN
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_USERS, write_dataset

QUERIES = {
    "popular": ("popular", "--k", "3"),
    "recommend": ("recommend", "--user_id", "u1", "--k", "3"),
    "history": ("history", "--user_id", "u1"),
    "similar": ("similar", "--item_id", "i1", "--k", "3"),
}




@pytest.mark.parametrize("command", list(QUERIES))
def test_format_json_prints_what_json_prints(run, command):
    short = run(*QUERIES[command], "--json")
    long = run(*QUERIES[command], "--format", "json")
    assert short.exit_code == long.exit_code == 0, short.stderr + long.stderr
    assert long.stdout == short.stdout
    assert json.loads(long.stdout)["items"]


@pytest.mark.parametrize("shape, delimiter", [("csv", ","), ("tsv", "\t")])
@pytest.mark.parametrize("command", list(QUERIES))
def test_csv_and_tsv_have_a_header_and_the_json_items_fields(run, command, shape, delimiter):
    result = run(*QUERIES[command], "--format", shape)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout), delimiter=delimiter))
    items = json.loads(run(*QUERIES[command], "--json").stdout)["items"]
    assert len(rows) == len(items) > 0
    for row, item in zip(rows, items):
        assert list(row) == list(item)  # the same columns, in the same order
        assert row == {key: str(value) for key, value in item.items()}


def test_csv_of_an_empty_answer_is_its_header(run):
    result = run("similar", "--item_id", "i4", "--format", "csv")  # nobody else watched i4's viewers' items
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "rank,item_id,title,content_type,genre,score,reason,source,support\n"


def test_json_and_another_format_at_once_is_a_usage_error(run):
    result = run("popular", "--json", "--format", "csv")
    assert result.exit_code == 2
    assert "--json is short for --format json" in result.stderr


def test_an_unknown_format_is_a_usage_error_naming_the_choices(run):
    result = run("popular", "--format", "xml")
    assert result.exit_code == 2
    assert "'xml' is not one of 'table', 'json', 'csv', 'tsv'" in " ".join(result.stderr.replace("│", " ").split())


LONG = "A Title Long Enough To Need Shortening In Any Eighty Column Terminal"


@pytest.fixture
def long_titles(cli, tmp_path):
    items = [(item_id, f"{LONG} {n}", kind, genre) for n, (item_id, _, kind, genre) in enumerate(TINY_ITEMS)]
    folder = write_dataset(tmp_path / "data", TINY_USERS, items, TINY_EVENTS)
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    return lambda *args: cli("--db", tmp_path / "recs.db", "--data-dir", folder, *args)


@pytest.mark.parametrize("command", list(QUERIES))
def test_tables_fit_80_columns_one_line_per_row_with_every_id_whole(long_titles, command):
    result = long_titles(*QUERIES[command])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80, result.stdout
    items = json.loads(long_titles(*QUERIES[command], "--json").stdout)["items"]
    body = lines[3:]  # a title line, the header, its rule
    assert len(body) == len(items)
    for line, item in zip(body, items):
        assert f" {item['item_id']} " in f" {line} "
        assert "…" in line  # the long title (and the reason) cut, not wrapped


def test_a_recommendation_table_at_80_columns_keeps_ids_scores_and_a_start_of_the_reason(run):
    result = run("recommend", "--user_id", "u1", "--k", "2")
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    first = lines[3]
    assert first.split()[:2] == ["1", "i3"] and "0.607" in first and "similar to" in first


def test_a_wide_terminal_shows_the_whole_reason():
    table = cli_module.fitted_table([("reason", "left")], [["similar to Family Show B, which you watched"]], width=200)
    console = cli_module.Console(width=200, record=True)
    console.print(table)
    assert "similar to Family Show B, which you watched" in console.export_text()


# --- export -------------------------------------------------------------------

COLUMNS = ["user_id", "rank", "item_id", "title", "score", "source", "reason"]


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("u3\nnobody\nu1\nu3\n", encoding="utf-8")  # a repeat is kept once, at its first place
    return path


def read_export(path, shape):
    if shape in ("csv", "tsv"):
        return list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t" if shape == "tsv" else ","))
    if shape == "json":
        return json.loads(path.read_text(encoding="utf-8"))
    if shape == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [dict(zip(COLUMNS, row)) for row in duckdb.sql(f"select * from '{path}'").fetchall()]


@pytest.mark.parametrize("shape", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_export_writes_the_format_its_suffix_names_in_the_users_files_order(run, tmp_path, users_file, shape):
    out = tmp_path / f"recs.{shape}"
    result = run("export", "--k", "2", "--users", users_file, "--out", out)
    assert result.exit_code == 0, result.stderr
    rows = read_export(out, shape)
    assert list(rows[0]) == COLUMNS
    assert [(row["user_id"], int(row["rank"])) for row in rows] == [
        ("u3", 1), ("u3", 2), ("nobody", 1), ("nobody", 2), ("u1", 1), ("u1", 2)
    ]
    assert {row["item_id"]: row["title"] for row in rows} == {
        item_id: title for item_id, title, _, _ in TINY_ITEMS if item_id in {row["item_id"] for row in rows}
    }


def test_export_format_overrides_the_suffix_and_goes_to_stdout(run):
    result = run("export", "--k", "1", "--out", "-", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["user_id"] for row in rows] == ["u1", "u2", "u3"]  # every user, by user_id
    assert "Wrote 3 rows to stdout." in result.stderr


def test_export_to_stdout_is_csv_by_default(run):
    result = run("export", "--k", "1", "--out", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == ",".join(COLUMNS)


@pytest.mark.parametrize("args", [("--out", "recs.txt"), ("--out", "recs.csv", "--format", "xlsx")])
def test_export_to_a_format_it_cannot_write_is_a_usage_error_naming_the_formats(run, tmp_path, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("export", *args)
    assert result.exit_code == 2
    message = " ".join(result.stderr.replace("│", " ").split())
    assert "csv, tsv, json, jsonl, parquet" in message
    assert not (tmp_path / "recs.txt").exists() and not (tmp_path / "recs.csv").exists()


def test_evaluate_as_csv_has_one_line_per_model_with_the_json_fields(cli, tiny_dir, monkeypatch):
    from engine.metrics import Scores

    scores = [
        Scores("recs (tuned)", 5, 3, 0.5, 0.1, 0.4, 0.1, 0.6, 0.2, 0.75, 0.01),
        Scores("most popular", 5, 3, 0.25, 0.1, 0.2, 0.1, 0.3, 0.2, 0.5, 0.0),
    ]
    monkeypatch.setattr(cli_module.engine, "evaluate", lambda *args, **kwargs: scores)  # the rendering only
    result = cli("--data-dir", tiny_dir, "evaluate", "--k", "5", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    as_json = json.loads(cli("--data-dir", tiny_dir, "evaluate", "--k", "5", "--json").stdout)["results"]
    assert rows == [{key: str(value) for key, value in entry.items()} for entry in as_json]
