"""The model on Spark: the sql/ layers rendered for Spark SQL, and a Spark-built
recs.db equal to the DuckDB-built one, table by table and answer by answer.

One local[2] Spark session serves the whole module (starting one takes
seconds); each dataset is built once by each engine. pyspark comes from
requirements-spark.txt, which .ci/run installs.
"""

from __future__ import annotations

import csv
import math
import re
import shutil

import duckdb
import pytest

import engine
from engine import dialect, sqlfiles
from engine.config import PLAIN
from conftest import BUNDLED, TINY_EVENTS, TINY_ITEMS, TINY_USERS, random_dataset, write_dataset

pyspark = pytest.importorskip("pyspark", reason="the Spark build needs pyspark: pip install -r requirements-spark.txt")

from engine.spark import job  # noqa: E402  (needs pyspark)

MACROS = dialect.scalar_macros(sqlfiles.SQL_DIR / "05_rules.sql")
LAYERS = [path for path in sqlfiles.build_files() if not path.name.startswith(("05", "50"))]

DUCKDB_ONLY = [
    (r"::", "a :: cast"),
    (r"\bstruct_pack\s*\(", "struct_pack"),
    (r"\bmax_by\s*\([^()]*(\([^()]*\)[^()]*)*,[^()]*,", "max_by with n"),
    (r"\bunnest\s*\(", "unnest"),
    (r"\bgenerate_subscripts\s*\(", "generate_subscripts"),
    (r"\bepoch(_us)?\s*\(", "epoch()"),
    (r"\bregexp_full_match\s*\(", "regexp_full_match"),
    (r"\bstring_agg\s*\(", "string_agg"),
    (r"\btimestamptz\b", "timestamptz"),
    (r"(?<!')\"\w+\"", "a double-quoted identifier"),
    (r":=", "a named argument"),
]


# The rendering, checked without running anything

@pytest.mark.parametrize("path", LAYERS, ids=lambda path: path.name)
def test_each_layer_renders_without_duckdb_only_constructs(path):
    statements = dialect.render_file(path, MACROS)
    assert statements
    for statement in statements:
        if job.LEFT_TO_DUCKDB.match(statement.text):
            continue  # indexes, views and macros: DuckDB makes them in recs.db
        code = re.sub(r"'(?:[^']|'')*'|--[^\n]*", "''", statement.text)
        for pattern, what in DUCKDB_ONLY:
            assert not re.search(pattern, code), f"{path.name} line {statement.line}: {what} left for Spark"
        for name in MACROS:
            assert not re.search(rf"(?<![\w.]){name}\s*\(", code), f"{path.name}: macro {name} not expanded"


def test_the_rewrites_say_the_same_thing_in_spark():
    rendered = dialect.render(
        "select regexp_full_match(x, '[0-9]+(\\.[0-9]*)?'), epoch(t), make_timestamp(epoch_us(try_cast(s as timestamptz))), "
        "string_agg(e, ', ' order by e), \"timestamp\", 1.5 * t1.x, 'a 1.5 kept'"
    )
    assert "(x rlike '^(?:[0-9]+(\\.[0-9]*)?)$')" in rendered
    assert "(unix_micros(t) / 1000000.0D)" in rendered
    assert "timestamp_micros(unix_micros(try_cast(s as timestamp)))" in rendered
    assert "listagg(e, ', ') within group (order by e)" in rendered
    assert "`timestamp`" in rendered and "1.5D * t1.x" in rendered and "'a 1.5 kept'" in rendered


EXPRESSIONS = [
    "regexp_full_match('1x5', '[0-9](\\.[0-9])?')",
    "regexp_full_match('1.5', '[0-9](\\.[0-9])?')",
    "regexp_replace(regexp_replace(lower(' Drama | Romance||x'), '\\s*\\|\\s*', '|', 'g'), '\\|+', '|', 'g')",
    "trim('| drama|romance |', '| ')",
]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_a_rendered_expression_gives_on_spark_what_it_gives_on_duckdb(spark, expression):
    expected = duckdb.sql(f"select {expression}").fetchone()[0]
    assert spark.sql(dialect.render(f"select {expression}")).first()[0] == expected


def test_a_regexp_replace_of_the_first_match_only_does_not_render():
    with pytest.raises(engine.BuildError, match="'g' option"):
        dialect.render("select regexp_replace(x, 'a', 'b')")


