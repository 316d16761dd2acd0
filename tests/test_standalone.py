"""A built recs.db answers on its own, without the CSV folder it was built from:
a model can be shipped to a server as one file."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

import api
import engine
from engine.config import PLAIN

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient


@pytest.fixture
def shipped(tiny_dir, tmp_path):
    """recs.db built from the tiny example and copied to a folder with no data folder: (db, answers before)."""
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PLAIN)
    before = engine.Recommender(db, tiny_dir).recommend("u1", 2).to_dict()
    server = tmp_path / "server"
    server.mkdir()
    shutil.copy2(db, server / "recs.db")
    shutil.rmtree(tiny_dir)
    return server / "recs.db", before


def test_queries_answer_from_the_database_as_built_with_one_note(cli, shipped):
    db, before = shipped
    result = cli("--db", db, "--data-dir", db.parent / "data", "recommend", "--user_id", "u1", "--k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == before
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Note: no data folder {db.parent / 'data'}: answering from {db} as built at 20")
    assert lines[0].endswith("; freshness is not checked")


def test_export_and_history_work_without_the_data_folder(cli, shipped, tmp_path):
    db, _ = shipped
    base = ("--db", db, "--data-dir", tmp_path / "nowhere")
    assert cli(*base, "history", "--user_id", "u1", "--json").exit_code == 0
    result = cli(*base, "export", "--k", "1", "--out", tmp_path / "out.csv")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out.csv").read_text().count("\n") == 4  # a header and three users


def test_the_engine_says_it_is_standalone_and_not_stale(shipped, tmp_path):
    db, before = shipped
    recommender = engine.Recommender(db, tmp_path / "nowhere")
    assert recommender.build_report is None and recommender.stale is None
    assert "freshness is not checked" in recommender.standalone
    assert recommender.info()["stale"] is False
    assert recommender.recommend("u1", 2).to_dict() == before


def test_the_api_serves_it(shipped, tmp_path):
    db, before = shipped
    with TestClient(api.create_app(db, tmp_path / "nowhere")) as client:
        assert client.get("/recommendations?user_id=u1&k=2").json() == before
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["stale"] is False


def test_without_a_database_either_it_is_still_an_error(cli, tmp_path):
    result = cli("--db", tmp_path / "recs.db", "--data-dir", tmp_path / "nowhere", "popular")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: data folder not found: {tmp_path / 'nowhere'} (set --data-dir or RECS_DATA_DIR)"


def test_a_data_folder_that_exists_but_lost_a_file_still_warns_as_stale(cli, tiny_dir):
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PLAIN)
    (tiny_dir / "events.csv").unlink()
    result = cli("--db", db, "--data-dir", tiny_dir, "popular", "--json")
    assert result.exit_code == 0
    assert result.stderr.startswith("Warning: answering from the model built at")
    assert "events.csv not found" in result.stderr
