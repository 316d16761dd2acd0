"""Shaping an answer: several genres and content types (any of them), item ids
excluded, an offset for paging, and a batch of users in one request. Each is
defined once in the engine (sql/50 and engine/recommend.py) and reached the
same way from the command line and the web API.
"""

from __future__ import annotations

import json
import warnings

import duckdb
import pytest

import api
import engine
from conftest import random_dataset, write_dataset

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient


def ids(answer) -> list[str]:
    return [item.item_id for item in answer.items]


@pytest.fixture(scope="module")
def client(bundled_db):
    with TestClient(api.create_app(bundled_db, bundled_db.parent / "data")) as test_client:
        yield test_client


# --- the engine -----------------------------------------------------------------


@pytest.mark.parametrize("column, values", [("genre", ["drama", "romance"]), ("content_type", ["movie", "microdrama"])])
def test_several_values_are_any_of_them_in_popularity_order(bundled, column, values):
    both = bundled.popular(1000, **{column: values})
    each = [item for value in values for item in bundled.popular(1000, **{column: value}).items]
    assert {getattr(item, column) for item in both.items} == set(values)
    by_rank = sorted(each, key=lambda item: -item.score)
    assert ids(both) == [item.item_id for item in by_rank]


def test_a_recommendation_of_several_genres_holds_only_those(bundled):
    answer = bundled.recommend("u1", 15, genre=["Drama", "comedy"], content_type=["series", "movie"])
    assert len(answer.items) == 15
    assert {item.genre for item in answer.items} <= {"drama", "comedy"}
    assert {item.content_type for item in answer.items} <= {"series", "movie"}


@pytest.mark.parametrize("user", ["u1", "u7", "nobody"])
def test_excluded_items_are_left_out_and_the_list_closes_up(bundled, user):
    full = ids(bundled.recommend(user, 12))
    shown = [full[0], full[3]]
    answer = bundled.recommend(user, 10, exclude=shown)
    assert ids(answer) == [item for item in full if item not in shown][:10]
    assert [item.rank for item in answer.items] == list(range(1, 11))


def test_popular_excludes_too(bundled):
    full = ids(bundled.popular(6))
    assert ids(bundled.popular(4, exclude=full[:2])) == full[2:]


@pytest.mark.parametrize("user", ["u1", "nobody"])
def test_an_offset_is_the_next_page_of_the_same_list(bundled, user):
    full = bundled.recommend(user, 20, genre="drama").items
    page = bundled.recommend(user, 10, genre="drama", offset=10).items
    assert page == full[10:]
    assert [item.rank for item in page] == list(range(11, 21))
    assert bundled.popular(3, offset=2).items == bundled.popular(5).items[2:]


def test_an_offset_past_the_end_is_an_empty_page(tiny):
    assert tiny.popular(5, offset=10).items == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(genre=["drama", "western"]), engine.UnknownFilter, "no item has genre 'western'; known: action, drama"),
        (dict(content_type=["tv", "radio", "podcast"]), engine.UnknownFilter, "no item has content_type 'radio' or 'podcast'"),
        (dict(offset=-1), engine.BadArgument, "offset must be a whole number from 0 to 100,000, not -1"),
        (dict(exclude="i1"), engine.BadArgument, "exclude must be a list of item ids, not 'i1'"),
    ],
)
def test_unknown_or_bad_filters_are_clear_errors(tiny, kwargs, error, message):
    with pytest.raises(error, match=f"^{message}"):
        tiny.recommend("u1", 2, **kwargs)


def test_the_sql_macros_take_one_value_or_a_list(bundled_db):
    con = duckdb.connect(str(bundled_db), read_only=True)
    one = con.execute("select item_id from recommend('u1', 5, only_genre := 'drama')").fetchall()
    listed = con.execute("select item_id from recommend('u1', 5, only_genre := ['Drama'])").fetchall()
    blank = con.execute("select item_id from popular(3, only_genre := '')").fetchall()
    assert one == listed and len(one) == 5
    assert blank == con.execute("select item_id from popular(3)").fetchall()
    kept = con.execute("select item_id from popular(3, except_items := ['i276'])").fetchall()
    assert ("i276",) not in kept and len(kept) == 3


@pytest.mark.parametrize("kwargs", [{}, dict(genre=["drama", "comedy"], exclude=["i314", "i276"], offset=3)])
def test_a_batch_answers_what_each_user_gets_alone(bundled, kwargs):
    users = ["u1", "nobody", "u10", "u1", "u1499", "u3"]
    batch = bundled.recommend_batch(users, 5, **kwargs)
    assert [answer.to_dict() for answer in batch] == [bundled.recommend(user, 5, **kwargs).to_dict() for user in users]