def test_a_literal_with_a_quote_is_spelled_so_spark_keeps_the_quote():
    # Spark reads 'a''b' as two adjacent literals, 'ab'
    assert dialect.render("select 'it''s', 'plain'") == "select \"it's\", 'plain'"
    with pytest.raises(engine.BuildError, match="both kinds of quote"):
        dialect.render("select 'say \"it''s\"'")


def test_macros_expand_with_their_arguments_parenthesised():
    rendered = dialect.render("select half_life_weight(a - b, c) from t", MACROS)
    assert "power(0.5D, (a - b) / (c))" in rendered
    assert "half_life_weight" not in rendered


def test_a_marked_block_keeps_spark_text_and_the_line_numbers():
    text = "select 1,\n-- [duckdb]\nduck_only(x)\n-- [spark]\n-- spark_only(x)\n-- [end]\nfrom t;\nselect 2;\n"
    chosen = dialect.choose_spark_blocks(text)
    assert "duck_only" not in chosen and "spark_only(x)" in chosen
    assert [s.line for s in dialect.split_statements(chosen)] == [s.line for s in dialect.split_statements(text)]


def test_an_uncommented_spark_block_line_is_an_error():
    with pytest.raises(engine.BuildError, match="not commented out"):
        dialect.choose_spark_blocks("-- [duckdb]\na\n-- [spark]\nb\n-- [end]\n")


@pytest.fixture(scope="module")
def spark():
    session = job.session("local[2]")
    yield session
    session.stop()


def test_spark_parses_every_rendered_statement(spark):
    """Spark's own parser takes each statement of each layer as rendered (no tables needed)."""
    parser = spark._jsparkSession.sessionState().sqlParser()
    for path in LAYERS:
        for statement in dialect.render_file(path, MACROS):
            text = statement.text
            if job.LEFT_TO_DUCKDB.match(text) or job.CREATE_COLUMNS.match(text):
                continue
            create, insert = job.CREATE_AS.match(text), job.INSERT.match(text)
            query = create[3] if create else insert[3] if insert else None
            assert query is not None, f"{path.name} line {statement.line}: not a statement the Spark runner takes"
            if re.match(r"(?is)^values\b", query):
                query = f"select * from {query} as inserted"
            try:
                parser.parsePlan(query)
            except Exception as error:  # py4j's wrapping of Spark's ParseException
                pytest.fail(f"{path.name} line {statement.line}: Spark cannot parse it: {str(error).splitlines()[0]}")


# Spark-built recs.db against DuckDB-built recs.db

