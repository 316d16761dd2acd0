"""Settings from a recs.toml file: paths, how the CSVs are read, model parameters.

The file is --config, else $RECS_CONFIG, else ./recs.toml when there is one:

    db = "recs.db"
    data_dir = "data"
    delimiter = ";"          # optional: else read from each header line
    encoding = "cp1252"      # optional: else UTF-8

    [files]                  # optional: an export's own file names (.csv or .csv.gz)
    events = "ratings.csv"
    items = "movies.csv"     # users: users.csv when there is one; no users file is fine

    [columns.events]         # optional: our column name = the export's
    user_id = "userId"
    item_id = "movieId"

    [encodings]              # optional: one file's encoding (a byte order mark decides first)
    items = "cp1252"

    [model]                  # pins these parameters (ModelParams): builds do not tune
    popularity_prior = 3.0
    max_neighbors = 30

Each setting is taken from a flag, else the environment, else the file, else
its default; a model parameter from --param, else the environment
(RECS_PARAM_<NAME>, e.g. RECS_PARAM_POPULARITY_PRIOR=3), else the file's
[model], else the build's own choice (tuned, or the defaults). Setting says
which it was.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import ModelParams
from .errors import BadArgument

CONFIG_FILE = "recs.toml"
"""The settings file read from the current folder when neither --config nor $RECS_CONFIG names one."""

PATHS = {
    # name: (environment variable, flag, default)
    "db": ("RECS_DB", "--db", "recs.db"),
    "data_dir": ("RECS_DATA_DIR", "--data-dir", "data"),
    "delimiter": ("RECS_DELIMITER", "--delimiter", None),
    "encoding": ("RECS_ENCODING", "--encoding", "utf-8"),
    "tune_sample": ("RECS_TUNE_SAMPLE", "--tune-sample", None),
}
"""The settings besides the model's parameters."""
NUMBERS = {"tune_sample"}
"""Settings of PATHS written as a whole number in the file (tune_sample = 20000), not as text."""


@dataclass(frozen=True)
class Setting:
    """One setting's value and where it came from: 'default', 'file <path>', 'environment <NAME>',
    'flag <--name>', or for a model parameter also 'recs.db (<why>)'."""

    value: Any
    source: str


def config_file(flag: str | os.PathLike | None = None) -> Setting:
    """The settings file and why it is read: flag (--config), else $RECS_CONFIG, else ./recs.toml
    if it exists; value None when there is none. A file that flag or $RECS_CONFIG names must exist."""
    if flag:
        path, source = Path(flag), "flag --config"
    elif os.environ.get("RECS_CONFIG"):
        path, source = Path(os.environ["RECS_CONFIG"]), "environment RECS_CONFIG"
    else:
        local = Path(CONFIG_FILE)
        return Setting(local, "current folder") if local.is_file() else Setting(None, "none")
    if not path.is_file():
        raise BadArgument(f"settings file not found: {path} (named by {source.split()[-1]})")
    return Setting(path, source)


def read_config(path: Path | None) -> dict:
    """The file's settings, checked: known names, the right kinds; {} for no file."""
    if path is None:
        return {}
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise BadArgument(f"cannot read the settings file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise BadArgument(f"{path}: the settings file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        # tomllib says "... (at line 3, column 7)": lead with the file and line, as every message does
        where = re.search(r"\(at line (\d+), column (\d+)\)", str(error))
        text = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(error))
        if where:
            raise BadArgument(f"{path}, line {where[1]}: {text} (column {where[2]})") from None
        raise BadArgument(f"{path}: {text}") from None
    known = set(PATHS) | {"model"} | set(SHAPE)
    for name in values:
        if name not in known:
            raise BadArgument(f"{path}: unknown setting {name!r}; known: {', '.join(sorted(known))}")
    for name in PATHS:
        if name in NUMBERS and name in values:
            if not isinstance(values[name], int) or isinstance(values[name], bool) or values[name] < 0:
                raise BadArgument(f"{path}: {name} must be a whole number, 0 or more, not {values[name]!r}")
        elif name in values and not isinstance(values[name], str):
            raise BadArgument(f"{path}: {name} must be text in quotes, not {values[name]!r}")
    for name in SHAPE:
        if name in values and not isinstance(values[name], dict):
            raise BadArgument(f"{path}: {name} must be a table ([{name}]), not {values[name]!r}")
    if any(name in values for name in SHAPE):
        from .load import InputFormat

        try:
            InputFormat(**{name: values.get(name, {}) for name in SHAPE})
        except BadArgument as error:
            raise BadArgument(f"{path}: {error}") from None
    model = values.get("model", {})
    if not isinstance(model, dict):
        raise BadArgument(f"{path}: model must be a table of parameters ([model]), not {model!r}")
    try:
        ModelParams.from_dict(model)
    except BadArgument as error:
        raise BadArgument(f"{path}, [model]: {error}") from None
    return values


