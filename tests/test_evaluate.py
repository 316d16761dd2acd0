"""Offline evaluation: the metric code by hand, the split rules, and no peeking at test events."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

import engine
from conftest import random_dataset, write_dataset
from engine.evaluate import TRENDS, Evaluation, Trend, trending_lists
from engine.metrics import hit_rate_at_k, mean_and_standard_error, ndcg_at_k, recall_at_k, score


# --- metrics, worked by hand -------------------------------------------------------

def test_ndcg_of_a_known_ranking():
    # relevant b at rank 2 and d not shown: DCG = 1/log2(3); ideal (2 relevant) = 1 + 1/log2(3)
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert expected == pytest.approx(0.38685, abs=1e-5)  # the hand value the formula stands for
    assert ndcg_at_k(["a", "b", "c"], {"b", "d"}, 3) == pytest.approx(0.38685, abs=1e-5)


def test_ndcg_is_one_for_a_perfect_ranking_and_zero_without_hits():
    assert ndcg_at_k(["b", "d", "x"], {"b", "d"}, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], {"b"}, 2) == 0.0


def test_ndcg_only_counts_the_top_k():
    assert ndcg_at_k(["x", "b"], {"b"}, 1) == 0.0


def test_recall_divides_by_what_k_allows():
    assert recall_at_k(["a", "b", "c"], {"b", "d"}, 3) == 0.5
    assert recall_at_k(["a"], {"a", "b", "c"}, 1) == 1.0  # min(k, |relevant|) = 1


def test_hit_rate():
    assert hit_rate_at_k(["a", "b"], {"b"}, 2) == 1.0
    assert hit_rate_at_k(["a", "b"], {"b"}, 1) == 0.0


def test_mean_and_standard_error():
    assert mean_and_standard_error([0.0, 1.0]) == pytest.approx((0.5, 0.5))  # sd 0.7071 / sqrt(2)
    assert mean_and_standard_error([3.0]) == (3.0, 0.0)


def test_score_averages_over_users_and_counts_coverage():
    relevant = {"u1": {"a"}, "u2": {"z"}}
    result = score("m", {"u1": ["a", "b"], "u2": ["b", "c"]}, relevant, k=2, catalogue_size=10)
    assert result.users == 2
    assert result.ndcg == pytest.approx(0.5)  # 1 for u1, 0 for u2
    assert result.hit_rate == pytest.approx(0.5)
    assert result.coverage == pytest.approx(0.3)  # a, b, c of 10


# --- the split rules ----------------------------------------------------------------

USERS = [(f"u{n}", 30, "F", "Jakarta") for n in (1, 2, 3)]
ITEMS = [(f"i{n}", f"T{n}", "movie", "drama") for n in range(1, 9)]
EVENTS = [  # user, item, seconds, day of October 2026
    ("u1", "i1", 1, 1), ("u1", "i2", 1, 2), ("u1", "i3", 1, 3), ("u1", "i4", 1, 4), ("u1", "i5", 1, 9),
    ("u2", "i1", 1, 5), ("u2", "i6", 1, 6), ("u2", "i1", 1, 10),
    ("u3", "i7", 1, 8),
    ("u1", "i8", 1, 7),
]


@pytest.fixture
def split_dir(tmp_path):
    events = [(u, i, "play", s * 600, f"2026-10-{day:02d}T12:00:00Z") for u, i, s, day in EVENTS]
    return write_dataset(tmp_path / "data", USERS, ITEMS, events)


def test_global_split_holds_out_the_latest_share_of_all_events(split_dir):
    # 10 events; the 0.8 quantile of time is day 8: days 9 and 10 are test.
    with Evaluation(split_dir, "global", 0.2) as evaluation:
        assert (evaluation.train_events, evaluation.test_events) == (8, 2)
        # u1's i5 (day 9) is new to u1; u2's i1 (day 10) was watched in training: not relevant
        assert dict(evaluation.relevant) == {"u1": {"i5"}}


def test_user_split_holds_out_each_users_latest_share(split_dir):
    # u1 has 6 events: round(1.2) = 1 test (i5, day 9); u2 has 3: 1 test (i1, day 10);
    # u3 has 1: it is test, and u3 has no training event, so u3 is not evaluated.
    with Evaluation(split_dir, "user", 0.2) as evaluation:
        assert (evaluation.train_events, evaluation.test_events) == (7, 3)
        assert dict(evaluation.relevant) == {"u1": {"i5"}}


def test_bad_split_arguments_are_refused(split_dir):
    with pytest.raises(engine.BadArgument):
        Evaluation(split_dir, "random")
    with pytest.raises(engine.BadArgument):
        Evaluation(split_dir, "user", 1.5)


# --- the trend peers ----------------------------------------------------------------

# day of January 2026, user, item, seconds. The training part ends on day 60:
# in its last 7 days only "weekly" is watched (2,500 s); in its last 30 days
# "monthly" leads (6,000 s) ahead of "weekly"; "classic" has the most seconds
# of all time (15,000), then "monthly", then "quiet"; "unwatched" has none.
# The two test events (days 61, 62) are long: were they counted, "classic"
# and "monthly" would lead both windows.
TREND_EVENTS = [
    (1, "u1", "classic", 5000), (1, "u2", "classic", 5000), (1, "u3", "classic", 5000),
    (2, "u4", "quiet", 100),
    (40, "u1", "monthly", 3000), (40, "u2", "monthly", 3000),
    (58, "u3", "weekly", 2000), (60, "u5", "weekly", 500),
    (61, "u4", "classic", 20000), (62, "u5", "monthly", 20000),
]


@pytest.fixture
def trend_evaluation(tmp_path):
    users = [(f"u{n}", 30, "F", "Jakarta") for n in range(1, 6)]
    items = [(item, item.title(), "movie", "drama") for item in ("classic", "monthly", "quiet", "unwatched", "weekly")]
    events = [
        (user, item, "play", seconds, (datetime(2026, 1, 1, 12) + timedelta(days=day - 1)).isoformat() + "Z")
        for day, user, item, seconds in TREND_EVENTS
    ]
    # 10 events, test_frac 0.2: the 0.8 quantile of time is day 60, so days 61 and 62 are test
    with Evaluation(write_dataset(tmp_path / "data", users, items, events), "global", 0.2) as evaluation:
        yield evaluation


def test_the_item_watched_most_in_the_last_7_days_ranks_first_for_the_7_day_trend(trend_evaluation):
    assert dict(trend_evaluation.relevant) == {"u4": {"classic"}, "u5": {"monthly"}}
    lists = trending_lists(trend_evaluation.con, Trend(7), 4, ["u4", "u5"])
    # then all-time seconds break the ties at 0; each user's watched item is left out
    assert lists == {"u4": ["weekly", "classic", "monthly", "unwatched"], "u5": ["classic", "monthly", "quiet", "unwatched"]}


def test_the_item_watched_most_in_the_last_30_days_ranks_first_for_the_30_day_trend(trend_evaluation):
    lists = trending_lists(trend_evaluation.con, Trend(30), 4, ["u4", "u5"])
    assert lists == {"u4": ["monthly", "weekly", "classic", "unwatched"], "u5": ["monthly", "classic", "quiet", "unwatched"]}


def test_trend_peers_are_scored_like_any_model(trend_evaluation):
    # 30 days: u5 gets monthly first (NDCG 1), u4 gets classic third (1 / log2 4 = 0.5)
    result = trend_evaluation.score("t", Trend(30), k=3)
    assert (result.users, result.ndcg, result.coverage) == (2, pytest.approx(0.75), pytest.approx(4 / 5))
    # 7 days: u4 gets classic second (1 / log2 3), u5 monthly second
    assert trend_evaluation.score("t", Trend(7), k=3).ndcg == pytest.approx(1 / math.log2(3))
    assert [trend.days for trend in TRENDS] == [7, 30]


def test_trend_lists_are_short_only_when_the_catalogue_runs_out(trend_evaluation):
    lists = trending_lists(trend_evaluation.con, Trend(7), 10, ["u4", "u5", "nobody"])
    assert [len(lists[user]) for user in ("u4", "u5")] == [4, 4]  # 5 items, one watched
    assert lists["nobody"] == ["weekly", "classic", "monthly", "quiet", "unwatched"]


# --- no peeking -----------------------------------------------------------------------

MODEL_TABLES = {
    "user_item_strength": "user_id, item_id",
    "item_popularity": "item_id",
    "item_neighbors": "item_id, neighbor_id",
    "item_length": "item_id",
}


@pytest.mark.parametrize("split", ["global", "user"])
def test_the_model_is_built_from_training_events_only(tmp_path, split):
    """Evaluation's model tables equal those of a plain build from the training events alone."""
    users, items, events = random_dataset(7, n_users=20, n_items=15, n_events=200)
    folder = write_dataset(tmp_path / "all", users, items, events)
    params = engine.ModelParams()
    with Evaluation(folder, split, 0.25) as evaluation:
        evaluation.fit(params)
        train = evaluation.con.execute(
            "select user_id, item_id, event_type, watch_seconds, strftime(watched_at, '%Y-%m-%dT%H:%M:%S') "
            "from events"
        ).fetchall()
        assert len(train) == evaluation.train_events < len(events)
        evaluated = {table: _rows(evaluation.con, table, key) for table, key in MODEL_TABLES.items()}
    train_folder = write_dataset(tmp_path / "train", users, items, train)
    engine.build(tmp_path / "train.db", train_folder, params)
    con = duckdb.connect(str(tmp_path / "train.db"), read_only=True)
    for table, key in MODEL_TABLES.items():
        plain = _rows(con, table, key)
        assert len(plain) == len(evaluated[table]), table
        for mine, theirs in zip(evaluated[table], plain):
            assert mine == pytest.approx(theirs), table