def close(a, b) -> bool:
    """Equal, floats within 1e-9 relative (the engines add in different orders)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[key], b[key]) for key in a)
    return a == b


def tables_of(con) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute(
        "select table_name, column_name, data_type from duckdb_columns() "
        "where database_name = 'recs' order by table_name, column_index"
    ).fetchall()
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        tables.setdefault(table, []).append((column, kind))
    return tables


# build_info says how each was built; load_issue_records numbers records each engine's own way
NOT_COMPARED = {"build_info", "load_issue_records"}


def assert_same_model(duck_db, spark_db) -> dict[str, int]:
    """Every table of both files: the same columns and types, the same rows (floats within 1e-9)."""
    duck, spark_con = duckdb.connect(), duckdb.connect()
    duck.execute(f"attach '{duck_db}' as recs (read_only)")
    spark_con.execute(f"attach '{spark_db}' as recs (read_only)")
    try:
        schema = tables_of(duck)
        assert tables_of(spark_con) == schema
        views = sorted(row[0] for row in duck.execute("select view_name from duckdb_views() where database_name = 'recs'").fetchall())
        assert views == sorted(row[0] for row in spark_con.execute("select view_name from duckdb_views() where database_name = 'recs'").fetchall())
        compared = {}
        for table, columns in schema.items():
            if table in NOT_COMPARED:
                continue
            if table == "load_issues":  # Spark gives no line numbers: the same problems, by kind
                query = (
                    "select file, column_name, problem, action, count(*) from recs.load_issues group by all order by all"
                )
            else:
                order = ", ".join(f'"{name}"' for name, kind in columns if not kind.endswith("[]"))
                query = f"select * from recs.{table} order by {order}"
            expected, actual = duck.execute(query).fetchall(), spark_con.execute(query).fetchall()
            assert len(actual) == len(expected), table
            for want, got in zip(expected, actual):
                assert close(want, got), f"{table}: {want} != {got}"
            compared[table] = len(expected)
        return compared
    finally:
        duck.close()
        spark_con.close()


def export_all(cli, db, folder, out) -> list[list[str]]:
    """export --k 10 of every user, as CSV rows."""
    result = cli("--db", db, "--data-dir", folder, "export", "--k", "10", "--out", out)
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def build_both(tmp_path, folder, params, spark):
    """(duckdb-built db, spark-built db, its model folder) for the CSVs in folder."""
    duck_db, spark_db, model = tmp_path / "duck.db", tmp_path / "spark.db", tmp_path / "model"
    engine.build(duck_db, folder, params)
    job.build_with_spark(spark_db, folder, params, master="local[2]", model_out=model)
    return duck_db, spark_db, model


BAD_LINES = {
    "users.csv": ["u1,40,M,Medan", ",30,F,Bali", "u7,,F,Bali", "u8,abc,F,Bali", "u9,250,F,Bali", "u10,30,F",
                  "USER_ID, age,gender,region"],
    "items.csv": ["i1,Again,tv,drama", 'i14,"Stray quote,tv,drama', " ,Nameless,tv,drama", "i9,,tv,drama", "i10,Ten,tv,", "i11,Eleven,,drama",
                  "i12,Twelve,tv,drama,extra", 'i13,"Quoted, with comma",Movie, Drama '],
    "events.csv": [
        "u1,i3,play", 'u2,"i1,play,5,2024-01-05', "u1,i3,play,5,2024-01-05T00:00:00Z,x", ",i3,play,5,2024-01-05", "u1,,play,5,2024-01-05",
        "u1,i3,play,abc,2024-01-05", "u1,i3,play,1e3,2024-01-05", "u1,i3,play,-30,2024-01-05",
        "u1,i3,play,,2024-01-05", "u1,i3,play,90000,2024-01-05", "u1,i3,like,5,2024-01-05",
        "u1,i3,,5,2024-01-05", "u1,i3,play,5,", "u1,i3,play,5,soon", "u1,i3,play,5,2024-13-01",
        "u1,i99,play,5,2024-01-05", "u5,i13,complete,600.5,2024-01-06T09:30:00+02:00", "u2,i9,PLAY,60,2024-01-07 08:00:00",
        "user_id,item_id,event_type,watch_seconds,timestamp",
        'u1,i3,play,5,"2024-01-05',  # an unclosed quote, last: nothing after it to swallow
    ],
}


def bad_input_dir(folder):
    folder.mkdir(parents=True)
    base = {
        "users.csv": ["user_id,age,gender,region"] + [",".join(map(str, row)) for row in TINY_USERS],
        "items.csv": ["item_id,title,content_type,genre"] + [",".join(row) for row in TINY_ITEMS],
        "events.csv": ["user_id,item_id,event_type,watch_seconds,timestamp"]
        + [",".join(map(str, row)) for row in TINY_EVENTS],
    }
    for name, lines in base.items():
        (folder / name).write_text("\n".join(lines + BAD_LINES[name]) + "\n", encoding="utf-8")
    return folder


def real_export_dir(folder):
    """Random data as real exports come: ';'-delimited, events gzipped with unix-time stamps (seconds
    and milliseconds), genre fields holding several genres ('Drama | Romance')."""
    import gzip
    from datetime import datetime

    users, items, events = random_dataset(3, n_users=30, n_items=25, n_events=400)
    items = [(i, t, c, f"{g.title()} | Romance" if n % 3 == 0 else g) for n, (i, t, c, g) in enumerate(items)]
    folder.mkdir(parents=True)

    def lines(header, rows):
        return "\n".join([";".join(header)] + [";".join(map(str, row)) for row in rows]) + "\n"

    (folder / "users.csv").write_text(lines(["user_id", "age", "gender", "region"], users), encoding="utf-8")
    (folder / "items.csv").write_text(lines(["item_id", "title", "content_type", "genre"], items), encoding="utf-8")
    stamped = []
    for n, (user, item, kind, seconds, moment) in enumerate(events):
        epoch = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
        stamped.append((user, item, kind, seconds, int(epoch) if n % 2 else int(epoch * 1000)))
    header = ["user_id", "item_id", "event_type", "watch_seconds", "timestamp"]
    with gzip.open(folder / "events.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write(lines(header, stamped))
    return folder


DATASETS = {
    "real-exports": (lambda tmp: real_export_dir(tmp / "data"), engine.ModelParams()),
    "bundled-defaults": (lambda tmp: _copy_bundled(tmp), engine.ModelParams()),
    "bad-input-plain": (lambda tmp: bad_input_dir(tmp / "data"), PLAIN),
    "random-varied": (
        lambda tmp: write_dataset(tmp / "data", *random_dataset(1, n_users=40, n_items=30, n_events=500)),
        engine.ModelParams(
            half_life_days=14, min_support=2, max_neighbors=3, similarity_history_cap=5,
            popularity_beta=0.3, user_weight_gamma=1, trending_half_life_days=7, strength_formula="views",
        ),
    ),
    "random-ease": (
        lambda tmp: write_dataset(tmp / "data", *random_dataset(2)),
        engine.ModelParams(neighbor_model="ease", ease_lambda=50.0, max_neighbors=5),
    ),
}


def _copy_bundled(tmp):
    shutil.copytree(BUNDLED, tmp / "data", ignore=shutil.ignore_patterns("*.py"))
    return tmp / "data"


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """name -> (name, data folder, DuckDB-built db, Spark-built db, its model folder), each built once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            tmp = tmp_path_factory.mktemp(name)
            make, params = DATASETS[name]
            folder = make(tmp)
            cache[name] = (name, folder, *build_both(tmp, folder, params, spark))
        return cache[name]

    return get


