"""Bad input: every row of every file is either loaded or reported, never dropped in silence.

Each case appends one bad line to the tiny example and checks what happens to
it: the problem and action recorded in load_issues (with the line number), and
how many rows the table kept.
"""

from __future__ import annotations

import duckdb
import pytest

import engine
from engine.config import PLAIN
from conftest import TINY_EVENTS, TINY_ITEMS, TINY_USERS

CASES = [
    # file, appended line, column, problem (start), action, rows kept from that line
    ("users.csv", "u1,40,M,Medan", "user_id", "duplicate user_id 'u1'", "row skipped", 0),
    ("users.csv", ",30,F,Bali", "user_id", "user_id is blank", "row skipped", 0),
    ("users.csv", "u7,,F,Bali", "age", "age is blank", "kept, age unknown", 1),
    ("users.csv", "u7,abc,F,Bali", "age", "age 'abc' is not a whole number", "kept, age unknown", 1),
    ("users.csv", "u7,250,F,Bali", "age", "age '250' is not a whole number from 0 to 120", "kept, age unknown", 1),
    ("users.csv", "u7,30,F", None, "the row has 3 fields, expected 4", "row skipped", 0),
    ("items.csv", "i1,Again,tv,drama", "item_id", "duplicate item_id 'i1'", "row skipped", 0),
    ("items.csv", " ,Nameless,tv,drama", "item_id", "item_id is blank", "row skipped", 0),
    ("items.csv", "i9,,tv,drama", "title", "title is blank", "kept, item_id shown as title", 1),
    ("items.csv", "i9,Nine,tv,", "genre", "genre is blank", "kept, genre unknown", 1),
    ("items.csv", "i9,Nine,,drama", "content_type", "content_type is blank", "kept, content_type unknown", 1),
    ("items.csv", "i9,Nine,tv,drama,extra", None, "the row has 5 fields, expected 4", "row skipped", 0),
    ("events.csv", "u1,i3,play", None, "the row has 3 fields, expected 5", "row skipped", 0),
    ("events.csv", "u1,i3,play,5,2024-01-05T00:00:00Z,x", None, "the row has 6 fields", "row skipped", 0),
    ("events.csv", ",i3,play,5,2024-01-05", "user_id", "user_id is blank", "row skipped", 0),
    ("events.csv", "u1,,play,5,2024-01-05", "item_id", "item_id is blank", "row skipped", 0),
    ("events.csv", "u1,i3,play,abc,2024-01-05", "watch_seconds", "watch_seconds 'abc' is not a number", "row skipped", 0),
    ("events.csv", "u1,i3,play,1e3,2024-01-05", "watch_seconds", "watch_seconds '1e3' is not a number", "row skipped", 0),
    ("events.csv", "u1,i3,play,-30,2024-01-05", "watch_seconds", "watch_seconds '-30' is negative", "row skipped", 0),
    ("events.csv", "u1,i3,play,,2024-01-05", "watch_seconds", "watch_seconds is blank", "row skipped", 0),
    ("events.csv", "u1,i3,play,90000,2024-01-05", "watch_seconds", "watch_seconds '90000' is more than a day", "row skipped", 0),
    ("events.csv", "u1,i3,like,5,2024-01-05", "event_type", "unknown event_type 'like' (accepted: complete, play", "row skipped", 0),
    ("events.csv", "u1,i3,,5,2024-01-05", "event_type", "event_type is blank", "row skipped", 0),
    ("events.csv", "u1,i3,play,5,", "timestamp", "timestamp is blank", "row skipped", 0),
    ("events.csv", "u1,i3,play,5,soon", "timestamp", "timestamp 'soon' is not a date and time", "row skipped", 0),
    ("events.csv", "u1,i3,play,5,2024-13-01", "timestamp", "timestamp '2024-13-01' is not a date", "row skipped", 0),
    ("events.csv", "u1,i99,play,5,2024-01-05", "item_id", "item_id 'i99' is not in items.csv", "row skipped", 0),
    ("events.csv", 'u1,i3,play,5,"2024-01-05', None, "a quote opens here and never closes", "row skipped", 0),
]

