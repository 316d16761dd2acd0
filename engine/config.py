"""Where things are, and the knobs of the model.

Paths come from arguments, else the environment (RECS_DB, RECS_DATA_DIR),
else ./recs.db and ./data. Model parameters are copied into the one-row
table model_params at build time, where the SQL reads them.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import BadArgument

DEFAULT_DB = "recs.db"
DEFAULT_DATA_DIR = "data"


def db_path(value: str | os.PathLike | None = None) -> Path:
    """The database file: the argument, else $RECS_DB, else ./recs.db."""
    return Path(value or os.environ.get("RECS_DB") or DEFAULT_DB)


def data_dir(value: str | os.PathLike | None = None) -> Path:
    """The CSV folder: the argument, else $RECS_DATA_DIR, else ./data."""
    return Path(value or os.environ.get("RECS_DATA_DIR") or DEFAULT_DATA_DIR)


def memory_limit() -> str | None:
    """DuckDB's memory limit for builds, from $RECS_MEMORY_LIMIT (e.g. 4GB); None = DuckDB's default (80% of RAM).

    Past the limit DuckDB spills to a temporary folder beside the database, so
    a smaller machine builds more slowly instead of failing.
    """
    value = os.environ.get("RECS_MEMORY_LIMIT", "").strip()
    if not value:
        return None
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        raise BadArgument(f"RECS_MEMORY_LIMIT must look like 4GB or 512MB, not {value!r}")
    return value


def threads() -> int | None:
    """DuckDB threads for builds, from $RECS_THREADS; None = one per core."""
    value = os.environ.get("RECS_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadArgument(f"RECS_THREADS must be a whole number of at least 1, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ModelParams:
    """Parameters of the model, read by sql/20-50 from the table model_params."""

    heavy_threshold: float = 0.8
    """completion at or above which an item counts as heavily watched."""
    min_plays_for_length: int = 5
    """plays an item needs before its own plays set its estimated length."""
    max_full_views: float = 4.0
    """full views beyond which more watching adds no strength."""
    half_life_days: float = 0.0
    """strength halves every this many days before the data's end; 0 = off."""
    strength_formula: str = "log_views"
    """log_views (the model), or views, binary, seconds, log_seconds (for comparison)."""
    similarity_alpha: float = 0.6
    """asymmetric cosine exponent; 0.5 is plain cosine, higher leans to broadly watched neighbours."""
    user_weight_gamma: float = 0.5
    """each user's part in item similarity is divided by their history length to this power."""
    popularity_beta: float = 0.0
    """similarity to a neighbour is divided by its viewers to this power."""
    trending_half_life_days: float = 0.0
    """popularity counts a view half as much every this many days before the data's end; 0 = off."""
    user_half_life_days: float = 0.0
    """when scoring, a watched item counts half as much every this many days before the user's latest; 0 = off."""
    max_neighbors: int = 20
    """neighbours kept per item in item_neighbors."""
    similarity_history_cap: int = 200
    """only each user's this many most recent items enter item similarity; 0 = all."""
    min_support: int = 1
    """users who must have watched both items of a similar pair."""
    resurface_light: bool = False
    """recommend again items the user watched only lightly (below heavy_threshold)."""

    def as_dict(self) -> dict:
        return asdict(self)
