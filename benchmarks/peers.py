"""Two item-item peers in numpy/scipy for benchmarks/compare_peers.py (never
imported by the app): EASE (Steck 2019) and RP3beta (Paudel et al. 2017).

Both are fitted on the binary user x item training matrix X (1 where the user
has any training event on the item), exclude every item the user watched in
training, and return k items per user: ranked by score, ties (e.g. users with
few candidates) broken by training popularity, then item index.

    python benchmarks/peers.py    # checks EASE on a 3 x 3 example against a direct computation
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix, diags

EASE_LAMBDA = 500.0
RP3_ALPHA = 1.0
RP3_BETA = 0.5
RP3_NEIGHBOURS = 100
ROW_BLOCK = 1024
"""Items per block when RP3beta's item x item matrix is formed, to bound memory."""


def binary(matrix: csr_matrix) -> csr_matrix:
    """X: 1 for every stored entry (an explicit 0, e.g. a rating of 0, is still a watch)."""
    x = csr_matrix(matrix, dtype=np.float32, copy=True)
    x.data[:] = 1.0
    return x


def ease_weights(x: csr_matrix, lam: float = EASE_LAMBDA) -> np.ndarray:
    """EASE item x item weights, dense float32."""
    # G = XᵀX + λI, P = G⁻¹, B = -P / diag(P) (column j divided by P_jj), diag(B) = 0; scores = X B
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def rp3beta_weights(
    x: csr_matrix, alpha: float = RP3_ALPHA, beta: float = RP3_BETA, neighbours: int = RP3_NEIGHBOURS
) -> csr_matrix:
    """RP3beta item x item weights, sparse with at most `neighbours` per row."""
    # W = (P_iu P_ui)^α elementwise, column j / popularity(j)^β, top K per row; P = row-normalised X, Xᵀ
    user_degree = np.asarray(x.sum(axis=1)).ravel()
    item_degree = np.asarray(x.sum(axis=0)).ravel()
    p_ui = diags(1.0 / np.maximum(user_degree, 1)) @ x  # user -> item
    p_iu = (diags(1.0 / np.maximum(item_degree, 1)) @ x.T).tocsr()  # item -> user
    column_scale = 1.0 / np.power(np.maximum(item_degree, 1), beta)
    n_items = x.shape[1]
    keep = min(neighbours, n_items)
    rows, columns, values = [], [], []
    for start in range(0, n_items, ROW_BLOCK):
        block = (p_iu[start : start + ROW_BLOCK] @ p_ui).toarray()
        if alpha != 1.0:
            block = np.power(block, alpha)
        block *= column_scale[None, :]
        top = np.argpartition(-block, keep - 1, axis=1)[:, :keep]
        top_values = np.take_along_axis(block, top, axis=1)
        nonzero = top_values > 0
        rows.append(np.broadcast_to(np.arange(start, start + len(block))[:, None], top.shape)[nonzero])
        columns.append(top[nonzero])
        values.append(top_values[nonzero])
    return csr_matrix(
        (np.concatenate(values).astype(np.float32), (np.concatenate(rows), np.concatenate(columns))),
        shape=(n_items, n_items),
    )


def top_k(scores: np.ndarray, seen: np.ndarray, popularity: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k best unseen items: by score, ties by popularity then index."""
    scores = scores.astype(np.float64, copy=True)
    scores[seen] = -np.inf
    candidates = int((~np.isinf(scores)).sum())
    k = min(k, candidates)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    first = np.argpartition(-scores, k - 1)[:k]
    kth = scores[first].min()
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)
    above = above[np.lexsort((above, -popularity[above], -scores[above]))]
    tied = tied[np.lexsort((tied, -popularity[tied]))]
    return np.concatenate([above, tied])[:k]


def recommend(x: csr_matrix, weights, rows: np.ndarray, k: int) -> list[np.ndarray]:
    """Top k item indexes for each user row: scores = X[rows] @ weights, watched items excluded."""
    popularity = np.asarray(x.sum(axis=0)).ravel()
    lists = []
    for start in range(0, len(rows), ROW_BLOCK):
        block_rows = rows[start : start + ROW_BLOCK]
        user_items = x[block_rows]
        scores = user_items @ weights
        scores = scores.toarray() if hasattr(scores, "toarray") else np.asarray(scores)
        for offset, row in enumerate(block_rows):
            seen = user_items[offset].indices
            mask = np.zeros(x.shape[1], dtype=bool)
            mask[seen] = True
            lists.append(top_k(scores[offset], mask, popularity, k))
    return lists


def check_ease_by_hand() -> None:
    """EASE on a 3 x 3 example against a direct numpy computation of the formula."""
    dense = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=np.float64)
    lam = 2.0
    g = dense.T @ dense + lam * np.eye(3)
    p = np.linalg.inv(g)
    expected = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            expected[i, j] = 0.0 if i == j else -p[i, j] / p[j, j]
    got = ease_weights(csr_matrix(dense), lam)
    assert np.allclose(got, expected, atol=1e-6), (got, expected)
    # and the closed form the paper derives: B = I - P diag(1 / diag(P))
    assert np.allclose(got, np.eye(3) - p / np.diag(p)[None, :], atol=1e-6)
    scores = dense @ expected
    picks = recommend(csr_matrix(dense), got, np.arange(3), 1)
    assert [list(p) for p in picks] == [[2], [0], []], picks
    assert picks[0][0] == int(np.argmax(np.where(dense[0] > 0, -np.inf, scores[0])))
    print("EASE 3x3 check passed:\n", np.round(got, 4))


if __name__ == "__main__":
    check_ease_by_hand()
