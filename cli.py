"""Command line for the recommender: parse, call engine/, render a table or JSON.

    python cli.py popular --k 5
    python cli.py recommend --user_id u1 --k 5 --genre drama
    python cli.py build
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import fields as dataclass_fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich import box
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table

import engine
from engine import config, eventlog, load, settings
from engine.build import built_state
from engine.layers import Alert, Milestone
from engine.metrics import Scores

app = typer.Typer(
    help="Recommend what to watch next, from watch-history CSVs, with a reason for each pick.",
    add_completion=True,  # --install-completion / --show-completion for the user's shell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Typer 0.29's help labels every option with its type, flags too: `--json <bool>` reads as if
# --json took a value. A flag (and --help) shows no type here; every other option keeps its own.
_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda option, ctx: None if option.is_flag else _option_type(option, ctx)

# markup off: ids, titles and messages come from users and data, never Rich markup
out = Console(markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False)


class State:
    db: Optional[Path] = None
    data_dir: Optional[Path] = None
    input_format: Optional[engine.InputFormat] = None
    config: Optional[settings.Setting] = None
    """The settings file (its value None when there is none) and why it is read."""
    settings: dict = {}
    params: Optional[engine.ModelParams] = None
    """Model parameters the settings file pins (its [model] table), else None."""


state = State()

K = Annotated[int, typer.Option("--k", "-k", min=1, help="How many items (at least 1).")]
GENRE = Annotated[
    Optional[list[str]],
    typer.Option(
        "--genre", show_default="any",
        help="Only items of this genre, e.g. drama; repeat it or separate by commas for any of several.",
    ),
]
CONTENT_TYPE = Annotated[
    Optional[list[str]],
    typer.Option(
        "--content-type", "--content_type", show_default="any",
        help="Only this content type (tv, movie, series, microdrama); repeat it or separate by commas for any of several.",
    ),
]
EXCLUDE = Annotated[
    Optional[list[str]],
    typer.Option("--exclude", show_default="none", help="Item ids never to show, e.g. i1,i2 (those already on screen)."),
]
OFFSET = Annotated[
    int, typer.Option("--offset", min=0, help="Skip this many of the list first: --offset 10 --k 10 is ranks 11-20.")
]
USER_ID = Annotated[str, typer.Option("--user-id", "--user_id", help="The user, e.g. u1.")]
JSON = Annotated[bool, typer.Option("--json", help="Print JSON: short for --format json.")]
JSON_ONLY = Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")]


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    tsv = "tsv"


class Split(str, Enum):
    """evaluate --split: shown as <global|user> in the help."""

    global_ = "global"
    user = "user"


FORMAT = Annotated[
    Optional[Format],
    typer.Option(
        "--format", show_default="table", help="table, json (as --json), or csv / tsv: one line per item after a header."
    ),
]


def print_version(shown: bool) -> None:
    """--version: the app's version (engine.__version__) and DuckDB's, then exit 0."""
    if shown:
        import duckdb

        out.print(f"recs {engine.__version__} (DuckDB {duckdb.__version__})")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    db: Annotated[
        Optional[Path], typer.Option("--db", envvar="RECS_DB", show_default="recs.db", help="Database file.")
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir", "--data_dir", envvar="RECS_DATA_DIR", show_default="data", help="Folder of the CSVs."
        )
    ] = None,
    delimiter: Annotated[
        Optional[str],
        typer.Option(
            "--delimiter", envvar="RECS_DELIMITER", show_default="read from each header: , ; tab or |",
            help="The CSVs' delimiter, e.g. ';' or tab.",
        ),
    ] = None,
    encoding: Annotated[
        Optional[str],
        typer.Option(
            "--encoding", envvar="RECS_ENCODING", show_default="utf-8", help="The CSVs' text encoding, e.g. cp1252."
        ),
    ] = None,
    config_path: Annotated[
        Optional[Path],
        typer.Option(
            "--config", show_default="$RECS_CONFIG, else ./recs.toml if there is one",
            help="Settings file (TOML): paths, delimiter, encoding, model parameters; see 'recs params'.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Recommend what to watch next, from watch-history CSVs, with a reason for each pick.

    recs.db is (re)built automatically when it is missing or older than the CSVs.
    """
    given = {
        name: given_setting(ctx, name, value)
        for name, value in (("db", db), ("data_dir", data_dir), ("delimiter", delimiter), ("encoding", encoding))
    }
    sample = os.environ.get("RECS_TUNE_SAMPLE", "").strip()  # build's and tune's --tune-sample reads it too
    if sample and not sample.isdigit():
        raise typer.BadParameter(f"RECS_TUNE_SAMPLE must be a whole number, not {sample!r}")
    given["tune_sample"] = settings.Setting(int(sample), "environment RECS_TUNE_SAMPLE") if sample else None
    with reported_errors():  # a bad settings file is one error line, exit 1
        resolved = settings.load(given, config_path)
    state.config, state.settings, state.params = resolved.config, resolved.values, resolved.params
    state.db, state.data_dir = resolved.db, resolved.data_dir
    try:
        state.input_format = resolved.input_format  # None: read the CSVs as the last build did (build_info)
    except engine.BadArgument as error:
        raise typer.BadParameter(str(error), param_hint="--delimiter / --encoding") from None


