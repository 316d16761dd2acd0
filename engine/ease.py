"""EASE item-item weights (Steck 2019, "Embarrassingly Shallow Autoencoders").

An alternative to the cosine neighbours of sql/45_item_neighbors.sql that
serving can read the same way: item_key -> neighbor_key with a weight and the
co-watch support. The Gram matrix is counted in SQL; only the inverse of the
dense item x item matrix is done in numpy (LAPACK's Cholesky routines through
scipy), so the catalogue is capped at MAX_EASE_ITEMS.

    >>> stats = ease_weights(con, l2=200.0, max_neighbors=50)
    >>> con.sql("select * from ease_weights where item_key = 7 order by weight desc")

Nothing here needs pandas or pyarrow: results come back with fetchnumpy() and
go in as a registered dict of numpy arrays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
import numpy as np
from scipy.linalg import lapack

from .errors import BadArgument, RecsError

MAX_EASE_ITEMS = 20_000
"""The largest catalogue ease_weights inverts. Measured on 2 cores: 10,000
items take 0.9 GB and about 12 s, 20,000 items 3.3 GB and 1.5 to 2.5 minutes;
memory grows with n^2, time with n^3."""

ROW_BLOCK_VALUES = 4_000_000
"""Rows of B are ranked this many values (32 MB) at a time."""

TIE_DECIMALS = 12
"""Weights equal to this many decimals count as tied: the inverse's rounding
error (around 1e-15) must not decide between neighbours that are really equal."""


class EaseTooLarge(RecsError):
    """The catalogue is too large for a dense EASE inverse."""


@dataclass
class EaseStats:
    """What ease_weights did and what it cost.

    Attributes
    ----------
    items : int
        Items in the model (those with at least min_viewers viewers).
    pairs : int
        Rows written to ease_weights.
    seconds_gram : float
        Counting G in SQL, fetching it and filling the dense matrix.
    seconds_inverse : float
        The numpy part: the Cholesky inverse, B and the top neighbours.
    seconds_write : float
        Writing ease_weights back into DuckDB.
    peak_matrix_bytes : int
        The numpy arrays alive at once at the peak: the dense n x n matrix,
        the co-watch pair list and one block of ranked rows.
    """

    items: int
    pairs: int
    seconds_gram: float
    seconds_inverse: float
    seconds_write: float
    peak_matrix_bytes: int


VIEWED_ITEMS = """
    with viewed as (
        select user_key, item_key from user_item_strength where strength > 0
    ),

    kept_items as (
        -- idx: the item's row and column in the dense matrix, in item_key order
        select
            item_key,
            (row_number() over (order by item_key) - 1)::integer as idx,
            count(*) as viewers
        from viewed
        group by item_key
        having count(*) >= $min_viewers
    ),

    kept as (
        select viewed.user_key, kept_items.idx
        from viewed
        join kept_items on kept_items.item_key = viewed.item_key
    )
"""

ITEMS_QUERY = VIEWED_ITEMS + "select item_key, viewers from kept_items order by idx"

# each unordered pair once (row < col): the upper triangle of G
PAIRS_QUERY = VIEWED_ITEMS + """
    select a.idx as row_idx, b.idx as col_idx, count(*) as support
    from kept as a
    join kept as b on b.user_key = a.user_key and b.idx > a.idx
    group by a.idx, b.idx
    order by row_idx, col_idx
