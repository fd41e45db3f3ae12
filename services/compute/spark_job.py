"""The compute job on Spark: local mode in the worker (`executor=spark`), or `spark-submit` on EMR.

The chunk's non-zeros are read as a DataFrame, repartitioned by feature, and each partition runs
the same kernel (`services.compute.views`) through `mapInArrow`; the driver collects the cells,
writes HFiles through the same jvm/ writer and records the same checks as the local executor, so
the output is identical bit for bit. Usage as a step:

    spark-submit --py-files wideviews.zip spark_job.py --dataset D --version V --chunk N
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from services.compute import job
from services.compute.views import ViewCells, catalog_view_cells, cells_view_cells, features_view_cells, group_codes, stats_view_cells
from shared.adapters.s3 import download_prefix
from shared.config import Settings
from shared.errors import Permanent
from shared.messages import LoadChunk
from shared.staging import VersionPlan, chunk_prefix, read_cells, read_plan

_OUT_SCHEMA = pa.schema([("view", pa.string()), ("row", pa.binary()), ("qualifier", pa.binary()), ("value", pa.binary())])
_OUT_DDL = "view string, row binary, qualifier binary, value binary"
_session: Any = None


def spark_session(master: str = "local[2]") -> Any:
    """One Spark session per process (local mode unless spark-submit chose a master)."""
    global _session
    if _session is None:
        from pyspark.sql import SparkSession

        # PySpark picks the workers' interpreter from this variable: make it ours (numpy, numba, wideviews).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        _session = (
            SparkSession.builder.appName("wideviews-compute")
            .master(master)
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .getOrCreate()
        )
    return _session


def partition_cells(plan: VersionPlan, chunk: int, codes: list[np.ndarray], max_nnz: int) -> Any:
    """The function each partition runs: its features' non-zeros in, their stats and transpose cells out."""
    start, _ = plan.chunks[chunk]
    n_cells = plan.n_cells
    names = plan.features
    groupings = [(g.view, len(g.groups)) for g in plan.groupings]

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
        if not tables:
            return
        table = pa.concat_tables(tables)
        feature = table.column("feature").to_numpy()
        local, inverse = np.unique(feature, return_inverse=True)
        matrix = sp.csc_array((table.column("value").to_numpy(), (table.column("cell").to_numpy(), inverse)), shape=(n_cells, local.size))
        matrix.sum_duplicates()
        features = [names[start + int(f)] for f in local]
        views: list[ViewCells] = [stats_view_cells(view, features, matrix, code, n) for (view, n), code in zip(groupings, codes)]
        views.append(features_view_cells(features, matrix, max_nnz))
        for cells in views:
            yield pa.RecordBatch.from_arrays(
                [pa.array([cells.view] * len(cells.rows)), pa.array(cells.rows, pa.binary()), pa.array(cells.qualifiers, pa.binary()), pa.array(cells.values, pa.binary())],
                schema=_OUT_SCHEMA,
            )

    return run


def _all_zero_features(plan: VersionPlan, chunk: int, present: set[int]) -> list[str]:
    start, end = plan.chunks[chunk]
    return [plan.features[start + i] for i in range(end - start) if i not in present]


def compute_chunk_views_spark(s3: Any, settings: Settings, plan: VersionPlan, chunk: int, staged: Path) -> list[ViewCells]:
    """Every view's cells of one chunk, the per-feature part computed by Spark partitions."""
    spark = spark_session()
    cells_table = read_cells(s3, settings, plan)
    codes = group_codes(cells_table, plan)
    frame = spark.read.parquet(str(staged))
    n_parts = max(1, min(8, (plan.chunks[chunk][1] - plan.chunks[chunk][0]) // 64))
    result = frame.repartition(n_parts, "feature").mapInArrow(partition_cells(plan, chunk, codes, settings.features_row_max_nnz), _OUT_DDL)
    collected = result.toPandas()
    present = set(frame.select("feature").distinct().toPandas()["feature"].astype(int).tolist())
    # Features with no non-zero at all never reach a partition: the driver computes them (all zeros).
    missing = _all_zero_features(plan, chunk, present)
    by_view: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
    for view, row, qualifier, value in zip(collected["view"], collected["row"], collected["qualifier"], collected["value"]):
        by_view.setdefault(view, []).append((bytes(row), bytes(qualifier), bytes(value)))
    if missing:
        zeros = sp.csc_array((plan.n_cells, len(missing)), dtype=np.float64)
        extra = [stats_view_cells(g.view, missing, zeros, code, len(g.groups)) for g, code in zip(plan.groupings, codes)]
        extra.append(features_view_cells(missing, zeros, settings.features_row_max_nnz))
        for cells in extra:
            by_view.setdefault(cells.view, []).extend(zip(cells.rows, cells.qualifiers, cells.values))
    views = [ViewCells.from_unsorted(g.view, by_view.get(g.view, [])) for g in plan.groupings]
    views.append(ViewCells.from_unsorted("features", by_view.get("features", [])))
    views.append(catalog_view_cells(plan, chunk))
    if "cells" in plan.chunk_views(chunk):
        views.append(cells_view_cells(plan, cells_table, *plan.cell_range(chunk)))
    return views


def run_chunk_spark(s3: Any, settings: Settings, dataset_id: str, version_id: str, chunk: int) -> list[LoadChunk]:
    """The spark executor: the chunk's job under Spark, outputs identical to `job.run_chunk`."""
    plan = read_plan(s3, settings, dataset_id, version_id)
    if not 0 <= chunk < plan.n_chunks:
        raise Permanent(f"chunk {chunk} is out of range: version {version_id} has {plan.n_chunks} chunks")
    with tempfile.TemporaryDirectory(prefix=f"wideviews-spark-{version_id[:8]}-{chunk}-") as tmp:
        staged = Path(tmp) / "chunk"
        if not download_prefix(s3, settings.staging_bucket, chunk_prefix(dataset_id, version_id, chunk), staged):
            raise Permanent(f"chunk {chunk} of version {version_id} has no staged parts")
        views = compute_chunk_views_spark(s3, settings, plan, chunk, staged)
        return job.publish_chunk_outputs(s3, settings, plan, chunk, views, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point (an EMR step): writes HFiles and checks to staging, prints the load messages."""
    global _session
    from pyspark.sql import SparkSession

    # Under spark-submit the master and resources come from the submission, not from local mode.
    _session = SparkSession.builder.appName("wideviews-compute").getOrCreate()
    return job.run_from_command_line("wideviews-spark-job", run_chunk_spark, argv)


if __name__ == "__main__":
    raise SystemExit(main())
