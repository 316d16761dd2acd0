"""Where things are, and the knobs of the model.

Paths come from arguments, else the environment (RECS_DB, RECS_DATA_DIR),
else ./recs.db and ./data. Model parameters are copied into the one-row
table model_params at build time, where the SQL reads them.
"""

from __future__ import annotations

import math
import os
import re
import dataclasses
from dataclasses import asdict, dataclass, field, fields
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


def serving_fast() -> bool:
    """Whether a server answers from the in-memory serving index ($RECS_SERVING: index, the
    default, or sql for the SQL macros)."""
    value = os.environ.get("RECS_SERVING", "index").strip().lower() or "index"
    if value not in ("index", "sql"):
        raise BadArgument(f"RECS_SERVING must be index or sql, not {value!r}")
    return value == "index"


def watch_seconds() -> float:
    """How often a server checks the CSVs for changes and rebuilds ($RECS_WATCH_SECONDS,
    default 5; 0 = never)."""
    value = os.environ.get("RECS_WATCH_SECONDS", "").strip()
    if not value:
        return 5.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if not seconds >= 0:
        raise BadArgument(f"RECS_WATCH_SECONDS must be a number of seconds (0 = off), not {value!r}")
    return seconds


def fold_seconds() -> float:
    """How long live events may wait before a server rebuilds to fold them in (and refresh the
    item neighbours): $RECS_FOLD_SECONDS, default 3600; 0 = only at builds run otherwise."""
    value = os.environ.get("RECS_FOLD_SECONDS", "").strip()
    if not value:
        return 3600.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1
    if not seconds >= 0:
        raise BadArgument(f"RECS_FOLD_SECONDS must be a number of seconds (0 = off), not {value!r}")
    return seconds


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


def _param(default, help: str, layer: str, low=None, high=None, choices=None, below=None):
    """A model parameter: its default, one line of help, the first sql/ layer that reads it
    (a change re-runs that file and the later ones), and what values it accepts (low and high
    included, below excluded)."""
    return field(
        default=default,
        metadata={"help": help, "layer": layer, "low": low, "high": high, "below": below, "choices": choices},
    )


STRENGTH_FORMULAS = ("log_views", "views", "binary", "seconds", "log_seconds")
NEIGHBOR_MODELS = ("cosine", "ease")


