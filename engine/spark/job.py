"""The build layers of sql/ run as Spark SQL, written as a Parquet model.

Every statement of sql/00-45 is rendered by engine/dialect.py and run here
by what it does: `create table ... as` runs the query and writes the result
as Parquet (the model's tables under the model folder, the build's own
temporary tables under its _work folder), `create table (...)` and `insert
into` keep a typed table and append to it, indexes, views and macros are
left to DuckDB, which assembles recs.db from the Parquet (engine/spark/model.py)
and applies sql/50. Each table is read back from its Parquet, so a query
runs once and every later read sees the same rows.

Staging is Spark's own (below): the same checks as engine/load.py, by
name and in the same words, except that Spark's CSV reader gives no line
numbers (load_issues.line is null; raw_text holds the record's fields).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ..build import chosen_params, claim_target, fingerprint, inspect_target
from ..layers import EASE_AFTER, SCRATCH_TABLES, STEP_NAMES
from .. import clock, dialect, load, sqlfiles
from ..config import ModelParams
from ..errors import BadArgument, BuildError, DataFileError, RecsError
from .model import MODEL_FORMAT, MANIFEST, ModelManifest, build_from_model

SESSION_CONF = {
    # timestamps are UTC instants; a timestamp without an offset is taken as UTC
    "spark.sql.session.timeZone": "UTC",
    # string literals as written: sql/ has regular expressions with backslashes
    "spark.sql.parser.escapedStringLiterals": "true",
    # a failed cast is null, as DuckDB's checks expect (they test before casting)
    "spark.sql.ansi.enabled": "false",
    # Parquet timestamps as microseconds, which DuckDB reads as TIMESTAMP
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}

LOCAL_SHUFFLE_PARTITIONS = "4"
"""Shuffle partitions on a local master: Spark's 200 cost a small build seconds of scheduling."""

STEPS = {**STEP_NAMES, "1": "validating rows"}