def resolve(given: dict[str, Setting | None], path: Path | None) -> dict[str, Setting]:
    """Each of PATHS: the flag's or the environment's value when given (given[name]), else the
    file's, else the default."""
    values = read_config(path)
    chosen = {}
    for name, (_, _, default) in PATHS.items():
        if given.get(name) is not None:
            chosen[name] = given[name]
        elif name in values:
            chosen[name] = Setting(values[name], f"file {path}")
        else:
            chosen[name] = Setting(default, "default")
    return chosen


SHAPE = ("files", "columns", "encodings")
"""The tables of the settings file that say how an export is shaped (load.InputFormat's fields)."""


PARAM_ENV_PREFIX = "RECS_PARAM_"
"""A model parameter NAME is pinned from the environment by RECS_PARAM_<NAME in capitals>."""


def param_env_name(name: str) -> str:
    return PARAM_ENV_PREFIX + name.upper()


def _from_environment() -> dict[str, str]:
    """name -> text of each model parameter the environment pins; an unknown RECS_PARAM_ name is refused."""
    known = {param_env_name(spec.name): spec.name for spec in fields(ModelParams)}
    found = {}
    for variable, text in os.environ.items():
        if not variable.startswith(PARAM_ENV_PREFIX):
            continue
        if variable not in known:
            raise BadArgument(f"unknown model parameter in the environment: {variable}; known: {', '.join(sorted(known))}")
        found[known[variable]] = text
    return found


def model_settings(
    path: Path | None, assignments: list[str] | None = None, built: tuple[dict, str] | None = None
) -> tuple[ModelParams | None, dict[str, Setting]]:
    """The model parameters to pin (None: the build chooses) and each parameter's value and source.

    assignments are --param NAME=VALUE; the file's [model] comes under them.
    built is (params, params_source) of the recs.db there is, shown when nothing pins them.
    """
    from_file = read_config(path).get("model", {})
    from_environment = _from_environment()
    pinned = ModelParams.from_dict(from_file) if from_file or from_environment or assignments else None
    if from_environment:
        try:
            pinned = ModelParams.from_assignments([f"{name}={text}" for name, text in from_environment.items()], pinned)
        except BadArgument as error:
            raise BadArgument(f"environment {PARAM_ENV_PREFIX}*: {error}") from None
    if assignments:
        pinned = ModelParams.from_assignments(assignments, start=pinned)
    flagged = {assignment.partition("=")[0].strip() for assignment in assignments or ()}
    defaults = ModelParams().as_dict()
    shown = pinned.as_dict() if pinned else dict(built[0]) if built else defaults
    sources = {}
    for spec in fields(ModelParams):
        name = spec.name
        if name in flagged:
            source = "flag --param"
        elif name in from_environment:
            source = f"environment {param_env_name(name)}"
        elif name in from_file:
            source = f"file {path}"
        elif pinned is None and built is not None:
            source = f"recs.db ({built[1]})"
        else:
            source = "default"
        sources[name] = Setting(shown.get(name, defaults[name]), source)
    return pinned, sources


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved once: what the command line, the web API (`uvicorn api:app`
    too) and a server's background rebuild must agree on."""

    config: Setting
    """The settings file (value None when there is none) and why it is read."""
    values: dict[str, Setting]
    """Each of PATHS, with its source."""
    params: ModelParams | None
    """The model parameters pinned (--param, RECS_PARAM_*, the file's [model]); None: the build chooses."""
    shape: dict = field(default_factory=dict)
    """The settings file's [files], [columns.*] and [encodings] tables, as given."""

    @property
    def db(self) -> Path:
        return Path(self.values["db"].value)

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data_dir"].value)

    @property
    def input_format(self):
        """How the CSVs are read when a setting says so; None: as the last build read them."""
        from .load import InputFormat

        delimiter, encoding = self.values["delimiter"], self.values["encoding"]
        if delimiter.source == "default" and encoding.source == "default" and not self.shape:
            return None
        return InputFormat(delimiter.value, encoding.value, **self.shape)


def load(
    given: dict[str, Setting | None] | None = None,
    config_flag: str | os.PathLike | None = None,
    assignments: list[str] | None = None,
) -> Settings:
    """The settings from flags (given: each of PATHS a flag or the environment set; None: read
    the environment here, as a process with no command line does), the settings file and
    --param assignments."""
    if given is None:
        given = {
            name: Setting(os.environ[variable], f"environment {variable}")
            for name, (variable, _, _) in PATHS.items() if os.environ.get(variable)
        }
    config = config_file(config_flag)
    values = resolve(given, config.value)
    params, _ = model_settings(config.value, assignments)
    shape = {name: table for name, table in read_config(config.value).items() if name in SHAPE}
    return Settings(config, values, params, shape)

