"""Each SQL layer against the same computation done the slow way in Python (tests/reference.py)."""

from __future__ import annotations

import duckdb
import pytest

import engine
from conftest import random_dataset, write_dataset
from reference import item_lengths, neighbors, popularity, strengths

PARAMS = [
    engine.ModelParams(),
    engine.ModelParams(similarity_alpha=0.5, user_weight_gamma=0, max_neighbors=50),
    engine.ModelParams(half_life_days=14, min_support=2, max_neighbors=3, heavy_threshold=0.5),
    engine.ModelParams(min_plays_for_length=1, max_full_views=1.5, trending_half_life_days=7),
    engine.ModelParams(
        similarity_alpha=0.3, user_weight_gamma=1, popularity_beta=0.5, strength_formula="views"
    ),
    engine.ModelParams(similarity_history_cap=3, popularity_beta=0.3, strength_formula="binary"),
    engine.ModelParams(strength_formula="log_seconds"),
    engine.ModelParams(support_shrinkage=20, similarity_normalisation=0.5, max_neighbors=200),
    engine.ModelParams(similarity_normalisation=0.0, support_shrinkage=3, popularity_beta=0.5, user_weight_gamma=1),
    # plain cosine over whole histories: what test_cosine_is_symmetric_and_bounded checks
    engine.ModelParams(similarity_alpha=0.5, user_weight_gamma=0, similarity_history_cap=0, max_neighbors=50),
]


@pytest.fixture(
    scope="module",
    params=[(seed, params) for seed in (1, 2) for params in PARAMS],
    ids=lambda p: f"seed{p[0]}-params{PARAMS.index(p[1])}",
)
def built(request, tmp_path_factory):
    """(connection, users, items, events, params) for one random dataset and parameter set."""
    seed, params = request.param
    tmp_path = tmp_path_factory.mktemp("model")
    users, items, events = random_dataset(seed)
    folder = write_dataset(tmp_path / "data", users, items, events)
    db = tmp_path / "recs.db"
    engine.build(db, folder, params)
    con = duckdb.connect(str(db), read_only=True)
    yield con, users, items, events, params
    con.close()


def test_item_length_matches_reference(built):
    con, _, items, events, params = built
    expected = item_lengths(items, events, params)
    actual = dict(con.execute("select item_id, length_seconds from item_length").fetchall())
    assert actual.keys() == expected.keys()
    for item_id, length in expected.items():
        assert actual[item_id] == pytest.approx(length)


def test_strength_matches_reference(built):
    con, _, items, events, params = built
    expected = strengths(items, events, params)
    rows = con.execute(
        "select user_id, item_id, completion, is_heavy, strength from user_item_strength"
    ).fetchall()
    assert len(rows) == len(expected)
    for user_id, item_id, completion, is_heavy, strength in rows:
        reference = expected[(user_id, item_id)]
        assert completion == pytest.approx(reference["completion"])
        assert is_heavy == reference["is_heavy"]
        assert strength == pytest.approx(reference["strength"])


def test_popularity_matches_reference(built):
    con, _, items, events, params = built
    expected = popularity(items, strengths(items, events, params), params)
    rows = con.execute("select item_id, score, viewers from item_popularity order by popularity_rank").fetchall()
    assert [row[0] for row in rows] == [row[0] for row in expected]
    assert [row[1] for row in rows] == pytest.approx([row[1] for row in expected])
    assert [row[2] for row in rows] == [row[2] for row in expected]


def test_neighbors_match_reference(built):
    con, _, items, events, params = built
    expected = neighbors(strengths(items, events, params), params)
    rows = con.execute(
        "select item_id, neighbor_id, similarity, support from item_neighbors order by item_id, neighbor_rank"
    ).fetchall()
    actual = {}
    for item_id, neighbor_id, similarity, support in rows:
        actual.setdefault(item_id, []).append((neighbor_id, similarity, support))
    assert actual.keys() == expected.keys()
    for item_id, reference in expected.items():
        assert [row[1] for row in actual[item_id]] == pytest.approx([row[1] for row in reference])
        assert [row[2] for row in actual[item_id]] == [row[2] for row in reference]
        # the tie rule: equal similarity -> more support first, then the lower item_id
        assert tie_ordered(actual[item_id]) == [row[0] for row in actual[item_id]], item_id
        assert [row[0] for row in actual[item_id]] == [row[0] for row in reference], item_id