def given_setting(ctx: typer.Context, name: str, value) -> Optional[settings.Setting]:
    """A global option's value and source when a flag or the environment gave it, else None."""
    if value is None:
        return None
    environment, flag, _ = settings.PATHS[name]
    source = ctx.get_parameter_source(name)
    if source is not None and source.name == "ENVIRONMENT":
        return settings.Setting(str(value), f"environment {environment}")
    return settings.Setting(str(value), f"flag {flag}")


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn engine errors into one line on stderr and exit code 1."""
    try:
        yield
    except engine.RecsError as error:
        hint = " (set --data-dir or RECS_DATA_DIR)" if isinstance(error, load.DataFolderMissing) else ""
        err.print(f"Error: {error}{hint}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("Interrupted.")
        raise typer.Exit(130) from None


@contextmanager
def build_display() -> Iterator[engine.Progress]:
    """A progress callback: a spinner naming the step on an interactive stderr, else plain lines."""
    if err.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
        ) as progress:
            task = progress.add_task("building recs.db")

            def show(step: str) -> None:
                if isinstance(step, Alert):  # a line of its own, above the spinner
                    progress.console.print(step, soft_wrap=True)
                else:
                    progress.update(task, description=f"building recs.db: {step}")

            yield show
    else:  # a log (CI, a scheduler): a line per tuning trial and each warning, no spinner
        yield lambda step: err.print(step, soft_wrap=True) if isinstance(step, (Milestone, Alert)) else None


def open_recommender() -> engine.Recommender:
    """The engine on the chosen paths, building recs.db first if needed."""
    with build_display() as progress:
        recommender = engine.Recommender(
            state.db, state.data_dir, state.params, progress=progress, input_format=state.input_format
        )
    if recommender.standalone is not None:
        err.print(f"Note: {recommender.standalone}", soft_wrap=True)
    if recommender.stale is not None:
        err.print(
            f"Warning: answering from the model built at {recommender.stale_built_at}: {recommender.stale}",
            soft_wrap=True,
        )
    if recommender.build_report is not None:
        report = recommender.build_report
        issues = sum(report.issues_by_file.values())
        err.print(
            f"Built {recommender.db} in {report.seconds:.1f} s"
            + (f"; {issues} load issues (see 'python cli.py build')" if issues else ""),
            soft_wrap=True,
        )
        print_moved_aside(report, err)
    return recommender


def print_moved_aside(report: engine.BuildReport, console: Console) -> None:
    """One line when the build moved an unreadable recs.db aside before replacing it."""
    if report.moved_aside is not None:
        console.print(f"The old file could not be read; it was kept as {report.moved_aside}.", soft_wrap=True)


def print_json(payload: dict) -> None:
    """One line of JSON on plain stdout: a Rich console would wrap long lines when piped."""
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")


def chosen_format(format: Optional[Format], as_json: bool) -> Format:
    """--format, or json for --json; both at once must agree (else a usage error, exit 2)."""
    if as_json and format not in (None, Format.json):
        raise typer.BadParameter(f"--json is short for --format json; it cannot go with --format {format.value}")
    return Format.json if as_json else format or Format.table


def printed_as_data(shape: Format, payload: dict, columns: list[str], rows: list[dict]) -> bool:
    """The one output path of every command: its answer as JSON (payload) or as CSV / TSV (rows,
    with columns as the header) when shape asks for it, then True; False for a table, which the
    command draws itself."""
    if shape is Format.json:
        print_json(payload)
        return True
    if shape is not Format.table:
        print_rows(columns, rows, shape)
        return True
    return False


def print_rows(columns: list[str], rows: list[dict], format: Format) -> None:
    """rows as CSV or TSV on plain stdout: a header line, then one line per row."""
    writer = csv.DictWriter(
        sys.stdout, fieldnames=columns, delimiter="\t" if format is Format.tsv else ",", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)


PICK_COLUMNS = ["rank", "item_id", "title", "content_type", "genre", "score", "reason", "source"]
"""The columns of a Pick's to_dict(), in order: the csv / tsv header of popular and recommend."""

SHRINK_PLAN = (
    ("title", 14), ("reason", 12), ("genre", 6), ("type", 6), ("title", 8), ("model", 8), ("source", 24)
)
"""How a table too wide for the terminal is made to fit: each step shortens one column (its
cells cut with an ellipsis) down to at most that many characters, until the table fits.
Ids, ranks and numbers are never shortened."""


