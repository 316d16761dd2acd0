"""Recommendations: the brief's tiny example worked by hand, then properties on random data."""

from __future__ import annotations

import math

import pytest

import engine
from conftest import random_dataset, write_dataset
from reference import recommend as reference_recommend
from reference import strengths


# --- the tiny example, by hand ------------------------------------------------
# Lengths (90th percentile of plays): i1 600 + 0.9 * 600 = 1140 s,
# i2 900 + 0.9 * 300 = 1170 s, i3 300 s. Strength = log2(1 + full views):
#   u1-i1 log2(1 + 1200/1140) = 1.0375   u3-i1 log2(1 + 600/1140) = 0.6101
#   u1-i2 log2(1 + 900/1170)  = 0.8231   u2-i2 log2(1 + 1200/1170) = 1.0184
#   u2-i3 log2(1 + 300/300)   = 1
# Popularity = sum of strength: i2 1.8415, i1 1.6475, i3 1, i4 0.

def test_popular_orders_the_tiny_example_by_hand(tiny):
    items = tiny.popular(k=3).items
    assert [item.item_id for item in items] == ["i2", "i1", "i3"]
    assert [item.rank for item in items] == [1, 2, 3]
    assert [item.score for item in items] == pytest.approx([1.8415, 1.6475, 1.0], abs=1e-4)
    assert all(item.source == "popular" for item in items)
    assert items[0].reason == "popular on the platform (2 viewers)"


def test_popular_k_beyond_the_catalogue_returns_every_item(tiny):
    items = tiny.popular(k=100).items
    assert [item.item_id for item in items] == ["i2", "i1", "i3", "i4"]
    assert items[-1].reason == "in the catalogue, not watched yet"


def test_recommend_for_u1_by_hand(tiny):
    # u1 watched i1 and i2; only i3 shares a viewer (u2, with i2).
    # User weights w = strength / sqrt(items watched): u1 and u2 watched two each, so
    #   w(u1, i2) = 0.8231 / 1.4142 = 0.5820, w(u2, i2) = 1.0184 / 1.4142 = 0.7201,
    #   w(u2, i3) = 1 / 1.4142 = 0.7071; sq(i2) = 0.5820^2 + 0.7201^2 = 0.8573, sq(i3) = 0.5
    # similarity(i2 -> i3) = 0.7201 * 0.7071 / (0.8573^0.6 * 0.5^0.4) = 0.5092 / 0.6910 = 0.7369
    # score(i3) = strength(u1, i2) * 0.7369 = 0.8231 * 0.7369 = 0.6066
    recs = tiny.recommend("u1", k=2)
    assert recs.fallback_used is False
    assert [(item.item_id, item.source) for item in recs.items] == [("i3", "personalised"), ("i4", "popular")]
    assert recs.items[0].score == pytest.approx(0.6066, abs=1e-4)
    assert recs.items[0].reason == "similar to Family Show B, which you watched"


def test_watched_items_are_never_recommended_back(tiny):
    ids = [item.item_id for item in tiny.recommend("u1", k=10).items]
    assert "i1" not in ids and "i2" not in ids


def test_unknown_user_falls_back_to_popular(tiny):
    recs = tiny.recommend("nobody", k=2)
    assert recs.fallback_used is True and recs.user_known is False
    assert [item.item_id for item in recs.items] == ["i2", "i1"]
    assert all(item.source == "popular" for item in recs.items)


def test_user_without_history_falls_back_but_is_known(tmp_path):
    users = [("u1", 20, "F", "Jakarta"), ("u2", 30, "M", "Medan")]
    items = [("i1", "A", "tv", "drama"), ("i2", "B", "tv", "drama")]
    events = [("u1", "i1", "play", 100, "2026-01-01T00:00:00Z")]
    folder = write_dataset(tmp_path / "data", users, items, events)
    recs = engine.Recommender(tmp_path / "recs.db", folder).recommend("u2", k=5)
    assert recs.fallback_used is True and recs.user_known is True
    assert [item.item_id for item in recs.items] == ["i1", "i2"]


def test_filters_apply_before_top_k(tiny):
    recs = tiny.recommend("u3", k=1, genre="Family")
    assert [item.item_id for item in recs.items] == ["i2"]
    assert tiny.popular(k=5, content_type="MOVIE").items[0].item_id == "i3"


def test_unknown_filter_value_names_the_known_ones(tiny):
    with pytest.raises(engine.UnknownValue, match="known: action, drama, family, romance"):
        tiny.recommend("u1", genre="western")
    with pytest.raises(engine.UnknownValue, match="content_type 'podcast'"):
        tiny.popular(content_type="podcast")


