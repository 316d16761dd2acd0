"""The serving index: the model's tables held in memory arrays, for answers in microseconds.

A query per request in DuckDB costs 5-15 ms however it is written (most of it
planning the macros; docs/performance.md), so a server answers `recommend`
and `popular` from arrays loaded from recs.db when it opens the file: each
item's neighbour list (one flat array with offsets), popularity, titles,
genres and content types, and every user's rows of user_item_strength (item,
strength, heaviness, recency), read by key. The live overlay
(sql/live_overlay.sql) replaces the rows of users with live events and the
popularity table each time it changes.

The SQL macros of sql/50_serving.sql stay the definition of every answer:
this module is the fast implementation of the same pieces (candidates, score,
exclusion and filters, top-N, one method each: _excluded, _candidate_scores,
_popular_candidates, _prior_odds, _ranked, _reasons), with the same tie rule.
tests/test_conformance.py runs the same cases against it, the SQL plans and
the reference; tests/test_serving.py checks it returns exactly what the
macros return for every user of the bundled data, with and without filters
and live events.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import numpy as np

from .results import Pick

Filter = "str | list[str] | tuple[str, ...] | set[str] | None"


@dataclass(frozen=True)
class UserRows:
    """One user's rows of user_item_strength (by item_key) and their user_keys row."""

    item_keys: np.ndarray
    strength: np.ndarray
    is_heavy: np.ndarray
    days_before_user_end: np.ndarray | None
    count_history: int
    has_history: bool


@dataclass(frozen=True)
class Popularity:
    """item_popularity by item_key, and the keys in rank order."""

    score: np.ndarray
    relative_score: np.ndarray
    viewers: np.ndarray
    by_rank: np.ndarray

    @functools.cached_property
    def rank_of(self) -> np.ndarray:
        """Each item key's place in popularity order (popularity_rank - 1): the ranking's tie rule."""
        rank_of = np.zeros(len(self.score), dtype=np.int64)
        rank_of[self.by_rank] = np.arange(len(self.by_rank))
        return rank_of


@dataclass(frozen=True)
class CandidateScores:
    """One user's candidate_scores_of: the candidate keys, each key's summed score and count of
    contributions (arrays over every item key), and each contribution with its watched item."""

    keys: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    candidate: np.ndarray
    contribution: np.ndarray
    because: np.ndarray


@dataclass(frozen=True)
class LiveRows:
    """What the live overlay changes: the rows of users with live events, and popularity."""

    version: int
    users: dict[str, UserRows]
    popularity: Popularity


def tie_value(x: np.ndarray) -> np.ndarray:
    """sql/05_rules.sql tie_value: each value to 12 significant digits (half away from zero), so
    values equal but for the last bits of a sum tie and the tie rule decides."""
    x = np.asarray(x, dtype=np.float64)
    size = np.abs(x)
    scale = np.power(10.0, np.floor(np.log10(np.where(size == 0, 1.0, size))))
    scaled = size / scale * 1e11
    return np.copysign(np.floor(scaled + 0.5) / 1e11 * scale, x)


def best_first(score: np.ndarray, tie_break: np.ndarray, k: int) -> np.ndarray:
    """The positions of the k best scores, on tie_value(score) descending, ties to the lower
    tie_break. Only the scores near the k-th largest can tie with it, so only those are rounded."""
    if len(score) > k:
        kth = np.partition(score, len(score) - k)[len(score) - k]
        near = np.flatnonzero(score >= kth - abs(kth) * 1e-10)  # every value tie_value may round up to kth's
    else:
        near = np.arange(len(score))
    return near[np.lexsort((tie_break[near], -tie_value(score[near])))][:k]


def popularity_reason(viewers: int) -> str:
    """sql/05_rules.sql popularity_reason."""
    if viewers == 0:
        return "in the catalogue, not watched yet"
    if viewers == 1:
        return "popular on the platform (1 viewer)"
    return f"popular on the platform ({viewers} viewers)"


def similarity_reason(because_title: str, count_because: int) -> str:
    """sql/05_rules.sql similarity_reason."""
    if count_because == 1:
        return f"similar to {because_title}, which you watched"
    return f"similar to {because_title} and {count_because - 1} more you watched"