def fitted_table(columns: list[tuple[str, str]], rows: list[list[str]], width: int | None = None) -> Table:
    """A table of (header, justify) columns, one line per row, that fits width (default: the
    terminal's; 80 when piped) by SHRINK_PLAN."""
    width = width or out.width
    natural = [max([cell_len(header)] + [cell_len(row[n]) for row in rows]) for n, (header, _) in enumerate(columns)]
    gaps = 2 * (len(columns) - 1)  # two spaces between columns, none at the edges
    widths = list(natural)
    for name, floor in SHRINK_PLAN:
        excess = sum(widths) + gaps - width
        if excess <= 0:
            break
        for n, (header, _) in enumerate(columns):
            if header == name:
                widths[n] = max(min(floor, widths[n]), widths[n] - excess)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for (header, justify), size in zip(columns, widths):
        table.add_column(header, justify=justify, no_wrap=True, min_width=size, max_width=size)
    for row in rows:
        table.add_row(*(_cut(cell, size) for cell, size in zip(row, widths)))
    return table


def _cut(text: str, size: int) -> str:
    """text in at most size cells, ending in an ellipsis when it was longer."""
    if cell_len(text) <= size:
        return text
    return set_cell_size(text, size - 1).rstrip() + "…"


def item_table(items: list[engine.Pick], reason: bool = True) -> Table:
    columns = [("#", "right"), ("item_id", "left"), ("title", "left"), ("type", "left"), ("genre", "left"),
               ("score", "right")]
    if reason:
        columns.append(("reason", "left"))
    rows = []
    for item in items:
        cells = [str(item.rank), item.item_id, item.title, item.content_type, item.genre, f"{item.score:.3f}"]
        if reason:
            cells.append(item.reason)
        rows.append(cells)
    return fitted_table(columns, rows)


def filter_values(values: Optional[list[str]]) -> Optional[list[str]]:
    """A repeatable option's values, each split on commas; None when none is given."""
    parts = [part.strip() for value in values or () for part in value.split(",") if part.strip()]
    return parts or None


def filter_note(genre: Optional[list[str]], content_type: Optional[list[str]]) -> str:
    parts = [
        f"genre {' or '.join(genre)}" if genre else "",
        f"content type {' or '.join(content_type)}" if content_type else "",
    ]
    parts = [part for part in parts if part]
    return f" ({', '.join(parts)})" if parts else ""


@app.command()
def popular(
    k: K = 10,
    genre: GENRE = None,
    content_type: CONTENT_TYPE = None,
    exclude: EXCLUDE = None,
    offset: OFFSET = 0,
    format: FORMAT = None,
    as_json: JSON = False,
) -> None:
    """The most popular items on the platform.

    Example: python cli.py popular --k 5 --genre drama,romance --format csv
    """
    shape = chosen_format(format, as_json)
    genre, content_type = filter_values(genre), filter_values(content_type)
    with reported_errors():
        answer = open_recommender().popular(k, genre, content_type, filter_values(exclude), offset)
    items = answer.items
    if printed_as_data(shape, answer.to_dict(), PICK_COLUMNS, [item.to_dict() for item in items]):
        return
    if not items:
        out.print("No items to show: the catalogue is empty" + filter_note(genre, content_type) + ".")
        return
    if all(item.score == 0 for item in items):
        out.print("No one has watched anything yet: items are listed in catalogue order.")
    out.print(f"Top {k} Popular Items{filter_note(genre, content_type)}:")
    out.print(item_table(items, reason=False))


@app.command()
def recommend(
    user_id: USER_ID,
    k: K = 10,
    genre: GENRE = None,
    content_type: CONTENT_TYPE = None,
    exclude: EXCLUDE = None,
    offset: OFFSET = 0,
    format: FORMAT = None,
    as_json: JSON = False,
) -> None:
    """What a user should watch next, each with the reason it was picked.

    Example: python cli.py recommend --user_id u1 --k 5 --genre drama --exclude i314,i288
    """
    shape = chosen_format(format, as_json)
    genre, content_type = filter_values(genre), filter_values(content_type)
    with reported_errors():
        answer = open_recommender().recommend(user_id, k, genre, content_type, filter_values(exclude), offset)
    items = answer.items
    for note in answer.notes:  # about what was asked (a typo, perhaps): said whatever the format
        err.print(f"Note: {note}.", soft_wrap=True)
    if shape is not Format.json:  # JSON says it in fallback_used and each item's source
        if answer.fallback_used:
            why = "has no watch history" if answer.user_known else "is not a known user"
            err.print(f"Note: {user_id} {why}; showing popular items instead.")
        elif any(item.source == "popular" for item in items):
            err.print("Note: fewer personalised picks than asked for; the rest are popular items.")
    if printed_as_data(shape, answer.to_dict(), PICK_COLUMNS, [item.to_dict() for item in items]):
        return
    if not items:
        out.print(f"Nothing left to recommend to {user_id}{filter_note(genre, content_type)}.")
        return
    out.print(f"Recommendations for user {user_id}{filter_note(genre, content_type)}:")
    out.print(item_table(items))


HISTORY_COLUMNS = [spec.name for spec in dataclass_fields(engine.HistoryEntry)]
"""The csv / tsv header of history: the fields of its JSON items."""


