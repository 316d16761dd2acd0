"""A server's background rebuild keeps what the server was started with, and a model shipped
without its data folder is served as built, never marked stale."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path


import api
import engine
from engine.build import built_state
from engine.config import PLAIN
from engine.watcher import Watcher
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_USERS, write_dataset

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient

PINNED = replace(PLAIN, popularity_prior=7.0, max_neighbors=3)


def changed_data(folder: Path) -> None:
    write_dataset(folder, TINY_USERS, TINY_ITEMS, TINY_EVENTS + [("u3", "i4", "play", 60, "2024-01-04T10:00:00Z")])


def test_a_background_rebuild_keeps_the_pinned_parameters(tiny_dir):
    db = tiny_dir.parent / "recs.db"
    recommender = engine.Recommender(db, tiny_dir, PINNED)
    assert built_state(db).params["popularity_prior"] == 7.0
    changed_data(tiny_dir)
    assert Watcher(recommender, 0).check()
    state = built_state(db)
    assert state.params == PINNED.as_dict() and state.params_source == "pinned"
    assert recommender.info()["events"] == 6


def test_a_background_rebuild_never_re_tunes(tiny_dir):
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PINNED)  # as if tuned: the parameters kept in recs.db
    recommender = engine.Recommender(db, tiny_dir)  # nothing pinned
    changed_data(tiny_dir)
    assert Watcher(recommender, 0).check()
    assert built_state(db).params == PINNED.as_dict()  # reused, not re-tuned or reset to the defaults


def test_a_model_shipped_without_its_data_folder_is_not_stale(tiny_dir, tmp_path, monkeypatch):
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PLAIN)
    shutil.rmtree(tiny_dir)
    recommender = engine.Recommender(db, tiny_dir)
    assert recommender.standalone is not None
    assert not Watcher(recommender, 0).check()
    assert recommender.info()["stale"] is False
    monkeypatch.setenv("RECS_WATCH_SECONDS", "0.05")
    with TestClient(api.create_app(db, tiny_dir)) as client:
        assert client.get("/health").json()["stale"] is False


def test_uvicorn_api_app_reads_recs_toml_as_the_command_line_does(tiny_dir, tmp_path, monkeypatch):
    db = tmp_path / "served.db"
    settings_file = tmp_path / "recs.toml"
    settings_file.write_text(f'db = "{db}"\ndata_dir = "{tiny_dir}"\n\n[model]\npopularity_prior = 7.0\nmax_neighbors = 3\n')
    for name in ("RECS_DB", "RECS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECS_CONFIG", str(settings_file))
    with TestClient(api.create_app()) as client:
        assert client.get("/health").status_code == 200
        recommender = client.app.state.recommender
    assert recommender.db == db and recommender.params.popularity_prior == 7.0
    assert built_state(db).params["max_neighbors"] == 3
