"""Live events: POST /events and `ingest` into a durable log, seen at once by every process,
folded into the next build exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
import warnings
from pathlib import Path

import pytest

import api
import engine
from engine import eventlog, live
from engine.config import PLAIN
from conftest import ROOT, TINY_EVENTS, TINY_ITEMS, TINY_USERS, write_csv, write_dataset, EVENTS_HEADER, free_port, serve_in_process

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient


def event(user_id="u1", item_id="i3", seconds=300, at="2024-01-05T10:00:00Z", event_type="play") -> dict:
    return {"user_id": user_id, "item_id": item_id, "event_type": event_type, "watch_seconds": seconds, "timestamp": at}


def logged(db: Path) -> list[str]:
    """The events accepted into db's live log, each as a CSV line would show it."""
    log = live.EventLog(live.log_path(db))
    return [",".join(event) for event in log.read(0, log.committed())]


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


# --- POST /events -----------------------------------------------------------------------


def test_a_posted_watch_counts_at_once(client, built):
    before = client.get("/recommendations", params={"user_id": "u1", "k": 3}).json()
    assert "i3" in ids(before)  # similar to what u1 watched
    response = client.post("/events", json={"events": [event("u1", "i3", 300)]})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1}
    history = client.get("/users/u1/history").json()["items"]
    assert history[0]["item_id"] == "i3" and history[0]["is_heavy"] is True
    after = client.get("/recommendations", params={"user_id": "u1", "k": 3}).json()
    assert "i3" not in ids(after)  # watched in full now: never recommended back
    assert logged(built) == ["u1,i3,play,300,2024-01-05T10:00:00Z"]


def test_a_new_user_with_a_few_plays_gets_personalised_picks(client):
    assert client.get("/recommendations", params={"user_id": "newcomer"}).json()["fallback_used"] is True
    assert client.get("/users/newcomer/history").status_code == 404
    response = client.post("/events", json={"events": [event("newcomer", "i1", 1200), event("newcomer", "i2", 600)]})
    assert response.json() == {"accepted": 2}
    body = client.get("/recommendations", params={"user_id": "newcomer", "k": 2}).json()
    assert body["fallback_used"] is False and body["user_known"] is True
    assert body["items"][0]["source"] == "personalised"
    assert {row["item_id"] for row in client.get("/users/newcomer/history").json()["items"]} == {"i1", "i2"}


def test_popularity_moves_with_live_events(client):
    assert ids(client.get("/popular", params={"k": 1}).json()) == ["i2"]
    plays = [event(f"fan{n}", "i3", 300) for n in range(5)]  # i3: one viewer until now
    assert client.post("/events", json={"events": plays}).json() == {"accepted": 5}
    top = client.get("/popular", params={"k": 1}).json()["items"][0]
    assert top["item_id"] == "i3" and top["reason"] == "popular on the platform (6 viewers)"
    assert client.get("/health").json()["live_events"] == 5


def test_an_item_nobody_watched_before_the_build_counts_from_the_next(client, built, tiny_dir):
    client.post("/events", json={"events": [event(f"fan{n}", "i4", 180) for n in range(5)]})
    assert client.get("/popular", params={"k": 4}).json()["items"][3]["item_id"] == "i4"  # no length known yet
    history = client.get("/users/fan0/history").json()["items"]
    assert history[0]["item_id"] == "i4" and history[0]["strength"] == 0
    engine.build(built, tiny_dir, PLAIN)
    assert ids(client.get("/popular", params={"k": 1}).json()) == ["i4"]