TABLE = {"users.csv": "users", "items.csv": "items", "events.csv": "events"}
BASE = {
    "users.csv": ["user_id,age,gender,region"] + [",".join(map(str, row)) for row in TINY_USERS],
    "items.csv": ["item_id,title,content_type,genre"] + [",".join(row) for row in TINY_ITEMS],
    "events.csv": ["user_id,item_id,event_type,watch_seconds,timestamp"] + [",".join(map(str, r)) for r in TINY_EVENTS],
}


def build_with(tmp_path, file: str, extra_line: str) -> duckdb.DuckDBPyConnection:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, lines in BASE.items():
        text = "\n".join(lines + ([extra_line] if name == file else [])) + "\n"
        (folder / name).write_text(text, encoding="utf-8")
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    return duckdb.connect(str(tmp_path / "recs.db"), read_only=True)


@pytest.mark.parametrize("file,line,column,problem,action,kept", CASES, ids=[case[1] for case in CASES])
def test_bad_row_is_reported_with_its_line(tmp_path, file, line, column, problem, action, kept):
    con = build_with(tmp_path, file, line)
    issues = con.execute("select file, line, column_name, problem, action, raw_text from load_issues").fetchall()
    bad_line = len(BASE[file]) + 1
    assert len(issues) == 1, issues
    got_file, got_line, got_column, got_problem, got_action, raw = issues[0]
    assert (got_file, got_line, got_column, got_action) == (file, bad_line, column, action)
    assert got_problem.startswith(problem), got_problem
    assert raw.rstrip("\r") == line.rstrip("\r")
    rows = con.execute(f"select count(*) from {TABLE[file]}").fetchone()[0]
    assert rows == len(BASE[file]) - 1 + kept


def test_decimal_seconds_are_accepted(tmp_path):
    con = build_with(tmp_path, "events.csv", "u1,i3,play,12.5,2024-01-05T00:00:00Z")
    assert con.execute("select count(*) from load_issues").fetchone()[0] == 0
    assert con.execute("select watch_seconds from events where item_id = 'i3' and user_id = 'u1'").fetchone()[0] == 12.5


def test_events_of_users_missing_from_users_csv_are_kept(tmp_path):
    con = build_with(tmp_path, "events.csv", "u42,i3,play,300,2024-01-05T00:00:00Z")
    assert con.execute("select count(*) from load_issues").fetchone()[0] == 0
    assert con.execute("select count(*) from events where user_id = 'u42'").fetchone()[0] == 1
    recommender = engine.Recommender(tmp_path / "recs.db", tmp_path / "data")
    assert recommender.recommend("u42", k=1).fallback_used is False


def test_values_are_normalised_for_filters(tmp_path):
    con = build_with(tmp_path, "items.csv", "i9, Nine , MicroDrama , Romance ")
    assert con.execute("select title, content_type, genre from items where item_id = 'i9'").fetchone() == (
        "Nine",
        "microdrama",
        "romance",
    )


