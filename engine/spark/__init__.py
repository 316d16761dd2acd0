"""The model's build on Spark: the same sql/ layers as Spark SQL, written as
a Parquet model, and recs.db assembled from such a model.

    build_with_spark(db, folder, params, master="local[2]")   # CSVs -> Parquet -> recs.db
    write_model(folder, model_dir, params)                     # CSVs -> Parquet (a cluster job)
    build_from_model(db, model_dir)                            # Parquet -> recs.db (a replica)

Spark (pyspark, requirements-spark.txt) is needed by the first two only:
serving replicas assemble recs.db with DuckDB, which reads Parquet.
"""

from __future__ import annotations

from .model import MODEL_FORMAT, ModelManifest, build_from_model, read_manifest

import os

DEFAULT_MASTER = "local[*]"


def default_master() -> str | None:
    """local[*], or None under spark-submit (which starts the JVM and says the master itself)."""
    return None if os.environ.get("PYSPARK_GATEWAY_PORT") else DEFAULT_MASTER


def build_with_spark(*args, **kwargs):
    """engine.spark.job.build_with_spark, imported on first use (it needs pyspark)."""
    from .job import build_with_spark as run

    return run(*args, **kwargs)


def write_model(*args, **kwargs):
    """engine.spark.job.write_model, imported on first use (it needs pyspark)."""
    from .job import write_model as run

    return run(*args, **kwargs)


__all__ = [
    "DEFAULT_MASTER",
    "MODEL_FORMAT",
    "ModelManifest",
    "build_from_model",
    "build_with_spark",
    "default_master",
    "read_manifest",
    "write_model",
]
