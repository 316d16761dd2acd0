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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb

from .errors import BadArgument, DataFileError

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
"""The delimiters a header line is tried with, most usual first."""


@dataclass(frozen=True)
class InputFormat:
    """How the CSVs are written: delimiter None = read from each header line; an encoding
    Python knows (UTF-8 by default; a UTF-8 BOM is always fine)."""

    delimiter: str | None = None
    encoding: str = "utf-8"

    def __post_init__(self) -> None:
        delimiter = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(
            self.delimiter, self.delimiter
        )
        if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
            raise BadArgument(
                f"the delimiter must be one character such as , ; | or tab, not {self.delimiter!r}"
            )
        try:
            encoding = codecs.lookup(self.encoding).name
        except (LookupError, TypeError):
            raise BadArgument(f"unknown encoding {self.encoding!r}; e.g. utf-8, cp1252, latin-1") from None
        object.__setattr__(self, "delimiter", delimiter)
        object.__setattr__(self, "encoding", encoding)

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


@dataclass(frozen=True)
class CsvSpec:
    """One input file: its name, its staging table, the columns it must have."""

    file: str
    table: str
    columns: tuple[str, ...]


SPECS = (
    CsvSpec("users.csv", "users", ("user_id", "age", "gender", "region")),
    CsvSpec("items.csv", "items", ("item_id", "title", "content_type", "genre")),
    CsvSpec("events.csv", "events", ("user_id", "item_id", "event_type", "watch_seconds", "timestamp")),
)

# The dialect every file is read with; nothing is guessed (the delimiter is bound as $delim).
DIALECT = "auto_detect = false, header = true, delim = $delim, quote = '\"', escape = '\"'"


def data_files(folder: Path) -> list[Path]:
    """The three input paths (each name.csv, or name.csv.gz), after checking the folder and each file exist."""
    if not folder.is_dir():
        raise DataFileError(f"data folder not found: {folder} (set --data-dir or RECS_DATA_DIR)")
    paths = []
    for spec in SPECS:
        plain, gzipped = folder / spec.file, folder / f"{spec.file}.gz"
        found = [path for path in (plain, gzipped) if path.is_file()]
        if not found:
            raise DataFileError(f"{spec.file} not found in {folder} (nor {gzipped.name})")
        if len(found) == 2:
            raise DataFileError(f"both {plain.name} and {gzipped.name} are in {folder}: keep one of them")
        paths.append(found[0])
    return paths