@pytest.fixture(params=list(DATASETS), ids=list(DATASETS))
def both(request, built):
    return built(request.param)


def test_every_table_is_equal(both):
    name, _, duck_db, spark_db, _ = both
    compared = assert_same_model(duck_db, spark_db)
    assert compared["user_item_strength"] > 0 and compared["item_popularity"] > 0
    if name == "bad-input-plain":
        assert compared["load_issues"] > 0
    if name != "random-ease":
        assert compared["neighbor_lists"] > 0


def test_export_k10_is_identical_for_every_user(both, cli, tmp_path):
    _, folder, duck_db, spark_db, _ = both
    expected = export_all(cli, duck_db, folder, tmp_path / "duck.csv")
    actual = export_all(cli, spark_db, folder, tmp_path / "spark.csv")
    assert expected[0] == actual[0] == ["user_id", "rank", "item_id", "title", "score", "source", "reason"]
    assert len(expected) > 1 and len(actual) == len(expected)
    score = expected[0].index("score")
    for want, got in zip(expected[1:], actual[1:]):
        # the same users, ranks, items, titles, sources and reasons; the scores to 1e-9 (printed in full)
        assert want[:score] + want[score + 1:] == got[:score] + got[score + 1:]
        assert math.isclose(float(want[score]), float(got[score]), rel_tol=1e-9, abs_tol=1e-12)


def test_spark_load_issues_are_those_of_duckdb_without_line_numbers(built):
    _, _, duck_db, spark_db, _ = built("bad-input-plain")
    con = duckdb.connect(str(spark_db), read_only=True)
    try:
        issues = con.execute("select line, problem, raw_text from load_issues").fetchall()
        info = dict(con.execute("select key, value from build_info").fetchall())
    finally:
        con.close()
    assert issues and all(line is None for line, _, _ in issues)
    assert ("u1,i99,play,5,2024-01-05" in {raw for _, _, raw in issues})
    assert info["engine"].startswith("spark") and "no line numbers" in info["load_issue_lines"]


def test_a_spark_built_db_is_fresh_for_its_csvs(both):
    """Queries after a Spark build use it as it is: no DuckDB rebuild of the same data."""
    _, folder, _, spark_db, _ = both
    recommender = engine.Recommender(spark_db, folder)
    try:
        assert recommender.build_report is None and recommender.stale is None
        assert recommender.popular(3).items
    finally:
        recommender.close()


# The model folder

