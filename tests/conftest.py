"""Shared fixtures: CSV writers, the brief's tiny example, the bundled data, a CLI runner."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # cli.py and engine/ sit at the top of the repository

import engine  # noqa: E402
from engine.config import PLAIN  # noqa: E402  (the bare model the tests work out by hand)

BUNDLED = ROOT / "data"

USERS_HEADER = ("user_id", "age", "gender", "region")
ITEMS_HEADER = ("item_id", "title", "content_type", "genre")
EVENTS_HEADER = ("user_id", "item_id", "event_type", "watch_seconds", "timestamp")

# The brief's tiny example. Popularity by hand: i2 has 2100 seconds over two
# users, i1 1800 over two, i3 only 300 from one: the order is i2, i1, i3.
TINY_USERS = [("u1", 25, "F", "Jakarta"), ("u2", 31, "M", "Bandung"), ("u3", 19, "F", "Surabaya")]
TINY_ITEMS = [
    ("i1", "Drama Series A", "series", "drama"),
    ("i2", "Family Show B", "tv", "family"),
    ("i3", "Action Movie C", "movie", "action"),
    ("i4", "Romance Micro D", "microdrama", "romance"),
]
TINY_EVENTS = [
    ("u1", "i1", "play", 1200, "2024-01-01T10:00:00Z"),
    ("u1", "i2", "play", 900, "2024-01-02T10:00:00Z"),
    ("u2", "i2", "play", 1200, "2024-01-02T11:00:00Z"),
    ("u2", "i3", "play", 300, "2024-01-03T11:00:00Z"),
    ("u3", "i1", "play", 600, "2024-01-03T12:00:00Z"),
]


def write_csv(path: Path, header, rows) -> Path:
    """Write one CSV with the csv module (quoting as a real exporter would)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_dataset(folder: Path, users, items, events) -> Path:
    """A data folder with users.csv, items.csv and events.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "users.csv", USERS_HEADER, users)
    write_csv(folder / "items.csv", ITEMS_HEADER, items)
    write_csv(folder / "events.csv", EVENTS_HEADER, events)
    return folder


@pytest.fixture(autouse=True)
def no_background_rebuilds(monkeypatch):
    """A served app checks the CSVs every few seconds and rebuilds when they change: off in tests,
    which change the CSVs and build themselves (tests/test_ops.py turns it on where it is the point)."""
    monkeypatch.setenv("RECS_WATCH_SECONDS", "0")


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", TINY_USERS, TINY_ITEMS, TINY_EVENTS)


@pytest.fixture
def built(tiny_dir: Path) -> Path:
    """recs.db built from the tiny example with the bare model, beside tiny_dir."""
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PLAIN)
    return db


@pytest.fixture
def client(built: Path, tiny_dir: Path, monkeypatch):
    """The web API over `built` (no API token set), with its startup run."""
    import warnings

    import api

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
        from fastapi.testclient import TestClient
    monkeypatch.delenv("RECS_API_TOKEN", raising=False)
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        yield test_client


@pytest.fixture
def tiny(tiny_dir: Path) -> engine.Recommender:
    """A Recommender built from the tiny example in a temporary folder, with the bare model."""
    recommender = engine.Recommender(tiny_dir.parent / "recs.db", tiny_dir, PLAIN)
    yield recommender
    recommender.close()


@pytest.fixture(scope="session")
def bundled_db(tmp_path_factory) -> Path:
    """recs.db built once from the bundled data, in a temporary folder."""
    folder = tmp_path_factory.mktemp("bundled")
    shutil.copytree(BUNDLED, folder / "data", ignore=shutil.ignore_patterns("*.py"))
    db = folder / "recs.db"
    engine.build(db, folder / "data", PLAIN)
    return db


@pytest.fixture(scope="session")
def bundled(bundled_db: Path) -> engine.Recommender:
    recommender = engine.Recommender(bundled_db, bundled_db.parent / "data")
    yield recommender
    recommender.close()


@pytest.fixture
def cli(monkeypatch):
    """Run cli.py in-process; returns a function args -> Result (stdout and stderr apart)."""
    import cli as cli_module

    runner = CliRunner()
    monkeypatch.delenv("RECS_DB", raising=False)
    monkeypatch.delenv("RECS_DATA_DIR", raising=False)

    def run(*args: str, **kwargs):
        return runner.invoke(cli_module.app, [str(arg) for arg in args], **kwargs)

    return run


@pytest.fixture
def run(cli, tiny_dir):
    """cli on the tiny example, recs.db built beforehand so stderr carries no 'Built' line."""
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PLAIN)

    def invoke(*args):
        return cli("--db", db, "--data-dir", tiny_dir, *args)

    return invoke


def serve_in_process(db: Path, data_dir: Path, port: int, seconds: float = 30.0):
    """`cli.py serve` on loopback as a real child process, once /health answers (no API token)."""
    import os
    import subprocess
    import time
    import urllib.request

    env = {**os.environ, "RECS_DB": str(db), "RECS_DATA_DIR": str(data_dir)}
    env.pop("RECS_API_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                server.wait()
                pytest.fail("the server did not start")
            time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a real server process."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def run_bundled(cli, bundled_db):
    """cli on the bundled data's session-wide recs.db."""

    def invoke(*args):
        return cli("--db", bundled_db, "--data-dir", bundled_db.parent / "data", *args)

    return invoke


def random_dataset(seed: int, n_users: int = 30, n_items: int = 25, n_events: int = 300):
    """Random but valid users, items and events; some users and items have no events."""
    import random
    from datetime import datetime, timedelta

    rng = random.Random(seed)
    kinds = ["tv", "movie", "series", "microdrama"]
    genres = ["drama", "comedy", "romance", "action"]
    users = [(f"u{n}", rng.randint(16, 70), rng.choice("MF"), "Jakarta") for n in range(1, n_users + 1)]
    items = [
        (f"i{n}", f"Title {n}", rng.choice(kinds), rng.choice(genres)) for n in range(1, n_items + 1)
    ]
    start = datetime(2026, 8, 1)
    events = []
    for _ in range(n_events):
        user = rng.choice(users[: n_users - 2])[0]  # the last two users never watch
        item = rng.choice(items[: n_items - 2])[0]  # the last two items are never watched
        seconds = rng.choice([0, rng.randint(1, 400), rng.randint(400, 8000)])
        moment = start + timedelta(seconds=rng.randint(0, 90 * 86400))
        events.append((user, item, rng.choice(["play", "complete"]), seconds, moment.isoformat() + "Z"))
    return users, items, events
