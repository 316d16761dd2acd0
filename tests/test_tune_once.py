"""Tuning paid once, at any size: a build on unchanged data is current and stops, a small change
reuses what was tuned, tuning above a limit works on a sample of users, and a build that tunes
says each trial on its own line when stderr is not a terminal."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import engine
from conftest import ROOT, write_csv, write_dataset
from engine import tune
from engine.build import built_state
from engine.config import ModelParams
from test_tune import hits_dataset


@pytest.fixture(scope="module", autouse=True)
def short_budget():
    """A few CPU seconds of trials: enough to tune and keep a change, and the tests stay quick
    (the plan itself is tests/test_tune.py's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tune, "BUDGET_SECONDS", 3.0)
        yield


def info_of(db: Path) -> dict:
    with duckdb.connect(str(db), read_only=True) as con:
        return dict(con.execute("select key, value from build_info").fetchall())


@pytest.fixture(scope="module")
def tuned_once(tmp_path_factory):
    """hits_dataset built once with a plain build (it tunes): the folder, the db and the report."""
    folder = write_dataset(tmp_path_factory.mktemp("once") / "data", *hits_dataset())
    db = folder.parent / "recs.db"
    return folder, db, engine.build(db, folder)


@pytest.fixture
def copied(tuned_once, tmp_path) -> tuple[Path, Path]:
    """A copy of the tuned data folder and its recs.db, pointed at each other, so a test may change
    either: (folder, db)."""
    folder, db, _ = tuned_once
    data = tmp_path / "data"
    data.mkdir()
    for path in folder.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
        os.utime(data / path.name, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    copy = tmp_path / "recs.db"
    copy.write_bytes(db.read_bytes())
    with duckdb.connect(str(copy)) as con:  # as if it had been built from the copy
        for key in ("data_dir", "tuned_data_dir"):
            con.execute(
                "update build_info set value = ? where key = ? and value = ?",
                [str(data.resolve()), key, str(folder.resolve())],
            )
    return data, copy


def test_a_second_build_on_unchanged_data_is_current_and_builds_nothing(tuned_once):
    folder, db, first = tuned_once
    assert first.params_source == "tuned" and not first.current
    built_at = built_state(db).built_at
    again = engine.build(db, folder)
    assert again.current
    assert again.params == first.params and again.params_source == "tuned"
    assert built_state(db).built_at == built_at  # the file was not rewritten
    assert again.seconds < first.seconds / 4


def test_rebuild_builds_again_with_the_tuned_parameters_and_no_search(tuned_once, copied):
    _, _, first = tuned_once
    folder, db = copied
    again = engine.build(db, folder, rebuild=True)
    assert not again.current and again.tuning is None
    assert again.params == first.params
    assert again.params_source == "tuned; reused: the data is unchanged"
    with duckdb.connect(str(db), read_only=True) as con:  # the trials behind them are kept
        assert con.execute("select count(*) from tuning_trials").fetchone()[0] == len(first.tuning.trials)


def test_retune_searches_afresh(copied):
    folder, db = copied
    again = engine.build(db, folder, tune=True)
    assert again.tuning is not None and again.params_source == "tuned"


def added_events(folder: Path, share: float) -> int:
    """Append copies of the first events, a day later, as about share of the events; returns how many."""
    with (folder / "events.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    extra = rows[: int(len(rows) * share)]
    with (folder / "events.csv").open("a", newline="") as handle:
        writer = csv.writer(handle)
        for user_id, item_id, kind, seconds, timestamp in extra:
            writer.writerow([user_id, item_id, kind, seconds, timestamp.replace("2026-01", "2026-02", 1)])
    return len(extra)


def test_a_few_percent_more_events_reuse_the_tuned_parameters(tuned_once, copied):
    _, _, first = tuned_once
    folder, db = copied
    added_events(folder, 0.03)
    again = engine.build(db, folder)
    assert again.tuning is None and again.params == first.params
    assert again.rows["events"] > first.rows["events"]
    assert again.params_source.startswith(f"tuned; reused: {again.rows['events']:,} events now, +")
    assert again.seconds < first.seconds / 2


def test_a_larger_change_tunes_again(copied):
    folder, db = copied
    added_events(folder, 0.2)
    again = engine.build(db, folder)
    assert again.tuning is not None and again.params_source == "tuned"


def test_live_events_waiting_make_the_model_not_current(copied):
    folder, db = copied
    assert engine.build(db, folder).current
    recommender = engine.Recommender(db, folder, auto_build=False)
    recommender.add_events(
        [{"user_id": "u1", "item_id": "i2", "event_type": "play", "watch_seconds": 600, "timestamp": "2026-03-30T10:00:00Z"}]
    )
    recommender.close()
    again = engine.build(db, folder)
    assert not again.current and again.tuning is None  # folded in with the tuned parameters
    assert engine.build(db, folder).current  # and current again once folded


def test_pinned_parameters_are_current_only_when_equal(tuned_once, copied):
    _, _, first = tuned_once
    folder, db = copied
    assert engine.build(db, folder, first.params).current  # the same parameters make the same model
    other = first.params.replace(max_neighbors=7)
    assert not engine.build(db, folder, other).current
    assert engine.build(db, folder, other).current


def test_a_sample_tunes_on_some_users_and_popularity_counts_every_event(tuned_once, tmp_path):
    folder, _, _ = tuned_once
    db = tmp_path / "recs.db"
    report = engine.build(db, folder, tune_sample=600)
    result = report.tuning
    assert result.sample_events == 600
    assert 600 <= result.sampled_events < report.rows["events"]
    assert report.params_source == f"tuned on a sample of {result.sampled_events:,} events (of {report.rows['events']:,})"
    assert info_of(db)["params_source"] == report.params_source == result.source
    assert 0 < result.sample_share < 1
    assert report.params == ModelParams.from_dict(result.best.params)  # as the sample chose them
    plain = tmp_path / "plain.db"
    engine.build(plain, folder, report.params)
    query = "select item_id, count_plays, watch_seconds, relative_score from item_popularity order by item_id"
    with duckdb.connect(str(db), read_only=True) as con, duckdb.connect(str(plain), read_only=True) as other:
        assert con.execute(query).fetchall() == other.execute(query).fetchall()


def test_a_sample_keeps_enough_users_to_decide(tuned_once, tmp_path):
    """Asked for a sample too small to hold MIN_VALIDATION_USERS evaluated users, it grows."""
    folder, _, _ = tuned_once
    con = duckdb.connect()
    try:
        from engine.layers import load_into

        load_into(con, folder)
        source = con.execute("select current_database()").fetchone()[0]
        validation = tune.Validation(con, source, "global", 0, 0.0, sample_events=10)
        try:
            assert len(validation.relevant) >= tune.MIN_VALIDATION_USERS
            assert validation.sampled_events > 10
        finally:
            validation.close(source)
    finally:
        con.close()


def test_the_sample_rule(monkeypatch):
    assert tune.sample_for(1_000) is None
    assert tune.sample_for(tune.MAX_EVENTS + 1) == tune.SAMPLE_EVENTS
    assert tune.sample_for(tune.MAX_EVENTS + 1, 0) is None  # 0: never sample
    assert tune.sample_for(50_000, 20_000) == 20_000
    assert tune.sample_for(10_000, 20_000) is None  # the sample would be all of it


def test_a_changed_sample_is_a_changed_tuning_key(copied):
    folder, db = copied
    assert engine.build(db, folder).current
    assert not engine.build(db, folder, tune_sample=600).current


def test_a_piped_build_prints_a_line_per_trial(tmp_path):
    folder = write_dataset(tmp_path / "data", *hits_dataset())
    env = {**os.environ, "RECS_DB": str(tmp_path / "recs.db"), "RECS_DATA_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "build"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("tuning: trial ")]
    with duckdb.connect(str(tmp_path / "recs.db"), read_only=True) as con:
        trials = con.execute("select count(*) from tuning_trials").fetchone()[0]
    assert len(lines) == trials > 1
    first, last = lines[0], lines[-1]
    assert first.startswith("tuning: trial 1 of ") and "the starting point" in first and " left" in first
    assert last.startswith(f"tuning: trial {trials} of {trials}: ") and "best so far" in last


def test_params_says_what_the_next_build_does(cli, copied):
    folder, db = copied
    shown = cli("--db", db, "--data-dir", folder, "params", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["tuning"]["value"].startswith("none: recs.db is current")
    added_events(folder, 0.03)
    later = json.loads(cli("--db", db, "--data-dir", folder, "params", "--json").stdout)["tuning"]["value"]
    assert later.startswith("reuse (tuned) if events, users and items each changed by at most 5%")


def test_the_cli_says_current_and_stops(cli, copied):
    folder, db = copied
    said = cli("--db", db, "--data-dir", folder, "build")
    assert said.exit_code == 0, said.stderr
    assert f"{db} is current" in said.stdout and "--rebuild builds anyway" in said.stdout
    again = cli("--db", db, "--data-dir", folder, "build", "--rebuild")
    assert again.exit_code == 0 and "Built" in again.stdout


def test_no_tune_and_retune_contradict(cli, tmp_path):
    said = cli("--db", tmp_path / "recs.db", "build", "--no-tune", "--retune")
    assert said.exit_code == 2 and "contradict" in said.stderr