@pytest.mark.parametrize("fast", [False, True])  # the SQL macros and the serving index
def test_an_excluded_id_not_in_the_catalogue_is_ignored_and_noted(tiny, fast):
    recommender = engine.Recommender(tiny.db, tiny.data_dir, fast=fast)
    asked = recommender.recommend("u1", 2, exclude=["i3", "nope", "zz"])
    assert asked.items == recommender.recommend("u1", 2, exclude=["i3"]).items
    assert asked.notes == ["exclude 'nope', 'zz': not in the catalogue, ignored"]
    assert recommender.recommend("u1", 2, exclude=["i3"]).notes == []
    popular = recommender.popular(2, exclude=["nope"])
    assert popular.items == recommender.popular(2).items
    assert popular.notes == ["exclude 'nope': not in the catalogue, ignored"]
    (batch,) = recommender.recommend_batch(["u1"], 2, exclude=["i3", "nope", "zz"])
    assert batch == asked
    recommender.close()


def test_k_below_one_is_refused(tiny):
    with pytest.raises(engine.BadArgument):
        tiny.popular(k=0)
    with pytest.raises(engine.BadArgument):
        tiny.recommend("u1", k=-3)


def test_module_functions_follow_the_brief(tiny_dir, monkeypatch):
    monkeypatch.setenv("RECS_DB", str(tiny_dir.parent / "recs.db"))
    monkeypatch.setenv("RECS_DATA_DIR", str(tiny_dir))
    engine._default.cache_clear()
    try:
        popular = engine.recommend_popular(k=2)
        recs = engine.recommend_for_user("u1", k=1)
    finally:
        engine._default.cache_clear()
    assert isinstance(popular, engine.PopularList) and [item.item_id for item in popular.items] == ["i2", "i1"]
    assert {"item_id", "title", "score", "reason", "source"} <= popular.items[0].to_dict().keys()
    assert isinstance(recs, engine.Recommendations) and recs.fallback_used is False
    assert recs.items[0].item_id == "i3"


# --- properties on random data --------------------------------------------------

PARAMS = [
    engine.ModelParams(),
    engine.ModelParams(max_neighbors=3, resurface_light=True, heavy_threshold=0.6, user_half_life_days=5),
    engine.ModelParams(similarity_history_cap=4, popularity_beta=0.3, trending_half_life_days=10),
    engine.ModelParams(popularity_prior=2.0, support_shrinkage=5.0, similarity_normalisation=0.3),
]


@pytest.fixture(scope="module", params=[(seed, p) for seed in (3, 4, 5) for p in PARAMS], ids=str)
def random_case(request, tmp_path_factory):
    seed, params = request.param
    users, items, events = random_dataset(seed, n_users=14, n_items=20, n_events=150)
    folder = write_dataset(tmp_path_factory.mktemp("random") / "data", users, items, events)
    recommender = engine.Recommender(folder.parent / "recs.db", folder, params=params)
    yield recommender, users, items, events, params
    recommender.close()


FILTERS = [(None, None), ("drama", None), (None, "movie"), ("comedy", "tv")]


@pytest.mark.parametrize("k", [1, 30])
@pytest.mark.parametrize("genre,content_type", FILTERS)
def test_recommendation_properties(random_case, k, genre, content_type):
    recommender, users, items, events, params = random_case
    strength = strengths(items, events, params)
    item_rows = {item[0]: item for item in items}
    for user_id in [user[0] for user in users] + ["stranger"]:
        recs = recommender.recommend(user_id, k, genre, content_type)
        ids = [item.item_id for item in recs.items]
        assert len(ids) <= k
        assert len(ids) == len(set(ids))
        sources = [item.source for item in recs.items]
        if params.popularity_prior == 0:
            assert sources == sorted(sources, key=["personalised", "popular"].index)  # personalised first
            personal = [item.score for item in recs.items if item.source == "personalised"]
            assert personal == sorted(personal, reverse=True)
        elif not recs.fallback_used:
            # with the prior every pick competes on one score: the most popular items it may get are
            # candidates too, so the list is full before any fill
            scores = [item.score for item in recs.items]
            assert scores == sorted(scores, reverse=True)
        for item_id in ids:
            _, _, kind, item_genre = item_rows[item_id]
            assert genre is None or item_genre == genre
            assert content_type is None or kind == content_type
            seen = strength.get((user_id, item_id))
            assert seen is None or (params.resurface_light and not seen["is_heavy"])
        has_history = any(row["strength"] > 0 for (user, _), row in strength.items() if user == user_id)
        assert recs.fallback_used is (not has_history)
        if recs.fallback_used:
            assert set(sources) <= {"popular"}


@pytest.mark.parametrize("genre,content_type", FILTERS)
def test_recommendations_match_reference(random_case, genre, content_type):
    recommender, users, items, events, params = random_case
    strength = strengths(items, events, params)
    for user_id in [user[0] for user in users]:
        actual = [(i.item_id, i.score, i.source) for i in recommender.recommend(user_id, 8, genre, content_type).items]
        expected = reference_recommend(user_id, 8, items, strength, params, genre, content_type)
        assert [row[2] for row in actual] == [row[2] for row in expected], user_id
        assert [row[1] for row in actual] == pytest.approx([row[1] for row in expected]), user_id
        for position, (item_id, score, _) in enumerate(expected):
            tied = [other for other in expected if math.isclose(other[1], score, rel_tol=1e-9)]
            if len(tied) == 1:
                assert actual[position][0] == item_id, user_id