def _wanted(values: Filter) -> tuple[str, ...] | None:
    """A filter as lower-cased values (None or empty: any)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    wanted = tuple(sorted({value.strip().lower() for value in values if value and value.strip()}))
    return wanted or None


class ServingIndex:
    """recs.db's serving tables in memory; see the module docstring."""

    def __init__(self, cursor, generation: int):
        started = time.perf_counter()
        self.generation = generation
        row = cursor.execute("select * from recs.main.model_params").fetchone()
        params = dict(zip([column[0] for column in cursor.description], row))
        self.resurface_light = bool(params["resurface_light"])
        self.user_half_life_days = float(params["user_half_life_days"])
        self.popularity_prior = float(params["popularity_prior"])
        # a model built before prior_floor existed (served as shipped) has no floor
        self.prior_floor = float(params.get("prior_floor", 0.0))

        items = cursor.execute(
            "select item_key, item_id, title, content_type, genre from recs.main.items order by item_key"
        ).fetchall()
        size = (items[-1][0] + 1) if items else 1
        self.size = size
        self.item_id = [""] * size
        self.title = [""] * size
        self.content_type = [""] * size
        self.genre = [""] * size
        for key, item_id, title, content_type, genre in items:
            self.item_id[key], self.title[key] = item_id, title
            self.content_type[key], self.genre[key] = content_type, genre
        # matches_filters: each value a filter may name -> the items it matches; a genre field
        # may hold several genres separated by '|', and each of them matches
        self._items_of: dict[str, dict[str, np.ndarray]] = {}
        for column in ("genre", "content_type"):
            keys_of: dict[str, list[int]] = {}
            for key, value in enumerate(getattr(self, column)[1:], 1):
                for part in (value.split("|") if column == "genre" else [value]):
                    keys_of.setdefault(part, []).append(key)
            self._items_of[column] = {value: np.array(keys, dtype=np.int64) for value, keys in keys_of.items()}
        self.key_of_item = {item_id: key for key, item_id in enumerate(self.item_id) if key}
        self._masks: dict = {}

        neighbours = cursor.execute(
            """
            select item_key, neighbor.neighbor_key as neighbor_key, neighbor.similarity as similarity
            from (
                select item_key, unnest(neighbors) as neighbor, generate_subscripts(neighbors, 1) as position
                from recs.main.neighbor_lists
            )
            order by item_key, position
            """
        ).fetchnumpy()
        owner = np.asarray(neighbours["item_key"])
        self.nb_key = np.asarray(neighbours["neighbor_key"]).astype(np.int32, copy=False)
        self.nb_sim = np.asarray(neighbours["similarity"]).astype(np.float64, copy=False)
        self.nb_offsets = np.searchsorted(owner, np.arange(size + 1)).astype(np.int64)

        self._load_users(cursor)
        self.built_popularity = self._read_popularity(cursor, "recs.main.item_popularity")
        self.live = LiveRows(-1, {}, self.built_popularity)
        self.load_seconds = time.perf_counter() - started

    def _load_users(self, cursor) -> None:
        keys = cursor.execute(
            "select user_id, user_key, count_history, has_history from recs.main.user_keys order by user_key"
        ).fetchnumpy()
        user_keys = keys["user_key"].astype(np.int64)
        self.user_index = {user_id: int(key) for user_id, key in zip(keys["user_id"].tolist(), user_keys)}
        max_key = int(user_keys.max()) if len(user_keys) else 0
        self.count_history = np.zeros(max_key + 1, dtype=np.int64)
        self.count_history[user_keys] = keys["count_history"]
        self.has_history = np.zeros(max_key + 1, dtype=bool)
        self.has_history[user_keys] = keys["has_history"]
        days = ", days_before_user_end" if self.user_half_life_days > 0 else ""
        rows = cursor.execute(
            f"select user_key, item_key, strength, is_heavy{days} from recs.main.user_item_strength"
        ).fetchnumpy()
        owner = np.asarray(rows["user_key"])
        if len(owner) and bool((owner[1:] < owner[:-1]).any()):  # stored sorted by user_key, item_key; just in case
            order = np.lexsort((rows["item_key"], owner))
            rows = {name: np.asarray(values)[order] for name, values in rows.items()}
            owner = owner[order]
        self.row_item = np.asarray(rows["item_key"]).astype(np.int32, copy=False)
        self.row_strength = np.asarray(rows["strength"]).astype(np.float64, copy=False)
        self.row_heavy = np.asarray(rows["is_heavy"]).astype(bool, copy=False)
        self.row_days = np.asarray(rows["days_before_user_end"]).astype(np.float64, copy=False) if days else None
        self.row_offsets = np.searchsorted(owner, np.arange(max_key + 2)).astype(np.int64)
        self.listed_users = set(
            row[0] for row in cursor.execute("select user_id from recs.main.users").fetchall()
        )

    @staticmethod
    def _read_popularity(cursor, table: str) -> Popularity:
        # table is one of two names of ours, never input
        rows = cursor.execute(
            f"select item_key, score, relative_score, viewers, popularity_rank from {table}"
        ).fetchnumpy()
        keys = rows["item_key"].astype(np.int64)
        size = int(keys.max()) + 1 if len(keys) else 1
        score = np.zeros(size)
        relative = np.zeros(size)
        viewers = np.zeros(size, dtype=np.int64)
        score[keys], relative[keys], viewers[keys] = rows["score"], rows["relative_score"], rows["viewers"]
        by_rank = keys[np.argsort(rows["popularity_rank"], kind="stable")]
        return Popularity(score, relative, viewers, by_rank)

    # --- the live overlay ---------------------------------------------------------------

    def apply_live(self, cursor, overlay) -> None:
        """Take in the overlay tables of sql/live_overlay.sql: the rows of the users that changed
        since the last time, and popularity (overlay: the engine.live.LiveOverlay)."""
        version = overlay.version
        if not overlay.events:
            self.live = LiveRows(version, {}, self.built_popularity)
            return
        changed = overlay.changed_since(self.live.version)
        days = ", days_before_user_end" if self.user_half_life_days > 0 else ""
        cursor.execute("begin transaction")  # one snapshot of the overlay for the reads below
        try:
            rows, keys, popularity = self._read_live(cursor, changed, days)
        finally:
            cursor.execute("commit")
        grouped: dict[str, list] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row[1:])
        users = dict(self.live.users)
        for user_id, user_rows in grouped.items():
            columns = list(zip(*user_rows))
            users[user_id] = UserRows(
                np.array(columns[0], dtype=np.int64),
                np.array(columns[1], dtype=np.float64),
                np.array(columns[2], dtype=bool),
                np.array(columns[3], dtype=np.float64) if days else None,
                int(keys[user_id][0]),
                bool(keys[user_id][1]),
            )
        self.live = LiveRows(version, users, popularity)  # published by one assignment

    def _read_live(self, cursor, changed: list[str], days: str):
        """The changed users' overlay rows and keys, and the live popularity."""
        rows = cursor.execute(
            f"select user_id, item_key, strength, is_heavy{days} from live.user_item_strength "
            "where user_id in (select unnest($ids::varchar[])) order by user_key, item_key",
            {"ids": changed},
        ).fetchall()
        keys = {
            user_id: (count_history, has_history)
            for user_id, count_history, has_history in cursor.execute(
                "select user_id, count_history, has_history from live.user_keys "
                "where user_id in (select unnest($ids::varchar[]))",
                {"ids": changed},
            ).fetchall()
        }
        return rows, keys, self._read_popularity(cursor, "live.item_popularity")

    # --- answers --------------------------------------------------------------------------

    def user(self, user_id: str, live: LiveRows) -> UserRows | None:
        """The user's rows, live ones first; None for a user without events."""
        rows = live.users.get(user_id)
        if rows is not None:
            return rows
        key = self.user_index.get(user_id)
        if key is None:
            return None
        start, end = self.row_offsets[key], self.row_offsets[key + 1]
        return UserRows(
            self.row_item[start:end], self.row_strength[start:end], self.row_heavy[start:end],
            self.row_days[start:end] if self.row_days is not None else None,
            int(self.count_history[key]), bool(self.has_history[key]),
        )

    def user_known(self, user_id: str) -> bool:
        return user_id in self.listed_users or user_id in self.user_index or user_id in self.live.users

    def mask(
        self, genres: Filter = None, content_types: Filter = None, exclude: list[str] | None = None
    ) -> np.ndarray | None:
        """Which item keys pass the filters (matches_filters: any of each set, never an item of
        exclude), None for no filter."""
        wanted = (_wanted(genres), _wanted(content_types))
        mask = None
        if wanted != (None, None):
            mask = self._masks.get(wanted)
            if mask is None:
                mask = np.ones(self.size, dtype=bool)
                mask[0] = False
                for column, values in zip(("genre", "content_type"), wanted):
                    if values is None:
                        continue
                    passing = np.zeros(self.size, dtype=bool)
                    for value in values:
                        passing[self._items_of[column].get(value, [])] = True
                    mask &= passing
                if len(self._masks) < 256:
                    self._masks[wanted] = mask
        if exclude:
            mask = mask.copy() if mask is not None else np.ones(self.size, dtype=bool)
            mask[[self.key_of_item[item] for item in exclude if item in self.key_of_item]] = False
        return mask

    def filter_values(self, column: str) -> list[str]:
        """Every value a genre or content_type filter can match, sorted (genre fields split on '|')."""
        return sorted(self._items_of[column])

    def popular(
        self, k: int, genres: Filter = None, content_types: Filter = None, exclude: list[str] | None = None
    ) -> list[Pick]:
        """The macro popular: the k most popular items passing the filters."""
        popularity = self.live.popularity
        keys = self._popular_candidates(popularity, self.mask(genres, content_types, exclude), None, k)
        return [self._popular_pick(rank, key, popularity) for rank, key in enumerate(keys.tolist(), 1)]

    def _popular_pick(self, rank: int, key: int, popularity: Popularity) -> Pick:
        return Pick(
            rank=rank, item_id=self.item_id[key], title=self.title[key], content_type=self.content_type[key],
            genre=self.genre[key], score=float(popularity.score[key]), source="popular",
            reason=popularity_reason(int(popularity.viewers[key])),
        )

    def recommend(
        self,
        user_id: str,
        k: int,
        genres: Filter = None,
        content_types: Filter = None,
        exclude: list[str] | None = None,
    ) -> tuple[list[Pick], bool, bool]:
        """What Recommender.recommend answers from the macros: (picks, has_history, known).

        The pieces of sql/50_serving.sql's recommendations_of, one method each: _excluded,
        _candidate_scores (the neighbours of the history, summed), _popular_candidates (the
        filters, in popularity order), _ranked (score, tie rule, top-N) and _reason."""
        live = self.live
        popularity = live.popularity
        mask = self.mask(genres, content_types, exclude)
        user = self.user(user_id, live)
        known = user is not None or user_id in self.listed_users
        if user is None:  # no events: the popular list
            keys = self._popular_candidates(popularity, mask, None, k)
            return [self._popular_pick(rank, key, popularity) for rank, key in enumerate(keys.tolist(), 1)], False, known
        excluded = self._excluded(user)
        scores = self._candidate_scores(user) if user.has_history else None
        personal_keys = scores.keys[~excluded[scores.keys]] if scores is not None else np.zeros(0, dtype=np.int64)
        personal = scores.sums[personal_keys] if scores is not None else np.zeros(0)
        passed_over = excluded
        if bool((personal < 0).any()):
            passed_over = excluded.copy()
            passed_over[personal_keys[personal < 0]] = True
        popular_keys = self._popular_candidates(popularity, mask, passed_over, k)
        shown = personal_keys if mask is None else personal_keys[mask[personal_keys]]
        picks = self._ranked(user, scores, personal, shown, popular_keys, k, popularity)
        return picks, user.has_history, known

    def _excluded(self, user: UserRows) -> np.ndarray:
        """The macro excluded_of: which item keys are never shown back to user (is_excluded:
        watched heavily, or watched at all unless resurface_light)."""
        excluded = np.zeros(self.size, dtype=bool)
        excluded[user.item_keys if not self.resurface_light else user.item_keys[user.is_heavy]] = True
        return excluded

    def _candidate_scores(self, user: UserRows) -> "CandidateScores | None":
        """The macro candidate_scores_of for one user: every item similar to something they
        watched, with score(u, i) = sum over watched w of strength x similarity(w -> i) x recency."""
        positive = user.strength > 0
        history_keys = user.item_keys[positive]
        starts = self.nb_offsets[history_keys]
        counts = self.nb_offsets[history_keys + 1] - starts
        total = int(counts.sum())
        if not total:
            return None
        owner = np.repeat(np.arange(len(history_keys)), counts)
        index = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        candidate = self.nb_key[index]
        # contribution: strength x similarity x half_life_weight(days before the user's end)
        contribution = user.strength[positive][owner] * self.nb_sim[index]
        if self.user_half_life_days > 0:  # else the weight is 1
            days = user.days_before_user_end[positive]
            contribution = contribution * np.power(0.5, days[owner] / self.user_half_life_days)
        sums = np.bincount(candidate, weights=contribution, minlength=self.size)
        counts_because = np.bincount(candidate, minlength=self.size)
        return CandidateScores(
            np.flatnonzero(counts_because), sums, counts_because, candidate, contribution, history_keys[owner]
        )

    @staticmethod
    def _popular_candidates(popularity: Popularity, mask, passed_over: np.ndarray | None, k: int) -> np.ndarray:
        """The macro popular_eligible and the popular candidates of recommendations_of: the first
        k item keys in popularity order that pass the filters (mask) and are not passed over."""
        order = popularity.by_rank
        if mask is None and passed_over is None:
            return order[:k]
        allowed = np.ones(len(order), dtype=bool) if mask is None else mask[order]
        if passed_over is not None:
            allowed &= ~passed_over[order]
        return order[allowed][:k]

    def _prior_odds(self, count_history: int) -> float:
        """The macro prior_score before its scale top(u) x relative popularity: l / (1 - l) with
        l = a0 + (1 - a0) x c / (c + n), i.e. (c / n + a0) / (1 - a0); 0 (no prior) when c = a0 = 0
        or n = 0."""
        if (self.popularity_prior > 0 or self.prior_floor > 0) and count_history > 0:
            return (self.popularity_prior / count_history + self.prior_floor) / (1 - self.prior_floor)
        return 0.0

    def _ranked(self, user, scores, personal, shown, popular_keys, k, popularity: Popularity) -> list[Pick]:
        """The macro recommendations_of from its candidates: the personal candidates passing the
        filters (shown) and the popular ones, scored personal + prior on top(u) over every
        personal candidate (personal: before the filters), ranked on tie_value(score), ties to
        the more popular item; without a prior the popular ones that are not personal follow as
        the fill."""
        odds = self._prior_odds(user.count_history)
        if odds > 0:  # has_prior
            keys = np.union1d(shown, popular_keys)
            own = scores.sums[keys] if scores is not None else np.zeros(len(keys))
            top = float(personal.max()) if len(personal) else 0.0
            # prior_score: (c / n + a0) / (1 - a0) * (top, or 1 when 0) * relative popularity
            prior = odds * (top if top != 0 else 1.0) * popularity.relative_score[keys]
            fill = np.zeros(0, dtype=np.int64)
        else:
            keys, own = shown, scores.sums[shown] if scores is not None else np.zeros(0)
            prior = np.zeros(len(keys))
            fill = popular_keys[~np.isin(popular_keys, shown)] if len(shown) < k else popular_keys[:0]
        score = own + prior
        best = best_first(score, popularity.rank_of[keys], k)
        own, prior, score, keys = own[best], prior[best], score[best], keys[best]
        personalised = (own > 0) & (own >= prior)  # pick_source
        reasons = self._reasons(scores, keys[personalised]) if personalised.any() else {}
        picks = []
        for rank, key in enumerate(keys.tolist(), 1):
            if key in reasons:
                source, reason = "personalised", reasons[key]
            else:
                source, reason = "popular", popularity_reason(int(popularity.viewers[key]))
            picks.append(Pick(
                rank=rank, item_id=self.item_id[key], title=self.title[key], content_type=self.content_type[key],
                genre=self.genre[key], score=float(score[rank - 1]), reason=reason, source=source,
            ))
        for key in fill[: k - len(picks)].tolist():
            picks.append(self._popular_pick(len(picks) + 1, key, popularity))
        return picks

    def _reasons(self, scores: "CandidateScores", keys: np.ndarray) -> dict[int, str]:
        """similarity_reason for each personalised pick of keys: the watched item that contributed
        most (ties on tie_value: the lower item_key), and how many contributed."""
        chosen = np.isin(scores.candidate, keys)
        candidate, because = scores.candidate[chosen], scores.because[chosen]
        order = np.lexsort((because, -tie_value(scores.contribution[chosen]), candidate))
        first = order[np.r_[True, candidate[order][1:] != candidate[order][:-1]]]
        return {
            key: similarity_reason(self.title[watched], int(scores.counts[key]))
            for key, watched in zip(candidate[first].tolist(), because[first].tolist())
        }


class ServingState:
    """The index of the model a Recommender has open, reloaded when a build swaps a new file in
    and refreshed when the live overlay changes; answers keep coming from the old index meanwhile."""

    def __init__(self):
        self.index: ServingIndex | None = None
        self._lock = threading.Lock()

    def current(self, database, overlay) -> ServingIndex:
        cursor = database.cursor()  # reopens a swapped file, takes in new live events
        generation, version = database.generation, overlay.version
        index = self.index
        if index is not None and index.generation == generation and index.live.version == version:
            return index
        if index is not None and not self._lock.acquire(blocking=False):
            return index  # another thread is loading or refreshing: answer from what is there
        if index is None:
            self._lock.acquire()
        try:
            index = self.index
            if index is None or index.generation != generation:
                index = ServingIndex(cursor, generation)
            if index.live.version != overlay.version:
                index.apply_live(cursor, overlay)
            self.index = index
            return index
        finally:
            self._lock.release()