def open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, uncompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def read_header(path: Path, spec: CsvSpec, input_format: InputFormat | None = None) -> tuple[list[str], str]:
    """The file's column names in file order, checked by name against the spec, and its delimiter
    (input_format's, else the one of DELIMITERS that splits the header into the most expected names)."""
    input_format = input_format or InputFormat()
    try:
        with open_bytes(path) as handle:
            line = handle.readline()
            empty = not line and not handle.read(1)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path}: cannot be read: {error}") from None
    if empty:
        raise DataFileError(
            f"{path}: the file is empty (0 bytes); it needs at least the header line "
            f"{','.join(spec.columns)}"
        )
    encoding = "utf-8-sig" if input_format.is_utf8 else input_format.encoding
    try:
        text = line.decode(encoding)
    except UnicodeDecodeError:
        raise DataFileError(
            f"{path}, line 1: the header is not {input_format.encoding} text (set --encoding)"
        ) from None
    text = text.lstrip("\ufeff")
    delimiter = input_format.delimiter or _sniffed_delimiter(text, spec)
    first = next(csv.reader([text], delimiter=delimiter), [])
    names = [name.strip().lower() for name in first]
    if not any(names):
        raise DataFileError(f"{path}, line 1: no header; expected {','.join(spec.columns)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    missing = [name for name in spec.columns if name not in names]
    extra = [name for name in names if name not in spec.columns]
    problems = []
    if missing:
        problems.append("missing column(s) " + ", ".join(missing))
    if extra:
        problems.append("unexpected column(s) " + ", ".join(extra))
    if repeated:
        problems.append("repeated column(s) " + ", ".join(repeated))
    if problems:
        shown = "tab" if delimiter == "\t" else repr(delimiter)
        how = (  # said when it may be the cause: a delimiter forced, or read as another than a comma
            f", read with the delimiter {shown}; --delimiter sets another"
            if input_format.delimiter or delimiter != "," else ""
        )
        raise DataFileError(f"{path}, line 1: {'; '.join(problems)} (expected {','.join(spec.columns)}{how})")
    return names, delimiter


def _sniffed_delimiter(header: str, spec: CsvSpec) -> str:
    """The delimiter of DELIMITERS that splits the header line into the most expected column names
    (the first of DELIMITERS on a tie): a header is all the sniffing done."""
    def matches(delimiter: str) -> int:
        names = next(csv.reader([header], delimiter=delimiter), [])
        return len({name.strip().lower() for name in names} & set(spec.columns))

    return max(DELIMITERS, key=matches)  # max keeps the first of equals


def stage(
    con: duckdb.DuckDBPyConnection, path: Path, spec: CsvSpec, scratch: Path, input_format: InputFormat | None = None
) -> Path:
    """Read one file as text into raw_<table>; rows of the wrong shape become load issues.

    Returns the path actually read: a UTF-8 copy in scratch when the file is
    in another encoding, or when it mixes CRLF and LF lines, which DuckDB's
    reader cannot parse (line numbers stay the same either way).
    """
    input_format = input_format or InputFormat()
    header, delimiter = read_header(path, spec, input_format)
    columns = {name: "VARCHAR" for name in header}  # file order: mapped by name, not position
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
        path = _without_unclosed_quotes(con, path, spec, delimiter, scratch)
        _read_raw(con, path, spec, columns, delimiter)
    _skip_repeated_headers(con, spec, list(columns))
    # rowid follows the file's order: it is the record number the checks report. A view takes no
    # bound parameters: the file name is a quoted literal.
    con.execute(
        f"""
        create temp view raw_{spec.table} as
        select '{spec.file.replace("'", "''")}' as file, rowid as rec_no, *
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
                        || ' fields, expected {len(spec.columns)}'
                when any_value(error_type) in ('INVALID UNICODE', 'INVALID ENCODING')
                    then 'the row is not valid ' || $encoding || ' text'
                when any_value(error_type) = 'UNQUOTED VALUE' then 'a quote in the row is not closed or not escaped'
                else lower(any_value(error_type)) || ': ' || any_value(error_message)
            end,
            'row skipped'
        from rejects_{spec.table}
        group by line
        """,
        {"file": spec.file, "encoding": "UTF-8" if input_format.is_utf8 else input_format.encoding},
    )
    return path


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


def _without_unclosed_quotes(con: duckdb.DuckDBPyConnection, path: Path, spec: CsvSpec, delimiter: str, scratch: Path) -> Path:
    """blank_unclosed_quotes, its lines recorded in unclosed_quotes for load_issues."""
    copy, stray = blank_unclosed_quotes(path, delimiter, scratch / f"q-{spec.file}")
    con.execute("create temp table if not exists unclosed_quotes (file varchar, line bigint, raw_text varchar)")
    if stray:
        con.execute(
            "insert into unclosed_quotes select $file, unnest($lines::bigint[]), unnest($raw::varchar[])",
            {"file": spec.file, "lines": [line for line, _ in stray], "raw": [text for _, text in stray]},
        )
    return copy


def _skip_repeated_headers(con: duckdb.DuckDBPyConnection, spec: CsvSpec, header: list[str]) -> None:
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
        {"file": spec.file},
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
    """Stage users.csv, items.csv and events.csv (or their .csv.gz); returns the path read for each file name."""
    input_format = InputFormat.chosen(input_format)
    return {
        spec.file: stage(con, path, spec, scratch, input_format) for path, spec in zip(data_files(folder), SPECS)
    }


def finish_issues(
    con: duckdb.DuckDBPyConnection, paths: dict[str, Path], specs: tuple[CsvSpec, ...] = SPECS
) -> None:
    """Create load_issues: every recorded problem with its line number and raw text.

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
    for spec in specs:
        if spec.file not in files:
            continue
        path = paths[spec.file]
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
        con.execute(INSERT_ISSUES, {"file": spec.file})
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
