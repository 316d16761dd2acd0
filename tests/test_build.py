"""Building recs.db: auto-build and freshness, the atomic swap under readers, no
leftovers, stale WAL files, locks, concurrent builds, and how the CSV loader
maps, validates and numbers the rows it reports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from datetime import datetime

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
    write_csv,
    write_dataset,
)

PARAMS = PLAIN

# Three full views of i4 outscore i2 (about 1.84): i4 becomes the most popular item.
I4_ON_TOP = TINY_EVENTS + [(user, "i4", "play", 5000, "2024-01-05T10:00:00Z") for user in ("u1", "u2", "u3")]


def query(db, sql: str) -> list[tuple]:
    """One read-only look at db, closed again (so no connection lingers in DuckDB's cache)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def top(db, k: int = 3) -> list[str]:
    return [row[0] for row in query(db, f"select item_id from popular({k})")]


def leftovers(db) -> list[str]:
    return sorted(path.name for path in db.parent.glob(db.name + ".building-*"))


@pytest.fixture
def db(tiny_dir):
    return tiny_dir.parent / "recs.db"


@pytest.fixture
def built(db, tiny_dir):
    """recs.db built from the tiny example."""
    engine.build(db, tiny_dir, PARAMS)
    return db


def events_file(folder, text: str) -> None:
    (folder / "events.csv").write_bytes(text.encode("utf-8"))


# Auto-build and freshness

def test_recommender_builds_a_missing_database(db, tiny_dir):
    assert not db.exists()
    recommender = engine.Recommender(db, tiny_dir)
    assert recommender.build_report is not None
    assert [item.item_id for item in recommender.popular(3).items] == ["i2", "i1", "i3"]
    recommender.close()


def test_recommender_does_not_rebuild_a_fresh_database(db, tiny_dir):
    engine.Recommender(db, tiny_dir).close()
    again = engine.Recommender(db, tiny_dir)
    assert again.build_report is None
    again.close()


def test_recommender_rebuilds_after_events_csv_changes(db, tiny_dir):
    engine.Recommender(db, tiny_dir).close()
    with (tiny_dir / "events.csv").open("a") as handle:
        handle.write("u3,i4,play,500,2024-01-05T10:00:00Z\n")
    after = engine.Recommender(db, tiny_dir)
    assert after.build_report is not None
    assert "i4" in [row.item_id for row in after.history("u3").items]
    after.close()


# The atomic swap

def test_open_recommender_sees_a_rebuild_made_after_it_was_opened(built, tmp_path):
    recommender = engine.Recommender(built, auto_build=False)
    assert recommender.popular(1).items[0].item_id == "i2"
    engine.build(built, write_dataset(tmp_path / "new", TINY_USERS, TINY_ITEMS, I4_ON_TOP), PARAMS)
    try:
        assert recommender.popular(1).items[0].item_id == "i4"
    finally:
        recommender.close()


def test_reader_opened_before_a_rebuild_keeps_reading_the_old_file(built, tmp_path):
    reader = duckdb.connect(str(built), read_only=True)
    assert reader.execute("select item_id from popular(1)").fetchall() == [("i2",)]
    engine.build(built, write_dataset(tmp_path / "new", TINY_USERS, TINY_ITEMS, I4_ON_TOP), PARAMS)
    assert reader.execute("select item_id from popular(1)").fetchall() == [("i2",)]
    assert reader.execute("select count(*) from events").fetchone() == (5,)
    reader.close()
    assert top(built, 1) == ["i4"]  # the rebuild did replace the file


# No leftovers

def test_build_leaves_no_temporary_files(built):
    assert leftovers(built) == []
    assert top(built) == ["i2", "i1", "i3"]


def test_failed_build_keeps_the_old_database_and_leaves_no_temporary_files(built, tiny_dir):
    write_csv(tiny_dir / "items.csv", ITEMS_HEADER[1:], [row[1:] for row in TINY_ITEMS])
    with pytest.raises(engine.DataFileError, match="item_id"):
        engine.build(built, tiny_dir, PARAMS)
    assert leftovers(built) == []
    assert top(built) == ["i2", "i1", "i3"]


def _wal_adding_a_table(con):
    con.execute("create table stale_marker as select 42 as x")


def _wal_clashing_with_our_tables(con):
    con.execute("create table items (x integer)")  # replayed, it fails: items already exists
    con.execute("insert into items select range from range(100)")


@pytest.mark.parametrize("write_wal", [_wal_adding_a_table, _wal_clashing_with_our_tables])
def test_stale_wal_beside_the_database_is_not_replayed_after_a_build(built, tiny_dir, tmp_path, write_wal):
    other = tmp_path / "other.db"
    con = duckdb.connect(str(other))
    write_wal(con)
    shutil.copy(f"{other}.wal", f"{built}.wal")  # copied before close() checkpoints it away
    con.close()
    engine.build(built, tiny_dir, PARAMS)
    assert top(built) == ["i2", "i1", "i3"]
    tables = {row[0] for row in query(built, "show tables")}
    assert "stale_marker" not in tables
    assert query(built, "select count(*) from items") == [(4,)]


# Locks and concurrency

def test_database_held_open_for_writing_raises_database_locked(built, tiny_dir):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(built)!r}); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(engine.DatabaseLocked) as caught:
            engine.Recommender(built, tiny_dir)
        message = str(caught.value)
        assert "locked" in message
        assert "duckdb -readonly" in message
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_two_concurrent_builds_both_succeed_and_leave_a_valid_database(db, tiny_dir):
    start = threading.Barrier(2)
    reports, errors = [], []

    def build() -> None:
        start.wait()
        try:
            reports.append(engine.build(db, tiny_dir, PARAMS))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(reports) == 2
    assert top(db) == ["i2", "i1", "i3"]
    assert leftovers(db) == []


