"""Reading the three CSVs into staging tables, and reporting every bad row.

DuckDB's sniffer is not trusted: one ragged row makes read_csv_auto read a
whole file as a single text column, and a reordered header is mapped by
position. So each header is checked by name here, every column is staged as
text with an explicit dialect (ragged rows go to DuckDB's rejects table),
and sql/10-12 validate and cast in SQL. Problems are first recorded by
record number; finish_issues() then gives each its line in the file.

What real exports look like is handled here, before the staging SQL: a file
may be gzipped (users.csv.gz), its delimiter is read from its header line
(, ; tab or |) unless InputFormat forces one, and a file in another encoding
than UTF-8 is copied as UTF-8 first, line for line, so that the staging SQL
and its line numbers stay the same whatever the file looked like.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import os
import tempfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb

from .errors import BadArgument, DataFileError

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
"""The delimiters a header line is tried with, most usual first."""


def _pairs(value, what: str) -> tuple:
    """A mapping given as a dict, or as pairs (what JSON makes of a tuple), as sorted pairs."""
    if isinstance(value, dict):
        value = value.items()
    try:
        pairs = tuple((str(key), val) for key, val in value)
    except (TypeError, ValueError):
        raise BadArgument(f"{what} must be a table of names, not {value!r}") from None
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class InputFormat:
    """How the input files are written and named.

    delimiter None = read from each header line; encoding: one Python knows
    (UTF-8 by default), for every file unless encodings names one for it; a
    byte order mark at the start of a file decides its encoding whatever is set.
    files: (table, file name) pairs, e.g. ("events", "ratings.csv"): the file
    a table is read from, relative to the data folder (default <table>.csv,
    or .csv.gz). columns: (table, ((our name, the file's name), ...)) pairs:
    the export's column read as ours. Dicts are accepted for each mapping.
    """

    delimiter: str | None = None
    encoding: str = "utf-8"
    files: tuple = ()
    columns: tuple = ()
    encodings: tuple = ()

    def __post_init__(self) -> None:
        delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(
            self.delimiter, self.delimiter
        )
        if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
            raise BadArgument(
                f"the delimiter must be one character such as , ; | or tab, not {self.delimiter!r}"
            )
        object.__setattr__(self, "delimiter", delimiter)
        object.__setattr__(self, "encoding", _encoding_name(self.encoding))
        files = _pairs(self.files, "files")
        encodings = tuple((table, _encoding_name(name)) for table, name in _pairs(self.encodings, "encodings"))
        columns = tuple((table, _pairs(names, f"columns.{table}")) for table, names in _pairs(self.columns, "columns"))
        for what, pairs in (("files", files), ("encodings", encodings), ("columns", columns)):
            for table, _ in pairs:
                if table not in SPEC_OF:
                    raise BadArgument(f"{what}: unknown file {table!r}; known: {', '.join(SPEC_OF)}")
        for table, name in files:
            if not isinstance(name, str) or not name.strip() or Path(name).is_absolute():
                raise BadArgument(f"files.{table} must be a file name in the data folder, not {name!r}")
        for table, names in columns:
            spec = SPEC_OF[table]
            for ours, theirs in names:
                if ours not in spec.columns:
                    raise BadArgument(
                        f"columns.{table}: {ours!r} is not a column of ours; known: {', '.join(spec.columns)}"
                    )
                if not isinstance(theirs, str) or not theirs.strip():
                    raise BadArgument(f"columns.{table}.{ours} must be the export's column name, not {theirs!r}")
            sources = [theirs.strip().lower() for _, theirs in names]
            if len(set(sources)) < len(sources):
                raise BadArgument(f"columns.{table}: one column of the file is named for two of ours")
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "encodings", encodings)
        object.__setattr__(self, "columns", columns)

    @classmethod
    def from_env(cls) -> "InputFormat":
        """The format from $RECS_DELIMITER and $RECS_ENCODING, else the defaults."""
        return cls(os.environ.get("RECS_DELIMITER") or None, os.environ.get("RECS_ENCODING") or "utf-8")

    @classmethod
    def chosen(cls, input_format: "InputFormat | None") -> "InputFormat":
        """input_format, else the one the environment sets (from_env)."""
        return input_format if input_format is not None else cls.from_env()

    @property
    def is_utf8(self) -> bool:
        return self.encoding == "utf-8"

    def file_name(self, spec: "CsvSpec") -> str:
        """The name of the file spec's table is read from."""
        return dict(self.files).get(spec.table, spec.file)

    def column_map(self, spec: "CsvSpec") -> dict[str, str]:
        """our column name -> the file's (lower case), for each column the settings map."""
        return {ours: theirs.strip().lower() for ours, theirs in dict(self.columns).get(spec.table, ())}

    def for_file(self, spec: "CsvSpec", path: Path) -> "InputFormat":
        """This format with the one file's encoding: its byte order mark's, else its own setting's, else the common one."""
        marked = bom_encoding(path)
        return dataclasses.replace(self, encoding=marked or dict(self.encodings).get(spec.table, self.encoding))


def _encoding_name(name) -> str:
    try:
        return codecs.lookup(name).name
    except (LookupError, TypeError):
        raise BadArgument(f"unknown encoding {name!r}; e.g. utf-8, cp1252, latin-1") from None


BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def bom_encoding(path: Path) -> str | None:
    """The encoding a byte order mark at the start of path says (UTF-8 or UTF-16), else None."""
    try:
        with open_bytes(path) as handle:
            start = handle.read(4)
    except (OSError, EOFError):
        return None  # read_header reports the file
    return next((_encoding_name(name) for mark, name in BOMS if start.startswith(mark)), None)


@dataclass(frozen=True)
class CsvSpec:
    """One input file: its default name, its staging table, its columns, which of them a file
    must have (the others are read as blank when it has none) and the value of an absent one
    when not blank."""

    file: str
    table: str
    columns: tuple[str, ...]
    required: tuple[str, ...] | None = None
    """None: every column."""
    defaults: tuple[tuple[str, str], ...] = ()
    optional_file: bool = False
    """True: a data folder without the file is read as one with no rows (users.csv)."""

    @property
    def needed(self) -> tuple[str, ...]:
        return self.columns if self.required is None else self.required


SPECS = (
    CsvSpec("users.csv", "users", ("user_id", "age", "gender", "region"), ("user_id",), optional_file=True),
    CsvSpec("items.csv", "items", ("item_id", "title", "content_type", "genre"), ("item_id",)),
    CsvSpec(
        "events.csv", "events", ("user_id", "item_id", "event_type", "watch_seconds", "timestamp"),
        ("user_id", "item_id", "watch_seconds", "timestamp"), (("event_type", "play"),),
    ),
)
SPEC_OF = {spec.table: spec for spec in SPECS}

# The dialect every file is read with; nothing is guessed (the delimiter is bound as $delim).
DIALECT = "auto_detect = false, header = true, delim = $delim, quote = '\"', escape = '\"'"


class DataFolderMissing(DataFileError):
    """The data folder does not exist."""


@dataclass(frozen=True)
class Source:
    """One input as found in a data folder."""

    spec: CsvSpec
    path: Path | None
    """None: the folder has no such file and may do without (users)."""

    @property
    def name(self) -> str:
        """What load issues call the file: its name, without .gz."""
        return self.path.name.removesuffix(".gz") if self.path is not None else self.spec.file


def sources(folder: Path, input_format: InputFormat | None = None) -> list[Source]:
    """The three inputs of folder in SPECS order, each name.csv or name.csv.gz (or the name
    input_format gives it), after checking the folder and each file a build needs exist."""
    input_format = InputFormat.chosen(input_format)
    if not folder.is_dir():
        raise DataFolderMissing(f"data folder not found: {folder}")
    found_sources = []
    for spec in SPECS:
        name = input_format.file_name(spec)
        named = name != spec.file
        plain = folder / name
        candidates = [plain] if name.endswith(".gz") else [plain, folder / f"{name}.gz"]
        found = [path for path in candidates if path.is_file()]
        if not found:
            if spec.optional_file and not named:
                found_sources.append(Source(spec, None))
                continue
            also = f" (nor {candidates[1].name})" if len(candidates) > 1 else ""
            setting = f", named by files.{spec.table} in the settings" if named else ""
            raise DataFileError(f"{name} not found in {folder}{also}{setting}")
        if len(found) == 2:
            raise DataFileError(f"both {found[0].name} and {found[1].name} are in {folder}: keep one of them")
        found_sources.append(Source(spec, found[0]))
    return found_sources


def data_files(folder: Path, input_format: InputFormat | None = None) -> list[Path]:
    """The input files there are in folder (see sources)."""
    return [source.path for source in sources(folder, input_format) if source.path is not None]


def open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, uncompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def read_header(path: Path, spec: CsvSpec, input_format: InputFormat | None = None) -> tuple[list[str], str]:
    """The file's column names in file order (trimmed, lower case), checked by name against the
    spec and input_format's column map, and its delimiter (input_format's, else the one of
    DELIMITERS that splits the header into the most expected names). Columns of the file that
    nothing reads are not refused: see unused_columns."""
    input_format = input_format or InputFormat()
    wanted = expected_names(spec, input_format)
    try:
        with open_bytes(path) as handle:
            # UTF-16 has two bytes a character: its first line is found in the decoded text
            line = handle.read(1 << 16) if input_format.encoding == "utf-16" else handle.readline()
            empty = not line and not handle.read(1)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path}: cannot be read: {error}") from None
    if empty:
        raise DataFileError(
            f"{path}: the file is empty (0 bytes); it needs at least the header line "
            f"{','.join(wanted[name] for name in spec.columns)}"
        )
    encoding = "utf-8-sig" if input_format.is_utf8 else input_format.encoding
    try:
        decoded = codecs.getincrementaldecoder(encoding)().decode(line)
        text = decoded.splitlines()[0] if decoded.strip() else ""
    except UnicodeDecodeError:
        raise DataFileError(
            f"{path}, line 1: the header is not {input_format.encoding} text (set the encoding)"
        ) from None
    text = text.lstrip("\ufeff")
    delimiter = input_format.delimiter or _sniffed_delimiter(text, set(wanted.values()))
    first = next(csv.reader([text], delimiter=delimiter), [])
    names = [name.strip().lower() for name in first]
    if not any(names):
        raise DataFileError(f"{path}, line 1: no header; expected {_expected(spec, wanted)}")
    mapped = input_format.column_map(spec)
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    missing = [
        wanted[name] if name not in mapped else f"{wanted[name]} (read as {name})"
        for name in spec.columns
        if wanted[name] not in names and (name in spec.needed or name in mapped)
    ]
    problems = []
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    if repeated:
        problems.append("repeated column(s) " + ", ".join(repeated))
    if problems:
        shown = "tab" if delimiter == "\t" else repr(delimiter)
        how = (  # said when it may be the cause: a delimiter forced, or read as another than a comma
            f", read with the delimiter {shown}; the delimiter setting sets another"
            if input_format.delimiter or delimiter != "," else ""
        )
        hint = "" if mapped else f"; an export's own names are mapped in the settings' [columns.{spec.table}]"
        raise DataFileError(
            f"{path}, line 1: {'; '.join(problems)} (expected {_expected(spec, wanted)}{how}{hint})"
        )
    return names, delimiter


def expected_names(spec: CsvSpec, input_format: InputFormat) -> dict[str, str]:
    """our column name -> the name the file's header has for it (lower case)."""
    mapped = input_format.column_map(spec)
    return {name: mapped.get(name, name) for name in spec.columns}


def _expected(spec: CsvSpec, wanted: dict[str, str]) -> str:
    optional = [wanted[name] for name in spec.columns if name not in spec.needed]
    needed = ",".join(wanted[name] for name in spec.needed)
    return needed + (f"; optional: {','.join(optional)}" if optional else "")


def column_sources(header: list[str], spec: CsvSpec, input_format: InputFormat) -> dict[str, str | None]:
    """our column name -> the file's column it is read from, None for one the file has not."""
    wanted = expected_names(spec, input_format)
    return {name: wanted[name] if wanted[name] in header else None for name in spec.columns}


def absent_columns(header: list[str], spec: CsvSpec, input_format: InputFormat) -> list[str]:
    """Our columns the file has not (optional ones: read as their default or blank)."""
    return [name for name, source in column_sources(header, spec, input_format).items() if source is None]


def unused_columns(header: list[str], spec: CsvSpec, input_format: InputFormat) -> list[str]:
    """The file's columns nothing reads (reported, then left out)."""
    used = set(expected_names(spec, input_format).values())
    return [name for name in header if name not in used]


def select_list(
    header: list[str], spec: CsvSpec, input_format: InputFormat, quote: str = '"', text_type: str = "varchar"
) -> str:
    """The staging view's columns: each of ours from the file's column (quote: the engine's
    identifier quote), its default or a blank (text_type: the engine's text type) when the file has none."""
    defaults = dict(spec.defaults)
    parts = []
    for name, source in column_sources(header, spec, input_format).items():
        if source is not None:
            parts.append(f"{quote}{source.replace(quote, quote * 2)}{quote} as {name}")
        elif name in defaults:
            parts.append(f"'{defaults[name]}' as {name}")
        else:
            parts.append(f"cast(null as {text_type}) as {name}")
    return ", ".join(parts)


def _sniffed_delimiter(header: str, expected: set[str]) -> str:
    """The delimiter of DELIMITERS that splits the header line into the most expected column names
    (the first of DELIMITERS on a tie): a header is all the sniffing done."""
    def matches(delimiter: str) -> int:
        names = next(csv.reader([header], delimiter=delimiter), [])
        return len({name.strip().lower() for name in names} & expected)

    return max(DELIMITERS, key=matches)  # max keeps the first of equals


def stage(
    con: duckdb.DuckDBPyConnection, path: Path, spec: CsvSpec, scratch: Path, input_format: InputFormat | None = None,
    name: str | None = None,
) -> Path:
    """Read one file as text into raw_<table>, with our column names; rows of the wrong shape,
    and columns nothing reads, become load issues of the file called name (default: its own).

    Returns the path actually read: a UTF-8 copy in scratch when the file is
    in another encoding, or when it mixes CRLF and LF lines, which DuckDB's
    reader cannot parse (line numbers stay the same either way).
    """
    input_format = (input_format or InputFormat()).for_file(spec, path)
    name = name or path.name.removesuffix(".gz")
    header, delimiter = read_header(path, spec, input_format)
    columns = {column: "VARCHAR" for column in header}  # file order: mapped by name, not position
    if not input_format.is_utf8:
        path = as_utf8(path, scratch / spec.file, input_format.encoding)
    try:
        _read_raw(con, path, spec, columns, delimiter)
    except duckdb.InvalidInputException as error:
        if not mixes_line_endings(path):
            first = str(error).splitlines()[0]
            raise DataFileError(f"{path}: cannot be read as CSV: {first}") from None
        path = with_lf_endings(path, scratch / f"lf-{spec.file}")
        _read_raw(con, path, spec, columns, delimiter)
    if con.execute(f"select count(*) from rejects_{spec.table}").fetchone()[0]:
        # DuckDB's reader lets a stray quote swallow every line after it (or up to the next stray
        # one) into one rejected record, unreported: in a file with rejects, a quote still open
        # after MAX_RECORD_LINES lines is a stray one; its line alone is reported, blanked in a
        # copy, and the copy is read again. (A file without rejects is read as it is.)
        path = _without_unclosed_quotes(con, path, spec, delimiter, scratch, name)
        _read_raw(con, path, spec, columns, delimiter)
    _skip_repeated_headers(con, spec, list(columns), name)
    # rowid follows the file's order: it is the record number the checks report. A view takes no
    # bound parameters: the file name is a quoted literal.
    con.execute(
        f"""
        create temp view raw_{spec.table} as
        select '{name.replace("'", "''")}' as file, rowid as rec_no, {select_list(header, spec, input_format)}
        from raw_{spec.table}_rows
        where rowid not in (select rec_no from header_lines_{spec.table})
        """
    )
    con.execute(
        f"""
        insert into load_issue_records (file, csv_line, column_name, problem, action)
        select
            $file,
            line,
            null,
            case
                when any_value(error_type) in ('MISSING COLUMNS', 'TOO MANY COLUMNS')
                    then 'the row has ' || min(regexp_extract(error_message, 'Found: ([0-9]+)', 1))
                        || ' fields, expected {len(header)}'
                when any_value(error_type) in ('INVALID UNICODE', 'INVALID ENCODING')
                    then 'the row is not valid ' || $encoding || ' text'
                when any_value(error_type) = 'UNQUOTED VALUE' then 'a quote in the row is not closed or not escaped'
                else lower(any_value(error_type)) || ': ' || any_value(error_message)
            end,
            'row skipped'
        from rejects_{spec.table}
        group by line
        """,
        {"file": name, "encoding": "UTF-8" if input_format.is_utf8 else input_format.encoding},
    )
    notes = header_notes(header, spec, input_format)
    if notes:
        # said once, on the header's line
        con.execute(
            """
            insert into load_issue_records (file, csv_line, column_name, problem, action)
            select $file, 1, unnest($columns::varchar[]), unnest($problems::varchar[]), unnest($actions::varchar[])
            """,
            {"file": name, **{key: [note[i] for note in notes] for i, key in enumerate(("columns", "problems", "actions"))}},
        )
    absent = absent_columns(header, spec, input_format)
    if absent:
        con.execute(
            "insert into absent_columns select $table, unnest($columns::varchar[])",
            {"table": spec.table, "columns": absent},
        )
    return path


def header_notes(header: list[str], spec: CsvSpec, input_format: InputFormat) -> list[tuple[str, str, str]]:
    """(column, problem, action) for each column of the file nothing reads and each optional
    column it has not: one note each, on the header's line, in both engines."""
    notes = [
        (
            column,
            f"not a column the model reads (its columns: {', '.join(spec.columns)}; "
            f"a column of another name is mapped in the settings' [columns.{spec.table}])",
            "column ignored",
        )
        for column in unused_columns(header, spec, input_format)
    ]
    defaults = dict(spec.defaults)
    for column in absent_columns(header, spec, input_format):
        kept = f"'{defaults[column]}'" if column in defaults else "unknown"
        notes.append((column, f"the file has no {column} column", f"kept, {column} {kept} on every row"))
    return notes


MAX_RECORD_LINES = 50
"""The most lines one record may span (a quoted field may hold line breaks): a quote still open
after that many lines, or at the end of the file, is a stray one, reported on its own line."""


def quote_state(line: str, delimiter: str, inside: bool) -> tuple[bool, bool]:
    """(whether a quoted field is still open at the end of line, whether one closed badly in it)
    as DuckDB's reader reads them: a quote opens a field only at its start, inside one a doubled
    quote is a quote, and a closing quote must be followed by the delimiter or the line's end."""
    if '"' not in line:
        return inside, False
    at_field_start, badly, i = not inside, False, 0
    while i < len(line):
        char = line[i]
        if inside:
            if char == '"':
                if line[i + 1:i + 2] == '"':
                    i += 2
                    continue
                inside = False
                badly = badly or line[i + 1:i + 2] not in (delimiter, "\r", "\n", "")
        elif char == '"' and at_field_start:
            inside = True
        at_field_start = not inside and char == delimiter
        i += 1
    return inside, badly


def ends_inside_quotes(line: str, delimiter: str, inside: bool) -> bool:
    """Whether a quoted field is still open at the end of line (see quote_state)."""
    return quote_state(line, delimiter, inside)[0]


def unclosed_quote_lines(lines: list[str], delimiter: str, max_lines: int = MAX_RECORD_LINES) -> list[int]:
    """The 0-based indexes of lines (the header first) where a quoted field opens and does not
    close well (followed by the delimiter or the line's end) within max_lines lines or before
    the end; reading resumes on the line after each."""
    found, index = [], 0
    while index < len(lines):
        if not ends_inside_quotes(lines[index], delimiter, False):
            index += 1
            continue
        inside, badly, after = True, False, index + 1
        while inside and after < len(lines) and after - index < max_lines:
            inside, badly = quote_state(lines[after], delimiter, True)
            after += 1
        if inside or badly:
            found.append(index)
            index += 1
        else:
            index = after
    return found


def blank_unclosed_quotes(path: Path, delimiter: str, target: Path) -> tuple[Path, list[tuple[int, str]]]:
    """A copy of path at target with each line that opens a quote that never closes left blank
    (so line numbers stay), and those lines as (line number, text); path itself when none does."""
    with open_bytes(path) as handle:  # bytes that are not UTF-8 stay as they are, for the reader to report
        lines = [line.decode("utf-8", "surrogateescape") for line in handle]
    found = unclosed_quote_lines(lines, delimiter)
    if not found:
        return path, []
    stray = [
        (index + 1, lines[index].rstrip("\r\n").encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        for index in found
    ]
    for index in found:
        lines[index] = "\n"
    target.write_bytes("".join(lines).encode("utf-8", "surrogateescape"))
    return target, stray


STRAY_QUOTE = f"a quote opens here and never closes (within {MAX_RECORD_LINES} lines or before the end of the file)"
"""The problem reported for such a line, by both engines."""


def _without_unclosed_quotes(
    con: duckdb.DuckDBPyConnection, path: Path, spec: CsvSpec, delimiter: str, scratch: Path, name: str
) -> Path:
    """blank_unclosed_quotes, its lines recorded in unclosed_quotes for load_issues."""
    copy, stray = blank_unclosed_quotes(path, delimiter, scratch / f"q-{spec.file}")
    con.execute("create temp table if not exists unclosed_quotes (file varchar, line bigint, raw_text varchar)")
    if stray:
        con.execute(
            "insert into unclosed_quotes select $file, unnest($lines::bigint[]), unnest($raw::varchar[])",
            {"file": name, "lines": [line for line, _ in stray], "raw": [text for _, text in stray]},
        )
    return copy


def _skip_repeated_headers(con: duckdb.DuckDBPyConnection, spec: CsvSpec, header: list[str], name: str) -> None:
    """Report and set aside records that repeat the header (files concatenated with theirs).

    A record repeats it when each field, trimmed, lower-cased and without a
    BOM, is the name of its column. The records are kept in
    header_lines_<table>, which the raw_<table> view leaves out, so
    sql/10-12 never see them.
    """
    # The identifiers are the checked header names, i.e. spec.columns; the names compared are bound.
    fields = ", ".join(f"lower(trim(replace(\"{name}\", chr(65279), '')))" for name in header)
    con.execute(
        f"""
        create or replace temp table header_lines_{spec.table} as
        select rowid as rec_no
        from raw_{spec.table}_rows
        where [{fields}] = $header
        """,
        {"header": header},
    )
    con.execute(
        f"""
        insert into load_issue_records (file, rec_no, column_name, problem, action)
        select $file, rec_no, null, 'repeated header line', 'row skipped'
        from header_lines_{spec.table}
        """,
        {"file": name},
    )


def _read_raw(con: duckdb.DuckDBPyConnection, path: Path, spec: CsvSpec, columns: dict, delimiter: str) -> None:
    # Identifiers cannot be parameters; spec.table is one of three constants.
    for table in (f"rejects_{spec.table}", f"reject_scans_{spec.table}"):
        con.execute(f"drop table if exists {table}")
    con.execute(
        f"""
        create or replace temp table raw_{spec.table}_rows as
        select * from read_csv(
            $path, columns = $columns, {DIALECT},
            store_rejects = true,
            rejects_table = 'rejects_{spec.table}',
            rejects_scan = 'reject_scans_{spec.table}'
        )
        """,
        {"path": str(path), "columns": columns, "delim": delimiter},
    )


def as_utf8(source: Path, target: Path, encoding: str) -> Path:
    """Copy source (gzipped or not) to target as UTF-8, line for line. Bytes that are not
    text in encoding are kept as they are: DuckDB then reports their row as not valid text."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
    try:
        with open_bytes(source) as reader, target.open("wb") as writer:
            for line in reader:
                writer.write(decoder.decode(line).encode("utf-8", errors="surrogateescape"))
            writer.write(decoder.decode(b"", final=True).encode("utf-8", errors="surrogateescape"))
    except (OSError, EOFError) as error:
        raise DataFileError(f"{source}: cannot be read: {error}") from None
    return target


def mixes_line_endings(path: Path) -> bool:
    """True when some lines end in CRLF and others in a bare LF."""
    crlf = bare_lf = False
    with open_bytes(path) as handle:
        for line in handle:
            if line.endswith(b"\r\n"):
                crlf = True
            elif line.endswith(b"\n"):
                bare_lf = True
            if crlf and bare_lf:
                return True
    return False


def with_lf_endings(source: Path, target: Path) -> Path:
    """Copy source to target with every CRLF turned into LF."""
    with open_bytes(source) as reader, target.open("wb") as writer:
        for line in reader:
            writer.write(line[:-2] + b"\n" if line.endswith(b"\r\n") else line)
    return target


def stage_all(
    con: duckdb.DuckDBPyConnection, folder: Path, scratch: Path, input_format: InputFormat | None = None
) -> dict[str, Path]:
    """Stage the three inputs of folder (see sources): returns the path read for each file's name
    in load issues. A folder without users.csv stages no users."""
    input_format = InputFormat.chosen(input_format)
    read = {}
    for source in sources(folder, input_format):
        if source.path is None:
            con.execute(f"create temp view raw_{source.spec.table} as {empty_staging(source.spec)}")
        else:
            read[source.name] = stage(con, source.path, source.spec, scratch, input_format, source.name)
    return read


def empty_staging(spec: CsvSpec, text_type: str = "varchar") -> str:
    """A query of no rows shaped as a staging view (file, rec_no, spec's columns)."""
    columns = ", ".join(f"cast(null as {text_type}) as {name}" for name in spec.columns)
    return f"select cast(null as {text_type}) as file, cast(null as bigint) as rec_no, {columns} where 1 = 0"


def finish_issues(con: duckdb.DuckDBPyConnection, paths: dict[str, Path]) -> None:
    """Create load_issues: every recorded problem with its line number and raw text (paths: the
    path read for each file name load_issue_records has, as stage_all returns).

    Records are numbered by DuckDB in file order, but a record may span lines
    (a quoted newline), blank lines are skipped and rejected rows are not in
    the staging table. So the file is read once more as plain lines, record
    starts are found by counting quotes, and the n-th accepted record is
    matched to the n-th record start that was not rejected. Files without
    problems are not read again.
    """
    con.execute(
        """
        create table load_issues (
            file varchar not null,
            line bigint,
            column_name varchar,
            problem varchar not null,
            action varchar not null,
            raw_text varchar
        )
        """
    )
    files = [row[0] for row in con.execute("select distinct file from load_issue_records").fetchall()]
    for name, path in paths.items():
        if name not in files:
            continue
        try:
            con.execute(LINE_MAP, {"path": str(path)})
        except duckdb.InvalidInputException:
            # A row that is not valid text (already reported): read a copy in
            # which each bad byte is U+FFFD, every line break and quote where it is.
            with tempfile.TemporaryDirectory(prefix="recs-lines-") as scratch:
                readable = Path(scratch) / "lines.csv"
                with open_bytes(path) as reader, readable.open("wb") as writer:
                    for line in reader:
                        writer.write(line.decode("utf-8", errors="replace").encode("utf-8"))
                con.execute(LINE_MAP, {"path": str(readable)})
        con.execute(INSERT_ISSUES, {"file": name})
    con.execute("drop table if exists line_map")
    if con.execute("select count(*) from duckdb_tables() where table_name = 'unclosed_quotes'").fetchone()[0]:
        con.execute(
            """
            insert into load_issues
            select file, line, null, $problem, 'row skipped', raw_text
            from unclosed_quotes
            """,
            {"problem": STRAY_QUOTE},
        )
        con.execute("drop table unclosed_quotes")


# One row per physical line. row_number() over () numbers rows in the order
# the single-column scan produced them, which is file order.
LINE_MAP = """
create or replace temp table line_map as
with physical as (
    select
        row_number() over () as line,
        raw
    from read_csv(
        $path, columns = {'raw': 'VARCHAR'}, auto_detect = false, header = false,
        delim = E'\\x1f', quote = '', escape = '', strict_mode = false
    )
),

quote_state as (
    select
        line,
        raw,
        coalesce(
            sum(length(raw) - length(replace(raw, '"', ''))) over (
                order by line rows between unbounded preceding and 1 preceding
            ),
            0
        ) % 2 = 1 as inside_quotes
    from physical
)

select
    line,
    raw,
    inside_quotes,
    -- DuckDB's own line numbers count records and blank lines, not the
    -- extra lines of a quoted value: the numbering its rejects table uses.
    sum(case when inside_quotes then 0 else 1 end) over (order by line) as csv_line,
    not inside_quotes and raw is not null and line > 1 as is_record_start
from quote_state
"""

INSERT_ISSUES = """
insert into load_issues
with records as (
    select
        line,
        raw,
        csv_line
    from line_map
    where is_record_start
),

rejected as (
    select csv_line
    from load_issue_records
    where file = $file and csv_line is not null
),

accepted as (
    select
        line,
        raw,
        row_number() over (order by line) - 1 as rec_no
    from records
    where csv_line not in (select csv_line from rejected)
)

select
    issue.file,
    coalesce(accepted.line, reject.line) as line,
    issue.column_name,
    issue.problem,
    issue.action,
    coalesce(accepted.raw, reject.raw) as raw_text
from load_issue_records as issue
left join accepted on accepted.rec_no = issue.rec_no
left join line_map as reject
    on reject.csv_line = issue.csv_line and not reject.inside_quotes
where issue.file = $file
order by line
"""
