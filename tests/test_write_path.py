"""The live write path is as safe as the batch loader: no event, request or damaged log file takes
the service down, forges what it logs, or loses an acknowledged event."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

import api
import engine
from engine import eventlog, live
from engine.config import PLAIN
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_USERS, free_port, serve_in_process, write_dataset

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient


def event(user_id="u1", item_id="i3", seconds=300, at="2024-01-05T10:00:00Z") -> dict:
    return {"user_id": user_id, "item_id": item_id, "event_type": "play", "watch_seconds": seconds, "timestamp": at}


def log_of(db: Path) -> eventlog.EventLog:
    return eventlog.EventLog(eventlog.log_path(db))


def logged(db: Path) -> list[tuple]:
    log = log_of(db)
    return log.read(0, log.committed())


def problem_of(response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    detail = response.json()["details"][0]
    return detail["field"], detail["problem"]


def accept_some(db: Path, tiny_dir: Path, count: int = 100) -> None:
    recommender = engine.Recommender(db, tiny_dir)
    for n in range(count):
        recommender.add_events([event(f"a{n}", "i1", 100 + n)])
    recommender.close()


# --- 1, 2: ids that could take the service down or be credited to someone else --------------


def test_a_200000_character_user_id_is_refused_and_the_service_keeps_answering(client, built, tiny_dir):
    field, problem = problem_of(client.post("/events", json={"events": [event("x" * 200_000)]}))
    assert field == "user_id" and "longer than 256 characters" in problem
    assert len(problem) < 200  # the message does not carry the id back
    assert logged(built) == []
    assert client.get("/recommendations", params={"user_id": "u1"}).status_code == 200
    assert engine.Recommender(built, tiny_dir).recommend("u1").items  # a restart opens it


def test_a_carriage_return_in_a_user_id_is_refused_not_credited_to_another_user(client, built, tiny_dir):
    field, problem = problem_of(client.post("/events", json={"events": [event("mallory\rvictim_42")]}))
    assert field == "user_id" and "control character" in problem
    assert client.get("/users/victim_42/history").status_code == 404
    engine.build(built, tiny_dir, PLAIN)  # builds as before


@pytest.mark.parametrize("user_id", ["ünïcødé-用户", "a b", "x" * 256, "emoji-\U0001f600"])
def test_ids_of_any_printable_text_up_to_256_characters_are_accepted(client, built, user_id):
    assert client.post("/events", json={"events": [event(user_id)]}).json() == {"accepted": 1}
    assert logged(built)[0][0] == user_id
    assert client.get(f"/users/{urllib.request.quote(user_id)}/history").status_code == 200


def test_the_loader_applies_the_same_id_rule_to_every_file(tmp_path):
    folder = write_dataset(
        tmp_path / "data",
        TINY_USERS + [("u" * 300, 30, "F", "X"), ("bad\x07user", 30, "F", "X")],
        TINY_ITEMS + [("i\x85x", "Odd", "tv", "drama")],
        TINY_EVENTS + [("u1", "i" * 257, "play", 10, "2024-01-04T10:00:00Z"), ("u\x00", "i1", "play", 10, "2024-01-04T10:00:00Z")],
    )
    db = tmp_path / "recs.db"
    engine.build(db, folder, PLAIN)
    issues = engine.Recommender(db, folder).load_issues()
    found = {(issue["file"], issue["column_name"], issue["problem"].split("' ")[-1]) for issue in issues}
    assert found >= {
        ("users.csv", "user_id", "is longer than 256 characters (300)"),
        ("users.csv", "user_id", "holds a control character"),
        ("items.csv", "item_id", "holds a control character"),
        ("events.csv", "item_id", "is longer than 256 characters (257)"),
        ("events.csv", "user_id", "holds a control character"),
    }


def test_no_field_content_can_split_or_outgrow_a_log_record(built, tiny_dir):
    hostile = [
        ("a\rb", "i1", "play", "1", "2024-01-05T10:00:00Z"),
        ("line\nbreak", "i1", "play", "1", "2024-01-05T10:00:00Z"),
        ('quote"comma,', "i1", "play", "1", "2024-01-05T10:00:00Z"),
        ("x" * 3_000_000, "i1", "play", "1", "2024-01-05T10:00:00Z"),
        ("nul\x00 ünï \u2028", "i1", "play", "1", "2024-01-05T10:00:00Z"),
    ]
    log = log_of(built)
    log.append(hostile[:3])
    log.append(hostile[3:])
    assert logged(built) == hostile  # read back exactly, with no field-size limit
    assert log.check().ok and log.check().records == 2
    # read back, each is checked by the rules again: only the quoted id is a valid one
    assert engine.Recommender(built, tiny_dir).info()["live_events"] == 1
    engine.build(built, tiny_dir, PLAIN)  # no "cannot be read as CSV", no line-size limit


# --- 3: timestamps ---------------------------------------------------------------------------


def test_a_far_future_event_is_refused_live_and_reported_by_the_loader(client, built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_NOW", "2024-01-10T00:00:00Z")
    field, problem = problem_of(client.post("/events", json={"events": [event(at="9999-12-31T00:00:00Z")]}))
    assert field == "timestamp" and "in the future" in problem
    assert client.post("/events", json={"events": [event(at="2024-01-10T23:00:00Z")]}).status_code == 200  # within a day
    assert problem_of(client.post("/events", json={"events": [event(at="2024-01-11T01:00:00Z")]}))[0] == "timestamp"

    write_dataset(tiny_dir, TINY_USERS, TINY_ITEMS, TINY_EVENTS + [("u3", "i4", "play", 60, "9999-12-31T00:00:00Z")])
    engine.build(built, tiny_dir, PLAIN)
    recommender = engine.Recommender(built, tiny_dir)
    assert [(issue["line"], issue["column_name"]) for issue in recommender.load_issues()] == [(7, "timestamp")]
    assert recommender.popular(1).items[0].item_id != "i4"  # the data's end did not move


def test_old_events_stay_welcome_and_only_pre_1970_is_refused(client, built):
    assert client.post("/events", json={"events": [event(at="1995-06-01T10:00:00Z")]}).status_code == 200
    field, problem = problem_of(client.post("/events", json={"events": [event(at="1969-12-31T23:59:59Z")]}))
    assert field == "timestamp" and "before 1970-01-01" in problem


def test_the_clock_can_be_set_and_a_bad_setting_is_one_line(monkeypatch):
    monkeypatch.setenv("RECS_NOW", "2030-01-02T03:04:05+01:00")
    assert engine.clock.now().isoformat() == "2030-01-02T02:04:05"
    monkeypatch.setenv("RECS_NOW", "tomorrow")
    with pytest.raises(engine.BadArgument, match="RECS_NOW='tomorrow' is not an ISO 8601"):
        engine.clock.now()


# --- 4: damaged side files never lose acknowledged events -------------------------------------


@pytest.mark.parametrize("damage, message", [
    (lambda log: log.committed_path.write_bytes(b"garbage\n"), "is not a length in bytes"),
    (lambda log: log.committed_path.unlink(), "is missing beside"),
    (lambda log: log.committed_path.write_bytes(b"%d\n" % (log.path.stat().st_size + 1_000_000)), "were accepted"),
])
def test_a_damaged_committed_file_is_refused_in_one_line_and_repair_keeps_every_event(built, tiny_dir, cli, damage, message):
    accept_some(built, tiny_dir)
    log = log_of(built)
    damage(log)
    size = log.path.stat().st_size
    with pytest.raises(engine.LogDamaged, match=message):
        engine.Recommender(built, tiny_dir).recommend("u1")
    with pytest.raises(engine.LogDamaged):
        log.append([("u9", "i1", "play", "1", "2024-01-05T10:00:00Z")])
    assert log.path.stat().st_size == size  # nothing truncated, nothing padded

    result = cli("--db", built, "--data-dir", tiny_dir, "recommend", "--user_id", "u1")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "live repair" in result.stderr
    assert cli("--db", built, "live", "check").exit_code == 1

    result = cli("--db", built, "live", "repair")
    assert result.exit_code == 0, result.stderr
    assert cli("--db", built, "live", "check").exit_code == 0
    assert engine.Recommender(built, tiny_dir).info()["live_events"] == 100  # every acknowledged event


def test_a_deleted_log_is_refused_in_one_line_and_repair_starts_an_empty_one(built, tiny_dir, cli):
    accept_some(built, tiny_dir, 3)
    log_of(built).path.unlink()
    result = cli("--db", built, "--data-dir", tiny_dir, "popular")
    assert result.exit_code == 1 and "is missing" in result.stderr and "Traceback" not in result.stderr
    result = cli("--db", built, "live", "repair")
    assert result.exit_code == 0 and "lost" in result.stdout
    assert engine.Recommender(built, tiny_dir).info()["live_events"] == 0


def test_a_changed_record_is_named_by_byte_and_repair_sets_only_it_aside(built, tiny_dir, cli):
    accept_some(built, tiny_dir, 3)
    log = log_of(built)
    data = log.path.read_bytes()
    second = data.index(b"\n", len(eventlog.HEADER)) + 1
    damaged = data[:second + 40] + (b"X" if data[second + 40:second + 41] != b"X" else b"Y") + data[second + 41:]
    log.path.write_bytes(damaged)
    with pytest.raises(engine.LogDamaged, match=f"byte {second:,}: checksum does not match"):
        engine.Recommender(built, tiny_dir).info()
    result = cli("--db", built, "live", "repair")
    assert result.exit_code == 0 and f"byte {second:,}" in result.stdout
    assert [row[0] for row in logged(built)] == ["a0", "a2"]
    assert log.path.stat().st_size == len(damaged)  # blanked in place: offsets stay
    assert damaged[second:second + 60] in log.path.with_name(log.path.name + ".damaged").read_bytes()


def test_a_server_does_not_start_on_a_damaged_log(built, tiny_dir, cli, monkeypatch):
    accept_some(built, tiny_dir, 2)
    log_of(built).committed_path.write_bytes(b"x")
    monkeypatch.delenv("RECS_API_TOKEN", raising=False)
    result = cli("--db", built, "--data-dir", tiny_dir, "serve", "--port", str(free_port()))
    assert result.exit_code == 1 and "is not a length in bytes" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(engine.LogDamaged):
        with TestClient(api.create_app(built, tiny_dir)):
            pass


def test_a_log_of_the_earlier_csv_format_is_converted_by_repair(built, tiny_dir, cli):
    old = built.with_name(built.name + ".live-events.csv")
    old.write_text("user_id,item_id,event_type,watch_seconds,timestamp\nu1,i3,play,300,2024-01-05T10:00:00Z\n")
    old.with_name(old.name + ".committed").write_text(f"{old.stat().st_size}\n")
    with pytest.raises(engine.LogDamaged, match="earlier version"):
        engine.Recommender(built, tiny_dir).info()
    assert cli("--db", built, "live", "repair").exit_code == 0
    assert logged(built) == [("u1", "i3", "play", "300", "2024-01-05T10:00:00Z")]
    assert old.with_name(old.name + ".converted").exists()


def test_a_full_disk_is_507_and_leaves_nothing_of_the_batch(client, built, monkeypatch):
    assert client.post("/events", json={"events": [event("before")]}).status_code == 200
    size = log_of(built).path.stat().st_size
    real_fsync = os.fsync

    def full(fd):
        if os.fstat(fd).st_size > size:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    response = client.post("/events", json={"events": [event("during")]})
    assert response.status_code == 507 and response.json()["error"] == "insufficient_storage"
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert log_of(built).path.stat().st_size == size and [row[0] for row in logged(built)] == ["before"]
    assert client.post("/events", json={"events": [event("after")]}).status_code == 200
    assert [row[0] for row in logged(built)] == ["before", "after"]


# --- 5: the no-token guard lives in the app ---------------------------------------------------


def test_without_a_token_a_write_from_beyond_this_machine_is_403_however_the_app_started(client, built):
    for forwarded in ("203.0.113.7", "127.0.0.1, 198.51.100.2"):
        response = client.post("/events", json={"events": [event()]}, headers={"X-Forwarded-For": forwarded})
        assert response.status_code == 403 and "RECS_API_TOKEN" in response.json()["message"]
    assert logged(built) == []
    assert client.get("/popular", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200  # reads stay open
    assert client.post("/events", json={"events": [event()]}, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


def test_with_a_token_a_forwarded_client_may_write(built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_API_TOKEN", "s3cret")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        headers = {"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer s3cret"}
        assert test_client.post("/events", json={"events": [event()]}, headers=headers).status_code == 200


# --- 6: limits, and auth before the body -------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_parsed(client, built):
    huge = b'{"events": [' + b" " * (api.MAX_BODY_BYTES + 1) + b"]}"
    response = client.post("/events", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "too_large"

    def streamed():
        for _ in range(api.MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = client.post("/events", content=streamed(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert logged(built) == []


def test_with_a_token_set_a_malformed_body_without_it_is_401(built, tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_API_TOKEN", "s3cret")
    with TestClient(api.create_app(built, tiny_dir)) as test_client:
        response = test_client.post("/events", content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 401


def test_a_422_never_echoes_the_input(client):
    response = client.post("/events", json={"events": [event("x" * 200)] * (live.MAX_BATCH + 1)})
    assert response.status_code == 422 and len(response.content) < 1000
    response = client.post("/recommendations/batch", json={"user_ids": ["y" * 5000] * 1001})
    assert response.status_code == 422 and len(response.content) < 2000 and "yyyy" not in response.text


def test_a_batch_request_is_bounded_in_users_times_k(client):
    response = client.post("/recommendations/batch", json={"user_ids": [f"u{n}" for n in range(1000)], "k": 1000})
    assert response.status_code == 422 and "at most 100,000 items" in response.json()["message"]


# --- 7: input never makes a 5xx -------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"events": [event(at="10000-01-01T00:00:00Z")]}, "timestamp"),
    ({"events": [event(at="0001-01-01T00:00:00Z")]}, "timestamp"),
    ({"events": [event(seconds=1e308)]}, "watch_seconds"),
    ({"events": [event(seconds=[1])]}, "watch_seconds"),
])
def test_odd_values_are_422_naming_the_field(client, body, field):
    assert problem_of(client.post("/events", json=body))[0] == field
    assert client.app.state.internal_errors == 0


def test_a_5000_digit_number_is_422_naming_watch_seconds(client):
    body = ('{"events": [{"user_id": "u1", "item_id": "i3", "event_type": "play", "watch_seconds": '
            + "9" * 5000 + ', "timestamp": "2024-01-05T10:00:00Z"}]}')
    field, problem = problem_of(client.post("/events", content=body.encode(), headers={"content-type": "application/json"}))
    assert field == "watch_seconds" and len(problem) < 200


def test_a_lone_surrogate_is_422_naming_the_field(client, built):
    body = b'{"events": [{"user_id": "\\ud800", "item_id": "i3", "event_type": "play", "watch_seconds": 1, "timestamp": "2024-01-05T10:00:00Z"}]}'
    field, problem = problem_of(client.post("/events", content=body, headers={"content-type": "application/json"}))
    assert field == "user_id" and "lone surrogate" in problem
    assert client.app.state.internal_errors == 0


@pytest.mark.parametrize("path, payload", [
    ("/recommendations/batch", {"user_ids": ["u1"], "offset": 2 ** 62}),
    ("/events", None),
])
def test_huge_offsets_and_bad_bodies_are_4xx(client, path, payload):
    if payload is None:
        response = client.post(path, content=b"[1, 2", headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=payload)
    assert response.status_code == 422
    assert client.get("/recommendations", params={"user_id": "u1", "offset": 2 ** 62}).status_code == 422
    assert client.app.state.internal_errors == 0


# --- 8: logs cannot be forged -------------------------------------------------------------------


def test_a_newline_in_a_path_cannot_forge_a_log_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="recs.access"):
        client.get("/users/x%0AFORGED%20line/history")
    lines = [record.getMessage() for record in caplog.records if record.name == "recs.access"]
    assert lines and all("\n" not in line for line in lines)
    assert any("x\\nFORGED line" in line for line in lines)


# --- 9: retries count once -------------------------------------------------------------------------


def test_a_retried_batch_with_the_same_idempotency_key_counts_once(client, built, tiny_dir):
    batch = {"events": [event("retry", "i1", 100), event("retry", "i2", 200)]}
    first = client.post("/events", json=batch, headers={"Idempotency-Key": "batch-1"})
    again = client.post("/events", json=batch, headers={"Idempotency-Key": "batch-1"})
    assert first.json() == again.json() == {"accepted": 2}
    assert len(logged(built)) == 2
    other = client.post("/events", json={"events": [event("retry", "i3")]}, headers={"Idempotency-Key": "batch-1"})
    assert other.status_code == 422 and other.json()["error"] == "idempotency_conflict"
    with TestClient(api.create_app(built, tiny_dir)) as restarted:  # another process, after a restart
        assert restarted.post("/events", json=batch, headers={"Idempotency-Key": "batch-1"}).json() == {"accepted": 2}
    assert len(logged(built)) == 2


def test_a_refused_batch_keeps_no_key(client, built):
    bad = client.post("/events", json={"events": [event(item_id="i99")]}, headers={"Idempotency-Key": "k-7"})
    assert bad.status_code == 422
    good = client.post("/events", json={"events": [event()]}, headers={"Idempotency-Key": "k-7"})
    assert good.json() == {"accepted": 1}
    assert client.post("/events", json={"events": [event()]}, headers={"Idempotency-Key": "bad key"}).status_code == 422


def test_keys_are_shared_by_every_writer_of_the_log(built):
    first, second = log_of(built), log_of(built)  # two processes' views of one log
    row = [("u1", "i3", "play", "300", "2024-01-05T10:00:00Z")]
    assert not first.append(row, "shared", "d1").replayed
    assert second.append(row, "shared", "d1").replayed
    with pytest.raises(engine.IdempotencyConflict):
        second.append(row, "shared", "d2")
    assert len(logged(built)) == 1


# --- a SIGKILL while clients write ----------------------------------------------------------------


def test_a_sigkill_during_writes_keeps_every_acknowledged_batch(built, tiny_dir):
    port = free_port()
    server = serve_in_process(built, tiny_dir, port)
    acknowledged: list[str] = []
    stop = threading.Event()

    def post(worker: int) -> None:
        for n in range(200):  # bounded: at most 200 requests each, to loopback only
            if stop.is_set():
                return
            user = f"k{worker}-{n}"
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/events", data=json.dumps({"events": [event(user, "i1", 10)] * 20}).encode(),
                headers={"content-type": "application/json"}, method="POST",
            )
            try:
                if json.loads(urllib.request.urlopen(request, timeout=5).read()) == {"accepted": 20}:
                    acknowledged.append(user)
            except (OSError, urllib.error.URLError, ValueError):
                return

    deadline = time.monotonic() + 30
    try:
        threads = [threading.Thread(target=post, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        server.kill()
        server.wait()
    assert len(acknowledged) >= 15
    assert log_of(built).check().ok
    users = {row[0] for row in logged(built)}
    assert set(acknowledged) <= users
    fresh = engine.Recommender(built, tiny_dir)
    assert all(fresh.history(user).items for user in acknowledged[:5])
