"""Safety of builds: files the app did not make are never replaced, builds that died
leave nothing behind, a full disk or bad CSVs leave the last good model serving,
and a repeated header line is reported, not loaded."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import engine
from conftest import (
    EVENTS_HEADER,
    ITEMS_HEADER,
    ROOT,
    TINY_EVENTS,
    TINY_ITEMS,
    TINY_USERS,
    write_csv,
    write_dataset,
)
from engine.config import PLAIN

build_module = sys.modules["engine.build"]  # engine.build is also the name of the function


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".building-" in path.name)


# --- 1. a file the app did not build is never replaced --------------------------------


def test_a_foreign_duckdb_database_is_refused_and_left_as_it_was(cli, tiny_dir, tmp_path):
    db = tmp_path / "theirs.db"
    con = duckdb.connect(str(db))
    con.execute("create table invoices as select 1 as invoice_id, 99.5 as amount")
    con.close()
    before = sha256(db)
    expected = (
        f"Error: {db} is not a recs database built by this app (a DuckDB database without a build_info "
        "table); pick another --db, or 'python cli.py build --force' to replace it"
    )
    for command in (["build"], ["popular", "--k", "2"], ["recommend", "--user_id", "u1"]):
        result = cli("--db", db, "--data-dir", tiny_dir, *command)
        assert result.exit_code == 1, command
        assert error_lines(result) == [expected]
    with pytest.raises(engine.NotOurDatabase):
        engine.build(db, tiny_dir, PLAIN)
    assert sha256(db) == before
    assert leftovers(tmp_path) == []


def test_build_force_replaces_a_foreign_database(cli, tiny_dir, tmp_path):
    db = tmp_path / "theirs.db"
    duckdb.connect(str(db)).execute("create table t as select 1 as a").close()
    result = cli("--db", db, "--data-dir", tiny_dir, "build", "--force", "--param", "max_neighbors=3")
    assert result.exit_code == 0, result.stderr
    assert engine.Recommender(db, auto_build=False).popular(1).items[0].item_id == "i2"


def test_a_csv_given_as_db_is_refused_and_left_as_it_was(cli, tiny_dir):
    db = tiny_dir / "events.csv"
    before = sha256(db)
    for command in (["build"], ["popular"]):
        result = cli("--db", db, "--data-dir", tiny_dir, *command)
        assert result.exit_code == 1
        assert error_lines(result) == [
            f"Error: {db} is not a recs database built by this app (not a DuckDB database file); "
            "pick another --db, or 'python cli.py build --force' to replace it"
        ]
    assert sha256(db) == before
    assert leftovers(tiny_dir) == []


def test_the_api_refuses_to_start_over_a_foreign_file(tiny_dir):
    from fastapi.testclient import TestClient

    import api

    db = tiny_dir / "items.csv"
    before = sha256(db)
    with pytest.raises(engine.NotOurDatabase):
        with TestClient(api.create_app(db, tiny_dir)):
            pass
    assert sha256(db) == before


@pytest.mark.parametrize("command", [["build", "--param", "max_neighbors=3"], ["popular", "--k", "1"]])
def test_a_corrupt_recs_db_of_ours_is_moved_aside_not_deleted(cli, built, tiny_dir, command):
    data = built.read_bytes()
    built.write_bytes(data[: len(data) // 3])  # a truncated copy: the DuckDB header, then too little
    damaged = sha256(built)
    result = cli("--db", built, "--data-dir", tiny_dir, *command)
    assert result.exit_code == 0, result.stderr
    aside = [path for path in built.parent.iterdir() if path.name.startswith("recs.db.corrupt-")]
    assert len(aside) == 1 and sha256(aside[0]) == damaged
    assert f"The old file could not be read; it was kept as {aside[0]}." in (result.stdout + result.stderr)
    assert engine.Recommender(built, auto_build=False).popular(1).items[0].item_id == "i2"


# --- 2. leftovers of builds that died; a full disk --------------------------------------


def test_a_build_removes_only_leftovers_of_builds_whose_process_is_gone(built, tiny_dir):
    folder = built.parent
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dead_files = [f"recs.db.building-{gone.pid}", f"recs.db.building-{gone.pid}.wal"]
        kept_files = [
            f"recs.db.building-{alive.pid}",  # a build still running
            f"other.db.building-{gone.pid}",  # another database's
            "recs.db.building-notes",  # not our name
            f"recs.db.building-{gone.pid}.txt",
        ]
        for name in dead_files + kept_files:
            (folder / name).write_text("x")
        spill = folder / "recs.db.spill"  # a dead build's spill folder
        spill.mkdir()
        (spill / "duckdb_temp_storage_DEFAULT-0.tmp").write_text("x")
        engine.build(built, tiny_dir, PLAIN)
        assert leftovers(folder) == sorted(kept_files)
        assert not spill.exists()
    finally:
        alive.communicate(b"")


def test_a_build_killed_midway_leaves_the_old_db_serving_and_the_next_build_cleans_up(tmp_path):
    folder = tmp_path / "shop"  # the CSVs and the database in one folder
    write_dataset(folder, TINY_USERS, TINY_ITEMS, TINY_EVENTS)
    db = folder / "recs.db"
    engine.build(db, folder, PLAIN)
    before = sha256(db)
    generated = subprocess.run(
        [sys.executable, str(ROOT / "data" / "generate.py"), "--users", "3000", "--items", "800",
         "--events", "200000", "--out", str(folder)],
        capture_output=True, text=True,
    )
    assert generated.returncode == 0, generated.stderr
    # a plain build tunes on 200k events: far slower than finding its temp file
    building = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "--db", str(db), "--data-dir", str(folder), "build"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    temp = folder / f"recs.db.building-{building.pid}"
    deadline = time.monotonic() + 120
    while not temp.exists() and building.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    building.send_signal(signal.SIGKILL)
    building.wait()
    assert temp.exists(), "the build ended before its temp file was seen"

    assert sha256(db) == before
    answer = engine.Recommender(db, folder, auto_build=False).popular(2)
    assert [item.item_id for item in answer.items] == ["i2", "i1"]  # the old, tiny model

    report = engine.build(db, folder, PLAIN)
    assert report.rows["items"] == 800
    assert sorted(path.name for path in folder.iterdir()) == [
        "events.csv", "items.csv", "recs.db", "recs.db.lock", "users.csv"
    ]


def disk_full_at(path: Path):
    """A stand-in for a build step that finds the disk of path full, as DuckDB reports it."""

    def step(*args, **kwargs):
        raise duckdb.IOException(f'IO Error: Could not write file "{path}": No space left on device')

    return step


def test_a_full_disk_stops_the_build_and_the_old_db_keeps_serving(cli, built, tiny_dir, monkeypatch):
    folder = built.parent
    before = sha256(built)
    temp = folder / f"recs.db.building-{os.getpid()}"
    monkeypatch.setattr(build_module, "model_into", disk_full_at(Path(f"{temp}.wal")))
    expected = (
        f"no space left on the disk of {folder}: the build stopped and removed its partial file; "
        "recs.db was left as it was (free some space, or put --db on another disk)"
    )
    with pytest.raises(engine.DiskFull) as raised:
        engine.build(built, tiny_dir, PLAIN, rebuild=True)  # recs.db is current: built all the same
    assert str(raised.value) == expected
    assert sha256(built) == before and leftovers(folder) == []

    result = cli("--db", built, "--data-dir", tiny_dir, "build")
    assert result.exit_code == 1 and error_lines(result) == [f"Error: {expected}"]

    write_csv(tiny_dir / "events.csv", EVENTS_HEADER, TINY_EVENTS[:3])  # the CSVs changed: a rebuild is due
    result = cli("--db", built, "--data-dir", tiny_dir, "popular", "--k", "1", "--json")
    assert result.exit_code == 0
    assert [line.split(": ")[-1] for line in error_lines(result)] == [expected.split(": ")[-1]]
    assert '"item_id": "i2"' in result.stdout
    assert sha256(built) == before and leftovers(folder) == []


def test_a_full_scratch_disk_is_named(built, tiny_dir, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"

    def stage_all(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(scratch / "events.csv"))

    monkeypatch.setattr(build_module.load, "stage_all", stage_all)
    with pytest.raises(engine.DiskFull, match=f"no space left on the disk of {scratch}:"):
        engine.build(built, tiny_dir, PLAIN, rebuild=True)
    assert leftovers(built.parent) == []


# --- 3. a repeated header line --------------------------------------------------------


@pytest.mark.parametrize("file", ["users.csv", "items.csv", "events.csv"])
def test_a_repeated_header_line_is_reported_and_skipped(tiny_dir, file):
    path = tiny_dir / file
    lines = path.read_text(encoding="utf-8").splitlines()
    # a second export appended: its own BOM, other case, spaces around the names
    lines.insert(3, "\ufeff" + " , ".join(name.upper() for name in lines[0].split(",")) + " ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tiny_dir.parent / "recs.db"
    report = engine.build(db, tiny_dir, PLAIN)
    assert report.rows["users"] == 3 and report.rows["items"] == 4 and report.rows["events"] == 5
    issues = engine.Recommender(db, auto_build=False).load_issues()
    assert [(i["file"], i["line"], i["problem"], i["action"]) for i in issues] == [
        (file, 4, "repeated header line", "row skipped")
    ]
    titles = [item.title for item in engine.Recommender(db, auto_build=False).popular(10).items]
    assert "title" not in [title.lower() for title in titles]


def test_a_row_that_only_contains_a_column_name_is_still_data(tiny_dir):
    write_csv(tiny_dir / "items.csv", ITEMS_HEADER, TINY_ITEMS + [("title", "Title", "movie", "drama")])
    db = tiny_dir.parent / "recs.db"
    report = engine.build(db, tiny_dir, PLAIN)
    assert report.rows["items"] == 5 and report.issues_by_file == {}


# --- 4. bad CSVs after a good build: answer from the last good model -------------------


QUERIES = [
    ["popular", "--k", "2"],
    ["recommend", "--user_id", "u1", "--k", "2"],
    ["history", "--user_id", "u1"],
    ["similar", "--item_id", "i1", "--k", "2"],
]


MISSING_ITEM_ID = "(expected item_id; optional: title,content_type,genre; an export's own names are mapped in the settings' [columns.items])"


@pytest.fixture
def broken_items(built, tiny_dir) -> Path:
    """A good recs.db, then an items.csv without its item_id column."""
    write_csv(tiny_dir / "items.csv", ITEMS_HEADER[1:], [row[1:] for row in TINY_ITEMS])
    return built


def test_queries_answer_from_the_last_good_model_with_one_warning(cli, broken_items, tiny_dir, tmp_path):
    db = broken_items
    before = sha256(db)
    built_at = engine.Recommender(db, auto_build=False).info()["built_at"]
    warning = (
        f"Warning: answering from the model built at {built_at}: {tiny_dir / 'items.csv'}, line 1: "
        f"missing column(s) item_id {MISSING_ITEM_ID}"
    )
    for command in QUERIES + [["export", "--out", tmp_path / "out.csv", "--k", "2"]]:
        result = cli("--db", db, "--data-dir", tiny_dir, *command)
        assert result.exit_code == 0, (command, result.stderr)
        assert [line for line in error_lines(result) if not line.startswith("Note:")] == [warning], command
    assert (tmp_path / "out.csv").read_text().startswith("user_id,rank,item_id")

    result = cli("--db", db, "--data-dir", tiny_dir, "build")
    assert result.exit_code == 1
    assert error_lines(result) == [f"Error: {warning.split(': ', 2)[2]}"]
    assert sha256(db) == before


def test_the_api_serves_the_last_good_model_and_health_says_it_is_stale(broken_items, tiny_dir):
    from fastapi.testclient import TestClient

    import api

    with TestClient(api.create_app(broken_items, tiny_dir)) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["stale"] is True
        assert health["stale_reason"].endswith(f"items.csv, line 1: missing column(s) item_id {MISSING_ITEM_ID}")
        assert client.get("/popular", params={"k": 1}).json()["items"][0]["item_id"] == "i2"

        write_csv(tiny_dir / "items.csv", ITEMS_HEADER, TINY_ITEMS)
        engine.build(broken_items, tiny_dir, PLAIN)  # a later good build clears it
        health = client.get("/health").json()
        assert health["stale"] is False and health["stale_reason"] is None


def test_a_fresh_model_is_not_stale(tiny):
    assert tiny.stale is None and tiny.info()["stale"] is False


def test_without_a_good_model_a_bad_csv_is_an_error_as_before(cli, tiny_dir):
    write_csv(tiny_dir / "items.csv", ITEMS_HEADER[1:], [row[1:] for row in TINY_ITEMS])
    db = tiny_dir.parent / "recs.db"
    result = cli("--db", db, "--data-dir", tiny_dir, "popular")
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"Error: {tiny_dir / 'items.csv'}, line 1: missing column(s) item_id {MISSING_ITEM_ID}"
    ]
    assert not db.exists()



# --- 5. a default build bounds its memory ---------------------------------------------


def test_a_default_build_takes_an_eighth_of_the_memory_it_may_use(monkeypatch, tmp_path):
    from engine import db

    monkeypatch.setattr(db, "available_memory", lambda: 24 * 2**30)
    assert db.default_memory_limit() == "3072MiB"
    monkeypatch.setattr(db, "available_memory", lambda: 2 * 2**30)
    assert db.default_memory_limit() == "512MiB"  # the floor


def test_a_cgroup_limit_below_the_ram_counts(monkeypatch, tmp_path):
    from engine import db

    unlimited, limited = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    unlimited.write_text("max\n")
    limited.write_text(f"{4 * 2**30}\n")
    monkeypatch.setattr(db, "CGROUP_LIMITS", (unlimited, tmp_path / "absent"))
    ram = db.available_memory()
    assert ram is not None and ram > 4 * 2**30
    monkeypatch.setattr(db, "CGROUP_LIMITS", (unlimited, limited))
    assert db.available_memory() == 4 * 2**30


@pytest.mark.parametrize(("setting", "expected"), [(None, "3.0 GiB"), ("1GiB", "1.0 GiB")])
def test_recs_memory_limit_wins_over_the_default(monkeypatch, tmp_path, setting, expected):
    from engine import db

    monkeypatch.setattr(db, "available_memory", lambda: 24 * 2**30)
    if setting is None:
        monkeypatch.delenv("RECS_MEMORY_LIMIT", raising=False)
    else:
        monkeypatch.setenv("RECS_MEMORY_LIMIT", setting)
    con = duckdb.connect()
    db.configure(con, tmp_path / "spill")
    assert con.execute("select current_setting('memory_limit')").fetchone()[0] == expected
    con.close()