def tie_ordered(rows: list[tuple[str, float, int]]) -> list[str]:
    """Neighbour ids sorted by the tie rule, similarities equal to 9 places counting as ties."""
    return [row[0] for row in sorted(rows, key=lambda row: (-round(row[1], 9), -row[2], row[0]))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cosine_is_symmetric_and_bounded(seed, tmp_path):
    """Plain cosine (alpha 0.5, no popularity penalty, whole histories) is symmetric and in (0, 1]."""
    folder = write_dataset(tmp_path / "data", *random_dataset(seed))
    engine.build(tmp_path / "recs.db", folder, PARAMS[-1])
    with duckdb.connect(str(tmp_path / "recs.db"), read_only=True) as con:
        pairs, asymmetric, out_of_range = con.execute(
            """
            select
                count(*),
                count(*) filter (where abs(a.similarity - b.similarity) > 1e-12),
                count(*) filter (where a.similarity <= 0 or a.similarity > 1 + 1e-12)
            from item_neighbors as a
            join item_neighbors as b on b.item_id = a.neighbor_id and b.neighbor_id = a.item_id
            """
        ).fetchone()
    assert pairs > 100  # 50 neighbours per item: most pairs are kept both ways
    assert asymmetric == 0
    assert out_of_range == 0


def test_tables_keep_their_grain(built):
    """One row per declared key in every model table."""
    con = built[0]
    for table, key in [
        ("users", "user_id"),
        ("items", "item_id"),
        ("item_length", "item_id"),
        ("user_item_strength", "user_id, item_id"),
        ("item_popularity", "item_id"),
        ("item_neighbors", "item_id, neighbor_id"),
    ]:
        duplicates = con.execute(
            f"select count(*) from (select {key} from {table} group by {key} having count(*) > 1)"
        ).fetchone()[0]
        assert duplicates == 0, table


def test_a_completion_exactly_at_the_threshold_is_heavy(tmp_path):
    """i1's plays set its length to 1,000 s (their 90th percentile); u6 watched 800 s of it:
    completion 0.8, exactly heavy_threshold, so heavy, and never recommended back to u6
    even with resurface_light on (which resurfaces only light watches)."""
    users = [(f"u{n}", 30, "F", "Jakarta") for n in range(1, 7)]
    items = [("i1", "One", "movie", "drama"), ("i2", "Two", "movie", "drama"), ("i3", "Three", "movie", "drama")]
    events = [(f"u{n}", "i1", "play", 1000, f"2024-01-0{n}T10:00:00Z") for n in range(1, 6)]
    events += [(f"u{n}", "i2", "play", 1000, f"2024-01-0{n}T11:00:00Z") for n in range(1, 6)]
    events += [("u6", "i1", "play", 800, "2024-01-07T10:00:00Z"), ("u6", "i2", "play", 700, "2024-01-07T11:00:00Z")]
    folder = write_dataset(tmp_path / "data", users, items, events)
    params = engine.ModelParams(heavy_threshold=0.8, resurface_light=True)
    engine.build(tmp_path / "recs.db", folder, params)
    with duckdb.connect(str(tmp_path / "recs.db"), read_only=True) as con:
        rows = con.execute(
            "select item_id, completion, is_heavy from user_item_strength where user_id = 'u6' order by item_id"
        ).fetchall()
    assert rows == [("i1", pytest.approx(0.8), True), ("i2", pytest.approx(0.7), False)]
    recommender = engine.Recommender(tmp_path / "recs.db", folder, params)
    picks = [item.item_id for item in recommender.recommend("u6", k=3).items]
    recommender.close()
    assert "i1" not in picks and "i2" in picks  # the light watch comes back, the heavy one does not
