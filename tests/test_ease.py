"""engine.ease: EASE weights counted in SQL, inverted in numpy, written back to DuckDB."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pytest

from conftest import ROOT
from engine import ease
from engine.errors import BadArgument, RecsError


def strength_table(rows) -> duckdb.DuckDBPyConnection:
    """An in-memory database with user_item_strength holding (user_key, item_key, strength) rows."""
    con = duckdb.connect()
    con.execute(
        "create table user_item_strength (user_key integer, item_key integer, strength double, is_heavy boolean)"
    )
    if rows:
        con.executemany("insert into user_item_strength values (?, ?, ?, true)", [list(row) for row in rows])
    return con


def matrix_rows(watched: np.ndarray, keys) -> list[tuple[int, int, float]]:
    """Rows of user_item_strength for a users x items 0/1 matrix; strengths vary, only > 0 counts."""
    rng = np.random.default_rng(1)
    return [
        (int(user), int(keys[item]), float(rng.uniform(0.1, 3.0)))
        for user, item in zip(*np.nonzero(watched))
    ]


def dense_ease(watched: np.ndarray, l2: float) -> np.ndarray:
    """EASE straight from the paper: B = I - P / diag(P), P = (X'X + l2 I)^-1."""
    gram = watched.T @ watched
    inverse = np.linalg.inv(gram + l2 * np.eye(len(gram)))
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return weights


def table(con) -> list[tuple]:
    return con.execute(
        "select item_key, neighbor_key, weight, support from ease_weights "
        "order by item_key, abs(weight) desc, support desc, neighbor_key"
    ).fetchall()


def random_watched(users=30, items=12, density=0.3, seed=7) -> np.ndarray:
    return (np.random.default_rng(seed).random((users, items)) < density).astype(np.float64)


def test_two_items_have_the_closed_form():
    # Item 10 has 3 viewers, 20 two of them, 30 a viewer of its own; u4's 0-strength
    # row of 20 does not count. With two items, B[i, j] = G[i, j] / (G[i, i] + l2):
    # 10 -> 20: 2 / (3 + 1); 20 -> 10: 2 / (2 + 1). 30 shares no one: no neighbours.
    con = strength_table(
        [(1, 10, 1.0), (2, 10, 0.5), (3, 10, 2.0), (1, 20, 1.0), (2, 20, 1.0), (4, 30, 1.0), (4, 20, 0.0)]
    )
    stats = ease.ease_weights(con, l2=1.0, max_neighbors=5)
    rows = table(con)
    assert [row[:2] + row[3:] for row in rows] == [(10, 20, 2), (20, 10, 2)]
    assert rows[0][2] == pytest.approx(0.5, abs=1e-12)
    assert rows[1][2] == pytest.approx(2 / 3, abs=1e-12)
    assert (stats.items, stats.pairs) == (3, 2)
    assert stats.peak_matrix_bytes >= 3 * 3 * 8
    types = con.execute("select column_name, column_type from (describe ease_weights)").fetchall()
    assert types == [("item_key", "INTEGER"), ("neighbor_key", "INTEGER"), ("weight", "DOUBLE"), ("support", "BIGINT")]


def test_agrees_with_dense_numpy_ease():
    watched = random_watched()
    keys = [100 + 7 * index for index in range(watched.shape[1])]  # sparse keys: the mapping must hold
    con = strength_table(matrix_rows(watched, keys))
    ease.ease_weights(con, l2=2.5, max_neighbors=len(keys))
    expected = dense_ease(watched, 2.5)
    gram = watched.T @ watched

    got = {(item, neighbor): (weight, support) for item, neighbor, weight, support in table(con)}
    wanted = {
        (keys[i], keys[j]): (expected[i, j], int(gram[i, j]))
        for i, j in zip(*np.nonzero(expected != 0))  # negative weights are kept too
    }
    assert got.keys() == wanted.keys()
    for pair, (weight, support) in wanted.items():
        assert abs(got[pair][0] - weight) < 1e-9
        assert got[pair][1] == support


def test_max_neighbors_keeps_each_items_strongest_weights_negative_ones_too():
    watched = random_watched(seed=11)
    keys = list(range(watched.shape[1]))
    con = strength_table(matrix_rows(watched, keys))
    ease.ease_weights(con, l2=1.0, max_neighbors=3)
    expected = dense_ease(watched, 1.0)
    for item in keys:
        best = [j for j in np.argsort(-np.abs(expected[item]), kind="stable") if expected[item, j] != 0][:3]
        got = [row[1] for row in table(con) if row[0] == item]
        assert got == best


def test_min_viewers_drops_items_from_the_model():
    watched = random_watched(seed=3)
    watched[:, 0] = 0
    watched[5, 0] = 1  # item 0: one viewer
    keys = list(range(watched.shape[1]))
    con = strength_table(matrix_rows(watched, keys))
    stats = ease.ease_weights(con, l2=1.0, max_neighbors=20, min_viewers=2)
    assert stats.items == len(keys) - 1
    assert con.execute("select count(*) from ease_weights where 0 in (item_key, neighbor_key)").fetchone() == (0,)
    # the rest is EASE on the remaining columns, not the full model with a row removed
    expected = dense_ease(watched[:, 1:], 1.0)
    for item, neighbor, weight, _ in table(con):
        assert weight == pytest.approx(expected[item - 1, neighbor - 1], abs=1e-9)


def test_equal_weights_go_to_the_lower_key():
    # Items 4 and 3 have the same viewers (u1, u2), so they are interchangeable
    # neighbours of item 1 (u1, u2, u3): equal weight, equal support; 3 wins.
    con = strength_table(
        [(1, 1, 1.0), (2, 1, 1.0), (3, 1, 1.0), (1, 4, 1.0), (2, 4, 1.0), (1, 3, 1.0), (2, 3, 1.0)]
    )
    ease.ease_weights(con, l2=1.0, max_neighbors=1)
    assert con.execute("select neighbor_key from ease_weights where item_key = 1").fetchall() == [(3,)]
    ease.ease_weights(con, l2=1.0, max_neighbors=2)
    rows = con.execute("select neighbor_key, weight from ease_weights where item_key = 1 order by neighbor_key").fetchall()
    assert [row[0] for row in rows] == [3, 4]
    assert rows[0][1] == pytest.approx(rows[1][1], abs=1e-12)


def test_equal_weights_go_to_more_support_then_lower_key():
    # Real data rarely ties weights with different support, so the ranking is fed
    # a made-up P: B[0, j] = -P[0, j] / P[j, j] is 0.5 for j = 1, 2, 3 (3 differs
    # by 1e-15, below the tie precision) and 0.25 for j = 4.
    inverse = np.eye(5)
    inverse[0, 1:] = [-0.5, -0.5, -0.5 - 1e-15, -0.25]
    pair_keys = np.array([0 * 5 + 1, 0 * 5 + 2, 0 * 5 + 3, 0 * 5 + 4])
    support = np.array([4, 9, 4, 50])
    rows, cols, weights, supports, _ = ease._top_neighbors(inverse, pair_keys, support, k=3)
    assert cols[rows == 0].tolist() == [2, 1, 3]  # 2 has more support; 1 and 3 tie on it too
    assert supports[rows == 0].tolist() == [9, 4, 4]
    assert weights[rows == 0] == pytest.approx([0.5, 0.5, 0.5])
    assert not (rows != 0).any()  # other rows have no non-zero weights
    rows, cols, *_ = ease._top_neighbors(inverse, pair_keys, support, k=2)
    assert cols.tolist() == [2, 1]  # three tied for two places


def test_no_neighbors_asked_or_no_viewers_gives_an_empty_table():
    con = strength_table([])
    stats = ease.ease_weights(con, l2=10.0, max_neighbors=5)
    assert (stats.items, stats.pairs) == (0, 0)
    assert table(con) == []
    assert con.execute("select count(*) from (describe ease_weights)").fetchone() == (4,)

    con = strength_table([(1, 1, 0.0), (1, 2, 0.0)])  # rows, but no strength above 0
    assert ease.ease_weights(con, l2=10.0, max_neighbors=5).items == 0
    assert table(con) == []

    con = strength_table([(1, 1, 1.0), (1, 2, 1.0)])
    assert ease.ease_weights(con, l2=1.0, max_neighbors=0).pairs == 0
    assert table(con) == []


def test_too_many_items_names_the_limit(monkeypatch):
    monkeypatch.setattr(ease, "MAX_EASE_ITEMS", 3)
    con = strength_table([(1, 1, 1.0), (1, 2, 1.0), (2, 2, 1.0), (1, 3, 1.0), (2, 3, 1.0), (1, 4, 1.0)])
    with pytest.raises(ease.EaseTooLarge, match="MAX_EASE_ITEMS = 3") as raised:
        ease.ease_weights(con, l2=1.0, max_neighbors=2)
    assert isinstance(raised.value, RecsError)
    assert "min_viewers" in str(raised.value)
    assert ease.ease_weights(con, l2=1.0, max_neighbors=2, min_viewers=2).items == 2


@pytest.mark.parametrize("arguments", [{"l2": 0.0}, {"l2": float("nan")}, {"max_neighbors": -1}, {"min_viewers": 0}])
def test_bad_arguments(arguments):
    con = strength_table([(1, 1, 1.0)])
    with pytest.raises(BadArgument):
        ease.ease_weights(con, **({"l2": 1.0, "max_neighbors": 2} | arguments))


def test_needs_neither_pandas_nor_pyarrow():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pandas"] = None  # any import of them now fails
        sys.modules["pyarrow"] = None
        import duckdb
        import numpy as np
        from engine import ease

        con = duckdb.connect()
        con.execute(
            "create table user_item_strength as select (i // 4)::integer as user_key, "
            "(i * 7 % 13)::integer as item_key, 1.0::double as strength from range(200) as t (i)"
        )
        stats = ease.ease_weights(con, l2=1.0, max_neighbors=3)
        assert stats.pairs > 0, stats
        print(con.execute("select count(*) from ease_weights").fetchone()[0])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