BAD_EVENTS = [
    ({"user_id": ""}, "user_id", "user_id is blank"),
    ({"user_id": None}, "user_id", "user_id is blank"),
    ({"item_id": "  "}, "item_id", "item_id is blank"),
    ({"item_id": "i99"}, "item_id", "item_id 'i99' is not in items.csv"),
    ({"event_type": "pause"}, "event_type", "unknown event_type 'pause'"),
    ({"watch_seconds": None}, "watch_seconds", "watch_seconds is blank"),
    ({"watch_seconds": -30}, "watch_seconds", "watch_seconds '-30' is negative"),
    ({"watch_seconds": "abc"}, "watch_seconds", "watch_seconds 'abc' is not a number of seconds"),
    ({"watch_seconds": "1e3"}, "watch_seconds", "watch_seconds '1e3' is not a number of seconds"),
    ({"watch_seconds": True}, "watch_seconds", "watch_seconds 'true' is not a number of seconds"),
    ({"watch_seconds": 90000}, "watch_seconds", "is more than a day"),
    ({"watch_seconds": [1]}, "watch_seconds", "watch_seconds must be text or a number, not list"),
    ({"timestamp": ""}, "timestamp", "timestamp is blank"),
    ({"timestamp": "soon"}, "timestamp", "timestamp 'soon' is not a date and time"),
    ({"timestamp": "2024-02-30T10:00:00Z"}, "timestamp", "is not a date and time"),
    ({"rating": 5}, "rating", "unexpected field 'rating'"),
]


