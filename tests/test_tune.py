"""Self-tuning: the tuner's choice on data whose answer is known, what a build stores, and the
reuse of tables between trials."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import duckdb
import pytest

import engine
from conftest import random_dataset, write_dataset
from engine import tune
from engine.layers import layers_after, load_into, model_into
from engine.config import ModelParams


def hits_dataset(seed: int = 7):
    """300 users who each watch 6 random niche items early, then 2 of the 10 hits late.

    Which niche items go together is noise, so item similarity cannot predict
    the held-out (latest) watches; popularity can: the tuner must turn the
    popularity prior on.
    """
    rng = random.Random(seed)
    items = [(f"i{n}", f"Title {n}", "movie", "drama" if n % 2 else "comedy") for n in range(1, 81)]
    users = [(f"u{n}", 30, "F", "Jakarta") for n in range(1, 301)]
    start = datetime(2026, 1, 1)
    events = []
    for user_id, *_ in users:
        for item_id in rng.sample([item[0] for item in items[10:]], 6):
            moment = start + timedelta(days=rng.uniform(0, 60))
            events.append((user_id, item_id, "play", 5400, moment.isoformat() + "Z"))
        hits = rng.choices([f"i{n}" for n in range(1, 11)], weights=[1 / n for n in range(1, 11)], k=4)
        for item_id in dict.fromkeys(hits):
            moment = start + timedelta(days=rng.uniform(70, 90))
            events.append((user_id, item_id, "play", 5400, moment.isoformat() + "Z"))
    return users, items, events


@pytest.fixture(scope="module")
def tuned_build(tmp_path_factory):
    """recs.db built from hits_dataset with no parameters pinned: the build tunes."""
    folder = write_dataset(tmp_path_factory.mktemp("tune") / "data", *hits_dataset())
    db = folder.parent / "recs.db"
    report = engine.build(db, folder)
    return db, folder, report


def test_a_plain_build_tunes_and_picks_popularity_where_similarity_is_noise(tuned_build):
    _, _, report = tuned_build
    assert report.params_source == "tuned"
    assert report.params.popularity_prior > 0
    first, best = report.tuning.trials[0], report.tuning.best
    assert first.changes == {} and first.params == ModelParams().as_dict()
    assert best.ndcg > first.ndcg
    without_prior = next(t for t in report.tuning.trials if t.changes == {"popularity_prior": 0.0})
    assert without_prior.ndcg < best.ndcg * 0.95  # the prior is worth a lot here
    assert best.params == report.params.as_dict()


def test_trials_are_stored_and_queryable(tuned_build):
    db, _, report = tuned_build
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("select trial, changes, ndcg, kept from tuning_trials order by trial").fetchall()
        info = dict(con.execute("select key, value from build_info").fetchall())
        stored = con.execute("select popularity_prior from model_params").fetchone()[0]
    assert [row[0] for row in rows] == list(range(1, len(report.tuning.trials) + 1))
    assert json.loads(rows[0][1]) == {}
    kept = [row for row in rows if row[3]]
    assert max(row[2] for row in kept) == pytest.approx(report.tuning.best.ndcg)
    assert info["params_source"] == "tuned"
    assert json.loads(info["model_params"]) == report.params.as_dict()
    assert stored == report.params.popularity_prior


def test_every_trial_is_tried_once_and_kept_only_when_it_gains(tuned_build):
    trials = tuned_build[2].tuning.trials
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)
    best = trials[0].ndcg
    for trial in trials[1:]:
        gains = trial.ndcg > best * (1 + tune.MIN_GAIN)
        assert trial.kept == (gains and trial.coverage >= tune.COVERAGE_FLOOR * trials[0].coverage)
        if trial.kept:
            best = trial.ndcg


def test_a_later_build_without_tuning_reuses_the_tuned_parameters(tuned_build, tmp_path):
    db, folder, report = tuned_build
    copy = tmp_path / "recs.db"
    copy.write_bytes(db.read_bytes())
    again = engine.build(copy, folder, tune=False, rebuild=True)
    assert again.params == report.params
    assert again.params_source == "tuned earlier (tuning off)"


def test_a_query_accepts_a_tuned_build_without_rebuilding(tuned_build):
    db, folder, _ = tuned_build
    recommender = engine.Recommender(db, folder)
    assert recommender.build_report is None
    picks = recommender.recommend("u1", k=3)
    recommender.close()
    assert [pick.source for pick in picks.items] == ["popular"] * 3  # popularity won on this data


def test_too_little_data_keeps_the_defaults_and_says_why(tmp_path):
    folder = write_dataset(tmp_path / "data", *random_dataset(5))
    report = engine.build(tmp_path / "recs.db", folder)
    assert report.params == ModelParams()
    assert report.params_source.startswith("defaults (too little data to tune: validation users global split")


def test_pinned_parameters_are_never_tuned(tmp_path):
    folder = write_dataset(tmp_path / "data", *hits_dataset())
    pinned = ModelParams(max_neighbors=7)
    report = engine.build(tmp_path / "recs.db", folder, pinned)
    assert report.params == pinned and report.params_source == "pinned" and report.tuning is None


def test_the_budget_stops_the_plan_but_runs_the_last_step(tmp_path):
    folder = write_dataset(tmp_path / "data", *hits_dataset())
    with duckdb.connect(str(tmp_path / "t.db")) as con:
        load_into(con, folder)
        result = tune.tune(con, budget_seconds=0)
    assert result.stopped_early
    assert [t.step for t in result.trials] == ["start"] + ["popularity_prior"] * (len(tune.PRIORS) - 1)


def scripted_tune(tmp_path, monkeypatch, ndcg_of, dataset=None, coverage_of=lambda params: 0.5, start=None):
    """tune() with each trial's validation NDCG (and coverage) given by ndcg_of(params) (coverage_of)
    instead of a model fit."""
    monkeypatch.setattr(
        tune.Validation, "fit_and_score", lambda self, params, layers: (ndcg_of(params), 0.0, coverage_of(params))
    )
    folder = write_dataset(tmp_path / "data", *(dataset or hits_dataset()))
    with duckdb.connect(str(tmp_path / "t.db")) as con:
        load_into(con, folder)
        return tune.tune(con, start=start, budget_seconds=1e9)


def late_few_dataset(seed: int = 5):
    """300 users with 6 events each in days 0-60, then 10 users with 60 events each in days 80-90:
    the latest 25% of all events belong to those 10, so no global validation split has 50 users."""
    rng = random.Random(seed)
    items = [(f"i{n}", f"Title {n}", "movie", "drama") for n in range(1, 81)]
    users = [(f"u{n}", 30, "F", "Jakarta") for n in range(1, 311)]
    start = datetime(2026, 1, 1)
    events = []
    for number, (user_id, *_) in enumerate(users):
        late = number >= 300
        for item_id in rng.sample([item[0] for item in items], 60 if late else 6):
            moment = start + timedelta(days=rng.uniform(80, 90) if late else rng.uniform(0, 60))
            events.append((user_id, item_id, "play", 5400, moment.isoformat() + "Z"))
    return users, items, events


def test_the_next_period_decides_at_every_cut_point(tmp_path, monkeypatch):
    result = scripted_tune(tmp_path, monkeypatch, lambda p: 0.1)
    by_split = result.trials[0].ndcg_by_split
    assert set(by_split) == {"global", "global (latest 5% dropped)", "global (latest 10% dropped)"}
    assert tune.GLOBAL_ORIGINS == (0.0, 0.05, 0.1)


def test_with_too_few_users_after_every_cut_point_each_users_latest_decide(tmp_path, monkeypatch):
    result = scripted_tune(tmp_path, monkeypatch, lambda p: 0.1, late_few_dataset())
    assert result.skipped is None
    assert set(result.trials[0].ndcg_by_split) == {"user"}


def test_an_earlier_origin_drops_the_latest_events_first(tmp_path):
    folder = write_dataset(tmp_path / "data", *hits_dataset())
    with duckdb.connect(str(tmp_path / "t.db")) as con:
        load_into(con, folder)
        source = con.execute("select current_database()").fetchone()[0]
        total = con.execute("select count(*) from events").fetchone()[0]
        validation = tune.Validation(con, source, "global", 0, drop_frac=0.5)
        kept = con.execute("select count(*) from all_events").fetchone()[0]
        latest = con.execute("select max(watched_at) from all_events").fetchone()[0]
        validation.close(source)
        median = con.execute("select percentile_disc(0.5) within group (order by watched_at) from events").fetchone()[0]
    assert kept == pytest.approx(total / 2, abs=2) and latest == median
    assert validation.name == "global (latest 50% dropped)"


def test_a_gain_that_halves_the_coverage_is_not_kept(tmp_path, monkeypatch):
    # a prior above 10 wins NDCG but shows everyone the same items: coverage 0.2 against the start's 0.5
    result = scripted_tune(
        tmp_path, monkeypatch,
        ndcg_of=lambda p: 0.10 + p.popularity_prior / 1000,
        coverage_of=lambda p: 0.2 if p.popularity_prior > 10 else 0.5,
    )
    assert result.params.popularity_prior == 10.0
    assert any(t.params["popularity_prior"] == 300.0 and not t.kept for t in result.trials)


def test_an_ease_trial_far_below_the_best_ends_the_ease_trials(tmp_path, monkeypatch):
    result = scripted_tune(tmp_path, monkeypatch, lambda p: 0.05 if p.neighbor_model == "ease" else 0.10)
    ease = [t for t in result.trials if t.params["neighbor_model"] == "ease"]
    assert [t.changes["ease_lambda"] for t in ease] == [500.0]
    assert result.params.neighbor_model == "cosine"


def test_with_ease_chosen_cosine_only_parameters_are_not_tried(tmp_path, monkeypatch):
    def ndcg_of(params):
        return (0.20 if params.neighbor_model == "ease" else 0.10) + params.ease_lambda / 1e6

    result = scripted_tune(tmp_path, monkeypatch, ndcg_of)
    assert result.params.neighbor_model == "ease"
    assert {t.changes["ease_lambda"] for t in result.trials if "ease_lambda" in t.changes} == {500.0, 100.0, 2000.0}
    after = result.trials[[t.kept for t in result.trials].index(True, 1):]  # from the first EASE kept on
    tried = {name for t in after for name in t.changes}
    assert not tried & tune.COSINE_ONLY
    assert {"strength_formula", "popularity_prior"} <= tried  # (max_neighbors stays at EASE's 200)


def test_a_user_half_life_that_helps_cosine_does_not_block_ease(tmp_path, monkeypatch):
    # the B look-alike's user split on validation: the half-life lifts cosine past EASE-with-it,
    # while EASE without it is the best of all
    def ndcg_of(params):
        if params.neighbor_model == "ease":
            return 0.1208 if params.user_half_life_days == 0 else 0.1182
        return 0.1184 if params.user_half_life_days == 90 else 0.1168

    result = scripted_tune(tmp_path, monkeypatch, ndcg_of)
    assert result.params.neighbor_model == "ease"
    assert result.params.user_half_life_days == 0.0
    steps = [name for name, _ in tune.PLAN]
    assert steps.index("user_half_life_days") > steps.index("neighbor_model")


def test_ease_without_the_prior_is_without_its_floor_too(tmp_path, monkeypatch):
    result = scripted_tune(tmp_path, monkeypatch, lambda p: 0.1, start=ModelParams(prior_floor=0.3))
    without_prior = [t for t in result.trials if t.step == "neighbor_model" and "popularity_prior" in t.changes]
    assert [(t.params["popularity_prior"], t.params["prior_floor"]) for t in without_prior] == [(0.0, 0.0)]
    assert "prior_floor" not in {name for name, _ in tune.PLAN}


def test_a_large_validation_split_scores_a_fixed_sample_of_its_users(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "MAX_VALIDATION_USERS", 120)
    folder = write_dataset(tmp_path / "data", *hits_dataset())
    with duckdb.connect(str(tmp_path / "t.db")) as con:
        load_into(con, folder)
        source = con.execute("select current_database()").fetchone()[0]
        samples = []
        for number in range(2):
            validation = tune.Validation(con, source, "user", number)
            samples.append(set(validation.relevant))
            all_evaluated = con.execute("select count(distinct user_id) from relevant_items").fetchone()[0]
            validation.close(source)
    assert all_evaluated == 300
    assert len(samples[0]) == 120 and samples[0] == samples[1]  # the same users every time


# --- trials reuse tables: a partial re-run must equal a full one -------------------------

MODEL_TABLES = {
    "user_item_strength": "user_key, item_key",
    "item_popularity": "item_key",
    "item_pairs": "item_a, item_b",
    "neighbor_lists": "item_key",
}


def rounded(value):
    """value with every float rounded to 9 significant digits: parallel sums differ in the last bits."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, (list, tuple)):
        return type(value)(rounded(part) for part in value)
    if isinstance(value, dict):
        return {key: rounded(part) for key, part in value.items()}
    return value