# Loading: line numbers, mapping by name, BOM, timestamps, empty events

def _events_text(line_4_ending: str, everywhere: str = "\n") -> str:
    lines = [
        "user_id,item_id,event_type,watch_seconds,timestamp",  # line 1: header
        "u1,i1,play,1200,2024-01-01T10:00:00Z",                # line 2: good
        "",                                                    # line 3: blank
        "u1,i2,play,900,2024-01-02T10:00:00Z" + line_4_ending,  # line 4: good (ending varies)
        'u2,i2,"pl',                                           # line 5: quoted event_type with an
        'ay",1200,2024-01-02T11:00:00Z',                       # line 6:   embedded newline: unknown type
        "u2,i3,play,300",                                      # line 7: ragged, 4 fields
        "u3,i1,play,abc,2024-01-03T12:00:00Z",                 # line 8: watch_seconds not a number
        "u3,i2,play,60,2024-01-03T12:00:00Z",                  # line 9: good
    ]
    return everywhere.join(lines) + everywhere


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_events_text(""), id="lf"),
        pytest.param(_events_text("", everywhere="\r\n"), id="crlf-everywhere"),
        pytest.param(
            _events_text("\r"),
            id="one-crlf-line",
        ),
    ],
)
def test_load_issues_report_file_line_numbers(db, tiny_dir, text):
    events_file(tiny_dir, text)
    report = engine.build(db, tiny_dir, PARAMS)
    issues = query(db, "select file, line, column_name from load_issues order by line")
    assert issues == [
        ("events.csv", 5, "event_type"),
        ("events.csv", 7, None),
        ("events.csv", 8, "watch_seconds"),
    ]
    assert report.rows["events"] == 3
    assert query(db, "select count(*) from events") == [(3,)]


def test_events_header_in_another_order_is_mapped_by_name(db, tiny_dir):
    header = ("item_id", "user_id") + EVENTS_HEADER[2:]
    write_csv(tiny_dir / "events.csv", header, [(item, user, *rest) for user, item, *rest in TINY_EVENTS])
    engine.build(db, tiny_dir, PARAMS)
    loaded = query(db, "select user_id, item_id from events order by all")
    assert loaded == sorted((user, item) for user, item, *_ in TINY_EVENTS)


def test_byte_order_mark_at_the_start_of_files_is_accepted(db, tiny_dir):
    for name in ("users.csv", "items.csv", "events.csv"):
        path = tiny_dir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = engine.build(db, tiny_dir, PARAMS)
    assert report.issues_by_file == {}
    assert (report.rows["users"], report.rows["items"], report.rows["events"]) == (3, 4, 5)
    assert query(db, "select user_id from users order by user_id") == [("u1",), ("u2",), ("u3",)]


def test_timestamps_are_stored_in_utc_and_bad_ones_are_reported(db, tiny_dir):
    write_csv(tiny_dir / "events.csv", EVENTS_HEADER, [
        ("u1", "i1", "play", 100, "2024-01-01T10:00:00+07:00"),  # line 2
        ("u1", "i2", "play", 100, "2024-01-01T10:00:00Z"),       # line 3
        ("u2", "i1", "play", 100, "yesterday"),                  # line 4
        ("u2", "i2", "play", 100, "2024-02-30T10:00:00Z"),       # line 5
    ])
    engine.build(db, tiny_dir, PARAMS)
    assert query(db, "select user_id, item_id, watched_at from events order by all") == [
        ("u1", "i1", datetime(2024, 1, 1, 3, 0)),
        ("u1", "i2", datetime(2024, 1, 1, 10, 0)),
    ]
    issues = query(db, "select line, column_name, problem from load_issues order by line")
    assert [(line, column) for line, column, _ in issues] == [(4, "timestamp"), (5, "timestamp")]
    assert "yesterday" in issues[0][2] and "2024-02-30" in issues[1][2]


def test_header_only_events_build_a_catalogue_order_fallback(db, tiny_dir):
    write_csv(tiny_dir / "events.csv", EVENTS_HEADER, [])
    report = engine.build(db, tiny_dir, PARAMS)
    assert report.rows["events"] == 0
    recommender = engine.Recommender(db, tiny_dir)
    popular = recommender.popular(10).items
    assert [item.item_id for item in popular] == ["i1", "i2", "i3", "i4"]
    assert {item.score for item in popular} == {0}
    recs = recommender.recommend("u1", 3)
    assert recs.fallback_used is True
    assert [item.item_id for item in recs.items] == ["i1", "i2", "i3"]
    recommender.close()
