"""Ranking metrics at k with binary relevance, averaged over users with standard errors."""

from __future__ import annotations

import math
from dataclasses import dataclass


def dcg_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """Discounted cumulative gain: sum of 1 / log2(rank + 1) over relevant items in the top k."""
    return sum(1 / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], start=1) if item in relevant)


def ndcg_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """DCG divided by the DCG of a perfect ranking (all relevant items first)."""
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg_at_k(ranked, relevant, k) / ideal if ideal else 0.0


def recall_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """Hits in the top k over the most hits possible, min(k, |relevant|)."""
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / min(k, len(relevant))


def hit_rate_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    """1 when at least one relevant item is in the top k, else 0."""
    return 1.0 if set(ranked[:k]) & relevant else 0.0


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(n))."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    variance = sum((value - mean) ** 2 for value in values) / (n - 1)
    return mean, math.sqrt(variance / n)


@dataclass
class Scores:
    """One model's quality at k over the evaluated users."""

    model: str
    k: int
    users: int
    ndcg: float
    ndcg_se: float
    recall: float
    recall_se: float
    hit_rate: float
    hit_rate_se: float
    coverage: float
    fit_seconds: float


def score(
    model: str,
    recommendations: dict[str, list[str]],
    relevant: dict[str, set[str]],
    k: int,
    catalogue_size: int,
    fit_seconds: float = 0.0,
) -> Scores:
    """Average the metrics over every user in relevant (a user with no list scores 0)."""
    users = sorted(relevant)
    ranked = {user: recommendations.get(user, [])[:k] for user in users}
    ndcg = mean_and_standard_error([ndcg_at_k(ranked[u], relevant[u], k) for u in users])
    recall = mean_and_standard_error([recall_at_k(ranked[u], relevant[u], k) for u in users])
    hits = mean_and_standard_error([hit_rate_at_k(ranked[u], relevant[u], k) for u in users])
    shown = {item for items in ranked.values() for item in items}
    coverage = len(shown) / catalogue_size if catalogue_size else 0.0
    return Scores(model, k, len(users), *ndcg, *recall, *hits, coverage, fit_seconds)