@dataclass(frozen=True)
class ModelParams:
    """Parameters of the model, read by sql/20-50 from the table model_params.

    The defaults are what a build uses when it does not tune (too little or
    too much data): chosen on the look-alike datasets and the bundled data
    (docs/evaluation.md) to be safe everywhere, popularity prior and support
    shrinkage included, rather than best anywhere. PLAIN turns every
    data-dependent term off: the bare item-kNN the tests work out by hand.

    Each value is checked on construction: a wrong type, a value out of range
    or an unknown choice raises BadArgument naming the parameter and what it
    accepts. ModelParams.from_dict also refuses unknown names.
    """

    heavy_threshold: float = _param(
        0.8, "completion at or above which an item counts as heavily watched", "20", 0, 1
    )
    min_plays_for_length: int = _param(
        5, "plays an item needs before its own plays set its estimated length", "20", 1
    )
    max_full_views: float = _param(4.0, "full views beyond which more watching adds no strength", "20", 0.01)
    half_life_days: float = _param(
        0.0, "strength halves every this many days before the data's end; 0 = off", "20", 0
    )
    strength_formula: str = _param("log_views", "how seconds become strength", "20", choices=STRENGTH_FORMULAS)
    trending_half_life_days: float = _param(
        30.0, "popularity counts a view half as much every this many days before the data's end; 0 = off", "30", 0
    )
    user_weight_gamma: float = _param(
        0.5, "each user's part in item similarity is divided by their history length to this power", "40", 0, 2
    )
    similarity_history_cap: int = _param(
        200, "only each user's this many most recent items enter item similarity; 0 = all", "40", 0
    )
    min_support: int = _param(1, "users who must have watched both items of a similar pair", "40", 1)
    neighbor_model: str = _param(
        "cosine", "cosine (sql/45) or ease (engine/ease.py: a ridge regression of each item on the others)",
        "40", choices=NEIGHBOR_MODELS,
    )
    ease_lambda: float = _param(500.0, "EASE's ridge penalty: higher shrinks weights more", "40", 0.001)
    similarity_alpha: float = _param(
        0.6, "asymmetric cosine exponent; 0.5 is plain cosine, higher leans to broadly watched neighbours", "45", 0, 1
    )
    similarity_normalisation: float = _param(
        1.0, "power of the cosine's norms: 1 = cosine, 0 = the raw dot product (leans to popular neighbours)",
        "45", 0, 1,
    )
    support_shrinkage: float = _param(
        5.0, "similarity is multiplied by support / (support + this): pairs few users share count less", "45", 0
    )
    popularity_beta: float = _param(
        0.0, "similarity to a neighbour is divided by its viewers to this power", "45", 0, 2
    )
    max_neighbors: int = _param(20, "neighbours kept per item in item_neighbors", "45", 0, 1000)
    popularity_prior: float = _param(
        3.0, "weight of popularity in a personal score, as this many pseudo-items against the user's own; 0 = off",
        "50", 0,
    )
    prior_floor: float = _param(
        0.0, "least weight of popularity in a personal score, however long the history: the weight is "
        "floor + (1 - floor) x popularity_prior / (popularity_prior + the user's items); 0 = off",
        "50", 0, below=1,
    )
    user_half_life_days: float = _param(
        0.0, "when scoring, a watched item counts half as much every this many days before the user's latest; "
        "0 = off", "50", 0,
    )
    resurface_light: bool = _param(
        False, "recommend again items the user watched only lightly (below heavy_threshold)", "50"
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            # frozen: the checked value (an int given for a float becomes a float) is set directly
            object.__setattr__(self, spec.name, _checked(spec, getattr(self, spec.name)))

    @classmethod
    def from_dict(cls, values: dict) -> "ModelParams":
        """Parameters from a mapping (stored or user-given); unknown names are refused."""
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadArgument(
                f"unknown model parameter {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_assignments(cls, assignments: list[str], start: "ModelParams | None" = None) -> "ModelParams":
        """start (default: the defaults) with NAME=VALUE assignments, each VALUE read as its parameter's type."""
        values = (start or cls()).as_dict()
        kinds = {spec.name: type(spec.default) for spec in fields(cls)}
        for assignment in assignments:
            name, equals, text = assignment.partition("=")
            name, text = name.strip(), text.strip()
            if not equals or not name:
                raise BadArgument(f"a model parameter is set as NAME=VALUE, not {assignment!r}")
            if name not in kinds:
                cls.from_dict({name: None})  # the unknown-name message, with the known names
            values[name] = _parsed(name, text, kinds[name])
        return cls.from_dict(values)

    def as_dict(self) -> dict:
        return asdict(self)

    def changes_to(self, other: "ModelParams") -> dict:
        """The parameters whose value in other differs from this one's, with other's values."""
        mine, theirs = self.as_dict(), other.as_dict()
        return {name: value for name, value in theirs.items() if mine[name] != value}

    def replace(self, **changes) -> "ModelParams":
        """A copy with some values changed (checked like any other)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def layer_of(name: str) -> str:
        """The first sql/ file prefix (e.g. '45') that reads parameter name."""
        return PARAM_LAYERS[name]


def _checked(spec, value):
    """value, as the parameter's type; BadArgument unless it suits the parameter described by spec."""
    meta, kind = spec.metadata, type(spec.default)
    name = spec.name
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadArgument(f"model parameter {name} must be {_KIND_NAMES[kind]}, not {value!r}")
    if kind is float and not math.isfinite(value):
        raise BadArgument(f"model parameter {name} must be a finite number, not {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise BadArgument(f"model parameter {name} must be one of {', '.join(meta['choices'])}, not {value!r}")
    low, high, below = meta["low"], meta["high"], meta["below"]
    too_low = low is not None and value < low
    too_high = (high is not None and value > high) or (below is not None and value >= below)
    if too_low or too_high:
        if below is not None:
            bounds = f"at least {low} and below {below}"
        else:
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BadArgument(f"model parameter {name} must be {bounds}, not {value!r}")
    return value


def _parsed(name: str, text: str, kind: type):
    """text as a value of kind, for parameter name."""
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise BadArgument(f"model parameter {name} must be {_KIND_NAMES[kind]}, not {text!r}") from None


_KIND_NAMES = {float: "a number", int: "a whole number", str: "text", bool: "true or false"}


PARAM_LAYERS = {spec.name: spec.metadata["layer"] for spec in fields(ModelParams)}

PLAIN = ModelParams(trending_half_life_days=0.0, support_shrinkage=0.0, popularity_prior=0.0)
"""The bare model: log-views strength, asymmetric cosine, no shrinkage, no prior, no trend."""
