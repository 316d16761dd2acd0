"""The model computed the slow, obvious way in plain Python, to check the SQL against.

Each function follows the formula written in the matching sql/ file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone


def percentile_cont(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks, as SQL's percentile_cont."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_time(text: str) -> datetime:
    """ISO 8601 with Z or an offset, as naive UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def item_lengths(items, events, params) -> dict[str, float]:
    """item_id -> estimated full length in seconds (sql/20, item_length)."""
    content_type = {item[0]: item[2] for item in items}
    plays = defaultdict(list)
    for _, item_id, _, seconds, _ in events:
        if seconds > 0:
            plays[item_id].append(seconds)
    own = {item_id: percentile_cont(values, 0.9) for item_id, values in plays.items()}
    by_type = defaultdict(list)
    for item_id, values in plays.items():
        if len(values) >= params.min_plays_for_length:
            by_type[content_type[item_id]].append(own[item_id])
    typical = {kind: percentile_cont(values, 0.5) for kind, values in by_type.items()}
    lengths = {}
    for item_id, values in plays.items():
        kind = content_type[item_id]
        if len(values) >= params.min_plays_for_length or kind not in typical:
            lengths[item_id] = own[item_id]
        else:
            lengths[item_id] = max(typical[kind], own[item_id])
    return lengths


def strengths(items, events, params) -> dict[tuple[str, str], dict]:
    """(user_id, item_id) -> completion, is_heavy, strengths, recency (sql/20, user_item_strength)."""
    lengths = item_lengths(items, events, params)
    seconds, last = defaultdict(float), {}
    for user_id, item_id, _, watched, moment in events:
        key = (user_id, item_id)
        seconds[key] += watched
        when = parse_time(moment)
        last[key] = max(last.get(key, when), when)
    end = max(parse_time(event[4]) for event in events)
    user_end = defaultdict(lambda: datetime.min)
    for (user_id, _), when in last.items():
        user_end[user_id] = max(user_end[user_id], when)
    result = {}
    for key, total in seconds.items():
        length = lengths.get(key[1])
        full_views = total / length if length else 0.0
        capped = min(full_views, params.max_full_views)
        base = {
            "log_views": math.log2(1 + capped),
            "views": capped,
            "binary": 1.0 if total > 0 else 0.0,
            "seconds": total,
            "log_seconds": math.log(1 + total),
        }[params.strength_formula]
        days = (end - last[key]).total_seconds() / 86400
        completion = min(full_views, 1.0)
        result[key] = {
            "completion": completion,
            "is_heavy": completion >= params.heavy_threshold,
            "base_strength": base,
            "strength": base * (0.5 ** (days / params.half_life_days) if params.half_life_days > 0 else 1.0),
            "days_before_end": days,
            "days_before_user_end": (user_end[key[0]] - last[key]).total_seconds() / 86400,
        }
    return result


def popularity(items, strength, params) -> list[tuple[str, float, int]]:
    """(item_id, score, viewers) best first (sql/30, item_popularity)."""
    score, viewers = defaultdict(float), defaultdict(int)
    for (_, item_id), row in strength.items():
        trend = 1.0
        if params.trending_half_life_days > 0:
            trend = 0.5 ** (row["days_before_end"] / params.trending_half_life_days)
        score[item_id] += row["base_strength"] * trend
        viewers[item_id] += 1
    rows = [(item[0], score[item[0]], viewers[item[0]]) for item in items]
    return sorted(rows, key=lambda row: (-row[1], -row[2], row[0]))