def session(master: str | None = None):
    """The process's SparkSession (created on first use), with the settings the rendered SQL needs.

    master None leaves the master to spark-submit (or Spark's default).
    """
    from pyspark.sql import SparkSession

    logging.getLogger("py4j").setLevel(logging.ERROR)
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    builder = (
        SparkSession.builder.appName("recs build")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if master:
        builder = builder.master(master)
    if os.environ.get("RECS_SPARK_DRIVER_MEMORY"):
        builder = builder.config("spark.driver.memory", os.environ["RECS_SPARK_DRIVER_MEMORY"])
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    for key, value in SESSION_CONF.items():
        spark.conf.set(key, value)
    if spark.sparkContext.master.startswith("local"):
        spark.conf.set("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
    return spark


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class SparkTables:
    """The tables a build has made so far: Parquet files read back as temporary views."""

    def __init__(self, spark, model_dir: str):
        self.spark = spark
        self.model_dir = model_dir.rstrip("/")
        self.work_dir = f"{self.model_dir}/_work"
        self.versions: dict[str, int] = {}
        self.schemas: dict[str, list[tuple[str, str]]] = {}  # declared columns of create table (...)
        self.written: dict[str, str] = {}  # table -> where its current rows are
        self.model_tables: list[str] = []
        self.stray_quotes: list[tuple[str, str]] = []  # (file, line text) of quotes that never close

    def save(self, name: str, frame, model: bool) -> None:
        """Write frame as table name (under the model folder when model), and read it back as a view."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import TimestampNTZType, TimestampType

        for field in frame.schema.fields:  # naive UTC timestamps, as DuckDB's tables hold them
            if isinstance(field.dataType, TimestampType):
                frame = frame.withColumn(field.name, F.col(field.name).cast("timestamp_ntz"))
        version = self.versions.get(name, 0) + 1
        self.versions[name] = version
        where = f"{self.model_dir}/{name}" if model else f"{self.work_dir}/{name}-{version}"
        frame.write.mode("overwrite").parquet(where)
        back = self.spark.read.parquet(where)
        for field in back.schema.fields:  # and back as instants, which Spark's time functions take
            if isinstance(field.dataType, TimestampNTZType):
                back = back.withColumn(field.name, F.col(field.name).cast("timestamp"))
        back.createOrReplaceTempView(name)
        self.written[name] = where
        if model and name not in self.model_tables:
            self.model_tables.append(name)

    def keep(self, name: str, frame) -> None:
        """Make frame table name without writing it: a view, computed when read (cached once read)."""
        frame.cache().createOrReplaceTempView(name)
        self.written.pop(name, None)

    def publish(self, name: str) -> None:
        """Copy a table kept under _work (made by create table (...) and inserts) into the model folder."""
        if self.written.get(name) != f"{self.model_dir}/{name}":
            self.save(name, self.spark.table(name), model=True)

    def remove_work(self) -> None:
        """Delete the _work folder (through Hadoop's file system API: any URL Spark writes)."""
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.work_dir)
        path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)


SPARK_TYPES = {
    "varchar": "string", "text": "string", "integer": "int", "int": "int", "bigint": "bigint",
    "double": "double", "boolean": "boolean", "timestamp": "timestamp", "float": "float",
}

CREATE_AS = re.compile(r"(?is)^\s*create\s+(?:or\s+replace\s+)?(temp\s+|temporary\s+)?table\s+(\w+)\s+as\s+(.*)$")
CREATE_COLUMNS = re.compile(r"(?is)^\s*create\s+(?:or\s+replace\s+)?table\s+(\w+)\s*\((.*)\)\s*$")
INSERT = re.compile(r"(?is)^\s*insert\s+into\s+(\w+)\s*(?:\(([^)]*)\))?\s*(.*)$")
LEFT_TO_DUCKDB = re.compile(r"(?is)^\s*create\s+(?:or\s+replace\s+)?(?:unique\s+)?(index|view|macro)\b")


class Runner:
    """Runs rendered sql/ statements on Spark, statement by statement."""

    def __init__(self, spark, tables: SparkTables, scratch_tables: tuple[str, ...]):
        self.spark = spark
        self.tables = tables
        self.scratch_tables = set(scratch_tables)
        self.macros = dialect.scalar_macros(sqlfiles.SQL_DIR / "05_rules.sql")

    def run_file(self, path: Path) -> None:
        for statement in dialect.render_file(path, self.macros):
            try:
                self.run(statement.text)
            except RecsError as error:
                raise BuildError(f"{path.name}, statement at line {statement.line} (Spark): {error}") from None
            except Exception as error:  # pyspark's and py4j's errors
                raise BuildError(
                    f"{path.name}, statement at line {statement.line} (Spark): {_first_line(error)}"
                ) from None

    def run(self, text: str) -> None:
        if LEFT_TO_DUCKDB.match(text):
            return  # DuckDB makes these when it assembles recs.db
        match = CREATE_AS.match(text)
        if match:
            temp, name, query = match[1], match[2], match[3]
            if temp:  # the build's own tables, read by the next statements only
                self.tables.keep(name, self.spark.sql(query))
            else:
                self.tables.save(name, self.spark.sql(query), model=name not in self.scratch_tables)
            return
        match = CREATE_COLUMNS.match(text)
        if match:
            name, columns = match[1], _columns(match[2])
            self.tables.schemas[name] = columns
            self.tables.keep(name, self._empty(columns))
            return
        match = INSERT.match(text)
        if match:
            self._insert(match[1], match[2], match[3])
            return
        raise BuildError(f"no Spark rendering for the statement {text.strip().splitlines()[0]!r}")

    def _empty(self, columns: list[tuple[str, str]]):
        ddl = ", ".join(f"`{name}` {kind}" for name, kind in columns)
        return self.spark.createDataFrame([], ddl)

    def _insert(self, name: str, column_list: str | None, body: str) -> None:
        from pyspark.sql import functions as F

        columns = self.tables.schemas.get(name)
        if columns is None:
            raise BuildError(f"insert into {name}: only tables made by create table (...) take inserts on Spark")
        targets = [column.strip() for column in column_list.split(",")] if column_list else [c for c, _ in columns]
        if re.match(r"(?is)^values\b", body):
            query = f"select * from {body} as inserted({', '.join(f'`{c}`' for c in targets)})"
        else:
            query = body
        rows = self.spark.sql(query)
        if len(rows.columns) != len(targets):
            raise BuildError(f"insert into {name}: {len(rows.columns)} columns for {len(targets)}")
        given = dict(zip(targets, rows.columns))
        rows = rows.select(*(
            (F.col(f"`{given[column]}`") if column in given else F.lit(None)).cast(kind).alias(column)
            for column, kind in columns
        ))
        # the query was analysed above: the union keeps the rows it selects now
        self.tables.keep(name, self.spark.table(name).unionByName(rows))


def _columns(text: str) -> list[tuple[str, str]]:
    """(name, Spark type) of each column of a create table (...) column list."""
    columns, depth, start = [], 0, 0
    parts = []
    for position, char in enumerate(text + ","):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    for part in parts:
        words = part.split()
        if not words or words[0].lower() in ("primary", "unique", "check", "foreign", "constraint"):
            continue
        kind = SPARK_TYPES.get(words[1].lower())
        if kind is None:
            raise BuildError(f"column {words[0]}: type {words[1]} has no Spark equivalent here")
        columns.append((words[0], kind))
    return columns


# Staging: each CSV as text columns, by its header's names, with a record
# number (rec_no) in file order; malformed records and repeated header lines
# become load_issue_records, as engine/load.py makes them for DuckDB.

def _stage(
    spark, tables: SparkTables, path: Path, spec: load.CsvSpec, scratch: Path, input_format: load.InputFormat,
    scanned: bool = False, name: str | None = None,
) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    name = name or spec.file
    if not scanned:
        input_format = input_format.for_file(spec, path)
    # by name, in file order, with its delimiter: the same checks and messages as load.stage
    header, delimiter = load.read_header(
        path, spec, input_format if not scanned else dataclasses.replace(input_format, encoding="utf-8")
    )
    if not scanned and not input_format.is_utf8:  # a UTF-8 copy, line for line, as load.stage reads
        path = load.as_utf8(path, scratch / f"utf8-{spec.file}", input_format.encoding)
    if not scanned and load.mixes_line_endings(path):  # Spark's reader, like DuckDB's, takes one kind per file
        path = load.with_lf_endings(path, scratch / spec.file)
    if not scanned and _ends_inside_quotes(path):
        path, scanned = _blank_stray_quotes(tables, path, spec, delimiter, scratch, name), True
    schema = StructType(
        [StructField(name, StringType()) for name in header] + [StructField("_corrupt_record", StringType())]
    )
    frame = (
        spark.read.schema(schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt_record")
        .option("multiLine", True)  # a quoted value may hold a line break
        .option("sep", delimiter)
        .option("quote", '"')
        .option("escape", '"')
        .option("encoding", "UTF-8")
        .csv(str(path))
        # one file is one partition in multiLine mode: the ids follow the file's order
        .withColumn("rec_no", F.monotonically_increasing_id())
    )
    staged = f"staged_{spec.table}"
    tables.save(staged, frame, model=False)
    fields = ", ".join(f"lower(trim(replace(`{name}`, '\ufeff', '')))" for name in header)
    names = ", ".join("'" + name + "'" for name in header)
    is_header = f"array({fields}) = array({names})"
    bad_text = " or ".join(f"instr(`{name}`, '\ufffd') > 0" for name in header)
    raw_fields = ", ".join(f"coalesce(`{name}`, '')" for name in header)
    joiner = delimiter.replace("\\", "\\\\").replace("'", "\\'")
    spark.sql(
        f"""
        select '{_literal(name)}' as file, rec_no,
            coalesce(_corrupt_record, concat_ws('{joiner}', {raw_fields})) as raw_text
        from {staged}
        """
    ).createOrReplaceTempView(f"raw_text_{spec.table}")
    # malformed records and repeated headers are few: their problems are worded here, as load.stage words them
    odd = spark.sql(
        f"""
        select rec_no, _corrupt_record, ({bad_text}) as bad_text, {is_header} as is_header
        from {staged}
        where _corrupt_record is not null or ({bad_text}) or {is_header}
        """
    ).collect()
    if not scanned and any(row["_corrupt_record"] is not None for row in odd):
        # as load.stage: in a file with malformed records, a stray quote may have swallowed lines
        blanked = _blank_stray_quotes(tables, path, spec, delimiter, scratch, name)
        if blanked != path:
            return _stage(spark, tables, blanked, spec, scratch, input_format, scanned=True, name=name)  # read as UTF-8 now
    rows = [
        (name, row["rec_no"], None, None,
         "repeated header line" if row["is_header"] and row["_corrupt_record"] is None
         else _malformed_problem(row, header, input_format, delimiter), "row skipped")
        for row in odd
    ] + [(name, None, 1, column, problem, action) for column, problem, action in load.header_notes(header, spec, input_format)]
    absent = load.absent_columns(header, spec, input_format)
    if absent:
        frame = spark.createDataFrame([(spec.table, column) for column in absent], "table_name string, column_name string")
        tables.keep("absent_columns", spark.table("absent_columns").unionByName(frame))
    if rows:
        issues = spark.createDataFrame(
            rows, "file string, rec_no bigint, csv_line bigint, column_name string, problem string, action string"
        )
        tables.keep("load_issue_records", spark.table("load_issue_records").unionByName(issues))
    skip = spark.createDataFrame([(row["rec_no"],) for row in odd], "rec_no bigint")
    skip.createOrReplaceTempView(f"skipped_{spec.table}")
    selected = load.select_list(header, spec, input_format, quote="`", text_type="string")
    spark.sql(
        f"""
        select '{_literal(name)}' as file, rec_no, {selected}
        from {staged}
        where rec_no not in (select rec_no from skipped_{spec.table})
        """
    ).createOrReplaceTempView(f"raw_{spec.table}")


def _literal(text: str) -> str:
    """text inside a Spark SQL string literal."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _blank_stray_quotes(
    tables: SparkTables, path: Path, spec: load.CsvSpec, delimiter: str, scratch: Path, name: str
) -> Path:
    """load.blank_unclosed_quotes, its lines kept for load_issues (a stray quote would swallow
    what follows it): the path to read."""
    path, stray = load.blank_unclosed_quotes(path, delimiter, scratch / f"q-{spec.file}")
    tables.stray_quotes += [(name, text) for _, text in stray]
    return path


def _ends_inside_quotes(path: Path) -> bool:
    """Whether the file has an odd number of double quotes: a quote opened and never closed."""
    count = 0
    with load.open_bytes(path) as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            count += block.count(b'"')
    return count % 2 == 1


def _malformed_problem(row, header: list[str], input_format: load.InputFormat, delimiter: str) -> str:
    """The problem of a record Spark could not split into the header's fields (load.stage's words)."""
    text = row["_corrupt_record"]
    if row["bad_text"] or (text is not None and "\ufffd" in text):
        return f"the row is not valid {'UTF-8' if input_format.is_utf8 else input_format.encoding} text"
    if text.count('"') % 2 == 1:
        return "a quote in the row is not closed or not escaped"
    fields = next(csv.reader([text], delimiter=delimiter), [])
    return f"the row has {len(fields)} fields, expected {len(header)}"


FINISH_ISSUES = """
select
    issue.file,
    cast(null as bigint) as line,
    issue.column_name,
    issue.problem,
    issue.action,
    raw.raw_text
from load_issue_records as issue
left join ({raw}) as raw
    on raw.file = issue.file and raw.rec_no = issue.rec_no
order by issue.file, issue.rec_no
"""


def _finish_issues(spark, tables: SparkTables) -> None:
    """load_issues: every recorded problem with the record's text; Spark gives no line numbers."""
    raw = " union all ".join(
        f"select file, rec_no, raw_text from raw_text_{spec.table}" for spec in load.SPECS
    )
    issues = spark.sql(FINISH_ISSUES.format(raw=raw))
    if tables.stray_quotes:
        stray = spark.createDataFrame(
            [(file, None, None, load.STRAY_QUOTE, "row skipped", text) for file, text in tables.stray_quotes],
            issues.schema,
        )
        issues = issues.unionByName(stray)
    tables.save("load_issues", issues, model=True)


def _is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


MARKER = ".recs-model"
"""Written first into a model folder: the folder is ours to rewrite, even if a job died before its manifest."""


def _claim_model_dir(model_dir: str) -> None:
    """Refuse a local model folder that holds anything but a model of ours (never overwrite a user's files);
    mark it as ours and drop its old manifest, so a half-written model is never taken for a finished one."""
    if not _is_local(model_dir):
        return
    folder = Path(model_dir.removeprefix("file://"))
    if folder.exists() and not folder.is_dir():
        raise BadArgument(f"--model-out {folder} is a file, not a folder; pick another path")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise BadArgument(
            f"--model-out {folder} is not empty and holds no model of ours ({MARKER} missing); "
            "pick an empty or new folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("a model folder of recs: build --engine spark rewrites it\n", encoding="utf-8")
    (folder / MANIFEST).unlink(missing_ok=True)


def _ease(spark, tables: SparkTables, params: ModelParams, scratch: Path) -> None:
    """EASE on the driver: engine/ease.py reads user_item_strength (the model's Parquet) in DuckDB."""
    import duckdb

    from .. import ease

    where = tables.written["user_item_strength"]
    if not _is_local(where):
        raise BuildError("neighbor_model=ease on Spark needs a local --model-out (the driver reads the strengths)")
    con = duckdb.connect()
    try:
        location = where.removeprefix("file://").replace("'", "''")
        con.execute(f"create view user_item_strength as select * from read_parquet('{location}/*.parquet')")
        ease.ease_weights(con, l2=params.ease_lambda, max_neighbors=params.max_neighbors)
        out = str(scratch / "ease_weights.parquet").replace("'", "''")
        con.execute(f"copy ease_weights to '{out}' (format parquet)")
    finally:
        con.close()
    tables.save("ease_weights", spark.read.parquet(str(scratch / "ease_weights.parquet")), model=False)


def write_model(
    folder: Path,
    model_dir: str | os.PathLike,
    params: ModelParams,
    params_source: str = "pinned",
    master: str | None = None,
    progress=None,
    input_format: load.InputFormat | None = None,
    tuned_info: dict | None = None,
) -> ModelManifest:
    """Run sql/00-45 on Spark over the CSVs in folder; write the model's tables as Parquet under model_dir.

    input_format: how the CSVs are written (delimiter, encoding); None: as the environment says,
    else the delimiter from each header and UTF-8 (load.InputFormat.chosen).

    model_dir is a local folder or any URL Spark writes (hdfs://, s3a://, ...);
    manifest.json, written last, lists the tables and the parameters.
    """
    started = time.perf_counter()
    step = progress or (lambda name: None)
    folder = Path(folder)
    input_format = load.InputFormat.chosen(input_format)
    found = load.sources(folder, input_format)
    model_dir = str(model_dir)
    _claim_model_dir(model_dir)
    digest = fingerprint(folder, input_format)
    step("starting Spark")
    try:
        spark = session(master)
    except Exception as error:
        raise BuildError(f"Spark did not start (master {master or 'from spark-submit'}): {_first_line(error)}") from None
    tables = SparkTables(spark, model_dir)
    runner = Runner(spark, tables, SCRATCH_TABLES)
    with tempfile.TemporaryDirectory(prefix="recs-spark-") as scratch:
        for path in sqlfiles.build_files(layer="schema"):
            runner.run_file(path)
        step("reading CSV files")
        for source in found:
            if source.path is None:  # no users file: a staging view of no rows
                spark.sql(load.empty_staging(source.spec, "string")).createOrReplaceTempView(f"raw_{source.spec.table}")
                spark.sql("select cast(null as string) as file, cast(null as bigint) as rec_no, "
                          "cast(null as string) as raw_text where 1 = 0") \
                    .createOrReplaceTempView(f"raw_text_{source.spec.table}")
                continue
            try:
                _stage(spark, tables, source.path, source.spec, Path(scratch), input_format, name=source.name)
            except RecsError:
                raise
            except Exception as error:
                raise DataFileError(f"{source.path}: cannot be read as CSV by Spark: {_first_line(error)}") from None
        step("validating rows")
        spark.sql(clock.view_sql())  # the present the timestamp rule reads
        for path in sqlfiles.build_files(layer="load"):
            runner.run_file(path)
        _finish_issues(spark, tables)
        values = params.as_dict()
        tables.save("model_params", spark.createDataFrame([values], _params_schema(values)), model=True)
        for path in sqlfiles.build_files(layer="model"):
            if path.name.startswith("50"):
                continue  # the serving queries: DuckDB's, applied to recs.db
            step(STEPS.get(path.name[:2], path.stem))
            runner.run_file(path)
            if path.name.startswith(EASE_AFTER) and params.neighbor_model == "ease":
                step("computing EASE weights")
                _ease(spark, tables, params, Path(scratch))
        for name in ("event_types", "load_issue_records", "user_keys", "ease_weights"):
            tables.publish(name)
        tables.remove_work()
        spark.catalog.clearCache()  # the build's cached temporary tables
    manifest = ModelManifest(
        format=MODEL_FORMAT,
        tables=list(tables.model_tables),
        params=params.as_dict(),
        params_source=params_source,
        fingerprint=digest,
        data_dir=str(folder.resolve()),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        engine=f"spark {spark.version}",
        spark_master=spark.sparkContext.master,
        seconds=round(time.perf_counter() - started, 2),
        tuned_info=dict(tuned_info or {}),
    )
    _write_manifest(spark, model_dir, manifest)
    return manifest


def _params_schema(values: dict) -> str:
    kinds = {bool: "boolean", int: "bigint", float: "double", str: "string"}
    return ", ".join(f"`{name}` {kinds[type(value)]}" for name, value in values.items())


def _write_manifest(spark, model_dir: str, manifest: ModelManifest) -> None:
    text = json.dumps(manifest.as_dict(), indent=2, sort_keys=True) + "\n"
    if _is_local(model_dir):
        (Path(model_dir.removeprefix("file://")) / MANIFEST).write_text(text, encoding="utf-8")
        return
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{model_dir.rstrip('/')}/{MANIFEST}")
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def build_with_spark(
    db: Path,
    folder: Path,
    params: ModelParams | None = None,
    progress=None,
    master: str | None = None,
    model_out: str | os.PathLike | None = None,
    force: bool = False,
    input_format: load.InputFormat | None = None,
    tune: bool | None = None,
    tune_sample: int | None = None,
):
    """Build db from the CSVs in folder on Spark: the Parquet model (kept in model_out, if given),
    then recs.db assembled from it by DuckDB. Returns the BuildReport.

    Without params, the parameters are those a DuckDB build of the same data would choose, by the
    same rule (engine.build.chosen_params: the tuner runs here, on the driver, with DuckDB, on a
    sample of users above tune.MAX_EVENTS), so both engines give the same lists."""
    started = time.perf_counter()
    db = Path(db)
    load.data_files(folder, input_format)
    if inspect_target(db)[0] == "foreign" and not force:
        claim_target(db, force)  # NotOurDatabase, before Spark starts, in the usual words
    db.parent.mkdir(parents=True, exist_ok=True)
    chosen, source, tuned = chosen_params(db, folder, params, tune, input_format, tune_sample, progress)
    if model_out is not None:
        model_out = str(model_out).removeprefix("file://")
        manifest = write_model(folder, model_out, chosen, source, master, progress, input_format, tuned)
        report = build_from_model(db, model_out, progress, force)
    else:
        with tempfile.TemporaryDirectory(prefix=f"{db.name}.model-", dir=db.parent) as model_dir:
            manifest = write_model(folder, model_dir, chosen, source, master, progress, input_format, tuned)
            report = build_from_model(db, model_dir, progress, force, keep_model_dir=False)
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["build_with_spark", "session", "write_model"]
