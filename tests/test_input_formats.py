"""Real exports: gzipped files, other delimiters, other encodings, unix-time and
plain-date timestamps, several genres in one field. Each is read into the same
tables as the plain comma-separated UTF-8 files.
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

import engine
from engine.config import PLAIN
from conftest import (
    EVENTS_HEADER,
    ITEMS_HEADER,
    TINY_EVENTS,
    TINY_ITEMS,
    TINY_USERS,
    USERS_HEADER,
    random_dataset,
    write_dataset,
)

FILES = {"users.csv": USERS_HEADER, "items.csv": ITEMS_HEADER, "events.csv": EVENTS_HEADER}
TABLES = {
    "users": "select * from users order by user_id",
    "items": "select * from items order by item_key",
    "events": "select * from events order by all",
    "load_issues": "select file, line, column_name, problem, action from load_issues order by all",
    "item_popularity": "select item_id, score, popularity_rank from item_popularity order by popularity_rank",
}


def epoch_seconds(text: str) -> str:
    return str(int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()))


def epoch_millis(text: str) -> str:
    return str(int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000))


def write_variant(folder: Path, dataset, delimiter=",", gzipped=(), timestamps=None) -> Path:
    """The dataset's three files written with delimiter, the files named in gzipped as .csv.gz,
    each event's timestamp passed through timestamps."""
    folder.mkdir(parents=True)
    for (name, header), rows in zip(FILES.items(), dataset):
        if name == "events.csv" and timestamps:
            rows = [row[:4] + (timestamps(row[4]),) for row in rows]
        path = folder / (name + ".gz" if name in gzipped else name)
        opener = gzip.open if name in gzipped else open
        with opener(path, "wt", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    return folder


def tables(db: Path) -> dict[str, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(query).fetchall() for name, query in TABLES.items()}
    finally:
        con.close()


@pytest.fixture(scope="module")
def dataset():
    users, items, events = random_dataset(seed=11)
    # a few bad rows, so that the reported lines are compared too
    events = events + [("u1", "i404", "play", 60, events[0][4]), ("u2", "i1", "play", "abc", events[0][4])]
    return users, items, events


@pytest.fixture(scope="module")
def plain_tables(dataset, tmp_path_factory):
    folder = write_variant(tmp_path_factory.mktemp("plain") / "data", dataset)
    engine.build(folder.parent / "recs.db", folder, PLAIN)
    return tables(folder.parent / "recs.db")


VARIANTS = {
    "gzipped": dict(gzipped=("users.csv", "items.csv", "events.csv")),
    "semicolons": dict(delimiter=";"),
    "tabs": dict(delimiter="\t"),
    "pipes": dict(delimiter="|"),
    "epoch_seconds": dict(timestamps=epoch_seconds),
    "epoch_milliseconds": dict(timestamps=epoch_millis),
    "gzipped_semicolon_events_in_epoch_seconds": dict(
        delimiter=";", gzipped=("events.csv",), timestamps=epoch_seconds
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_export_in_another_shape_gives_the_same_tables(tmp_path, dataset, plain_tables, variant):
    folder = write_variant(tmp_path / "data", dataset, **VARIANTS[variant])
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    got = tables(tmp_path / "recs.db")
    for name, rows in plain_tables.items():
        assert got[name] == rows, name
    assert len(got["load_issues"]) == 2  # the two bad events, reported at the same lines


def test_a_missing_file_names_both_names_looked_for(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    (folder / "events.csv").unlink()
    with pytest.raises(engine.DataFileError) as caught:
        engine.build(tmp_path / "recs.db", folder, PLAIN)
    assert str(caught.value) == f"events.csv not found in {folder} (nor events.csv.gz)"


def test_a_file_both_plain_and_gzipped_is_refused(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    (folder / "items.csv.gz").write_bytes(gzip.compress((folder / "items.csv").read_bytes()))
    with pytest.raises(engine.DataFileError, match="both items.csv and items.csv.gz are in .*: keep one of them"):
        engine.build(tmp_path / "recs.db", folder, PLAIN)


def test_a_forced_delimiter_that_does_not_fit_names_it_in_the_error(tmp_path):
    folder = write_variant(tmp_path / "data", (TINY_USERS, TINY_ITEMS, TINY_EVENTS), delimiter=";")
    with pytest.raises(engine.DataFileError) as caught:
        engine.build(tmp_path / "recs.db", folder, PLAIN, input_format=engine.InputFormat(delimiter=","))
    message = str(caught.value)
    assert "users.csv, line 1: missing column(s) user_id (expected user_id; optional: age,gender,region" in message
    assert "read with the delimiter ','; the delimiter setting sets another" in message


@pytest.mark.parametrize(
    "delimiter, encoding, message",
    [
        (",,", "utf-8", "the delimiter must be one character such as , ; | or tab, not ',,'"),
        ('"', "utf-8", "the delimiter must be one character"),
        (None, "klingon", "unknown encoding 'klingon'; e.g. utf-8, cp1252, latin-1"),
    ],
)
def test_a_bad_delimiter_or_encoding_is_refused(delimiter, encoding, message):
    with pytest.raises(engine.BadArgument, match=message):
        engine.InputFormat(delimiter, encoding)


def test_tab_may_be_named():
    assert engine.InputFormat("tab").delimiter == "\t" == engine.InputFormat("\\t").delimiter


def cp1252_folder(tmp_path: Path) -> Path:
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    with (folder / "items.csv").open("ab") as handle:
        handle.write("i5,Café Noël – Übermorgen,movie,drama\n".encode("cp1252"))
    with (folder / "events.csv").open("a") as handle:
        handle.write("u3,i5,play,600,2024-01-04T12:00:00Z\n")
    return folder


def test_a_cp1252_title_is_reported_as_not_utf8_by_default(tmp_path):
    folder = cp1252_folder(tmp_path)
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    issues = con.execute("select file, line, problem from load_issues order by file").fetchall()
    assert issues == [
        ("events.csv", 7, "item_id 'i5' is not in items.csv"),
        ("items.csv", 6, "the row is not valid UTF-8 text"),
    ]


def test_with_its_encoding_a_cp1252_file_loads_every_row(tmp_path):
    folder = cp1252_folder(tmp_path)
    engine.build(tmp_path / "recs.db", folder, PLAIN, input_format=engine.InputFormat(encoding="cp1252"))
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    assert con.execute("select count(*) from load_issues").fetchone()[0] == 0
    assert con.execute("select title from items where item_id = 'i5'").fetchone()[0] == "Café Noël – Übermorgen"
    assert con.execute("select count(*) from events where item_id = 'i5'").fetchone()[0] == 1


def test_bytes_that_are_no_text_in_the_encoding_are_reported_with_its_name(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    with (folder / "items.csv").open("ab") as handle:
        handle.write(b"i5,Bad \x81 title,movie,drama\n")  # 0x81 is no character in cp1252
    engine.build(tmp_path / "recs.db", folder, PLAIN, input_format=engine.InputFormat(encoding="cp1252"))
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    assert con.execute("select file, line, problem from load_issues").fetchall() == [
        ("items.csv", 6, "the row is not valid cp1252 text")
    ]


def test_a_later_build_reads_the_files_as_the_last_one_did(tmp_path):
    folder = cp1252_folder(tmp_path)
    db = tmp_path / "recs.db"
    engine.build(db, folder, PLAIN, input_format=engine.InputFormat(encoding="cp1252"))
    with (folder / "events.csv").open("a") as handle:  # new data: the next query rebuilds
        handle.write("u1,i5,play,60,2024-01-05T12:00:00Z\n")
    recommender = engine.Recommender(db, folder, PLAIN)
    assert recommender.build_report is not None
    assert recommender.build_report.issues_by_file == {}
    assert recommender.history("u1").items[0].title == "Café Noël – Übermorgen"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1704448800", datetime(2024, 1, 5, 10, 0)),
        ("1704448800.25", datetime(2024, 1, 5, 10, 0, 0, 250000)),
        ("1704448800123", datetime(2024, 1, 5, 10, 0, 0, 123000)),
        ("2024-01-05", datetime(2024, 1, 5)),
        ("2024-01-05 10:00:00+02:00", datetime(2024, 1, 5, 8, 0)),
    ],
)
def test_timestamps_as_unix_time_or_plain_dates_are_read_as_utc(tmp_path, text, expected):
    events = [("u1", "i1", "play", 60, text)]
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, events)
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    assert con.execute("select watched_at from events").fetchall() == [(expected,)]
    assert expected.replace(tzinfo=timezone.utc).year == 2024


@pytest.mark.parametrize("text", ["20240105", "12345", "17044488001234"])
def test_numbers_that_are_neither_unix_seconds_nor_milliseconds_are_reported(tmp_path, text):
    events = TINY_EVENTS + [("u1", "i3", "play", 60, text)]
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, events)
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    assert con.execute("select line, problem from load_issues").fetchall() == [
        (7, f"timestamp '{text}' is not a date and time")
    ]


MULTI_GENRE_ITEMS = TINY_ITEMS[:3] + [("i4", "Romance Micro D", "microdrama", " Drama | Romance ")]


@pytest.fixture
def multi_genre(tmp_path) -> engine.Recommender:
    folder = write_dataset(tmp_path / "data", TINY_USERS, MULTI_GENRE_ITEMS, TINY_EVENTS)
    recommender = engine.Recommender(tmp_path / "recs.db", folder, PLAIN)
    yield recommender
    recommender.close()


def test_several_genres_in_one_field_are_stored_trimmed_and_lower_case(multi_genre):
    assert [item.genre for item in multi_genre.popular(4).items if item.item_id == "i4"] == ["drama|romance"]


@pytest.mark.parametrize("genre, expected", [("romance", ["i4"]), ("Drama", ["i1", "i4"]), (["romance", "action"], ["i3", "i4"])])
def test_each_genre_of_a_field_matches_a_genre_filter(multi_genre, genre, expected):
    assert sorted(item.item_id for item in multi_genre.popular(10, genre=genre).items) == expected


def test_the_known_genres_of_an_error_are_the_single_genres(multi_genre):
    with pytest.raises(engine.UnknownFilter, match=r"^no item has genre 'western'; known: action, drama, family, romance$"):
        multi_genre.popular(genre="western")


# --- through the command line -------------------------------------------------------


def test_cli_encoding_flag_reads_a_cp1252_file(cli, tmp_path):
    folder = cp1252_folder(tmp_path)
    result = cli("--db", tmp_path / "recs.db", "--data-dir", folder, "--encoding", "cp1252", "history", "--user_id", "u3", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Café Noël – Übermorgen" in [item["title"] for item in json.loads(result.stdout)["items"]]
    assert "load issues" not in result.stderr


def test_cli_delimiter_flag_forces_one(cli, tmp_path):
    folder = write_variant(tmp_path / "data", (TINY_USERS, TINY_ITEMS, TINY_EVENTS), delimiter="|")
    base = ("--db", tmp_path / "recs.db", "--data-dir", folder)
    forced = cli(*base, "--delimiter", ";", "popular")
    assert forced.exit_code == 1
    assert "users.csv, line 1: missing column(s)" in forced.stderr and "delimiter ';'" in forced.stderr
    detected = cli(*base, "popular", "--k", "2", "--json")
    assert detected.exit_code == 0, detected.stderr
    assert [item["item_id"] for item in json.loads(detected.stdout)["items"]] == ["i2", "i1"]


@pytest.mark.parametrize("flag, value", [("--delimiter", ";;"), ("--encoding", "klingon")])
def test_cli_bad_delimiter_or_encoding_is_a_usage_error(cli, tmp_path, flag, value):
    result = cli("--db", tmp_path / "recs.db", "--data-dir", tmp_path, flag, value, "popular")
    assert result.exit_code == 2
    assert value in result.stderr