@pytest.mark.parametrize("change, field, problem", BAD_EVENTS)
def test_a_batch_with_an_invalid_event_is_refused_whole(client, built, change, field, problem):
    bad = {**event("u2", "i1", 100), **change}
    response = client.post("/events", json={"events": [event("u3", "i2", 50), bad, event("u2", "i4", 60)]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_events"
    assert len(body["details"]) == 1
    detail = body["details"][0]
    assert detail["index"] == 1 and detail["field"] == field and problem in detail["problem"]
    assert "none of the batch was kept" in body["message"]
    assert logged(built) == []  # nothing of the batch
    assert client.get("/health").json()["live_events"] == 0


def test_every_bad_event_of_a_batch_is_named(client, built):
    events = [event(item_id="i99"), event(), "not an object", event(seconds="x", at="never")]
    body = client.post("/events", json={"events": events}).json()
    assert [(d["index"], d["field"]) for d in body["details"]] == [
        (0, "item_id"), (2, "event"), (3, "watch_seconds"), (3, "timestamp"),
    ]
    assert body["message"].startswith("3 invalid event(s), none of the batch was kept: event 0, item_id: ")
    assert logged(built) == []


def test_every_problem_of_an_event_is_named_at_once(client, built):
    bad = {"user_id": "", "item_id": "i99", "event_type": "pause", "watch_seconds": -30, "timestamp": "soon",
           "rating": 5, "mood": "happy"}
    body = client.post("/events", json={"events": [event(), bad]}).json()
    assert [(d["index"], d["field"], d["problem"].split(" (")[0]) for d in body["details"]] == [
        (1, "user_id", "user_id is blank"),
        (1, "item_id", "item_id 'i99' is not in items.csv"),
        (1, "event_type", "unknown event_type 'pause'"),
        (1, "watch_seconds", "watch_seconds '-30' is negative"),
        (1, "timestamp", "timestamp 'soon' is not a date and time"),
        (1, "mood", "unexpected field 'mood'"),
        (1, "rating", "unexpected field 'rating'"),
    ]
    assert body["message"] == (
        "1 invalid event(s), none of the batch was kept: event 1, user_id: user_id is blank (and 6 more problem(s))"
    )
    assert logged(built) == []


def test_a_field_of_the_wrong_kind_is_named_once_beside_the_others(client, built):
    bad = {**event(), "user_id": "a\rb", "item_id": ["i1"], "watch_seconds": 90000}
    body = client.post("/events", json={"events": [bad]}).json()
    assert [(d["field"], d["problem"]) for d in body["details"]] == [
        ("user_id", "user_id 'a?b' holds a control character"),
        ("item_id", "item_id must be text or a number, not list"),  # not also "item_id is blank"
        ("watch_seconds", "watch_seconds '90000' is more than a day in one session"),
    ]


def test_many_unexpected_fields_are_counted_not_listed(client, built):
    bad = {**event(), **{f"extra{n:04}": n for n in range(2000)}}
    response = client.post("/events", json={"events": [bad]})
    details = response.json()["details"]
    assert [d["field"] for d in details] == ["extra0000", "extra0001", "extra0002", "extra0003", "extra0004", "event"]
    assert details[-1]["problem"] == "1,995 more unexpected fields"
    assert len(response.content) < 2000


def test_an_empty_batch_is_refused_as_documented(client, built):
    response = client.post("/events", json={"events": []})
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_parameter", "message": "events: from 1 to 10,000 events, not 0"}
    assert logged(built) == []


def test_offsets_are_converted_to_utc_and_event_types_lower_cased(client, built):
    response = client.post("/events", json={"events": [event(at="2024-01-05T12:00:00+02:00", event_type=" Play ")]})
    assert response.status_code == 200
    assert logged(built) == ["u1,i3,play,300,2024-01-05T10:00:00Z"]


def test_too_many_events_in_one_request_is_422(client, built):
    response = client.post("/events", json={"events": [event()] * (live.MAX_BATCH + 1)})
    assert response.status_code == 422 and response.json()["error"] == "invalid_parameter"
    assert logged(built) == []


def test_a_body_without_events_is_422(client):
    assert client.post("/events", json={"items": []}).status_code == 422
    assert client.post("/events", content=b"not json", headers={"content-type": "application/json"}).status_code == 422


# --- the token rule ------------------------------------------------------------------------


def test_with_a_token_set_writes_need_it(built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_API_TOKEN", "s3cret")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        body = {"events": [event()]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            response = test_client.post("/events", json=body, headers=headers)
            assert response.status_code == 401 and response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        assert logged(built) == []
        assert test_client.get("/popular").status_code == 200  # reads stay open
        response = test_client.post("/events", json=body, headers={"Authorization": "Bearer s3cret"})
        assert response.json() == {"accepted": 1}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_writes_beyond_loopback_need_a_token(host, monkeypatch):
    monkeypatch.delenv("RECS_API_TOKEN", raising=False)
    with pytest.raises(engine.BadArgument, match="RECS_API_TOKEN"):
        api.check_writes_allowed(host)
    api.check_writes_allowed(host, writes=False)  # --read-only
    monkeypatch.setenv("RECS_API_TOKEN", "t")
    api.check_writes_allowed(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_loopback_writes_need_no_token(host, monkeypatch):
    monkeypatch.delenv("RECS_API_TOKEN", raising=False)
    api.check_writes_allowed(host)


def test_serve_refuses_to_start_open_beyond_loopback(cli, built, tiny_dir, monkeypatch):
    monkeypatch.delenv("RECS_API_TOKEN", raising=False)
    result = cli("--db", built, "--data-dir", tiny_dir, "serve", "--host", "0.0.0.0")
    assert result.exit_code == 1
    assert "refusing to serve POST /events on 0.0.0.0 without a token" in result.stderr


def test_a_read_only_server_refuses_writes(built, tiny_dir):
    recommender = engine.Recommender(built, tiny_dir)
    recommender.writes = False
    with TestClient(api.create_app(recommender=recommender)) as test_client:
        response = test_client.post("/events", json={"events": [event()]})
    assert response.status_code == 403 and response.json()["error"] == "read_only"
    assert logged(built) == []


# --- durability, every process, folding -------------------------------------------------------


def test_an_accepted_batch_survives_a_sigkill_of_the_server(built, tiny_dir):
    port = free_port()
    server = serve_in_process(built, tiny_dir, port)
    try:
        batch = [event(f"k{n}", "i1", 100 + n) for n in range(50)]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/events", data=json.dumps({"events": batch}).encode(),
            headers={"content-type": "application/json"}, method="POST",
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        server.send_signal(signal.SIGKILL)  # right after the 200
        assert answer == {"accepted": 50}
    finally:
        server.kill()
        server.wait()
    fresh = engine.Recommender(built, tiny_dir)
    assert fresh.info()["live_events"] == 50
    assert [row.watch_seconds for row in fresh.history("k49").items] == [149.0]


def test_a_cut_short_append_is_never_read_and_is_cut_off_by_the_next(built, tiny_dir):
    log = live.EventLog(live.log_path(built))
    log.append([("u1", "i3", "play", "300", "2024-01-05T10:00:00Z")])
    with open(log.path, "ab") as handle:  # a crash mid-append: bytes past the committed length
        handle.write(eventlog.encode([("u2", "i4", "play", "60", "2024-01-05T10:00:00Z")])[:30])
    recommender = engine.Recommender(built, tiny_dir)
    assert recommender.info()["live_events"] == 1
    log.append([("u3", "i4", "play", "60", "2024-01-06T10:00:00Z")])
    assert logged(built) == ["u1,i3,play,300,2024-01-05T10:00:00Z", "u3,i4,play,60,2024-01-06T10:00:00Z"]
    assert recommender.info()["live_events"] == 2


def test_the_cli_sees_events_posted_to_a_server(client, built, tiny_dir, cli):
    client.post("/events", json={"events": [event("u1", "i3", 300), event("walkin", "i1", 1200)]})
    result = cli("--db", built, "--data-dir", tiny_dir, "history", "--user_id", "walkin", "--json")
    assert result.exit_code == 0, result.stderr
    assert [row["item_id"] for row in json.loads(result.stdout)["items"]] == ["i1"]
    result = cli("--db", built, "--data-dir", tiny_dir, "recommend", "--user_id", "u1", "--json")
    assert "i3" not in ids(json.loads(result.stdout))
    assert result.stderr == ""  # no rebuild: the live events are overlaid


def test_a_server_sees_events_ingested_by_the_cli(client, built, tiny_dir, cli, tmp_path):
    assert client.get("/users/batchuser/history").status_code == 404
    feed = write_csv(tmp_path / "feed.csv", EVENTS_HEADER, [("batchuser", "i2", "play", 1300, "2024-01-07T08:00:00Z")])
    result = cli("--db", built, "--data-dir", tiny_dir, "ingest", feed)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Accepted 1 events")
    assert [row["item_id"] for row in client.get("/users/batchuser/history").json()["items"]] == ["i2"]


def test_ingest_keeps_good_rows_and_reports_bad_ones_by_line(cli, built, tiny_dir, tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text(
        "item_id,user_id,event_type,watch_seconds,timestamp\n"  # another column order: mapped by name
        "i3,u1,play,300,2024-01-05T10:00:00Z\n"
        "i99,u1,play,300,2024-01-05T10:00:00Z\n"
        "i1,u2,play,abc,2024-01-05T10:00:00Z\n"
        "i1,u2,play,30\n"
        "i2,u2,watch,30,2024-01-05T11:00:00Z\n"
    )
    result = cli("--db", built, "--data-dir", tiny_dir, "ingest", feed, "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["accepted"] == 2
    assert [(issue["line"], issue["problem"]) for issue in body["issues"]] == [
        (3, "item_id 'i99' is not in items.csv"),
        (4, "watch_seconds 'abc' is not a number of seconds"),
        (5, "the row has 4 fields, expected 5"),
    ]
    assert len(logged(built)) == 2


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id\nu1,i1\n", "missing column(s) watch_seconds, timestamp"),
    ("", "the file is empty"),
])
def test_ingest_of_a_file_with_a_bad_header_is_one_error_line(cli, built, tiny_dir, tmp_path, content, message):
    feed = tmp_path / "feed.csv"
    feed.write_text(content)
    result = cli("--db", built, "--data-dir", tiny_dir, "ingest", feed)
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert logged(built) == []


def test_a_build_folds_live_events_in_exactly_once(built, tiny_dir):
    recommender = engine.Recommender(built, tiny_dir)
    recommender.add_events([event("u1", "i3", 300), event("walkin", "i1", 600)])
    assert recommender.info()["events"] == 5 and recommender.info()["live_events"] == 2
    engine.build(built, tiny_dir, PLAIN)
    info = recommender.info()
    assert info["events"] == 7 and info["live_events"] == 0  # in the model now, not overlaid
    assert [row.count_plays for row in recommender.history("walkin").items] == [1]
    recommender.add_events([event("walkin", "i1", 600, at="2024-01-08T10:00:00Z")])
    assert [row.count_plays for row in recommender.history("walkin").items] == [2]
    engine.build(built, tiny_dir, PLAIN)
    again = engine.Recommender(built, tiny_dir)
    assert again.info()["events"] == 8 and again.info()["live_events"] == 0
    assert [row.count_plays for row in again.history("walkin").items] == [2]
    assert [row.count_plays for row in again.history("u1").items if row.item_id == "i3"] == [1]


def test_live_events_do_not_make_the_model_stale(built, tiny_dir):
    engine.Recommender(built, tiny_dir).add_events([event()])
    assert engine.ensure_built(built, tiny_dir) is None  # no rebuild per event: the overlay serves them


def test_an_event_whose_item_left_the_catalogue_is_reported_by_the_build(built, tiny_dir):
    engine.Recommender(built, tiny_dir).add_events([event("u1", "i4", 60)])
    write_dataset(tiny_dir, TINY_USERS, TINY_ITEMS[:3], [row for row in TINY_EVENTS if row[1] != "i4"])
    engine.build(built, tiny_dir, PLAIN)
    issues = engine.Recommender(built, tiny_dir).load_issues()
    assert [(i["file"], i["line"], i["problem"]) for i in issues] == [
        (live.log_path(built).name, 2, "item_id 'i4' is not in items.csv")
    ]


def test_a_replaced_log_is_read_from_its_start(built, tiny_dir):
    recommender = engine.Recommender(built, tiny_dir)
    recommender.add_events([event("u1", "i3", 300)])
    engine.build(built, tiny_dir, PLAIN)
    for path in (live.log_path(built), live.EventLog(live.log_path(built)).committed_path):
        path.unlink()
    live.EventLog(live.log_path(built)).append([("other", "i2", "play", "60", "2024-01-06T10:00:00Z")])
    assert engine.Recommender(built, tiny_dir).info()["live_events"] == 1


def test_concurrent_posters_lose_nothing(built, tiny_dir):
    recommender = engine.Recommender(built, tiny_dir)
    threads_count, batches, size = 4, 10, 20

    def post(worker: int) -> None:
        for batch in range(batches):
            rows = [event(f"w{worker}", "i1", worker * 10_000 + batch * 100 + n) for n in range(size)]
            recommender.add_events(rows)

    threads = [threading.Thread(target=post, args=(worker,)) for worker in range(threads_count)]
    for thread in threads:
        thread.start()
    ingest_feed = tiny_dir.parent / "feed.csv"
    write_csv(ingest_feed, EVENTS_HEADER, [(f"p{n}", "i2", "play", n, "2024-01-09T00:00:00Z") for n in range(100)])
    other_process = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "--db", str(built), "--data-dir", str(tiny_dir), "ingest", str(ingest_feed)],
        cwd=ROOT, capture_output=True, text=True,
    )
    for thread in threads:
        thread.join()
    assert other_process.returncode == 0, other_process.stderr
    lines = logged(built)
    assert len(lines) == threads_count * batches * size + 100
    seconds = sorted(int(line.split(",")[3]) for line in lines if line.startswith("w"))
    expected = sorted(w * 10_000 + b * 100 + n for w in range(threads_count) for b in range(batches) for n in range(size))
    assert seconds == expected
    assert engine.Recommender(built, tiny_dir).info()["live_events"] == len(lines)