"""


def ease_weights(
    con: duckdb.DuckDBPyConnection, l2: float, max_neighbors: int, min_viewers: int = 1
) -> EaseStats:
    """Create table ease_weights with each item's max_neighbors best EASE neighbours.

    With X the binary user x item matrix (1 where strength > 0) and
    G = X'X, EASE's weights are B = I - P / diag(P) with P = (G + l2 I)^-1
    and diag(B) = 0; a user's score for item j is the sum of B[i, j] over
    the items i they watched.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A connection with table user_item_strength(user_key, item_key,
        strength, ...), one row per user and item.
    l2 : float
        The ridge penalty, > 0 (Steck uses a few hundred on large data).
    max_neighbors : int
        How many neighbours to keep per item, >= 0: the largest weights in
        magnitude (negative ones say "watched with this, so less likely that");
        ties go to more co-watch support, then the lower item_key.
    min_viewers : int, default 1
        Items watched by fewer users are left out of the model entirely.

    Returns
    -------
    EaseStats
        Sizes and timings.

    Raises
    ------
    BadArgument
        l2 <= 0, max_neighbors < 0 or min_viewers < 1.
    EaseTooLarge
        More than MAX_EASE_ITEMS items have min_viewers viewers.

    Notes
    -----
    ease_weights(item_key integer, neighbor_key integer, weight double,
    support bigint) holds one row per kept pair; support = G[i, j], the users
    who watched both. Memory is one dense n x n float64 matrix (n^2 x 8 bytes),
    factorised and inverted in place, plus the sparse pair list.
    """
    if not l2 > 0 or not np.isfinite(l2):
        raise BadArgument(f"l2 must be a positive number, not {l2}")
    if max_neighbors < 0:
        raise BadArgument(f"max_neighbors must be 0 or more, not {max_neighbors}")
    if min_viewers < 1:
        raise BadArgument(f"min_viewers must be 1 or more, not {min_viewers}")

    started = time.perf_counter()
    params = {"min_viewers": int(min_viewers)}
    items = con.execute(ITEMS_QUERY, params).fetchnumpy()
    n = len(items["item_key"])
    if n > MAX_EASE_ITEMS:
        raise EaseTooLarge(
            f"{n:,} items have at least {min_viewers} viewers, more than MAX_EASE_ITEMS = "
            f"{MAX_EASE_ITEMS:,} that EASE inverts densely ({n * n * 8 / 1e9:.1f} GB); "
            "raise min_viewers or use the cosine neighbours"
        )
    pairs = con.execute(PAIRS_QUERY, params).fetchnumpy() if n else _no_pairs()
    matrix = _gram_upper(n, items["viewers"], pairs)
    seconds_gram = time.perf_counter() - started

    started = time.perf_counter()
    matrix[np.diag_indices(n)] += l2
    _invert_in_place(matrix)  # P = (G + l2 I)^-1, overwriting G
    pair_keys = pairs["row_idx"].astype(np.int64) * n + pairs["col_idx"]
    support = pairs["support"]
    del pairs
    rows, cols, weights, supports, block_bytes = _top_neighbors(matrix, pair_keys, support, max_neighbors)
    peak_bytes = matrix.nbytes + pair_keys.nbytes + support.nbytes + block_bytes
    del matrix
    seconds_inverse = time.perf_counter() - started

    started = time.perf_counter()
    keys = items["item_key"].astype(np.int32)
    _write(con, {"item_key": keys[rows], "neighbor_key": keys[cols], "weight": weights, "support": supports})
    seconds_write = time.perf_counter() - started

    return EaseStats(n, len(rows), seconds_gram, seconds_inverse, seconds_write, peak_bytes)


def _no_pairs() -> dict[str, np.ndarray]:
    """The pair list of an empty catalogue."""
    empty = np.zeros(0, dtype=np.int32)
    return {"row_idx": empty, "col_idx": empty, "support": np.zeros(0, dtype=np.int64)}


def _gram_upper(n: int, viewers: np.ndarray, pairs: dict[str, np.ndarray]) -> np.ndarray:
    """G as a dense float64 matrix, only its diagonal and upper triangle filled."""
    matrix = np.empty((n, n), dtype=np.float64)
    matrix.fill(0.0)  # in order: np.zeros' lazy pages, faulted in at random below, cost 10x
    matrix[pairs["row_idx"], pairs["col_idx"]] = pairs["support"]
    matrix[np.diag_indices(n)] = viewers
    return matrix


def _invert_in_place(matrix: np.ndarray) -> None:
    """Overwrite a symmetric positive definite matrix, given by its upper triangle, with its inverse.

    LAPACK works on the transpose, a Fortran-ordered view of the same memory
    whose lower triangle is our upper one: dpotrf factorises it (Cholesky),
    dpotri inverts from the factor, both in place; no second n x n array.
    """
    if not len(matrix):
        return
    fortran = matrix.T
    factor, info = lapack.dpotrf(fortran, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        raise RecsError(f"EASE: G + l2 I is not positive definite (LAPACK dpotrf info {info})")
    inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise RecsError(f"EASE: inverting G + l2 I failed (LAPACK dpotri info {info})")
    if not np.shares_memory(inverse, matrix):  # scipy copied after all: take its result
        matrix[...] = inverse.T
    _mirror_upper(matrix)


def _mirror_upper(matrix: np.ndarray) -> None:
    """Copy the upper triangle onto the lower one, a block of rows at a time."""
    n = len(matrix)
    step = max(1, min(n, ROW_BLOCK_VALUES // max(n, 1)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        matrix[start:stop, :start] = matrix[:start, start:stop].T
        block = matrix[start:stop, start:stop]
        block[...] = np.triu(block) + np.triu(block, 1).T


def _top_neighbors(
    inverse: np.ndarray, pair_keys: np.ndarray, pair_support: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Each row's k largest B[i, j] in magnitude (j != i): rows, cols, weights, support, bytes used.

    pair_keys are row * n + col of the co-watched pairs (row < col), sorted,
    with pair_support their counts.
    """
    n = len(inverse)
    scale = -np.diag(inverse)  # a copy
    picked = []
    block_bytes = 0
    step = max(1, min(n, ROW_BLOCK_VALUES // max(n, 1)))
    for start in range(0, n if k else 0, step):
        stop = min(n, start + step)
        # B[i, j] = -P[i, j] / P[j, j], diag(B) = 0
        ranked = inverse[start:stop] / scale
        np.round(ranked, TIE_DECIMALS, out=ranked)
        ranked[np.arange(stop - start), np.arange(start, stop)] = 0.0
        block_bytes = max(block_bytes, 2 * ranked.nbytes)  # ranked and its partition
        rows, cols = _candidates(ranked, k)
        support = _support(rows + start, cols, n, pair_keys, pair_support)
        # strongest first: |weight|, then support, then the lower item (idx follows item_key)
        order = np.lexsort((cols, -support, -np.abs(ranked[rows, cols]), rows))
        rows, cols, support = rows[order], cols[order], support[order]
        first = np.searchsorted(rows, rows)  # where each row's candidates start
        keep = np.arange(len(rows)) - first < k
        rows, cols, support = rows[keep] + start, cols[keep], support[keep]
        picked.append((rows, cols, inverse[rows, cols] / scale[cols], support))
    if not picked:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty, 0
    rows, cols, weights, support = (np.concatenate(part) for part in zip(*picked))
    return rows, cols, weights, support, block_bytes


def _candidates(ranked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each row's non-zero values at least as large in magnitude as its k-th largest.

    Negative weights are kept: in EASE an item watched alongside another can
    speak against it, and dropping those cost 2-3% NDCG@10 on MovieLens 100K
    (0.1889 against 0.1950 with 100 neighbours, user split).
    """
    width = ranked.shape[1]
    magnitude = np.abs(ranked)
    if k >= width:
        return np.nonzero(magnitude > 0)
    kth = np.partition(magnitude, width - k, axis=1)[:, width - k]
    return np.nonzero((magnitude >= kth[:, None]) & (magnitude > 0))


def _support(rows: np.ndarray, cols: np.ndarray, n: int, pair_keys: np.ndarray, pair_support: np.ndarray) -> np.ndarray:
    """G[row, col] for each position: looked up in the sorted pair list, 0 when never co-watched."""
    if not len(pair_keys):
        return np.zeros(len(rows), dtype=np.int64)
    wanted = np.minimum(rows, cols).astype(np.int64) * n + np.maximum(rows, cols)
    found = np.minimum(np.searchsorted(pair_keys, wanted), len(pair_keys) - 1)
    return np.where(pair_keys[found] == wanted, pair_support[found], 0).astype(np.int64)


def _write(con: duckdb.DuckDBPyConnection, columns: dict[str, np.ndarray]) -> None:
    """(Re)create ease_weights from numpy columns, scanned by DuckDB as a registered dict."""
    con.execute(
        """
        create or replace table ease_weights (
            item_key integer not null,
            neighbor_key integer not null,
            weight double not null,
            support bigint not null
        )
        """
    )
    if not len(columns["item_key"]):
        return
    view = "ease_weights_arrays"
    con.register(view, columns)
    try:
        con.execute(
            f"""
            insert into ease_weights
            select item_key, neighbor_key, weight, support
            from {view}
            order by item_key, weight desc, support desc, neighbor_key
            """
        )
    finally:
        con.unregister(view)