def snapshot(con) -> dict:
    return {
        table: rounded(con.execute(f"select * from {table} order by {key}").fetchall())
        for table, key in MODEL_TABLES.items()
    }


@pytest.mark.parametrize(
    "change",
    [
        {"popularity_prior": 3.0},
        {"trending_half_life_days": 7.0},
        {"support_shrinkage": 5.0, "max_neighbors": 5},
        {"user_weight_gamma": 1.0},
        {"strength_formula": "binary"},
    ],
    ids=lambda change: ",".join(change),
)
def test_re_running_only_the_layers_a_change_reads_equals_a_full_build(tmp_path, change):
    folder = write_dataset(tmp_path / "data", *random_dataset(11))
    before, after = ModelParams(), ModelParams().replace(**change)
    with duckdb.connect(str(tmp_path / "t.db")) as con:
        load_into(con, folder)
        model_into(con, before)
        model_into(con, after, only=layers_after({ModelParams.layer_of(name) for name in change}))
        partial = snapshot(con)
        model_into(con, after)
        assert snapshot(con) == partial


def test_every_model_file_has_a_layer_entry():
    from engine import sqlfiles
    from engine.layers import LAYER_INPUTS

    assert {path.name[:2] for path in sqlfiles.build_files(layer="model")} == set(LAYER_INPUTS)
    assert {ModelParams.layer_of(name) for name in ModelParams().as_dict()} <= set(LAYER_INPUTS)
