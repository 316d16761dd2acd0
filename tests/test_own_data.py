"""Bring your own data: an export of another shape loads with a few lines of settings
(recs.toml [files], [columns.*], [encodings]), and nothing in it disappears unreported."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import engine
import duckdb

from engine import load, settings
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_USERS, write_csv, write_dataset

MOVIELENS_TOML = """
[files]
events = "ratings.csv"
items = "movies.csv"

[columns.events]
user_id = "userId"
item_id = "movieId"
watch_seconds = "rating"

[columns.items]
item_id = "movieId"
genre = "genres"
"""

GENRES = ["Adventure|Animation|Children", "Comedy|Romance", "Drama", "Action|Adventure|Thriller", "Drama|Romance"]


def rows(db: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def movielens_export(folder: Path, seed: int = 5) -> Path:
    """A MovieLens-style export as downloaded: ratings.csv and movies.csv, no users file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    movies = [(str(m), f"Movie {m} ({1990 + m % 30})", GENRES[m % len(GENRES)]) for m in range(1, 41)]
    write_csv(folder / "movies.csv", ("movieId", "title", "genres"), movies)
    ratings = set()
    for user in range(1, 31):
        liked = rng.sample(range(1, 41), 12)
        for movie in liked:
            ratings.add((str(user), str(movie), rng.choice(["3.0", "3.5", "4.0", "4.5", "5.0"]),
                         str(1_600_000_000 + user * 5000 + movie * 60)))
    write_csv(folder / "ratings.csv", ("userId", "movieId", "rating", "timestamp"), sorted(ratings))
    return folder


def test_a_movielens_export_builds_with_only_a_settings_file_beside_it(cli, tmp_path, monkeypatch):
    folder = movielens_export(tmp_path / "ml")
    (tmp_path / "recs.toml").write_text(f'data_dir = "{folder.name}"\n' + MOVIELENS_TOML)
    monkeypatch.chdir(tmp_path)
    built = cli("build", "--no-tune")
    assert built.exit_code == 0, built.stderr
    assert "not in users.csv" not in built.stdout  # there is no users file to be missing from
    recommended = cli("recommend", "--user_id", "1", "--k", "5", "--json")
    assert recommended.exit_code == 0, recommended.stderr
    answer = json.loads(recommended.stdout)
    assert not answer["fallback_used"] and len(answer["items"]) == 5
    assert {item["source"] for item in answer["items"]} == {"personalised"}
    drama = json.loads(cli("recommend", "--user_id", "1", "--k", "3", "--genre", "adventure", "--json").stdout)
    assert drama["items"] and all("adventure" in item["genre"].split("|") for item in drama["items"])
    recommender = engine.Recommender(tmp_path / "recs.db", auto_build=False)
    issues = recommender.load_issues(limit=20)
    # movies.csv has no content_type: said once on its header line, not on each of its 40 rows;
    # ratings.csv has no event_type: every event is a play
    assert [(i["file"], i["line"], i["column_name"], i["action"]) for i in issues] == [
        ("movies.csv", 1, "content_type", "kept, content_type unknown on every row"),
        ("ratings.csv", 1, "event_type", "kept, event_type 'play' on every row"),
    ]
    assert rows(tmp_path / "recs.db", "select count(*) from users") == [(0,)]