def test_invalid_utf8_row_is_reported(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, lines in BASE.items():
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (folder / "items.csv").open("ab") as handle:
        handle.write(b"i9,Bad \xff title,tv,drama\n")
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    issues = con.execute("select file, line, problem from load_issues").fetchall()
    assert issues == [("items.csv", 6, "the row is not valid UTF-8 text")]


def test_every_row_is_loaded_or_reported(tmp_path):
    """Rows in the files = rows loaded + rows skipped, whatever the mix of problems."""
    folder = tmp_path / "data"
    folder.mkdir()
    extra = {file: [case[1] for case in CASES if case[0] == file] for file in BASE}
    for name, lines in BASE.items():
        (folder / name).write_text("\n".join(lines + extra[name]) + "\n", encoding="utf-8")
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    for file, table in TABLE.items():
        rows_in_file = len(BASE[file]) - 1 + len(extra[file])
        loaded = con.execute(f"select count(*) from {table}").fetchone()[0]
        skipped = con.execute(
            "select count(distinct line) from load_issues where file = ? and action = 'row skipped'", [file]
        ).fetchone()[0]
        assert loaded + skipped == rows_in_file, file


# --- a stray quote: that line is reported, every line after it loaded or reported --------


def test_a_stray_quote_reports_its_line_and_loses_nothing_after_it(tmp_path):
    """The issue's case: a 360-line events.csv with an opening quote in data line 3 loaded 2
    rows and reported 1; the other 357 vanished."""
    folder = tmp_path / "data"
    folder.mkdir()
    events = [f"u{n % 3 + 1},i{n % 4 + 1},play,{100 + n},2024-01-0{n % 9 + 1}T10:00:00Z" for n in range(360)]
    events[2] = events[2].replace(",play", ',"play')
    (folder / "events.csv").write_text("\n".join(BASE["events.csv"][:1] + events) + "\n", encoding="utf-8")
    for name in ("users.csv", "items.csv"):
        (folder / name).write_text("\n".join(BASE[name]) + "\n", encoding="utf-8")
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    assert con.execute("select count(*) from events").fetchone()[0] == 359
    assert con.execute("select file, line, problem, raw_text from load_issues").fetchall() == [
        ("events.csv", 4, "a quote opens here and never closes (within 50 lines or before the end of the file)",
         events[2]),
    ]


def test_a_stray_quote_in_items_csv_does_not_hide_the_items_after_it(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    items = BASE["items.csv"][:2] + ['i8,"Stray title,tv,drama'] + BASE["items.csv"][2:]
    (folder / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    for name in ("users.csv", "events.csv"):
        (folder / name).write_text("\n".join(BASE[name]) + "\n", encoding="utf-8")
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    assert [row[0] for row in con.execute("select item_id from items order by item_id").fetchall()] == ["i1", "i2", "i3", "i4"]
    assert con.execute("select file, line from load_issues").fetchall() == [("items.csv", 3)]  # no event for i3, i4 refused


def test_a_quoted_field_may_span_lines_and_two_stray_quotes_far_apart_swallow_nothing(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    long_title = "\n".join(f"part {n}" for n in range(10))
    items = (
        BASE["items.csv"] + [f'i8,"{long_title}",tv,drama', 'i9,"Stray one,tv,drama']
        + [f"i{n},T{n},tv,drama" for n in range(10, 70)] + ['i70,"Stray two,tv,drama', "i71,Last,tv,drama"]
    )
    (folder / "items.csv").write_text("\n".join(items) + "\n", encoding="utf-8")
    for name in ("users.csv", "events.csv"):
        (folder / name).write_text("\n".join(BASE[name]) + "\n", encoding="utf-8")
    engine.build(tmp_path / "recs.db", folder, PLAIN)
    con = duckdb.connect(str(tmp_path / "recs.db"), read_only=True)
    titles = dict(con.execute("select item_id, title from items").fetchall())
    assert titles["i8"] == long_title  # a quoted value keeps its line breaks
    assert {f"i{n}" for n in range(10, 70)} | {"i71"} <= set(titles) and not {"i9", "i70"} & set(titles)
    lines = con.execute("select line from load_issues order by line").fetchall()
    assert lines == [(16,), (77,)]  # each stray quote's own line, nothing between them lost


@pytest.mark.parametrize("line, inside", [
    ('a,b,c', False), ('a,"b,c', True), ('a,"b",c', False), ('a,"b""c",d', False), ('a,b"c,d', False),
    ('"a', True), ('a,""', False), ('a,"""', True),
])
def test_a_quote_opens_a_field_only_at_its_start(line, inside):
    assert engine.load.ends_inside_quotes(line, ",", False) is inside