def _rows(con, table: str, key: str) -> list[tuple]:
    columns = [row[0] for row in con.execute(f"describe {table}").fetchall()]
    numeric = [c for c in columns if c not in key.split(", ") and c not in ("last_watched_at", "length_source")]
    rows = con.execute(f"select {key}, {', '.join(numeric)} from {table} order by {key}").fetchall()
    return [tuple(float(v) if isinstance(v, (int, float, bool)) else v for v in row) for row in rows]


# --- the commands -----------------------------------------------------------------------

def test_evaluate_command_prints_both_models(cli, tmp_path):
    users, items, events = random_dataset(8)
    folder = write_dataset(tmp_path / "data", users, items, events)
    result = cli("--data-dir", folder, "--db", tmp_path / "recs.db", "evaluate", "--split", "user", "--k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["split"] == "user" and payload["k"] == 5
    assert [r["model"] for r in payload["results"]] == [
        "recs (tuned)", "recs (defaults)", "most popular", "most popular, last 7 days", "most popular, last 30 days",
    ]
    assert all(0 <= r["ndcg"] <= 1 and r["users"] > 0 for r in payload["results"])
    assert not (tmp_path / "recs.db").exists()  # evaluation never touches recs.db


def test_evaluate_command_refuses_an_unknown_split(cli, tiny_dir):
    result = cli("--data-dir", tiny_dir, "evaluate", "--split", "random")
    assert result.exit_code == 2  # a usage mistake: the choices are the option's, shown in --help
    said = " ".join(result.stderr.replace("│", " ").split())
    assert "'random' is not one of 'global', 'user'" in said
    assert "<global|user>" in cli("evaluate", "--help", terminal_width=120).stdout


def test_flags_show_no_type_in_the_help_and_json_says_what_it_does(cli):
    for command in ("popular", "ingest", "tune", "build"):
        shown = cli(command, "--help", terminal_width=120).stdout
        assert "<bool>" not in shown and "--help" in shown
    for command in ("ingest", "tune"):  # no --format to be short for
        assert "Print JSON instead of the table." in cli(command, "--help", terminal_width=120).stdout


def test_the_evaluate_table_cuts_names_never_figures(cli, tiny_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("--data-dir", tiny_dir, "--db", tiny_dir.parent / "recs.db", "evaluate", "--split", "user",
                 "--test-frac", "0.5", terminal_width=80)
    assert result.exit_code == 0, result.stderr
    as_json = cli("--data-dir", tiny_dir, "--db", tiny_dir.parent / "recs.db", "evaluate", "--split", "user",
                  "--test-frac", "0.5", "--json")
    import json

    for row in json.loads(as_json.stdout)["results"]:
        assert f"{row['ndcg']:.4f}±{row['ndcg_se']:.4f}" in result.stdout
        assert f"{row['coverage']:.1%}" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_export_writes_every_users_list(cli, tiny_dir, tmp_path):
    out = tmp_path / "recs.csv"
    result = cli("--data-dir", tiny_dir, "--db", tmp_path / "recs.db", "export", "--k", "2", "--out", out)
    assert result.exit_code == 0, result.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0].keys()) == ["user_id", "rank", "item_id", "title", "score", "source", "reason"]
    by_user = {}
    for row in rows:
        by_user.setdefault(row["user_id"], []).append(row["item_id"])
    assert set(by_user) == {"u1", "u2", "u3"}
    assert all(len(ids) == 2 for ids in by_user.values())
    assert result.stdout.startswith(f"Wrote {len(rows)} rows")


