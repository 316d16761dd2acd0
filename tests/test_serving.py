"""The serving index (engine/serving.py) answers exactly what the SQL macros answer: for every
user of the bundled data, with and without filters, before and after live events."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import engine
from engine.config import PLAIN
from conftest import BUNDLED, TINY_EVENTS, TINY_ITEMS, TINY_USERS, random_dataset, write_dataset

FILTERS = [
    {},
    {"genre": "drama"},
    {"content_type": "microdrama"},
    {"genre": "DRAMA", "content_type": "series"},
    {"genre": ["drama", "Comedy"], "exclude": ["i276", "i314", "i67"]},
    {"content_type": ["movie", "series"], "exclude": ["i222"]},
]


def macro_lists(
    recommender: engine.Recommender, k: int, genre=None, content_type=None, exclude=None
) -> dict[str, list]:
    """recommend_all (the macro recommend answers for each user, one plan), shaped as to_dict items."""
    rows = recommender.database.rows(
        """
        select user_id, rank, item_id, title, content_type, genre, score, source, reason
        from recommend_all($k, only_genre := $genre, only_content_type := $content_type, except_items := $exclude)
        order by user_id, rank
        """,
        {"k": k, "genre": genre, "content_type": content_type, "exclude": exclude},
    )
    lists: dict[str, list] = {}
    for row in rows:
        user_id = row.pop("user_id")
        lists.setdefault(user_id, []).append(engine.Pick.from_row(row).to_dict())
    return lists


def assert_same_for_every_user(slow: engine.Recommender, fast: engine.Recommender, k: int = 10) -> int:
    users = [row["user_id"] for row in slow.database.rows("select user_id from user_keys order by user_id")]
    compared = 0
    for filters in FILTERS:
        expected = macro_lists(slow, k, filters.get("genre"), filters.get("content_type"), filters.get("exclude"))
        for user_id in users:
            got = fast.recommend(user_id, k, **filters).to_dict()["items"]
            assert got == expected.get(user_id, []), (user_id, filters)
            compared += 1
    return compared


def assert_same_as_the_macro(
    slow: engine.Recommender, fast: engine.Recommender, users: list[str], k: int = 10, filter_sets=FILTERS
):
    """The whole answer (fallback_used, user_known too) through Recommender.recommend."""
    for filters in filter_sets:
        for user_id in users:
            assert fast.recommend(user_id, k, **filters).to_dict() == slow.recommend(user_id, k, **filters).to_dict()
            paged = fast.recommend(user_id, 3, offset=4, **filters).to_dict()
            assert paged == slow.recommend(user_id, 3, offset=4, **filters).to_dict()
        for size in (1, 5, 50):
            assert fast.popular(size, **filters).to_dict() == slow.popular(size, **filters).to_dict()
            assert fast.popular(size, offset=2, **filters).to_dict() == slow.popular(size, offset=2, **filters).to_dict()


@pytest.fixture(scope="module")
def bundled_defaults(tmp_path_factory) -> Path:
    """The bundled data built with the default parameters (popularity prior, trending, shrinkage on)."""
    folder = tmp_path_factory.mktemp("serving")
    shutil.copytree(BUNDLED, folder / "data", ignore=shutil.ignore_patterns("*.py"))
    engine.build(folder / "recs.db", folder / "data", engine.ModelParams())
    return folder / "recs.db"


def sample_users(recommender: engine.Recommender, every: int) -> list[str]:
    users = [row["user_id"] for row in recommender.database.rows("select user_id from users order by user_id")]
    return users[::every] + ["nobody", ""]


def test_every_user_of_the_bundled_data_plain_model(bundled_db):
    slow = engine.Recommender(bundled_db, auto_build=False)
    fast = engine.Recommender(bundled_db, auto_build=False, fast=True)
    assert assert_same_for_every_user(slow, fast) == 1500 * len(FILTERS)
    assert_same_as_the_macro(slow, fast, sample_users(slow, 50))


def live_batch(recommender: engine.Recommender) -> list[dict]:
    """Live events touching known users (a heavy watch, a light one), brand-new users and popular items."""
    items = [row["item_id"] for row in recommender.database.rows("select item_id from item_popularity order by popularity_rank limit 30")]
    users = [row["user_id"] for row in recommender.database.rows("select user_id from user_keys order by user_id limit 40")]
    events = []
    for n, user_id in enumerate(users):
        events.append({"user_id": user_id, "item_id": items[n % 30], "event_type": "play",
                       "watch_seconds": 60 + 997 * n % 7000, "timestamp": f"2026-12-01T10:{n:02d}:00Z"})
    for n in range(15):  # new users, a few plays each
        for m in range(1 + n % 4):
            events.append({"user_id": f"live{n}", "item_id": items[(n + 3 * m) % 30], "event_type": "play",
                           "watch_seconds": 400 + 300 * m, "timestamp": f"2026-12-02T0{m}:00:00Z"})
    return events


def test_every_user_with_default_parameters_and_live_events(bundled_defaults):
    data = bundled_defaults.parent / "data"
    slow = engine.Recommender(bundled_defaults, data, auto_build=False)
    fast = engine.Recommender(bundled_defaults, data, auto_build=False, fast=True)
    assert assert_same_for_every_user(slow, fast) == 1500 * len(FILTERS)
    assert fast.add_events(live_batch(slow)) > 0
    assert slow.info()["live_events"] == fast.info()["live_events"] > 0  # the other one saw them too
    assert assert_same_for_every_user(slow, fast) == (1500 + 15) * len(FILTERS)
    assert_same_as_the_macro(slow, fast, sample_users(slow, 60) + [f"live{n}" for n in range(15)])
    new = fast.recommend("live3", 5)
    assert new.fallback_used is False and new.user_known is True


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("params", [PLAIN, engine.ModelParams(user_half_life_days=20.0, resurface_light=True)])
def test_random_data(tmp_path, seed, params):
    folder = write_dataset(tmp_path / "data", *random_dataset(seed))
    engine.build(tmp_path / "recs.db", folder, params)
    slow = engine.Recommender(tmp_path / "recs.db", folder, auto_build=False)
    fast = engine.Recommender(tmp_path / "recs.db", folder, auto_build=False, fast=True)
    users = [f"u{n}" for n in range(1, 31, 2)] + ["u29", "u30", "stranger"]  # u29, u30: no events
    filter_sets = FILTERS[:2]
    assert_same_as_the_macro(slow, fast, users, k=5, filter_sets=filter_sets)
    fast.add_events([
        {"user_id": user, "item_id": f"i{1 + (3 * n) % 23}", "event_type": "play", "watch_seconds": 500 * n,
         "timestamp": "2026-11-02T00:00:00Z"}
        for n, user in enumerate(["u1", "u2", "u3", "u29", "fresh"])
    ])
    assert_same_as_the_macro(slow, fast, users + ["fresh"], k=5, filter_sets=filter_sets)


def test_genre_fields_with_several_genres_match_each_as_in_the_macros(tmp_path):
    users, items, events = random_dataset(5)
    items = [(i, t, c, f"{g}|romance" if n % 3 == 0 else g) for n, (i, t, c, g) in enumerate(items)]
    folder = write_dataset(tmp_path / "data", users, items, events)
    engine.build(tmp_path / "recs.db", folder, engine.ModelParams())
    slow = engine.Recommender(tmp_path / "recs.db", folder, auto_build=False)
    fast = engine.Recommender(tmp_path / "recs.db", folder, auto_build=False, fast=True)
    filter_sets = [{"genre": "romance"}, {"genre": ["Romance", "action"]}, {"genre": "comedy", "exclude": ["i3"]}]
    assert_same_as_the_macro(slow, fast, [f"u{n}" for n in range(1, 31)] + ["stranger"], k=6, filter_sets=filter_sets)
    assert any("|" in pick.genre for pick in fast.popular(25, genre="romance").items)


def test_unknown_filters_are_refused_as_by_the_macros(bundled_db):
    fast = engine.Recommender(bundled_db, auto_build=False, fast=True)
    with pytest.raises(engine.UnknownFilter, match="no item has genre 'western'"):
        fast.recommend("u1", 5, genre="western")
    with pytest.raises(engine.UnknownFilter):
        fast.popular(5, content_type="podcast")


def test_a_swapped_in_build_is_loaded(tiny_dir):
    db = tiny_dir.parent / "recs.db"
    engine.build(db, tiny_dir, PLAIN)
    fast = engine.Recommender(db, tiny_dir, fast=True)
    first = fast.serving_index()
    assert [pick.item_id for pick in fast.popular(1).items] == ["i2"]
    write_dataset(tiny_dir, TINY_USERS, TINY_ITEMS, TINY_EVENTS + [
        (user, "i4", "play", 180, "2024-01-04T10:00:00Z") for user in ("u1", "u2", "u3")
    ])
    engine.build(db, tiny_dir, PLAIN)
    assert [pick.item_id for pick in fast.popular(1).items] == ["i4"]
    assert fast.serving_index() is not first


def test_the_index_filters_by_sets_of_genres_and_content_types(bundled_db):
    index = engine.Recommender(bundled_db, auto_build=False, fast=True).serving_index()
    both = index.popular(400, genres=["drama", "Comedy"])
    assert {pick.genre for pick in both} == {"drama", "comedy"}
    drama = index.popular(400, genres="drama")
    assert [pick.item_id for pick in both if pick.genre == "drama"] == [pick.item_id for pick in drama]
    assert all(pick.content_type in ("movie", "tv") for pick in index.popular(50, content_types={"movie", "tv"}))