def test_a_four_column_events_file_in_another_order_loads(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    write_csv(
        folder / "events.csv", ("user_id", "item_id", "timestamp", "watch_seconds"),
        [(u, i, ts, s) for u, i, _, s, ts in TINY_EVENTS],
    )
    report = engine.build(tmp_path / "recs.db", folder, engine.ModelParams())
    assert report.rows["events"] == len(TINY_EVENTS)
    assert rows(tmp_path / "recs.db", "select distinct event_type from events") == [("play",)]


def test_without_a_users_file_users_come_from_the_events(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    (folder / "users.csv").unlink()
    report = engine.build(tmp_path / "recs.db", folder, engine.ModelParams())
    assert report.rows["users"] == 0 and report.rows["events"] == len(TINY_EVENTS)
    recommender = engine.Recommender(tmp_path / "recs.db", tmp_path / "data")
    assert recommender.recommend("u1", k=2).items


def test_a_users_file_named_in_the_settings_must_be_there(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    with pytest.raises(engine.DataFileError, match=r"people.csv not found in .* named by files.users"):
        engine.build(tmp_path / "recs.db", folder, engine.ModelParams(),
                     input_format=engine.InputFormat(files={"users": "people.csv"}))


def test_each_file_has_its_own_encoding_and_a_bom_decides(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    users = (folder / "users.csv").read_text(encoding="utf-8").replace("Jakarta", "Jakarta Selatan é")
    (folder / "users.csv").write_bytes(b"\xef\xbb\xbf" + users.encode("utf-8"))  # UTF-8 with a BOM
    items = (folder / "items.csv").read_text(encoding="utf-8").replace("i1,", "i1,Café ", 1)
    assert "Café" in items
    (folder / "items.csv").write_bytes(items.encode("cp1252"))
    form = engine.InputFormat(encoding="cp1252")  # the common setting: wrong for users.csv, whose BOM wins
    report = engine.build(tmp_path / "recs.db", folder, engine.ModelParams(), input_format=form)
    assert report.issues_by_file == {}
    assert rows(tmp_path / "recs.db", "select region from users where user_id = 'u1'") == [("Jakarta Selatan é",)]
    assert rows(tmp_path / "recs.db", "select title from items where item_id = 'i1'")[0][0].startswith("Café")
    # the same files, the encoding set for items alone
    form = engine.InputFormat(encodings={"items": "cp1252"})
    report = engine.build(tmp_path / "recs2.db", folder, engine.ModelParams(), input_format=form)
    assert report.issues_by_file == {}


def test_a_utf16_file_with_its_bom_is_read(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    text = (folder / "items.csv").read_text(encoding="utf-8")
    (folder / "items.csv").write_bytes(text.encode("utf-16"))  # Excel's "Unicode text": a BOM, two bytes a character
    report = engine.build(tmp_path / "recs.db", folder, engine.ModelParams())
    assert report.rows["items"] == len(TINY_ITEMS) and report.issues_by_file == {}


def test_columns_nothing_reads_are_reported_once_not_refused(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    write_csv(folder / "items.csv", ("item_id", "title", "content_type", "genre", "studio"),
              [(*row, "Acme") for row in TINY_ITEMS])
    engine.build(tmp_path / "recs.db", folder, engine.ModelParams())
    issues = engine.Recommender(tmp_path / "recs.db", auto_build=False).load_issues()
    assert [(i["file"], i["line"], i["column_name"], i["action"]) for i in issues] == [
        ("items.csv", 1, "studio", "column ignored")
    ]


def test_a_mapped_column_the_file_has_not_is_named_in_the_error(tmp_path):
    folder = write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    form = engine.InputFormat(columns={"items": {"genre": "genres"}})
    with pytest.raises(engine.DataFileError, match=r"items.csv, line 1: missing column\(s\) genres \(read as genre\)"):
        engine.build(tmp_path / "recs.db", folder, engine.ModelParams(), input_format=form)


@pytest.mark.parametrize("toml, message", [
    ('[files]\nclicks = "x.csv"\n', "files: unknown file 'clicks'; known: users, items, events"),
    ('[columns.events]\nrating = "stars"\n', "columns.events: 'rating' is not a column of ours"),
    ('[encodings]\nitems = "klingon"\n', "unknown encoding 'klingon'"),
    ('files = "ratings.csv"\n', "files must be a table ([files])"),
    ('[files]\nevents = "/tmp/ratings.csv"\n', "files.events must be a file name in the data folder"),
])
def test_bad_shape_settings_are_refused_with_the_file_named(tmp_path, toml, message):
    path = tmp_path / "recs.toml"
    path.write_text(toml)
    with pytest.raises(engine.BadArgument) as caught:
        settings.read_config(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_the_input_format_survives_build_info_and_a_background_rebuild(tmp_path):
    form = engine.InputFormat(files={"events": "ratings.csv"}, columns={"events": {"user_id": "userId"}})
    as_json = json.loads(json.dumps(__import__("dataclasses").asdict(form)))
    assert engine.InputFormat(**as_json) == form


def test_ingest_reads_the_mapping_the_build_read(cli, tmp_path, monkeypatch):
    folder = movielens_export(tmp_path / "ml")
    (tmp_path / "recs.toml").write_text(MOVIELENS_TOML)
    monkeypatch.chdir(tmp_path)
    assert cli("--data-dir", folder, "build", "--no-tune").exit_code == 0
    write_csv(tmp_path / "more.csv", ("userId", "movieId", "rating", "timestamp"), [("1", "2", "4.0", "1700000000")])
    result = cli("--data-dir", folder, "ingest", tmp_path / "more.csv", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == 1


def test_the_python_api_does_not_mention_command_line_flags(tmp_path):
    with pytest.raises(engine.DataFileError) as caught:
        load.sources(tmp_path / "nowhere")
    assert str(caught.value) == f"data folder not found: {tmp_path / 'nowhere'}"


def test_a_build_from_another_data_folder_warns_naming_both_and_goes_on(cli, tmp_path):
    first = write_dataset(tmp_path / "movies", TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    other = write_dataset(tmp_path / "other", TINY_USERS, TINY_ITEMS, TINY_EVENTS[:4])
    db = tmp_path / "recs.db"
    assert cli("--db", db, "--data-dir", first, "build", "--no-tune").exit_code == 0
    replaced = cli("--db", db, "--data-dir", other, "build", "--no-tune")
    assert replaced.exit_code == 0, replaced.stderr
    warning = f"Warning: {db} was built from the data folder {first.resolve()}; this build replaces it with a model of {other.resolve()}"
    assert warning in " ".join(replaced.stderr.split())
    assert "Built" in replaced.stdout
    again = engine.build(db, first, tune=False)
    assert again.replaced_data_dir == str(other.resolve())
    same = engine.build(db, first, tune=False, rebuild=True)
    assert same.replaced_data_dir is None  # the same folder: nothing to warn about