def test_export_matches_recommend_and_covers_unknown_users(cli, tiny_dir, tmp_path):
    users_file = tmp_path / "users.txt"
    users_file.write_text("u1\n\nnobody\nu1\n")
    out = tmp_path / "recs.parquet"
    result = cli(
        "--data-dir", tiny_dir, "--db", tmp_path / "recs.db", "export", "--k", "3", "--out", out, "--users", users_file
    )
    assert result.exit_code == 0, result.stderr
    rows = duckdb.sql(f"select user_id, rank, item_id, source from '{out}' order by user_id, rank").fetchall()
    recommender = engine.Recommender(tmp_path / "recs.db", tiny_dir)
    expected = [("nobody", item.rank, item.item_id, "popular") for item in recommender.popular(3).items]
    expected += [("u1", item.rank, item.item_id, item.source) for item in recommender.recommend("u1", 3).items]
    assert rows == expected


PRIOR = engine.ModelParams(popularity_prior=3.0, support_shrinkage=10.0, similarity_normalisation=0.5)


@pytest.mark.parametrize("params", [engine.ModelParams(), PRIOR], ids=["defaults", "prior"])
@pytest.mark.parametrize("k", [4, 25])
@pytest.mark.parametrize("seed", [3, 4])
def test_recommend_all_equals_recommend_for_each_user(tmp_path, seed, k, params):
    """At k = 25 (the whole catalogue) every list reaches the popular fill."""
    users, items, events = random_dataset(seed)
    # zero seconds give zero strength: z1's only item says nothing, z2's one item of two
    events = events + [
        ("z1", "i1", "play", 0, "2026-09-01T10:00:00Z"),
        ("z2", "i2", "play", 0, "2026-09-01T10:00:00Z"),
        ("z2", "i3", "play", 600, "2026-09-02T10:00:00Z"),
    ]
    folder = write_dataset(tmp_path / "data", users, items, events)
    event_users = sorted({event[0] for event in events})  # recommend_all lists users with events
    recommender = engine.Recommender(tmp_path / "recs.db", folder, params)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    for genre in (None, "drama"):
        batch = con.execute(
            "select user_id, item_id, score, source from recommend_all($k, only_genre := $g) order by user_id, rank",
            {"g": genre, "k": k},
        ).fetchall()
        single = [
            (user_id, item.item_id, item.score, item.source)
            for user_id in event_users
            for item in recommender.recommend(user_id, k, genre=genre).items
        ]
        assert [row[:2] + row[3:] for row in batch] == [row[:2] + row[3:] for row in single]
        assert [row[2] for row in batch] == pytest.approx([row[2] for row in single])
        # scoring only some users (export --users, the tuner) gives them the same lists
        some = event_users[::3] + ["nobody"]
        scoped = con.execute(
            "select user_id, item_id, score, source from recommend_all($k, only_genre := $g, for_users := $users)"
            " order by user_id, rank",
            {"g": genre, "k": k, "users": some},
        ).fetchall()
        expected = [row for row in batch if row[0] in some]
        assert [row[:2] + row[3:] for row in scoped] == [row[:2] + row[3:] for row in expected]
        assert [row[2] for row in scoped] == pytest.approx([row[2] for row in expected])
        # the recommend macro (what the duckdb shell runs) gives the same lists
        # as the app, which asks recommend_personal first
        macro = [
            (user_id, row[0], row[1], row[2])
            for user_id in event_users
            for row in con.execute(
                "select item_id, score, source from recommend($u, $k, only_genre := $g)",
                {"u": user_id, "g": genre, "k": k},
            ).fetchall()
        ]
        assert [row[:2] + row[3:] for row in macro] == [row[:2] + row[3:] for row in single]


