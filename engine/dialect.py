"""The sql/ layer files, rendered for Spark SQL: each DuckDB-only construct
turned into Spark's in this one place.

The files are written for DuckDB and run unchanged there. For Spark a file
goes through render_file(), which

- keeps a file's marked Spark alternative instead of its DuckDB text, where
  the two engines need different SQL (sql/45's top-N: DuckDB's max_by heap,
  Spark's row_number window):

      -- [duckdb]
      ... DuckDB's text ...
      -- [spark]
      -- ... Spark's text, commented out so DuckDB never sees it ...
      -- [end]

- expands the scalar macros of sql/05_rules.sql in place (Spark has no
  untyped macros; each use becomes the macro's body with its arguments);
- rewrites the few DuckDB functions and spellings Spark lacks (FUNCTIONS
  below, and double-quoted identifiers, which Spark reads as strings);
- writes decimal literals as doubles (1.0 -> 1.0D): both engines then do
  the same double arithmetic.

It is text in, text out, with string literals and comments kept out of
reach, and splits a file into statements with their line numbers. What
each statement does (create, insert, ...) is engine/spark's to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError

SPARK_BLOCK = re.compile(
    r"^[ \t]*-- \[duckdb\][^\n]*\n(?P<duckdb>.*?)^[ \t]*-- \[spark\][^\n]*\n(?P<spark>.*?)^[ \t]*-- \[end\][^\n]*\n",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Statement:
    """One statement of a file: its text (no trailing semicolon) and the line it starts on."""

    text: str
    line: int


@dataclass(frozen=True)
class Macro:
    """A scalar macro of sql/05_rules.sql: its parameters and body."""

    params: tuple[str, ...]
    body: str


def choose_spark_blocks(text: str) -> str:
    """text with each marked block's Spark lines (uncommented) in place of its DuckDB lines.

    Line numbers stay those of the file: the DuckDB lines become blank lines.
    """

    def spark_side(match: re.Match) -> str:
        duckdb_lines = match["duckdb"].count("\n")
        spark = []
        for line in match["spark"].splitlines():
            stripped = line.lstrip()
            if stripped and not stripped.startswith("--"):
                raise BuildError(f"a [spark] block line is not commented out: {line.strip()!r}")
            spark.append(re.sub(r"^(\s*)-- ?", r"\1", line, count=1))
        return "\n" * (duckdb_lines + 2) + "\n".join(spark) + "\n\n"

    return SPARK_BLOCK.sub(spark_side, text)


# Masking: string literals and comments are set aside so that no rewrite
# touches them. A literal becomes \x00<n>\x00; comments become spaces.
_LEXEME = re.compile(r"'(?:[^']|'')*'|--[^\n]*|\"(?:[^\"]|\"\")*\"|/\*.*?\*/", re.DOTALL)


class _Masked:
    def __init__(self) -> None:
        self.literals: list[str] = []

    def mask(self, text: str) -> str:
        def hide(match: re.Match) -> str:
            token = match[0]
            if token.startswith("--") or token.startswith("/*"):
                return " " * len(token) if "\n" not in token else re.sub(r"[^\n]", " ", token)
            if token.startswith('"'):  # an identifier: Spark quotes them with backticks
                return "`" + token[1:-1].replace('""', '"') + "`"
            self.literals.append(token)
            return f"\x00{len(self.literals) - 1}\x00"

        return _LEXEME.sub(hide, text)

    def unmask(self, text: str) -> str:
        return re.sub(r"\x00([0-9]+)\x00", lambda match: self.literals[int(match[1])], text)

    def unmask_for_spark(self, text: str) -> str:
        return re.sub(r"\x00([0-9]+)\x00", lambda match: spark_literal(self.literals[int(match[1])]), text)

    def literal(self, token: str) -> str | None:
        """The content of a masked string literal token, or None if token is not one."""
        match = re.fullmatch(r"\s*\x00([0-9]+)\x00\s*", token)
        return self.literals[int(match[1])][1:-1].replace("''", "'") if match else None


def spark_literal(token: str) -> str:
    """A SQL string literal as Spark reads it: Spark joins 'a''b' into 'ab' instead of
    reading a quote, so a literal with a quote in it is written in double quotes. (Backslashes
    stay as they are: engine/spark's session reads literals raw, escapedStringLiterals.)"""
    content = token[1:-1]
    if "''" not in content:
        return token
    content = content.replace("''", "'")
    if '"' in content:
        raise BuildError(f"the literal {token} holds both kinds of quote: no Spark spelling here")
    return '"' + content + '"'


def split_statements(text: str) -> list[Statement]:
    """The statements of a SQL text, split on semicolons outside literals and comments."""
    # literals and comments blanked, same length: positions stay those of text
    masked = _LEXEME.sub(lambda match: re.sub(r"[^\n]", " ", match[0]), text)
    statements, start = [], 0
    for position, char in enumerate(masked + ";"):
        if char != ";":
            continue
        chunk = masked[start:position]
        if chunk.strip():
            first = start + len(chunk) - len(chunk.lstrip())
            line = text.count("\n", 0, first) + 1
            statements.append(Statement(text[first:position].rstrip(), line))
        start = position + 1
    return statements


def _call_args(text: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of the call whose '(' is at open_paren, and the index after ')'."""
    depth, args, start = 0, [], open_paren + 1
    for position in range(open_paren, len(text)):
        char = text[position]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:position])
                return [arg.strip() for arg in args] if any(arg.strip() for arg in args) else [], position + 1
        elif char == "," and depth == 1:
            args.append(text[start:position])
            start = position + 1
    raise BuildError(f"unbalanced parentheses after {text[max(0, open_paren - 30):open_paren + 1]!r}")


def _rewrite_calls(text: str, name: str, rewrite) -> str:
    """Replace each call name(...) (not a column or a method, e.g. t.name) by rewrite(args)."""
    pattern = re.compile(rf"(?<![\w.`]){re.escape(name)}\s*\(", re.IGNORECASE)
    position = 0
    while True:
        match = pattern.search(text, position)
        if not match:
            return text
        args, end = _call_args(text, match.end() - 1)
        replacement = rewrite(args)
        text = text[: match.start()] + replacement + text[end:]
        position = match.start() + 1  # rewrites may nest: look inside the replacement too


def _regexp_full_match(masked: _Masked):
    def rewrite(args: list[str]) -> str:
        pattern = masked.literal(args[1])
        if pattern is None:
            raise BuildError("regexp_full_match needs a literal pattern to render for Spark")
        masked.literals.append("'^(?:" + pattern.replace("'", "''") + ")$'")
        return f"({args[0]} rlike \x00{len(masked.literals) - 1}\x00)"

    return rewrite


def _regexp_replace(masked: _Masked):
    def rewrite(args: list[str]) -> str:
        # DuckDB replaces the first match unless given 'g'; Spark's regexp_replace replaces every match
        if len(args) != 4 or masked.literal(args[3]) != "g":
            raise BuildError("regexp_replace renders for Spark only with the 'g' option (every match)")
        return f"regexp_replace({args[0]}, {args[1]}, {args[2]})"

    return rewrite


def _trim(args: list[str]) -> str:
    # DuckDB's trim(text, characters); Spark spells it trim(both characters from text)
    return f"trim({args[0]})" if len(args) == 1 else f"trim(both {args[1]} from {args[0]})"


def _string_agg(args: list[str]) -> str:
    separator, order = args[1], None
    match = re.match(r"(?s)(.*?)\s+order\s+by\s+(.*)", separator, re.IGNORECASE)
    if match:
        separator, order = match[1], match[2]
    call = f"listagg({args[0]}, {separator})"
    return f"{call} within group (order by {order})" if order else call


FUNCTIONS = {
    # DuckDB's full-match regex test; Spark's rlike finds a match anywhere
    "regexp_full_match": None,  # needs the literal table: see _regexp_full_match
    # DuckDB's "matches anywhere" regex test is Spark's rlike
    "regexp_matches": lambda args: f"({args[0]} rlike {args[1]})",
    # seconds since 1970 as a double
    "epoch": lambda args: f"(unix_micros({args[0]}) / 1000000.0D)",
    "epoch_us": lambda args: f"unix_micros({args[0]})",
    # make_timestamp(microseconds): the timestamp that many microseconds after 1970
    "make_timestamp": lambda args: (
        f"timestamp_micros({args[0]})" if len(args) == 1 else f"make_timestamp({', '.join(args)})"
    ),
    # string_agg(x, sep order by y): Spark takes the order as within group
    "string_agg": _string_agg,
    "trim": _trim,
}
"""DuckDB function -> its Spark rendering, from the call's arguments."""

TYPES = {"timestamptz": "timestamp", "varchar": "string", "integer": "int", "hugeint": "decimal(38, 0)"}
"""DuckDB type names as Spark spells them (in casts)."""


def render(text: str, macros: dict[str, Macro] | None = None) -> str:
    """One DuckDB statement (or expression) as Spark SQL."""
    masked = _Masked()
    code = masked.mask(text)
    for _ in range(10):  # macros may use macros
        before = code
        for name, macro in (macros or {}).items():
            code = _rewrite_calls(code, name, _expander(name, macro, masked))
        if code == before:
            break
    else:
        raise BuildError("the macros of sql/05_rules.sql expand without end")
    code = _rewrite_calls(code, "regexp_full_match", _regexp_full_match(masked))
    code = _rewrite_calls(code, "regexp_replace", _regexp_replace(masked))
    for name, rewrite in FUNCTIONS.items():
        if rewrite is not None:
            code = _rewrite_calls(code, name, rewrite)
    code = re.sub(
        r"\bas\s+(timestamptz|varchar|integer|hugeint)\b",
        lambda match: "as " + TYPES[match[1].lower()],
        code,
        flags=re.IGNORECASE,
    )
    if "::" in code:
        raise BuildError("a '::' cast does not render for Spark; write cast(x as type)")
    # decimal literals as doubles; not inside names (t1.x) or masked literals
    code = re.sub(r"(?<![\w.\x00])([0-9]+\.[0-9]+)(?![\w.\x00])", r"\1D", code)
    return "\n".join(line.rstrip() for line in masked.unmask_for_spark(code).splitlines())


def _expander(name: str, macro: Macro, masked: _Masked):
    def expand(args: list[str]) -> str:
        if len(args) != len(macro.params):
            raise BuildError(f"macro {name} takes {len(macro.params)} arguments, not {len(args)}")
        body = masked.mask(masked.unmask(macro.body))
        for param, arg in zip(macro.params, args):
            body = re.sub(rf"(?<![\w.`]){re.escape(param)}(?![\w`])", lambda _: f"({arg})", body)
        return f"({body.strip()})"

    return expand


MACRO = re.compile(
    r"(?is)^\s*create\s+(?:or\s+replace\s+)?macro\s+(\w+)\s*\(([^)]*)\)\s+as\s+(?!table\b)(.*)$"
)


def scalar_macros(path: Path) -> dict[str, Macro]:
    """The scalar macros a file defines (sql/05_rules.sql), by name."""
    macros = {}
    for statement in split_statements(path.read_text(encoding="utf-8")):
        match = MACRO.match(_Masked().mask(statement.text))
        if not match:
            continue
        text = statement.text
        body = text[text.lower().index(" as", text.lower().index(")")) + 3:]
        params = tuple(param.strip() for param in match[2].split(",") if param.strip())
        macros[match[1]] = Macro(params, body.strip())
    return macros


def render_file(path: Path, macros: dict[str, Macro]) -> list[Statement]:
    """A layer file as Spark SQL, statement by statement; a failure names the file and the line."""
    text = choose_spark_blocks(path.read_text(encoding="utf-8"))
    rendered = []
    for statement in split_statements(text):
        if MACRO.match(statement.text):  # a definition, not a use: DuckDB's, kept as it is
            rendered.append(statement)
            continue
        try:
            rendered.append(Statement(render(statement.text, macros), statement.line))
        except BuildError as error:
            raise BuildError(f"{path.name}, statement at line {statement.line}: {error}") from None
    return rendered