@app.command()
def history(user_id: USER_ID, format: FORMAT = None, as_json: JSON = False) -> None:
    """What a user has watched: plays, seconds, completion, last watched.

    Example: python cli.py history --user_id u1 --format tsv
    """
    shape = chosen_format(format, as_json)
    with reported_errors():
        answer = open_recommender().history(user_id)
    if printed_as_data(shape, answer.to_dict(), HISTORY_COLUMNS, [row.to_dict() for row in answer.items]):
        return
    out.print(f"Watch history of user {user_id}:")
    columns = [("item_id", "left"), ("title", "left"), ("type", "left"), ("genre", "left"), ("plays", "right"),
               ("seconds", "right"), ("completion", "right"), ("last watched", "left")]
    rows = [
        [
            row.item_id,
            row.title,
            row.content_type,
            row.genre,
            str(row.count_plays),
            f"{row.watch_seconds:.0f}",
            f"{row.completion:.0%}" + (" heavy" if row.is_heavy else ""),
            f"{row.last_watched_at:%Y-%m-%d %H:%M}",
        ]
        for row in answer.items
    ]
    out.print(fitted_table(columns, rows))


@app.command()
def similar(
    item_id: Annotated[str, typer.Option("--item-id", "--item_id", help="The item, e.g. i1.")],
    k: K = 10,
    format: FORMAT = None,
    as_json: JSON = False,
) -> None:
    """Items most similar to one item (the model's item-item similarity), with their support.

    Example: python cli.py similar --item_id i1 --k 5
    """
    shape = chosen_format(format, as_json)
    with reported_errors():
        answer = open_recommender().similar(item_id, k)
    items = answer.items
    if printed_as_data(shape, answer.to_dict(), PICK_COLUMNS + ["support"], [item.to_dict() for item in items]):
        return
    if not items:
        out.print(f"No item shares a viewer with {item_id}.")
        return
    out.print(f"Items similar to {item_id}:")
    columns = [("#", "right"), ("item_id", "left"), ("title", "left"), ("type", "left"), ("genre", "left"),
               ("similarity", "right"), ("support", "right")]
    rows = [
        [str(item.rank), item.item_id, item.title, item.content_type, item.genre, f"{item.score:.3f}", str(item.support)]
        for item in items
    ]
    out.print(fitted_table(columns, rows))


@app.command()
def evaluate(
    split: Annotated[
        Split, typer.Option("--split", help="global: test = the latest events of all; user: each user's latest.")
    ] = Split.global_,
    test_frac: Annotated[
        float, typer.Option("--test-frac", "--test_frac", min=0.01, max=0.99, help="Share of events held out.")
    ] = 0.2,
    k: K = 10,
    format: FORMAT = None,
    as_json: JSON = False,
) -> None:
    """Measure recommendation quality offline: hide the latest events, predict them.

    The model is built from the training events in a temporary database
    (recs.db is not touched) and compared at k with most-popular and the
    most watched over the training part's last 7 and 30 days.

    Example: python cli.py evaluate --split user --k 10
    """
    shape = chosen_format(format, as_json)
    split = split.value
    with reported_errors(), build_display() as progress:
        results = engine.evaluate(
            config.data_dir(state.data_dir), split, test_frac, k, progress=progress, input_format=state.input_format
        )
    rows = [vars(r) for r in results]
    payload = {"split": split, "test_frac": test_frac, "k": k, "results": rows}
    if printed_as_data(shape, payload, [spec.name for spec in dataclass_fields(Scores)], rows):
        return
    users = results[0].users if results else 0
    columns = [("model", "left")] + [
        (name, "right") for name in (f"NDCG@{k}", f"Recall@{k}", f"HR@{k}", f"coverage@{k}", "fit s")
    ]
    figures = [
        [
            r.model,
            f"{r.ndcg:.4f}±{r.ndcg_se:.4f}",
            f"{r.recall:.4f}±{r.recall_se:.4f}",
            f"{r.hit_rate:.3f}±{r.hit_rate_se:.3f}",
            f"{r.coverage:.1%}",
            f"{r.fit_seconds:.2f}",
        ]
        for r in results
    ]
    out.print(f"{split} split, test fraction {test_frac}, {users:,} users evaluated:")
    out.print(fitted_table(columns, figures))  # a narrow terminal cuts the model's name, never a figure