@pytest.mark.parametrize("suffix", [".tsv", ".json"])
def test_export_writes_the_format_its_suffix_names(cli, tiny_dir, tmp_path, suffix):
    out = tmp_path / f"recs{suffix}"
    result = cli("--data-dir", tiny_dir, "--db", tmp_path / "recs.db", "export", "--k", "2", "--out", out)
    assert result.exit_code == 0, result.stderr
    if suffix == ".tsv":
        rows = list(csv.DictReader(out.open(), delimiter="\t"))
    else:
        rows = json.loads(out.read_text())  # one JSON document (.jsonl is one object per line)
    assert list(rows[0]) == ["user_id", "rank", "item_id", "title", "score", "source", "reason"]
    assert len(rows) == 6 and {row["user_id"] for row in rows} == {"u1", "u2", "u3"}


def test_export_refuses_a_suffix_it_cannot_write(cli, tiny_dir, tmp_path):
    out = tmp_path / "recs.txt"
    result = cli("--data-dir", tiny_dir, "--db", tmp_path / "recs.db", "export", "--out", out)
    assert result.exit_code == 2  # a usage mistake, caught before any work
    assert "(csv, tsv, json, jsonl, parquet)" in " ".join(result.stderr.replace("│", " ").split())
    assert not out.exists()


def test_export_to_dash_writes_csv_on_stdout(cli, tiny_dir, tmp_path):
    result = cli("--data-dir", tiny_dir, "--db", tmp_path / "recs.db", "export", "--k", "1", "--out", "-")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [row["user_id"] for row in rows] == ["u1", "u2", "u3"]
    assert "Wrote 3 rows to stdout." in result.stderr
    assert not (tmp_path / "-").exists() and not Path("-").exists()
