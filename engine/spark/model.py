"""recs.db assembled from a Parquet model (what a Spark build writes), by DuckDB alone.

The tables' types, keys, indexes, views and the serving macros come from
the sql/ files themselves: the usual DuckDB build is run on header-only
CSVs (no rows, the same schema), then each model table is filled from its
Parquet, in the order it was written (sorted tables stay sorted). So a
recs.db from a model answers exactly as one built by DuckDB, and serving
replicas need the model, not the events, nor Spark.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from ..build import BuildReport, build_filled
from ..layers import SCRATCH_TABLES, load_into, model_into
from .. import load
from ..config import ModelParams
from ..db import quoted
from ..errors import DataFileError, RecsError

MODEL_FORMAT = 1
"""The layout of a model folder: one Parquet folder per table and manifest.json."""

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ModelManifest:
    """What a model folder holds: its tables, the parameters, and where it came from."""

    format: int
    tables: list[str]
    params: dict
    params_source: str
    fingerprint: str
    data_dir: str
    built_at: str
    engine: str
    spark_master: str
    seconds: float
    tuned_info: dict = field(default_factory=dict)
    """What build_info keeps of the tuning run behind params (engine.build.TUNED_INFO and its
    params_key), so a later build reuses them as after a DuckDB build; {} in older manifests."""

    def as_dict(self) -> dict:
        return asdict(self)


def read_manifest(model_dir: str | os.PathLike) -> ModelManifest:
    """The manifest of a local model folder; DataFileError when it is not a model of ours."""
    folder = Path(model_dir)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DataFileError(f"model folder not found: {folder}")
    if not path.is_file():
        raise DataFileError(
            f"{folder} holds no {MANIFEST}: not a model written by 'build --engine spark --model-out' "
            "(or its job did not finish)"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        manifest = ModelManifest(**values)
    except (ValueError, TypeError) as error:
        raise DataFileError(f"{path}: not a manifest of this app: {error}") from None
    if manifest.format != MODEL_FORMAT:
        raise DataFileError(f"{path}: model format {manifest.format}, this app reads format {MODEL_FORMAT}")
    for table in manifest.tables:
        if not (folder / table).is_dir():
            raise DataFileError(f"{folder}: table {table} is listed in {MANIFEST} but its folder is missing")
    return manifest


def build_from_model(
    db: Path,
    model_dir: str | os.PathLike,
    progress=None,
    force: bool = False,
    keep_model_dir: bool = True,
) -> BuildReport:
    """Build db from the Parquet model in model_dir (a local folder), swapped in like any build."""
    db = Path(db)
    folder = Path(model_dir)
    manifest = read_manifest(folder)
    try:
        params = ModelParams.from_dict(manifest.params)
    except RecsError as error:
        raise DataFileError(f"{folder / MANIFEST}: {error}") from None

    def fill(con: duckdb.DuckDBPyConnection):
        with tempfile.TemporaryDirectory(prefix="recs-schema-") as scratch:
            empty = Path(scratch)
            for spec in load.SPECS:  # header-only CSVs: the build's tables, without rows
                (empty / spec.file).write_text(",".join(spec.columns) + "\n", encoding="utf-8")
            load_into(con, empty)
            model_into(con, params.replace(neighbor_model="cosine"))
        for table in SCRATCH_TABLES:
            con.execute(f"drop table {table}")
        if progress:
            progress("reading the Parquet model")
        con.execute("set preserve_insertion_order = true")  # sorted tables stay sorted
        for table in manifest.tables:
            files = quoted(folder / table) + "/*.parquet"
            con.execute(f"delete from {table}")
            try:
                con.execute(f"insert into {table} by name select * from read_parquet('{files}')")
            except duckdb.Error as error:
                first = str(error).splitlines()[0]
                raise DataFileError(f"{folder / table}: does not fit table {table}: {first}") from None
        extra = {
            "engine": manifest.engine,
            "spark_master": manifest.spark_master,
            "data_dir": manifest.data_dir,
            "model_built_at": manifest.built_at,
            "model_seconds": f"{manifest.seconds:.2f}",
            "load_issue_lines": "not numbered: Spark's CSV reader gives no line numbers",
        }
        extra.update(manifest.tuned_info)
        if keep_model_dir:
            extra["model_dir"] = str(folder.resolve())
        return manifest.fingerprint, params, manifest.params_source, extra

    return build_filled(db, folder, fill, progress, force)
