"""Offline evaluation: hide the latest events, build the model from the rest,
and measure how well each model's top k finds what users watched next.

The model is built in a temporary database (recs.db is never touched) from
the training events only: sql/evaluation.sql moves the held-out events out
of `events` before any model table is computed.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import duckdb

from . import tune
from .layers import Progress, load_into, model_into
from .config import PLAIN, ModelParams
from .db import configure
from .holdout import hold_out, top_k_lists
from .load import InputFormat
from .errors import BadArgument
from .metrics import Scores, score

SPLITS = ("global", "user")

MOST_POPULAR = PLAIN.replace(max_neighbors=0)
"""No neighbours, no trend: every list is the all-time popular fill, watched items excluded."""

TUNED = None
"""In a models mapping: the parameters a build would choose, tuned on the training part only."""


@dataclass(frozen=True)
class Trend:
    """The trend peer: most watched (sum of watch_seconds) over the training part's last `days` days,
    all-time popularity as the tie-break, watched items excluded (sql/evaluation.sql, trending_top_k).
    A fixed window: nothing is tuned."""

    days: int

    @property
    def name(self) -> str:
        return f"most popular, last {self.days} days"


TRENDS = (Trend(7), Trend(30))
"""The two trend peers every comparison shows beside most-popular."""

Model = ModelParams | Trend | None
"""What a models mapping holds: parameters of our model, TUNED, or a trend peer."""


def default_models() -> dict[str, Model]:
    """The app's recommender as a build makes it (self-tuned), with its defaults, most-popular and
    the two trend lists."""
    models: dict[str, Model] = {"recs (tuned)": TUNED, "recs (defaults)": ModelParams(), "most popular": MOST_POPULAR}
    models.update({trend.name: trend for trend in TRENDS})
    return models


def trending_lists(con: duckdb.DuckDBPyConnection, trend: Trend, k: int, users: list[str]) -> dict[str, list[str]]:
    """The trend peer's top k for each of users, best first, from the training events in con."""
    lists: dict[str, list[str]] = defaultdict(list)
    rows = con.execute(
        "select user_id, item_id from trending_top_k($days, $k, $users::varchar[]) order by user_id, rank",
        {"days": trend.days, "k": k, "users": sorted(users)},
    ).fetchall()
    for user_id, item_id in rows:
        lists[user_id].append(item_id)
    return lists


class Evaluation:
    """A data folder loaded and split once, on which several models can be scored.

    Use as a context manager; it owns a temporary database.
    """

    def __init__(
        self,
        folder: Path,
        split: str = "global",
        test_frac: float = 0.2,
        progress: Progress | None = None,
        input_format: InputFormat | None = None,
    ):
        if split not in SPLITS:
            raise BadArgument(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        if not 0 < test_frac < 1:
            raise BadArgument(f"test_frac must be between 0 and 1, not {test_frac}")
        self.split, self.test_frac, self.progress = split, test_frac, progress
        self.tuned: tune.TuneResult | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="recs-eval-")
        self.con = duckdb.connect(str(Path(self._scratch.name) / "eval.db"))
        configure(self.con, spill_to=Path(self._scratch.name) / "spill")
        load_into(self.con, folder, progress, input_format)
        self.relevant = hold_out(self.con, split, test_frac)
        self.catalogue_size = self.con.execute("select count(*) from items").fetchone()[0]
        self.train_events, self.test_events = self.con.execute(
            "select count(*) filter (where not is_test), count(*) filter (where is_test) from event_split"
        ).fetchone()

    def fit(self, params: ModelParams | None) -> float:
        """Build the model tables from the training events; returns the seconds it took.

        params TUNED (None) tunes them first, as a build would, on a
        validation split of the training events: the test events are never
        seen. The choice is kept in self.tuned.
        """
        started = time.perf_counter()
        if params is TUNED:
            self.tuned = tune.tune(self.con, progress=self.progress)
            params = self.tuned.params
        model_into(self.con, params)
        return time.perf_counter() - started

    def recommendations(self, k: int) -> dict[str, list[str]]:
        """The current model's top k for every evaluated user."""
        return top_k_lists(self.con, k)

    def score(self, name: str, params: Model, k: int = 10) -> Scores:
        """Fit one model (TUNED: tuned on the training part; a Trend: nothing to fit) and score its top k."""
        if isinstance(params, Trend):
            started = time.perf_counter()
            lists = trending_lists(self.con, params, k, list(self.relevant))
            seconds = time.perf_counter() - started
            return score(name, lists, self.relevant, k, self.catalogue_size, seconds)
        seconds = self.fit(params)
        return score(name, self.recommendations(k), self.relevant, k, self.catalogue_size, seconds)

    def close(self) -> None:
        self.con.close()
        self._scratch.cleanup()

    def __enter__(self) -> "Evaluation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def evaluate(
    folder: Path,
    split: str = "global",
    test_frac: float = 0.2,
    k: int = 10,
    models: dict[str, Model] | None = None,
    progress: Progress | None = None,
    input_format: InputFormat | None = None,
) -> list[Scores]:
    """Score each model (default: the app's, tuned and with its defaults, most-popular and the two
    trend lists) on one split of folder."""
    if k < 1:
        raise BadArgument(f"k must be at least 1, not {k}")
    with Evaluation(folder, split, test_frac, progress, input_format) as evaluation:
        results = []
        for name, params in (models or default_models()).items():
            if progress:
                progress(f"scoring {name}")
            results.append(evaluation.score(name, params, k))
        return results