def neighbors(strength, params) -> dict[str, list[tuple[str, float, int]]]:
    """item_id -> [(neighbor_id, similarity, support)] best first (sql/40 and 45, item_neighbors)."""
    by_user = defaultdict(dict)
    for (user_id, item_id), row in strength.items():
        if row["strength"] > 0:
            by_user[user_id][item_id] = row
    weights = defaultdict(dict)  # item -> user -> weight, over whole histories
    paired = defaultdict(dict)  # the same, within each user's history cap (latest first)
    for user_id, history in by_user.items():
        ordered = sorted(
            ((item_id, row["strength"], row["days_before_end"]) for item_id, row in history.items()),
            key=lambda entry: (entry[2], -entry[1], entry[0]),
        )
        for position, (item_id, value, _) in enumerate(ordered, start=1):
            weight = value / len(history) ** params.user_weight_gamma
            weights[item_id][user_id] = weight
            if not params.similarity_history_cap or position <= params.similarity_history_cap:
                paired[item_id][user_id] = weight
    squares = {item_id: sum(v * v for v in column.values()) for item_id, column in weights.items()}
    alpha, power = params.similarity_alpha, params.similarity_normalisation
    result = defaultdict(list)
    for a in paired:
        for b in paired:
            common = paired[a].keys() & paired[b].keys()
            if a == b or not common or len(common) < params.min_support:
                continue
            dot = sum(paired[a][user] * paired[b][user] for user in common)
            similarity = dot / (squares[a] ** alpha * squares[b] ** (1 - alpha)) ** power
            similarity *= len(common) / (len(common) + params.support_shrinkage)
            similarity /= len(weights[b]) ** params.popularity_beta
            result[a].append((b, similarity, len(common)))
    return {
        item_id: sorted(rows, key=lambda row: (-row[1], -row[2], row[0]))[: params.max_neighbors]
        for item_id, rows in result.items()
    }


def recommend(user_id, k, items, strength, params, genre=None, content_type=None) -> list[tuple[str, float, str]]:
    """[(item_id, score, source)] for one user (sql/50, recommend)."""
    item_rows = {item[0]: item for item in items}
    history = {item_id: row for (user, item_id), row in strength.items() if user == user_id}
    lists = neighbors(strength, params)

    def eligible(item_id: str) -> bool:
        _, _, kind, item_genre = item_rows[item_id]
        if genre is not None and item_genre != genre.lower():
            return False
        if content_type is not None and kind != content_type.lower():
            return False
        seen = history.get(item_id)
        return seen is None or (params.resurface_light and not seen["is_heavy"])

    scores = defaultdict(float)
    for seed, row in history.items():
        if row["strength"] > 0:
            weight = row["strength"]
            if params.user_half_life_days > 0:
                weight *= 0.5 ** (row["days_before_user_end"] / params.user_half_life_days)
            for neighbor_id, similarity, _ in lists.get(seed, []):
                scores[neighbor_id] += weight * similarity
    ranking = popularity(items, strength, params)
    # the popularity prior: popularity_prior pseudo-items against the user's own
    top_popularity = ranking[0][1] if ranking else 0.0
    count_history = sum(1 for row in history.values() if row["strength"] > 0)
    candidates = {item_id: score for item_id, score in scores.items() if eligible(item_id)}
    if params.popularity_prior > 0 and count_history > 0:
        for item_id, _, _ in [row for row in ranking if eligible(row[0])][:k]:
            candidates.setdefault(item_id, 0.0)
    user_top = max(candidates.values(), default=0.0) or 1.0  # the best personal score that may be shown

    def prior(item_id: str) -> float:
        if params.popularity_prior <= 0 or count_history == 0 or top_popularity == 0:
            return 0.0
        share = next(score for other, score, _ in ranking if other == item_id) / top_popularity
        return params.popularity_prior / count_history * user_top * share

    personal = sorted(
        ((item_id, score, prior(item_id)) for item_id, score in candidates.items()),
        key=lambda row: (-(row[1] + row[2]), row[0]),
    )[:k]
    chosen = {item_id for item_id, _, _ in personal}
    fill = [(item_id, score) for item_id, score, _ in ranking if eligible(item_id) and item_id not in chosen]
    picks = [
        (i, p + q, "personalised" if p > 0 and p >= q else "popular") for i, p, q in personal
    ]
    return (picks + [(i, s, "popular") for i, s in fill])[:k]
