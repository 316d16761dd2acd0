"""Running the service: liveness and readiness, HEAD, one log line per request, /metrics, CORS,
several workers, and the server noticing changed CSVs and rebuilding in the background."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest

import api
import engine
from conftest import ROOT, TINY_EVENTS, TINY_ITEMS, TINY_USERS, free_port, write_dataset

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient


def test_health_and_ready_answer_get_and_head(client):
    for path in ("/health", "/ready"):
        assert client.get(path).status_code == 200
        head = client.head(path)
        assert head.status_code == 200 and head.content == b""
    assert client.get("/ready").json() == {"ready": True}


def test_ready_is_503_without_a_database_while_health_still_answers_the_probe(built, tiny_dir):
    app = api.create_app(built, tiny_dir)
    with TestClient(app) as test_client:
        built.unlink()
        response = test_client.get("/ready")
        assert response.status_code == 503 and response.json()["error"] == "unavailable"
        assert test_client.head("/ready").status_code == 503


def test_ready_is_503_until_the_model_is_loaded(built, tiny_dir):
    app = api.create_app(built, tiny_dir)
    app.state.recommender = engine.Recommender(built, tiny_dir)  # as during startup, before the index is in
    with TestClient(app, raise_server_exceptions=True) as test_client:
        app.state.ready = False
        assert test_client.get("/ready").status_code == 503
        app.state.ready = True
        assert test_client.get("/ready").status_code == 200


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="recs.access"):
        client.get("/popular", params={"k": 2})
        client.get("/nowhere")
    lines = [record.getMessage() for record in caplog.records if record.name == "recs.access"]
    assert len(lines) == 2
    method, path, status, ms, unit = lines[0].split()
    assert (method, path, status, unit) == ("GET", "/popular", "200", "ms") and float(ms) >= 0
    assert lines[1].startswith("GET /nowhere 404 ")


def test_metrics_in_prometheus_text_format(client):
    client.get("/recommendations", params={"user_id": "u1"})
    client.get("/recommendations", params={"user_id": "u1", "k": 0})
    client.post("/events", json={"events": [{"user_id": "u9", "item_id": "i1", "event_type": "play",
                                             "watch_seconds": 60, "timestamp": "2024-01-09T00:00:00Z"}]})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'recs_requests_total{method="GET",endpoint="/recommendations",status="200"} 1' in text
    assert 'recs_requests_total{method="GET",endpoint="/recommendations",status="422"} 1' in text
    assert 'recs_requests_total{method="POST",endpoint="/events",status="200"} 1' in text
    assert 'recs_request_seconds_count{method="GET",endpoint="/recommendations"} 2' in text
    assert 'recs_request_seconds_bucket{method="GET",endpoint="/recommendations",le="+Inf"} 2' in text
    assert "recs_live_events 1" in text and "recs_model_events 5" in text
    built_at = next(line for line in text.splitlines() if line.startswith("recs_model_built_at_seconds "))
    assert abs(float(built_at.split()[1]) - time.time()) < 3600
    for line in text.splitlines():  # every sample line is a name, optional labels, and a number
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_cors_is_off_unless_configured(built, tiny_dir, monkeypatch):
    origin = {"Origin": "https://app.example"}
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        assert "access-control-allow-origin" not in test_client.get("/popular", headers=origin).headers
    monkeypatch.setenv("RECS_CORS_ORIGINS", "https://app.example")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        response = test_client.get("/popular", headers=origin)
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        other = test_client.get("/popular", headers={"Origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


def wait_for(condition, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail("not within the time allowed")


def test_the_server_notices_changed_csvs_and_swaps_in_a_rebuild(built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_WATCH_SECONDS", "0.2")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        assert [item["item_id"] for item in test_client.get("/popular", params={"k": 1}).json()["items"]] == ["i2"]
        items = TINY_ITEMS + [("i5", "New Hit E", "series", "drama")]
        events = TINY_EVENTS + [(user, "i5", "play", 3000, "2024-01-04T20:00:00Z") for user in ("u1", "u2", "u3")]
        write_dataset(tiny_dir, TINY_USERS, items, events)
        # answers go on from the old model while the child process builds
        assert test_client.get("/popular", params={"k": 1}).status_code == 200
        wait_for(lambda: test_client.get("/popular", params={"k": 1}).json()["items"][0]["item_id"] == "i5")
        assert test_client.get("/health").json()["rows"]["items"] == 5


def test_a_failed_background_rebuild_marks_the_service_stale(built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_WATCH_SECONDS", "0.2")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        (tiny_dir / "items.csv").write_text("title,genre\nA,drama\n")
        health = wait_for(lambda: (lambda body: body if body["stale"] else None)(test_client.get("/health").json()))
        assert "missing column(s) item_id" in health["stale_reason"]
        assert test_client.get("/popular").status_code == 200  # the last good model answers


def test_live_events_that_waited_long_enough_are_folded_in_by_a_background_build(built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_WATCH_SECONDS", "0.2")
    monkeypatch.setenv("RECS_FOLD_SECONDS", "0.5")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        event = {"user_id": "u3", "item_id": "i2", "event_type": "play", "watch_seconds": 700,
                 "timestamp": "2024-01-09T00:00:00Z"}
        assert test_client.post("/events", json={"events": [event]}).json() == {"accepted": 1}
        assert test_client.get("/health").json()["live_events"] == 1
        health = wait_for(lambda: (lambda body: body if body["live_events"] == 0 else None)(
            test_client.get("/health").json()))
        assert health["rows"]["events"] == 6  # in the model now, counted once
        assert [row["count_plays"] for row in test_client.get("/users/u3/history").json()["items"]
                if row["item_id"] == "i2"] == [1]


def test_serve_with_two_workers_shares_live_events(built, tiny_dir):
    port = free_port()
    env = {**os.environ, "RECS_DB": str(built), "RECS_DATA_DIR": str(tiny_dir)}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str):
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return None

    try:
        wait_for(lambda: get("/ready"), 60)
        body = json.dumps({"events": [{"user_id": "w1", "item_id": "i1", "event_type": "play",
                                       "watch_seconds": 600, "timestamp": "2024-01-09T00:00:00Z"}]}).encode()
        request = urllib.request.Request(base + "/events", data=body, headers={"content-type": "application/json"})
        assert json.loads(urllib.request.urlopen(request, timeout=10).read()) == {"accepted": 1}
        started = time.monotonic()
        for _ in range(10):  # new connections: both workers answer some of them
            history = get("/users/w1/history")
            assert history is not None and [row["item_id"] for row in history["items"]] == ["i1"]
        assert time.monotonic() - started < 5
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
