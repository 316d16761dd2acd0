"""The model computed the slow, obvious way in plain Python, to check the SQL against.

Each function follows the formula written in the matching sql/ file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone

from engine.serving import popularity_reason, similarity_reason  # the reasons' wording, checked against sql/05


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


def ease_neighbors(strength, params) -> dict[str, list[tuple[str, float, int]]]:
    """item_id -> [(neighbor_id, weight, support)] (engine/ease.py, neighbor_model = 'ease'), straight
    from the paper: B = I - P / diag(P), P = (X'X + l2 I)^-1 over the binary matrix of strength > 0;
    each item keeps its max_neighbors largest weights in magnitude (12 decimals), ties to more
    support, then the lower item_id."""
    import numpy as np

    viewed = sorted({key for key, row in strength.items() if row["strength"] > 0})
    item_ids = sorted({item_id for _, item_id in viewed})
    user_ids = sorted({user_id for user_id, _ in viewed})
    column = {item_id: n for n, item_id in enumerate(item_ids)}
    row_of = {user_id: n for n, user_id in enumerate(user_ids)}
    matrix = np.zeros((len(user_ids), len(item_ids)))
    for user_id, item_id in viewed:
        matrix[row_of[user_id], column[item_id]] = 1.0
    gram = matrix.T @ matrix
    inverse = np.linalg.inv(gram + params.ease_lambda * np.eye(len(item_ids)))
    weights = -inverse / np.diag(inverse)
    result = {}
    for a, item_id in enumerate(item_ids):
        ranked = [
            (round(abs(weights[a, b]), 12), int(gram[a, b]), item_ids[b], float(weights[a, b]))
            for b in range(len(item_ids))
            if b != a and round(abs(weights[a, b]), 12) > 0
        ]
        ranked.sort(key=lambda entry: (-entry[0], -entry[1], entry[2]))
        kept = ranked[: params.max_neighbors]
        if kept:
            result[item_id] = [(b, weight, support) for _, support, b, weight in kept]
    return result


# --- the ranking (sql/50_serving.sql) -------------------------------------------------------


def tie_value(x: float | None) -> float | None:
    """sql/05_rules.sql tie_value: x to 12 significant digits (round half away from zero)."""
    if x is None or x == 0:
        return x
    scale = math.pow(10, math.floor(math.log10(abs(x))))
    scaled = x / scale * 1e11
    return math.copysign(math.floor(abs(scaled) + 0.5), scaled) / 1e11 * scale


def ranking(user_id, items, strength, params, lists=None) -> list[dict]:
    """The whole unfiltered ranking of every item user_id may get, best first: the oracle every
    filtered, paged list is a restriction of (sql/50_serving.sql, recommend).

    personal(u, i) = sum over u's watched items w (strength > 0) of strength x similarity(w -> i) x
    recency; the candidates are the items similar to the history, less the excluded ones (watched
    heavily, or at all unless resurface_light). top(u) is their best personal score (1 when none).
    With a popularity prior (popularity_prior c > 0 or prior_floor a0 > 0, and count_history n > 0)
    every item u may get competes on personal + prior, prior = l / (1 - l) x top(u) x relative
    popularity with l = a0 + (1 - a0) x c / (c + n), the weight of popularity in the blend
    (1 - l) x personal / top(u) + l x relative popularity, which ranks the same;
    without one the candidates are ranked on personal and the other items follow in popularity
    order (the fill). Ties on tie_value(score) go to the more popular item. A pick is
    'personalised' when personal > 0 and personal >= prior; its reason names the watched item that
    contributed most (ties on tie_value: the lower item_id) and how many contributed.
    """
    if lists is None:
        lists = ease_neighbors(strength, params) if params.neighbor_model == "ease" else neighbors(strength, params)
    item_rows = {item[0]: item for item in items}
    history = {item_id: row for (user, item_id), row in strength.items() if user == user_id}
    excluded = {
        item_id for item_id, row in history.items() if row["is_heavy"] or not params.resurface_light
    }
    contributions = defaultdict(list)  # candidate -> [(watched item, contribution)]
    for seed, row in history.items():
        if row["strength"] > 0:
            weight = row["strength"]
            if params.user_half_life_days > 0:
                weight *= 0.5 ** (row["days_before_user_end"] / params.user_half_life_days)
            for neighbor_id, similarity, _ in lists.get(seed, []):
                contributions[neighbor_id].append((seed, weight * similarity))
    personal = {
        item_id: sum(value for _, value in parts)
        for item_id, parts in contributions.items()
        if item_id not in excluded
    }
    popular = popularity(items, strength, params)
    position = {item_id: n for n, (item_id, _, _) in enumerate(popular)}
    popularity_score = {item_id: score for item_id, score, _ in popular}
    viewers = {item_id: count for item_id, _, count in popular}
    best_popularity = popular[0][1] if popular else 0.0
    count_history = sum(1 for row in history.values() if row["strength"] > 0)
    with_prior = (params.popularity_prior > 0 or params.prior_floor > 0) and count_history > 0
    top = max(personal.values(), default=0.0) or 1.0

    def prior(item_id: str) -> float:
        if not with_prior or best_popularity == 0:
            return 0.0
        c, a0 = params.popularity_prior, params.prior_floor
        weight = a0 + (1 - a0) * c / (c + count_history)  # l, popularity's share of the blend
        return weight / (1 - weight) * top * popularity_score[item_id] / best_popularity

    def pick(item_id: str, own: float, from_popularity: float) -> dict:
        score = own + from_popularity
        if own > 0 and own >= from_popularity:
            because, _ = min(contributions[item_id], key=lambda part: (-tie_value(part[1]), part[0]))
            source = "personalised"
            reason = similarity_reason(item_rows[because][1], len(contributions[item_id]))
        else:
            source, reason = "popular", popularity_reason(viewers[item_id])
        return {"item_id": item_id, "score": score, "source": source, "reason": reason}

    def by_tie_rule(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda row: (-tie_value(row["score"]), position[row["item_id"]]))

    may_get = [item_id for item_id, _, _ in popular if item_id not in excluded]
    if with_prior:
        return by_tie_rule([pick(item_id, personal.get(item_id, 0.0), prior(item_id)) for item_id in may_get])
    picks = by_tie_rule([pick(item_id, score, 0.0) for item_id, score in personal.items()])
    fill = [
        {"item_id": item_id, "score": popularity_score[item_id], "source": "popular",
         "reason": popularity_reason(viewers[item_id])}
        for item_id in may_get
        if item_id not in personal
    ]
    return picks + fill


def allowed(item, genre=None, content_type=None, exclude=None) -> bool:
    """sql/05_rules.sql matches_filters: any of each filter's values (lower-case; a genre field
    may hold several, separated by '|'), never an item of exclude."""

    def wanted(values):
        values = [values] if isinstance(values, str) else list(values or [])
        return {value.strip().lower() for value in values if value and value.strip()} or None

    item_id, _, kind, item_genre = item
    genres, kinds = wanted(genre), wanted(content_type)
    return (
        (genres is None or bool(genres & set(item_genre.split("|"))))
        and (kinds is None or kind in kinds)
        and item_id not in (exclude or ())
    )


def restricted(whole: list[dict], items, k, offset=0, genre=None, content_type=None, exclude=None) -> list[dict]:
    """A filtered, paged list: the whole ranking restricted to what the filters allow, ranks
    offset + 1 .. offset + k."""
    item_rows = {item[0]: item for item in items}
    kept = [row for row in whole if allowed(item_rows[row["item_id"]], genre, content_type, exclude)]
    return [{**row, "rank": rank} for rank, row in enumerate(kept[offset: offset + k], offset + 1)]


def recommend(user_id, k, items, strength, params, genre=None, content_type=None) -> list[tuple[str, float, str]]:
    """[(item_id, score, source)] for one user (sql/50, recommend)."""
    whole = ranking(user_id, items, strength, params)
    return [
        (row["item_id"], row["score"], row["source"])
        for row in restricted(whole, items, k, genre=genre, content_type=content_type)
    ]