@app.command()
def export(
    output: Annotated[
        Path,
        typer.Option(
            "--out", help="File to write; its suffix names the format (.csv, .tsv, .json, .jsonl, .parquet); - for stdout."
        ),
    ],
    k: K = 20,
    users: Annotated[
        Optional[Path], typer.Option("--users", show_default="every user", help="File of user ids, one per line.")
    ] = None,
    format: Annotated[
        Optional[str],
        typer.Option(
            "--format", show_default="the --out suffix; csv for -",
            help="csv, tsv, json (one document), jsonl (one object per line) or parquet.",
        ),
    ] = None,
) -> None:
    """Write the top k for every user (or a list of users) to CSV, TSV, JSON, JSON lines or Parquet.

    Columns: user_id, rank, item_id, title, score, source, reason. Users come
    in the order of the --users file, else by user_id; each user's rows by rank.

    Example: python cli.py export --k 20 --out recs.csv
    """
    to_stdout = str(output) == "-"
    try:  # a format we cannot write is a usage mistake: exit 2, before any work
        shape = engine.export_format(output, format or ("csv" if to_stdout else None))
    except engine.BadArgument as error:
        raise typer.BadParameter(str(error), param_hint="--out / --format") from None
    with reported_errors():
        user_ids = read_user_list(users) if users else None
        recommender = open_recommender()
        if to_stdout:  # for a pipe; the summary goes to stderr
            with tempfile.TemporaryDirectory(prefix="recs-export-") as scratch:
                written = Path(scratch) / f"recs.{shape}"
                rows = recommender.export(written, k, user_ids, shape)
                sys.stdout.flush()
                with written.open("rb") as handle:
                    shutil.copyfileobj(handle, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            err.print(f"Wrote {rows:,} rows to stdout.")
            return
        with err.status(f"writing {output} ..."):
            rows = recommender.export(output, k, user_ids, shape)
    out.print(f"Wrote {rows:,} rows to {output}.")


def read_user_list(path: Path) -> list[str]:
    """User ids from a file, one per line; blank lines and repeats are skipped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise engine.BadArgument(f"cannot read the user list {path}: {error}") from None
    return list(dict.fromkeys(line.strip() for line in lines if line.strip()))


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 127.0.0.1 = this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Turn POST /events off (needed beyond loopback without RECS_API_TOKEN).")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Server processes, each with its own copy of the model in memory.")
    ] = 1,
    log_level: Annotated[
        str, typer.Option("--log-level", help="info logs one line per request: method, path, status, ms.")
    ] = "warning",
    serving: Annotated[
        str, typer.Option("--serving", envvar="RECS_SERVING", help="index: answer from memory arrays; sql: from the SQL macros.")
    ] = "index",
) -> None:
    """Serve the JSON web API (docs at /docs), building recs.db first if needed.

    POST /events is open on loopback; on any other address it needs
    RECS_API_TOKEN set (clients send Authorization: Bearer <token>), or --read-only.

    Example: python cli.py serve --port 8000
    """
    import api  # FastAPI and uvicorn are needed by this command only

    with reported_errors():
        if serving not in ("index", "sql"):
            raise engine.BadArgument(f"--serving must be index or sql, not {serving!r}")
        if log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise engine.BadArgument(f"--log-level must be one of critical, error, warning, info, debug, not {log_level!r}")
        api.check_writes_allowed(host, writes=not read_only)  # before a build that could take minutes
        recommender = open_recommender()  # builds recs.db when missing or stale, with the usual progress
        recommender.fast = serving == "index"
        api.serve(recommender, host, port, log_level=log_level.lower(), writes=not read_only, workers=workers)


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="A CSV with the columns of events.csv.", show_default=False)],
    as_json: JSON_ONLY = False,
) -> None:
    """Append a file of watch events to the live log: they count at once, and in the next build.

    Rows are checked as events.csv is: bad rows are reported with their line
    and skipped, good rows are kept (written and fsynced before this returns).

    Example: python cli.py ingest new-events.csv
    """
    with reported_errors():
        report = open_recommender().ingest(file)
    if as_json:
        print_json({"accepted": report.accepted, "issues": report.issues})
        return
    out.print(f"Accepted {report.accepted:,} events from {file}.")
    if not report.issues:
        return
    table = Table(title=f"{len(report.issues):,} rows skipped")
    for column in ("line", "column", "problem"):
        table.add_column(column, justify="right" if column == "line" else "left")
    for issue in report.issues[:20]:
        table.add_row(str(issue["line"]), issue["column_name"] or "", issue["problem"])
    out.print(table)
    if len(report.issues) > 20:
        out.print(f"... and {len(report.issues) - 20:,} more (--json lists them all).")


PARAM = Annotated[
    Optional[list[str]],
    typer.Option(
        "--param", help="Pin a model parameter, NAME=VALUE (repeatable); pinned builds do not tune."
    ),
]
NO_TUNE = Annotated[
    bool, typer.Option("--no-tune", help="Do not tune: reuse the last tuned parameters, else the defaults.")
]
FORCE = Annotated[
    bool,
    typer.Option(
        "--force", help="Build even when recs.db is current, and replace the --db file even if this app did not build it."
    ),
]
REBUILD = Annotated[
    bool,
    typer.Option(
        "--rebuild", help="Build even when recs.db is current (same data, SQL, settings and parameters); "
        "unlike --force, a --db file this app did not build is still refused.",
    ),
]
RETUNE = Annotated[
    bool, typer.Option("--retune", help="Tune afresh, even when parameters tuned before still apply.")
]
TUNE_SAMPLE = Annotated[
    Optional[int],
    typer.Option(
        "--tune-sample", envvar="RECS_TUNE_SAMPLE", min=0, show_default="100,000 above 500,000 events, else all",
        help="Tune on a sample of users holding about this many events when there are more (0: never sample); "
        "the model is then built on all events. Also tune_sample in recs.toml.",
    ),
]


ENGINE = Annotated[
    str,
    typer.Option(
        "--engine", envvar="RECS_ENGINE",
        help="Where the model is computed: duckdb (this process) or spark (the same SQL on Spark; "
        "pip install -r requirements-spark.txt). Serving is DuckDB either way.",
    ),
]
SPARK_MASTER = Annotated[
    Optional[str],
    typer.Option(
        "--spark-master", envvar="RECS_SPARK_MASTER", show_default="local[*]",
        help="Spark master URL for --engine spark, e.g. local[2], spark://host:7077, yarn.",
    ),
]
MODEL_OUT = Annotated[
    Optional[str],
    typer.Option(
        "--model-out", help="With --engine spark: keep the Parquet model in this folder (new, empty or an earlier model)."
    ),
]
FROM_MODEL = Annotated[
    Optional[Path],
    typer.Option("--from-model", help="Assemble recs.db from a Parquet model folder (no CSVs read, no Spark needed)."),
]


@app.command()
def build(
    param: PARAM = None,
    no_tune: NO_TUNE = False,
    force: FORCE = False,
    rebuild: REBUILD = False,
    retune: RETUNE = False,
    tune_sample: TUNE_SAMPLE = None,
    engine_name: ENGINE = "duckdb",
    spark_master: SPARK_MASTER = None,
    model_out: MODEL_OUT = None,
    from_model: FROM_MODEL = None,
) -> None:
    """(Re)build recs.db from the CSVs and summarise what was loaded and reported.

    Without --param the build chooses the model's parameters itself: it tunes
    them on validation splits of the data (above 500,000 events on a sample of
    users, --tune-sample), or reuses those it tuned before when the data is the
    same or changed by at most 5% ('recs params' says which applies). A build
    on unchanged data, settings and parameters, with no live events waiting,
    says the model is current and stops (--rebuild builds anyway). A Spark
    build ships the parameters a DuckDB build would choose (tuned on the
    driver, by the same rule), then builds the full model on Spark.

    Example: python cli.py --data-dir data build
    Example: python cli.py build --tune-sample 20000 --retune
    Example: python cli.py build --engine spark --spark-master local[2] --model-out model/
    Example: python cli.py build --from-model model/
    """
    engine_name = engine_name.strip().lower()
    if engine_name not in ("duckdb", "spark"):
        raise typer.BadParameter(f"must be duckdb or spark, not {engine_name!r}", param_hint="--engine")
    if engine_name != "spark" and (spark_master or model_out):
        raise typer.BadParameter("--spark-master and --model-out go with --engine spark", param_hint="--engine")
    if no_tune and retune:
        raise typer.BadParameter("--no-tune and --retune contradict each other", param_hint="--retune")
    if from_model is not None and (engine_name == "spark" or param):
        raise typer.BadParameter(
            "--from-model takes the model's own engine and parameters", param_hint="--from-model"
        )
    with reported_errors():
        params = engine.ModelParams.from_assignments(param, start=state.params) if param else state.params
        db = config.db_path(state.db)
        tuning = {"tune": False if no_tune else True if retune else None, "tune_sample": chosen_tune_sample(tune_sample)}
        with build_display() as progress:
            if from_model is not None:
                from engine import spark

                report = spark.build_from_model(db, from_model, progress, force=force)
            elif engine_name == "spark" and model_out and "://" in model_out and not model_out.startswith("file://"):
                manifest = spark_model_only(params, progress, spark_master, model_out, tuning)
                out.print(
                    f"Wrote the model to {model_out} in {manifest.seconds:.1f} s ({len(manifest.tables)} tables, "
                    f"parameters {manifest.params_source}); serving machines copy it and run "
                    "'python cli.py build --from-model DIR'.",
                    soft_wrap=True,
                )
                return
            elif engine_name == "spark":
                report = spark_build(db, params, progress, spark_master, model_out, force, tuning)
            else:
                report = engine.build(
                    db, config.data_dir(state.data_dir), params, progress, force=force,
                    input_format=state.input_format, rebuild=rebuild, **tuning,
                )
    if report.current:
        built = built_state(db)
        out.print(
            f"{db} is current: built at {built.built_at if built else '?'} from the same data, SQL, settings and "
            "parameters, with no live events waiting; nothing to do (--rebuild builds anyway).",
            soft_wrap=True,
        )
        print_params(report)
        return
    out.print(f"Built {db} in {report.seconds:.1f} s.")
    print_moved_aside(report, out)
    print_params(report)
    table = Table(title="Loaded")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in report.rows.items():
        table.add_row(name, f"{count:,}")
    out.print(table)
    if report.events_of_unlisted_users and report.rows.get("users"):  # no users file: every user is so
        out.print(
            f"{report.events_of_unlisted_users:,} events are from users not in users.csv "
            "(kept: they are known by what they watched)."
        )
    if not report.issues_by_problem:
        out.print("No load issues: every row was loaded.")
        return
    table = Table(title="Load issues (query the load_issues table for each row)")
    for column in ("file", "problem", "rows"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for file, problem, count in report.issues_by_problem:
        table.add_row(file, problem, f"{count:,}")
    out.print(table)
    with reported_errors():
        first = engine.Recommender(db, auto_build=False).load_issues(limit=10)
    table = Table(title=f"First {len(first)} of {sum(report.issues_by_file.values()):,} issues")
    for column in ("file", "line", "column", "problem", "action"):
        table.add_column(column, justify="right" if column == "line" else "left")
    for issue in first:
        line = "-" if issue["line"] is None else str(issue["line"])  # Spark builds number no lines
        table.add_row(issue["file"], line, issue["column_name"] or "", issue["problem"], issue["action"])
    out.print(table)


def chosen_tune_sample(flag: Optional[int]) -> Optional[int]:
    """--tune-sample, else the tune_sample setting (RECS_TUNE_SAMPLE, else the settings file), else
    None (the default rule)."""
    if flag is not None:
        return flag
    value = state.settings.get("tune_sample")
    return None if value is None or value.value is None else int(value.value)


def need_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise engine.BuildError(
            "--engine spark needs pyspark: pip install -r requirements-spark.txt (and Java 17 or later)"
        ) from None


def spark_model_only(params, progress, master, model_out, tuning: dict):
    """build --engine spark --model-out URL (a cluster file system): the Parquet model only; no recs.db here.
    The parameters are chosen as a DuckDB build would choose them (tuned here, on the driver)."""
    from engine import spark
    from engine.build import chosen_params

    need_pyspark()
    folder = config.data_dir(state.data_dir)
    chosen, source, tuned = chosen_params(None, folder, params, input_format=state.input_format, progress=progress, **tuning)
    return spark.write_model(
        folder, model_out, chosen, source, master or spark.default_master(), progress, state.input_format, tuned
    )


def spark_build(db, params, progress, master, model_out, force, tuning: dict) -> engine.BuildReport:
    """build --engine spark: the model on Spark, recs.db assembled from its Parquet."""
    from engine import spark

    need_pyspark()
    return spark.build_with_spark(
        db, config.data_dir(state.data_dir), params, progress,
        master=master or spark.default_master(), model_out=model_out, force=force, input_format=state.input_format,
        **tuning,
    )


def shown(value: float | None) -> str:
    """A score to 4 places, or '-' for a split that was not scored."""
    return "-" if value is None else f"{value:.4f}"


def print_params(report: engine.BuildReport) -> None:
    """Which parameters the build used, why, and those that differ from the defaults."""
    tuning = report.tuning
    line = f"Model parameters: {report.params_source}"
    if tuning is not None and tuning.trials:
        first, best = tuning.trials[0], tuning.best
        line += (
            f" ({len(tuning.trials)} trials in {tuning.seconds:.1f} s; validation NDCG@10 "
            f"{first.ndcg:.4f} with the defaults, {best.ndcg:.4f} chosen)"
        )
    out.print(line + ".")
    changed = engine.ModelParams().changes_to(report.params)
    if changed:
        out.print("Differs from the defaults: " + ", ".join(f"{name}={value}" for name, value in changed.items()))


@app.command()
def tune(tune_sample: TUNE_SAMPLE = None, as_json: JSON_ONLY = False) -> None:
    """Tune the model's parameters on this data, build recs.db with them, and show every trial.

    Validation splits are carved from the events (the latest 10% at three
    cut points; each user's latest 10% when none has 50 users); a fixed plan
    tries one parameter at a time and keeps what raises NDCG@10. Always a
    fresh search (as 'build --retune'); above 500,000 events, or with
    --tune-sample, on a sample of users. The trials are stored in recs.db as
    tuning_trials.

    Example: python cli.py tune --tune-sample 20000
    """
    with reported_errors():
        db = config.db_path(state.db)
        with build_display() as progress:
            report = engine.build(
                db, config.data_dir(state.data_dir), None, progress, tune=True, input_format=state.input_format,
                tune_sample=chosen_tune_sample(tune_sample),
            )
    trials = report.tuning.trials if report.tuning else []
    if as_json:
        print_json({
            "params_source": report.params_source,
            "params": report.params.as_dict(),
            "trials": [vars(trial) for trial in trials],
        })
        return
    out.print(f"Built {db} in {report.seconds:.1f} s.")
    print_params(report)
    if not trials:
        return
    table = Table(title="Trials: NDCG@10 on the validation splits and their mean; * = kept as the best so far")
    for column in ("#", "tried", "mean", "global", "user", "cover", "s", ""):
        table.add_column(column, justify="left" if column in ("tried", "") else "right")
    for trial in trials:
        table.add_row(
            str(trial.number), ", ".join(f"{k}={v}" for k, v in trial.changes.items()) or "(defaults)",
            f"{trial.ndcg:.4f}", *(shown(trial.ndcg_by_split.get(split)) for split in ("global", "user")),
            f"{trial.coverage:.0%}", f"{trial.seconds:.1f}", "*" if trial.kept else "",
        )
    out.print(table)


@app.command()
def params(param: PARAM = None, format: FORMAT = None, as_json: JSON = False) -> None:
    """The effective settings and model parameters, and where each came from.

    Each comes from a flag, the environment, the settings file (--config,
    $RECS_CONFIG or ./recs.toml) or its default; a model parameter nothing
    pins shows what recs.db was built with (tuned, say). --param shows what
    a build with those pins would use.

    Example: recs --config recs.toml params --param max_neighbors=30
    """
    shape = chosen_format(format, as_json)
    with reported_errors():
        built = built_state(config.db_path(state.db))
        pinned, model = settings.model_settings(
            state.config.value, param, (built.params, built.params_source) if built else None
        )
    config_value = None if state.config.value is None else str(state.config.value)
    rows = [{"name": "config", "value": config_value, "source": state.config.source}]
    rows += [{"name": name, "value": setting.value, "source": setting.source} for name, setting in state.settings.items()]
    rows += [{"name": name, "value": setting.value, "source": setting.source} for name, setting in model.items()]
    plan = {"name": "tuning", "value": tuning_plan(pinned), "source": "recs.db and the data"}
    payload = {row["name"]: {"value": row["value"], "source": row["source"]} for row in rows + [plan]}
    if printed_as_data(shape, payload, ["name", "value", "source"], rows + [plan]):
        return
    out.print(fitted_table(
        [("name", "left"), ("value", "left"), ("source", "left")],
        [[row["name"], "" if row["value"] is None else str(row["value"]), row["source"]] for row in rows],
    ))
    out.print(f"The next build's tuning: {plan['value']}.", soft_wrap=True)  # a sentence: too long for a cell


def tuning_plan(pinned: Optional[engine.ModelParams]) -> str:
    """What the next 'build' does about the parameters, in words (engine.build.next_tuning)."""
    from engine.build import next_tuning

    return next_tuning(
        config.db_path(state.db), config.data_dir(state.data_dir), pinned, state.input_format, chosen_tune_sample(None)
    )


live_app = typer.Typer(help="The live event log beside recs.db: check it, repair it.", no_args_is_help=True)
app.add_typer(live_app, name="live")


def live_log() -> eventlog.EventLog:
    """The live log of the chosen recs.db (opened without the model: it may be what is damaged)."""
    return eventlog.EventLog(eventlog.log_path(config.db_path(state.db)))


@live_app.command("check")
def live_check(as_json: JSON_ONLY = False) -> None:
    """Check every record of the live log and its committed length; exit 1 when anything is damaged.

    Changes nothing. Bytes past the committed length are a write that was never
    acknowledged (a crash mid-append): shown, not a problem.

    Example: python cli.py live check
    """
    report = live_log().check()
    if as_json:
        print_json(report.to_dict())
    else:
        committed = "missing" if report.committed is None else f"{report.committed:,} bytes"
        out.print(
            f"{report.path}: {report.records:,} accepted batches, {report.events:,} events, "
            f"{report.size:,} bytes (committed: {committed}; never acknowledged: {report.unacknowledged_bytes:,} bytes)"
            if report.exists else f"{report.path}: no live log (no events accepted since the build)",
            soft_wrap=True,
        )
        for problem in report.problems:
            err.print(f"Damaged: {problem}", soft_wrap=True)
        if not report.ok:
            err.print("Run 'python cli.py live repair' to set the damage aside (nothing is deleted).", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@live_app.command("repair")
def live_repair(as_json: JSON_ONLY = False) -> None:
    """Make a damaged live log readable again, keeping every record that checks out.

    Damaged records are blanked in place and a cut-short tail is removed; every
    byte taken out is first kept in <log>.damaged. An earlier version's CSV log
    is converted.

    Example: python cli.py live repair
    """
    log = live_log()
    with reported_errors():
        done = log.repair()
    report = log.check()
    if as_json:
        print_json({"done": done, **report.to_dict()})
    else:
        for line in done or ["nothing to repair"]:
            out.print(line, soft_wrap=True)
        out.print(f"{report.path}: {report.records:,} accepted batches, {report.events:,} events", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def run() -> None:
    """The `recs` command (pyproject.toml) and `python cli.py`."""
    # DuckDB imports pandas at the first parameterised query when it is
    # installed, which costs a one-shot command about a quarter of a second;
    # nothing here uses pandas, so this process tells Python it is absent.
    # Only here: a process that imports cli (a test run) keeps its pandas.
    sys.modules.setdefault("pandas", None)
    app()


if __name__ == "__main__":
    run()