def test_from_model_assembles_the_same_db_without_spark_or_csvs(built, cli, tmp_path):
    _, folder, duck_db, _, model = built("bundled-defaults")
    copy = tmp_path / "pulled-model"
    shutil.copytree(model, copy)  # a replica pulls the model, not the events
    db = tmp_path / "replica.db"
    result = cli("--db", db, "--data-dir", tmp_path / "no-data-here", "build", "--from-model", copy)
    assert result.exit_code == 0, result.output
    assert_same_model(duck_db, db)
    result = cli("--db", db, "--data-dir", folder, "recommend", "--user_id", "u1", "--k", "3", "--json")
    assert result.exit_code == 0 and '"source"' in result.stdout
    # a replica without the CSVs serves its model as it is: no rebuild, no stale warning, only the
    # one-line note that freshness is not checked
    result = cli("--db", db, "--data-dir", tmp_path / "no-data-here", "popular", "--k", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("Note: no data folder") and "freshness is not checked" in result.stderr
    assert "stale" not in result.stderr and "uilt" not in result.stderr.replace("as built", "")


def test_cli_build_engine_spark(built, cli, tmp_path):
    _, folder, duck_db, _, _ = built("bad-input-plain")
    db = tmp_path / "cli.db"
    params = [arg for key, value in PLAIN.as_dict().items() for arg in ("--param", f"{key}={value}")]
    result = cli(
        "--db", db, "--data-dir", folder, "build", "--engine", "spark", "--spark-master", "local[2]", *params
    )
    assert result.exit_code == 0, result.output
    assert "Model parameters: pinned" in result.stdout and "Load issues" in result.stdout
    assert not list(tmp_path.glob("cli.db.model-*"))  # the Parquet model without --model-out is removed
    assert_same_model(duck_db, db)


def test_model_out_refuses_a_folder_that_holds_something_else(cli, tiny_dir, tmp_path):
    taken = tmp_path / "mine"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    result = cli("--db", tmp_path / "x.db", "--data-dir", tiny_dir, "build", "--engine", "spark", "--model-out", taken)
    assert result.exit_code == 1
    assert "holds no model of ours" in result.stderr
    assert (taken / "notes.txt").read_text() == "keep me" and not (tmp_path / "x.db").exists()


def test_from_model_of_a_folder_without_a_manifest_is_one_line(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("--db", tmp_path / "x.db", "build", "--from-model", tmp_path / "empty")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "manifest.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_spark_options_need_the_spark_engine(cli, tiny_dir, tmp_path):
    result = cli("--db", tmp_path / "x.db", "--data-dir", tiny_dir, "build", "--model-out", tmp_path / "m")
    assert result.exit_code == 2
    result = cli("--db", tmp_path / "x.db", "--data-dir", tiny_dir, "build", "--engine", "flink")
    assert result.exit_code == 2


# The same tuned model

def test_a_fresh_spark_build_ships_what_a_fresh_duckdb_build_tunes(spark, cli, tmp_path, monkeypatch):
    """No parameters pinned: the Spark build tunes on the driver by the DuckDB build's rule, so both
    engines give the same lists. (A budget of 0 CPU seconds runs the start and the prior's step
    only: the same trials in both runs, whatever the machine's load.)"""
    from engine import tune
    from test_tune import hits_dataset

    monkeypatch.setattr(tune, "BUDGET_SECONDS", 0.0)
    folder = write_dataset(tmp_path / "data", *hits_dataset())
    duck = engine.build(tmp_path / "duck.db", folder)
    sparked = job.build_with_spark(tmp_path / "spark.db", folder, master="local[2]")
    assert duck.params_source == "tuned" and duck.params != engine.ModelParams()
    assert sparked.params == duck.params and sparked.params_source == duck.params_source
    expected = export_all(cli, tmp_path / "duck.db", folder, tmp_path / "duck.csv")
    actual = export_all(cli, tmp_path / "spark.db", folder, tmp_path / "spark.csv")
    score = expected[0].index("score")
    assert len(actual) == len(expected) > 1
    assert [row[:score] for row in actual] == [row[:score] for row in expected]
    # the tuning it ran on is kept: a DuckDB build of the same data reuses it, without a search
    again = engine.build(tmp_path / "spark.db", folder, rebuild=True)
    assert again.tuning is None and again.params == duck.params