@pytest.mark.parametrize(
    "users, message",
    [([], "a batch has from 1 to 1,000 user ids, not 0"), (["u1"] * 1001, "a batch has from 1 to 1,000 user ids, not 1,001")],
)
def test_a_batch_holds_one_to_a_thousand_users(tiny, users, message):
    with pytest.raises(engine.BadArgument, match=message):
        tiny.recommend_batch(users)


# --- the command line -------------------------------------------------------------


@pytest.mark.parametrize("spelling", [("--genre", "drama", "--genre", "romance"), ("--genre", "drama,romance")])
def test_cli_takes_several_genres_repeated_or_comma_separated(run_bundled, bundled, spelling):
    result = run_bundled("popular", "--k", "8", *spelling, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == bundled.popular(8, genre=["drama", "romance"]).to_dict()


def test_cli_excludes_and_pages(run_bundled, bundled):
    result = run_bundled("recommend", "--user_id", "u1", "--k", "3", "--exclude", "i314,i288", "--offset", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == bundled.recommend("u1", 3, exclude=["i314", "i288"], offset=2).to_dict()


def test_cli_table_title_names_every_filter(run_bundled):
    result = run_bundled("popular", "--k", "2", "--genre", "drama", "--genre", "romance", "--content-type", "movie")
    assert result.stdout.splitlines()[0] == "Top 2 Popular Items (genre drama or romance, content type movie):"


def test_cli_unknown_exclude_is_one_note_line(run_bundled, bundled):
    result = run_bundled("recommend", "--user_id", "u1", "--exclude", "i1,nope", "--json")
    assert result.exit_code == 0
    assert result.stderr.strip() == "Note: exclude 'nope': not in the catalogue, ignored."
    assert json.loads(result.stdout)["items"] == bundled.recommend("u1", exclude=["i1"]).to_dict()["items"]


def test_cli_negative_offset_is_a_usage_error(run_bundled):
    assert run_bundled("popular", "--offset", "-1").exit_code == 2


# --- the web API ------------------------------------------------------------------


def test_api_takes_several_genres_repeated_or_comma_separated(client, bundled):
    expected = bundled.popular(8, genre=["drama", "romance"]).to_dict()
    assert client.get("/popular?k=8&genre=drama&genre=romance").json() == expected
    assert client.get("/popular?k=8&genre=drama,romance").json() == expected


def test_api_excludes_and_pages(client, bundled):
    response = client.get("/recommendations?user_id=u1&k=3&exclude=i314,i288&offset=2&content_type=")
    assert response.status_code == 200
    assert response.json() == bundled.recommend("u1", 3, exclude=["i314", "i288"], offset=2).to_dict()


@pytest.mark.parametrize(
    "query, message",
    [
        ("offset=-1", "offset: Input should be greater than or equal to 0"),
        ("genre=drama&genre=western", "no item has genre 'western'"),
    ],
)
def test_api_bad_filters_are_422_with_the_message(client, query, message):
    response = client.get(f"/recommendations?user_id=u1&{query}")
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_parameter"
    assert response.json()["message"].startswith(message)


def test_api_batch_answers_each_user_as_the_single_endpoint_does(client):
    users = ["u1", "nobody", "u2"]
    response = client.post(
        "/recommendations/batch", json={"user_ids": users, "k": 3, "genre": ["drama"], "exclude": ["i314"], "offset": 1}
    )
    assert response.status_code == 200, response.text
    singles = [
        client.get(f"/recommendations?user_id={user}&k=3&genre=drama&exclude=i314&offset=1").json() for user in users
    ]
    assert response.json() == {"results": singles}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"user_ids": [f"u{n}" for n in range(1001)]}, "user_ids: List should have at most 1000 items"),
        ({"user_ids": []}, "user_ids: List should have at least 1 item"),
        ({}, "user_ids is required"),
        ({"user_ids": ["u1"], "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"user_ids": ["u1"], "genre": ["western"]}, "no item has genre 'western'"),
    ],
)
def test_api_batch_refuses_a_bad_request_with_422(client, body, message):
    response = client.post("/recommendations/batch", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(message)


@pytest.mark.parametrize("seed", [5, 6])
def test_a_batch_agrees_with_recommend_under_the_default_model_with_its_prior(tmp_path, seed):
    users, items, events = random_dataset(seed)
    folder = write_dataset(tmp_path / "data", users, items, events)
    recommender = engine.Recommender(tmp_path / "recs.db", folder, engine.ModelParams())  # prior, shrinkage, trend
    asked = [user for user, *_ in users[::3]] + ["nobody"]
    for kwargs in ({}, dict(genre="drama", exclude=["i1", "i2"], offset=2)):
        batch = recommender.recommend_batch(asked, 4, **kwargs)
        assert [answer.to_dict() for answer in batch] == [recommender.recommend(user, 4, **kwargs).to_dict() for user in asked]
    recommender.close()
