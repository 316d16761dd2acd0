"""The web API (api.py) through FastAPI's TestClient: every endpoint, every error,
a rebuild while answering, and random input that must never give a 500."""

from __future__ import annotations

import threading
import warnings
from datetime import datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import api
import engine
from engine.config import PLAIN
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_USERS, write_dataset

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package and warns when TestClient runs on httpx.
    warnings.filterwarnings("ignore", message=".*httpx.*", category=UserWarning)
    from fastapi.testclient import TestClient

# The tiny example plus u4: listed in users.csv, never watched anything.
USERS = TINY_USERS + [("u4", 40, "M", "Medan")]
ITEM_KEYS = {"rank", "item_id", "title", "content_type", "genre", "score", "reason", "source"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One app over the tiny example, built on startup into a temporary folder."""
    folder = tmp_path_factory.mktemp("api")
    data = write_dataset(folder / "data", USERS, TINY_ITEMS, TINY_EVENTS)
    engine.build(folder / "recs.db", data, PLAIN)  # the bare model, worked out by hand; the app serves it
    app = api.create_app(folder / "recs.db", data)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def no_internal_errors(request):
    """The catch-all 500 handler must never run in these tests (TestClient would also re-raise)."""
    yield
    if "client" in request.fixturenames:
        assert request.getfixturevalue("client").app.state.internal_errors == 0


def ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def assert_error(response, status: int, error: str, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error
    for fragment in fragments:
        assert fragment in body["message"]
    assert "Traceback" not in response.text
    return body


# --- /health ----------------------------------------------------------------------


def test_health_reports_build_time_and_row_counts(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert datetime.fromisoformat(body["built_at"]).tzinfo is not None
    assert body["rows"] == {"users": 4, "items": 4, "events": 5}


# --- /popular -----------------------------------------------------------------------


def test_popular_orders_the_tiny_example(client):
    response = client.get("/popular", params={"k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["k"] == 3
    assert ids(body) == ["i2", "i1", "i3"]
    first = body["items"][0]
    assert ITEM_KEYS <= first.keys()
    assert first["title"] == "Family Show B"
    assert first["score"] == pytest.approx(1.8415, abs=1e-3)
    assert first["reason"] == "popular on the platform (2 viewers)"
    assert [item["rank"] for item in body["items"]] == [1, 2, 3]
    assert {item["source"] for item in body["items"]} == {"popular"}


def test_popular_defaults_to_ten_and_stops_at_the_catalogue(client):
    body = client.get("/popular").json()
    assert body["k"] == 10
    assert ids(body) == ["i2", "i1", "i3", "i4"]
    assert ids(client.get("/popular", params={"k": api.MAX_K}).json()) == ["i2", "i1", "i3", "i4"]


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"genre": "drama"}, ["i1"]),
        ({"genre": "DRAMA"}, ["i1"]),  # case-insensitive
        ({"content_type": "tv"}, ["i2"]),
        ({"content_type": "Movie"}, ["i3"]),
        ({"genre": "drama", "content_type": "series"}, ["i1"]),
        ({"genre": "drama", "content_type": "tv"}, []),  # both known, no item has both
        ({"genre": "", "content_type": ""}, ["i2", "i1", "i3", "i4"]),  # empty = no filter
    ],
)
def test_popular_filters(client, params, expected):
    response = client.get("/popular", params=params)
    assert response.status_code == 200
    assert ids(response.json()) == expected


# --- /recommendations -------------------------------------------------------------------


def test_recommendations_for_u1_personalised_then_popular(client):
    response = client.get("/recommendations", params={"user_id": "u1", "k": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u1" and body["k"] == 2
    assert body["fallback_used"] is False
    assert body["user_known"] is True
    assert [(item["item_id"], item["source"]) for item in body["items"]] == [("i3", "personalised"), ("i4", "popular")]
    assert body["items"][0]["score"] == pytest.approx(0.6066, abs=1e-3)  # worked by hand in test_recommend.py
    assert body["items"][0]["reason"] == "similar to Family Show B, which you watched"
    assert ITEM_KEYS <= body["items"][0].keys()


@pytest.mark.parametrize("user_id, known", [("nobody", False), ("u4", True), ("ü🎬\u200b", False)])
def test_unknown_or_history_less_user_gets_popular_items_and_the_flag(client, user_id, known):
    response = client.get("/recommendations", params={"user_id": user_id, "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == user_id
    assert body["fallback_used"] is True
    assert body["user_known"] is known
    assert ids(body) == ["i2", "i1", "i3"]
    assert {item["source"] for item in body["items"]} == {"popular"}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"content_type": "movie"}, ["i3"]),
        ({"genre": "Romance"}, ["i4"]),
        ({"genre": "drama"}, []),  # u1 watched the only drama
        ({"genre": "", "content_type": ""}, ["i3", "i4"]),
    ],
)
def test_recommendations_filters(client, params, expected):
    response = client.get("/recommendations", params={"user_id": "u1", "k": 5, **params})
    assert response.status_code == 200
    assert ids(response.json()) == expected


def test_unknown_user_with_filters_gets_filtered_popular_items(client):
    body = client.get("/recommendations", params={"user_id": "nobody", "content_type": "series"}).json()
    assert body["fallback_used"] is True
    assert ids(body) == ["i1"]


@pytest.mark.parametrize("user_id", ["u1", "u4", "nobody", "ü🎬"])
@pytest.mark.parametrize(
    "params", [{}, {"k": 1}, {"genre": "romance,action", "exclude": "i3"}, {"content_type": "tv", "offset": 1}],
)
def test_the_user_in_the_path_gets_what_the_query_form_answers(client, user_id, params):
    by_path = client.get(f"/recommendations/{quote(user_id, safe='')}", params=params)
    by_query = client.get("/recommendations", params={"user_id": user_id, **params})
    assert by_path.status_code == 200, by_path.text
    assert by_path.json() == by_query.json()
    assert by_path.json()["user_id"] == user_id


def test_the_path_form_refuses_what_the_query_form_refuses(client):
    for query in ("k=0", "genre=western", "offset=-1"):
        by_path, by_query = client.get(f"/recommendations/u1?{query}"), client.get(f"/recommendations?user_id=u1&{query}")
        assert by_path.status_code == by_query.status_code == 422
        assert by_path.json() == by_query.json()
    assert_error(client.post("/recommendations/u1"), 405, "method_not_allowed")


@pytest.mark.parametrize("path", ["/recommendations?user_id=u1&", "/recommendations/u1?", "/popular?"])
def test_an_excluded_id_not_in_the_catalogue_is_ignored_with_a_note(client, path):
    asked = client.get(f"{path}k=3&exclude=i3,nope")
    assert asked.status_code == 200, asked.text
    body = asked.json()
    assert body.pop("notes") == ["exclude 'nope': not in the catalogue, ignored"]
    assert body == client.get(f"{path}k=3&exclude=i3").json()  # the same answer otherwise
    assert "notes" not in client.get(f"{path}k=3&exclude=i3").json()  # nothing to note: as before


def test_a_note_never_carries_huge_ids_back(client):
    ids_asked = ",".join(["a" * 5000] + [f"nope{n}" for n in range(100)])
    body = client.get("/recommendations", params={"user_id": "u1", "exclude": ids_asked}).json()
    (note,) = body["notes"]
    shown = "a" * 40 + "..."
    assert note == f"exclude '{shown}', 'nope0', 'nope1', 'nope10', 'nope11' and 96 more: not in the catalogue, ignored"
    assert len(note) < 200


def test_a_batch_notes_an_unknown_excluded_id_in_each_answer(client):
    body = client.post("/recommendations/batch", json={"user_ids": ["u1", "nobody"], "k": 2, "exclude": ["nope"]}).json()
    assert [answer["notes"] for answer in body["results"]] == [["exclude 'nope': not in the catalogue, ignored"]] * 2


# --- /users/{user_id}/history and /items/{item_id}/similar -----------------------------


def test_history_latest_first(client):
    response = client.get("/users/u1/history")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u1"
    assert ids(body) == ["i2", "i1"]
    latest = body["items"][0]
    assert latest["last_watched_at"] == "2024-01-02T10:00:00Z"
    assert latest["count_plays"] == 1 and latest["watch_seconds"] == 900
    assert body["items"][1]["is_heavy"] is True


def test_history_of_a_listed_user_without_events_is_empty(client):
    response = client.get("/users/u4/history")
    assert response.status_code == 200
    assert response.json() == {"user_id": "u4", "items": []}


@pytest.mark.parametrize("user_id", ["nobody", "u 1", "ü🎬"])
def test_history_of_an_unknown_user_is_404(client, user_id):
    response = client.get(f"/users/{quote(user_id, safe='')}/history")
    assert_error(response, 404, "unknown_user", repr(user_id), "not known")


def test_similar_items_with_support(client):
    response = client.get("/items/i2/similar", params={"k": 1})
    assert response.status_code == 200
    body = response.json()
    assert body["item_id"] == "i2" and body["k"] == 1
    (item,) = body["items"]
    assert item["item_id"] == "i3"
    assert item["support"] == 1
    assert item["score"] == pytest.approx(0.7369, abs=1e-3)  # worked by hand in test_recommend.py
    assert ITEM_KEYS <= item.keys()


def test_similar_of_an_unwatched_item_is_empty(client):
    response = client.get("/items/i4/similar")
    assert response.status_code == 200
    assert response.json()["items"] == []


def test_similar_of_an_unknown_item_is_404(client):
    assert_error(client.get("/items/i999/similar"), 404, "unknown_item", "'i999'", "not in the catalogue")


# --- bad parameters: 422 saying what is allowed ---------------------------------------------

K_ALLOWED = f"a whole number from 1 to {api.MAX_K}"


@pytest.mark.parametrize("path", ["/popular", "/recommendations?user_id=u1&", "/recommendations/u1", "/items/i1/similar"])
@pytest.mark.parametrize("k", ["", "0", "-1", "abc", "2.5", "1e3", str(api.MAX_K + 1), str(10**30)])
def test_bad_k_is_422_with_what_is_allowed(client, path, k):
    separator = "" if path.endswith("&") else "?"
    response = client.get(f"{path}{separator}k={k}")
    body = assert_error(response, 422, "invalid_parameter", "k", K_ALLOWED)
    assert body["details"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize(
    "url, fragments",
    [
        ("/recommendations", ["user_id is required"]),
        ("/recommendations?user_id=", ["user_id", "at least 1 character"]),
        ("/popular?genre=western", ["genre 'western'", "known: action, drama, family, romance"]),
        ("/popular?content_type=podcast", ["content_type 'podcast'", "known: microdrama, movie, series, tv"]),
        ("/recommendations?user_id=u1&genre=western", ["genre 'western'", "known: action, drama"]),
        ("/recommendations?user_id=nobody&content_type=podcast", ["known: microdrama, movie, series, tv"]),
        ("/popular?genre=drama&content_type=podcast", ["content_type 'podcast'"]),
    ],
)
def test_bad_parameters_are_422_with_what_is_allowed(client, url, fragments):
    assert_error(client.get(url), 422, "invalid_parameter", *fragments)


def test_unknown_path_and_method_are_json(client):
    assert_error(client.get("/nowhere"), 404, "not_found", "/nowhere")
    assert_error(client.post("/popular"), 405, "method_not_allowed")


# --- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_documents_every_endpoint_with_an_example(client):
    spec = client.get("/openapi.json").json()
    assert spec["info"]["description"].strip()
    paths = {
        "/health", "/popular", "/recommendations", "/recommendations/{user_id}", "/users/{user_id}/history",
        "/items/{item_id}/similar",
    }
    assert paths <= spec["paths"].keys()
    for path in paths:
        operation = spec["paths"][path]["get"]
        assert operation["summary"] and operation["description"], path
        assert operation["responses"]["200"]["content"]["application/json"]["example"], path
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (path, parameter["name"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --- failures: a JSON 500 without a trace, 503 without a database ------------------------------


def test_an_unexpected_error_is_a_json_500_without_a_trace(tiny_dir):
    app = api.create_app(tiny_dir.parent / "recs.db", tiny_dir)

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("secret internals at /srv/app.py line 42")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom")
    assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert app.state.internal_errors == 1


def test_a_missing_database_is_503_not_500(tiny_dir):
    db = tiny_dir.parent / "recs.db"
    app = api.create_app(db, tiny_dir)
    with TestClient(app) as test_client:
        assert test_client.get("/health").status_code == 200
        db.unlink()
        assert_error(test_client.get("/health"), 503, "unavailable", "does not exist")
        assert_error(test_client.get("/popular"), 503, "unavailable")
    assert app.state.internal_errors == 0


def test_startup_builds_the_database_from_the_environment(tiny_dir, monkeypatch):
    db = tiny_dir.parent / "env.db"
    monkeypatch.setenv("RECS_DB", str(db))
    monkeypatch.setenv("RECS_DATA_DIR", str(tiny_dir))
    assert not db.exists()
    with TestClient(api.create_app()) as test_client:
        assert db.exists()
        assert test_client.get("/health").json()["rows"]["events"] == 5


# --- a rebuild while answering -------------------------------------------------------------


def test_rebuild_while_answering_never_fails_and_then_serves_the_new_data(tiny_dir):
    db = tiny_dir.parent / "recs.db"
    app = api.create_app(db, tiny_dir)
    with TestClient(app) as test_client:
        assert ids(test_client.get("/popular", params={"k": 1}).json()) == ["i2"]
        # New data in the same paths: i5 is watched in full by everyone and tops the chart.
        items = TINY_ITEMS + [("i5", "New Hit E", "series", "drama")]
        events = TINY_EVENTS + [
            (user, "i5", "play", 3000, f"2024-01-0{day}T20:00:00Z") for day, user in ((4, "u1"), (5, "u2"), (6, "u3"))
        ]
        write_dataset(tiny_dir, TINY_USERS, items, events)
        errors: list[BaseException] = []

        def rebuild() -> None:
            try:
                engine.build(db, tiny_dir, PLAIN)
            except BaseException as error:  # reported below
                errors.append(error)

        builder = threading.Thread(target=rebuild)
        builder.start()
        answered = 0
        while True:
            alive = builder.is_alive()
            for url, params in (
                ("/recommendations", {"user_id": "u1", "k": 2}),
                ("/popular", {"k": 2}),
                ("/users/u1/history", {}),
                ("/health", {}),
            ):
                response = test_client.get(url, params=params)
                assert response.status_code == 200, response.text
                answered += 1
            body = test_client.get("/recommendations", params={"user_id": "u1", "k": 2}).json()
            assert body["fallback_used"] is False and len(body["items"]) == 2
            if not alive:
                break
        builder.join()
        assert not errors, errors
        assert answered >= 8
        # the new file is picked up without a restart
        assert test_client.get("/health").json()["rows"] == {"users": 3, "items": 5, "events": 8}
        assert ids(test_client.get("/popular", params={"k": 1}).json()) == ["i5"]
        assert "i5" in ids(test_client.get("/users/u1/history").json())
    assert app.state.internal_errors == 0


# --- random input never gives a 500 --------------------------------------------------------

odd_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # any UTF-8-encodable text
k_values = st.one_of(
    st.integers(min_value=-5, max_value=api.MAX_K + 5),
    st.integers(),
    st.sampled_from(["", " 5", "5 ", "1e3", "5.0", "0x10", "١٢", "+3", "1_0", "∞"]),
    odd_text,
)
user_ids = st.one_of(st.sampled_from(["u1", "u2", "u3", "u4", "nobody"]), odd_text)
filters = st.one_of(st.none(), st.sampled_from(["drama", "DRAMA", "Series", "tv", ""]), odd_text)


@settings(
    max_examples=150, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    endpoint=st.sampled_from(["popular", "recommendations", "history", "similar"]),
    k=st.one_of(st.none(), k_values),
    some_id=user_ids,
    genre=filters,
    content_type=filters,
)
def test_random_input_never_gives_a_500(client, endpoint, k, some_id, genre, content_type):
    params = {"k": k, "genre": genre, "content_type": content_type}
    if endpoint == "history":
        url, params = f"/users/{quote(some_id, safe='')}/history", {}
    elif endpoint == "similar":
        url, params = f"/items/{quote(some_id, safe='')}/similar", {"k": k}
    elif endpoint == "recommendations":
        url, params = "/recommendations", {**params, "user_id": some_id}
    else:
        url = "/popular"
    response = client.get(url, params={key: value for key, value in params.items() if value is not None})
    assert response.status_code in (200, 404, 422), response.text
    body = response.json()
    assert client.app.state.internal_errors == 0
    if response.status_code != 200:
        assert body["error"] and body["message"]
        return
    if endpoint in ("popular", "recommendations", "similar"):
        assert 1 <= body["k"] <= api.MAX_K
        assert len(body["items"]) <= body["k"]
        assert [item["rank"] for item in body["items"]] == list(range(1, len(body["items"]) + 1))
    if endpoint in ("popular", "recommendations"):
        for value, column in ((genre, "genre"), (content_type, "content_type")):
            if value and value.isascii():
                assert {item[column] for item in body["items"]} <= {value.lower()}
    if endpoint == "recommendations":
        assert body["user_id"] == some_id
        assert isinstance(body["fallback_used"], bool)
