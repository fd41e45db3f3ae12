"""The compute job of a batch of chunks as one Spark application: local mode in the compute worker
(`executor=spark`), or `spark-submit` as one EMR step (`executor=emr`).

Nothing of the matrix passes through the driver or a local disk of ours:

1. The executors read the batch's staged non-zeros from S3 (`s3a://` with hadoop-aws against the
   local moto server; EMRFS `s3://` on EMR).
2. The non-zeros are shuffled into partitions of features contiguous in row-key (byte) order,
   cut at the views' region boundaries (`VersionPlan.region_boundaries`). A partition is chosen
   by a key whose Spark hash lands on exactly that partition, so the partitioner is exact.
3. Each partition runs the kernel (`services.compute.views`, the local executor's code) and emits
   its stats and transpose cells already sorted, plus one check row per view (cells, rows,
   checksum, first and last row, a sampled row and its checksum).
4. The executors write each view's HFiles to S3 with HFileOutputFormat2 (`org.wideviews.hfile.
   SparkHFiles`: the cells go from the DataFrame to KeyValues inside the JVM), one HFile per
   partition. The cells view is computed by tasks over ranges of cells (each reads its rows of
   the staged cells table from S3), range-partitioned and sorted by cell id, then written alike.
5. The driver collects only the check rows and writes the checks beside the HFiles.

Usage as an EMR step:

    spark-submit --py-files wideviews.zip spark_job.py --dataset D --version V --chunk FIRST --chunk-end END
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from services.compute.job import load_message, put_marker_candidates
from services.compute.markers import CANDIDATE_SCHEMA
from services.compute.views import (
    ViewEntries,
    catalog_view_entries,
    cells_view_entries,
    features_view_entries,
    group_codes,
    grouping_outputs,
    sample_view_entries,
    summarize_checks,
    view_family,
)
from shared import layout
from shared.adapters.s3 import S3Client, S3RangeReader, delete_prefix, put_json, s3_client
from shared.config import Settings
from shared.errors import Permanent, Transient
from shared.messages import LoadChunk
from shared.staging import (
    SAMPLE_VIEW,
    VersionPlan,
    cells_key,
    check_key,
    chunk_prefix,
    hfiles_prefix,
    read_cells,
    read_plan,
)

CELLS_DDL = "view string, row binary, qualifier binary, value binary"
_CELLS_SCHEMA = pa.schema([("view", pa.string()), ("row", pa.binary()), ("qualifier", pa.binary()), ("value", pa.binary())])
CHECK_PREFIX = "check:"
CANDIDATES_ROW = "candidates"  # a partition's marker candidates, as one Arrow IPC stream
_session: Any = None


# Rows per in-memory columnar batch when a DataFrame is persisted (Spark's default is 10,000): a
# `features` row holds up to `features_row_max_nnz` non-zeros (~2 MB), and a cached batch's column
# buffer is allocated whole, so 10,000 of them would not fit any executor's heap.
CACHED_BATCH_ROWS = 32
# What a task hands Spark in one Arrow batch, at most about (bytes of row keys, qualifiers and values).
ARROW_BATCH_BYTES = 16 << 20


def spark_session(settings: Settings) -> Any:
    """One Spark session per process: local mode with our jars and s3a set up, unless spark-submit
    already made one (EMR: master, jars and EMRFS come from the submission). A session whose JVM
    died (out of memory, killed) is replaced by a new one."""
    global _session
    if _session is not None and not _jvm_alive(_session):
        _forget_session()
    if _session is None:
        from pyspark.sql import SparkSession

        from shared import jvm

        # PySpark picks the workers' interpreter from this variable: make it ours (numpy, numba, wideviews).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        classpath = os.pathsep.join([*jvm.spark_classpath(settings), *jvm.spark_s3_classpath(settings)])
        builder = (
            SparkSession.builder.appName("wideviews-compute")
            .master("local[2]")
            .config("spark.driver.memory", settings.spark_local_memory)
            .config("spark.sql.inMemoryColumnarStorage.batchSize", str(CACHED_BATCH_ROWS))
            .config("spark.driver.extraClassPath", classpath)
            .config("spark.executor.extraClassPath", classpath)
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
        )
        for key, value in s3a_conf(settings).items():
            builder = builder.config(f"spark.hadoop.{key}", value)
        _session = builder.getOrCreate()
    return _session


def _jvm_alive(session: Any) -> bool:
    """Whether the session's JVM still answers and its context is running."""
    try:
        return not session.sparkContext._jsc.sc().isStopped()
    except Exception:  # py4j cannot reach the JVM: it is gone
        return False


def _forget_session() -> None:
    """Drop the dead session and pyspark's handles to its JVM, so the next session starts a new one."""
    global _session
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    with contextlib.suppress(Exception):  # stopping a context whose JVM is gone fails; nothing to keep
        _session.stop()
    SparkContext._gateway = None
    SparkContext._jvm = None
    SparkContext._active_spark_context = None
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    _session = None


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop settings of the s3a filesystem for this deployment (the local moto server: path-style,
    plain HTTP, its test credentials). Empty on real AWS, where the default providers apply."""
    if not settings.aws_endpoint_url:
        return {}
    return {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.endpoint": settings.aws_endpoint_url,
        "fs.s3a.endpoint.region": settings.region,
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": str(settings.aws_endpoint_url.startswith("https")).lower(),
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "fs.s3a.access.key": settings.aws_access_key_id,
        "fs.s3a.secret.key": settings.aws_secret_access_key,
        "fs.s3a.change.detection.mode": "none",
    }


def s3_uri(settings: Settings, bucket: str, key: str) -> str:
    """A staging object as Spark's executors address it (`s3a://` locally, `s3://` on EMR)."""
    return f"{settings.spark_s3_scheme}://{bucket}/{key}"


def feature_partitions(plan: VersionPlan, first: int, end: int, settings: Settings) -> list[np.ndarray]:
    """The batch's features (global indices) in row-key order, cut into partitions: at every region
    boundary of the feature views, and into pieces of at most `spark_partition_features` features
    or `spark_partition_nnz` non-zeros at the matrix's mean density (10 M cells at 10%: 50 features)."""
    lo, hi = plan.chunks[first][0], plan.chunks[end - 1][1]
    names = [layout.feature_row(plan.features[i]) for i in range(lo, hi)]
    order = np.array(sorted(range(hi - lo), key=names.__getitem__), dtype=np.int64) + lo
    sorted_names = [names[i - lo] for i in order]
    cuts = {0, len(order)}
    for view in plan.feature_views:
        cuts.update(bisect.bisect_left(sorted_names, key) for key in plan.region_boundaries(view, settings.rows_per_region, settings.region_bytes))
    per_feature_nnz = plan.nnz / max(1, len(plan.features))
    width = min(settings.spark_partition_features, max(1, int(settings.spark_partition_nnz // max(1.0, per_feature_nnz))))
    n_pieces = max(settings.spark_min_partitions, -(-len(order) // width))
    cuts.update(len(order) * i // n_pieces for i in range(n_pieces))
    bounds = sorted(c for c in cuts if 0 <= c <= len(order))
    return [order[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def exact_partition_keys(spark: Any, n_partitions: int) -> list[int]:
    """For each partition p, a bigint whose Spark hash puts it in partition p of `repartition(n, col)`
    (pmod(murmur3(key, 42), n)): hash partitioning made exact, with no Python in the shuffle."""
    from pyspark.sql import functions as F

    keys: dict[int, int] = {}
    span = 16 * n_partitions
    while len(keys) < n_partitions:
        rows = spark.range(span - 16 * n_partitions, span).select("id", F.expr(f"pmod(hash(id), {n_partitions})").alias("p")).collect()
        for row in rows:
            keys.setdefault(int(row["p"]), int(row["id"]))
        span += 16 * n_partitions
    return [keys[p] for p in range(n_partitions)]


def check_row(task: int, cells: ViewEntries) -> tuple[str, bytes, bytes, bytes]:
    """One task's check of one view, as a row the driver collects."""
    return (CHECK_PREFIX + cells.view, task.to_bytes(4, "big"), b"", json.dumps(cells.check(task)).encode())


def _batch(rows: list[tuple[str, bytes, bytes, bytes]]) -> pa.RecordBatch:
    columns = list(zip(*rows)) if rows else [[], [], [], []]
    return pa.RecordBatch.from_arrays([pa.array(list(c), t) for c, t in zip(columns, [pa.string(), pa.binary(), pa.binary(), pa.binary()])], schema=_CELLS_SCHEMA)


def _view_batches(cells: ViewEntries, task: int) -> Iterator[pa.RecordBatch]:
    """One view's entries and then its check, in Arrow batches of about `ARROW_BATCH_BYTES` each: a
    partition's transpose is hundreds of MB, which one batch would hold at once on both sides."""
    rows: list[tuple[str, bytes, bytes, bytes]] = []
    size = 0
    for r, q, v in zip(cells.rows, cells.qualifiers, cells.values):
        rows.append((cells.view, r, q, v))
        size += len(r) + len(q) + len(v)
        if size >= ARROW_BATCH_BYTES:
            yield _batch(rows)
            rows, size = [], 0
    rows.append(check_row(task, cells))
    yield _batch(rows)


def kernel_task(plan: VersionPlan, parts: list[np.ndarray], codes: Any, max_nnz: int) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """What each feature partition runs: its non-zeros in, its stats, distributions and transpose cells
    (sorted) out, and its marker candidates."""
    n_cells = plan.n_cells

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
        if not tables:
            return
        table = pa.concat_tables(tables)
        part = int(table.column("part")[0].as_py())
        features = parts[part]
        gfeature = table.column("gfeature").to_numpy()
        real = gfeature >= 0  # one sentinel row per partition makes sure every partition runs
        order = np.argsort(features)
        local = order[np.searchsorted(features[order], gfeature[real])]
        values = table.column("value").to_numpy()[real]
        matrix = sp.csc_array((values, (table.column("cell").to_numpy()[real], local)), shape=(n_cells, features.size))
        matrix.sum_duplicates()
        names = [plan.features[int(i)] for i in features]
        views = []
        candidates = []
        for grouping, code in zip(plan.stats_groupings, codes.value):
            outputs = grouping_outputs(grouping, names, matrix, code, plan.markers_top_n)
            views += [outputs.stats, outputs.dist]
            candidates.append(outputs.candidates)
        views.append(features_view_entries(names, matrix, max_nnz))
        for cells in views:
            yield from _view_batches(cells, part)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, CANDIDATE_SCHEMA) as writer:
            writer.write_table(pa.concat_tables(candidates) if candidates else CANDIDATE_SCHEMA.empty_table())
        yield _batch([(CANDIDATES_ROW, part.to_bytes(4, "big"), b"", sink.getvalue().to_pybytes())])

    return run


def cells_task(plan: VersionPlan, settings: Settings, ranges: list[tuple[int, int]]) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """What each cells-view task runs: read its range of the staged cells table from S3 (only the
    row groups it needs), emit its cells-view cells and a check."""
    key = cells_key(plan.dataset_id, plan.version_id)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        s3 = s3_client(settings)
        for batch in batches:
            for task in batch.column("id").to_pylist():
                start, stop = ranges[task]
                reader = pq.ParquetFile(S3RangeReader(s3, settings.staging_bucket, key))
                offsets = np.cumsum([0] + [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)])
                groups = [i for i in range(reader.num_row_groups) if offsets[i] < stop and offsets[i + 1] > start]
                if not groups:
                    continue
                base = int(offsets[groups[0]])
                table = reader.read_row_groups(groups)
                cells = cells_view_entries(plan, table, start - base, stop - base, offset=base)
                yield from _view_batches(cells, task)

    return run


def write_view_hfiles(spark: Any, settings: Settings, rows: Any, view: str, uri: str, timestamp_ms: int) -> None:
    """HFiles of one view from a DataFrame (row, qualifier, value) sorted within partitions, written by the executors."""
    jvm = spark.sparkContext._jvm
    jvm.org.wideviews.hfile.SparkHFiles.write(rows.select("row", "qualifier", "value")._jdf.javaRDD(), view_family(view).decode(), str(timestamp_ms), uri, {})


def compute_batch(spark: Any, s3: S3Client, settings: Settings, plan: VersionPlan, first: int, end: int) -> tuple[dict[str, dict[str, Any]], pa.Table]:
    """Every view of the batch [first, end) as HFiles under its staging prefix; returns the checks
    and the batch's marker candidates."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    views = plan.unit_views(first, end)
    for view in views:
        delete_prefix(s3, settings.staging_bucket, hfiles_prefix(plan.dataset_id, plan.version_id, view, first))
    parts = feature_partitions(plan, first, end, settings)
    keys = exact_partition_keys(spark, len(parts))
    cells_table = read_cells(s3, settings, plan)
    code_arrays = group_codes(cells_table, plan)
    codes = spark.sparkContext.broadcast(code_arrays)

    # (chunk, local feature) -> global feature, its partition and that partition's hash key.
    starts = np.array([plan.chunks[c][0] for c in range(first, end)])
    mapping = []
    for p, features in enumerate(parts):
        chunks = first + np.searchsorted(starts, features, side="right") - 1
        local = features - starts[chunks - first]
        mapping += zip(chunks.tolist(), local.tolist(), features.tolist(), [p] * features.size, [keys[p]] * features.size)
    mapping_df = spark.createDataFrame(mapping, "chunk int, feature int, gfeature int, part int, pkey bigint")
    paths = [s3_uri(settings, settings.staging_bucket, chunk_prefix(plan.dataset_id, plan.version_id, c)) for c in range(first, end)]
    staged = spark.read.parquet(*paths)
    staged = staged.withColumn("chunk", F.regexp_extract(F.input_file_name(), r"/chunks/0*(\d+)/", 1).cast("int"))
    nonzeros = staged.join(F.broadcast(mapping_df), ["chunk", "feature"]).select("cell", "gfeature", "value", "part", "pkey")
    value_type = staged.schema["value"].dataType
    sentinels = spark.createDataFrame([(-1, -1, p, keys[p]) for p in range(len(parts))], "cell int, gfeature int, part int, pkey bigint")
    sentinels = sentinels.withColumn("value", F.lit(0).cast(value_type)).select("cell", "gfeature", "value", "part", "pkey")
    # The kernel's output is read by several actions (the checks, then one HFile write per view): kept
    # on the executors' disks, not their heaps. At 100,000 cells a partition's transpose is ~0.5 GB;
    # kept in memory (MEMORY_AND_DISK), two of them ended a 3 GB local-mode JVM in OutOfMemoryError.
    cells_df = (
        nonzeros.unionByName(sentinels)
        .repartition(len(parts), "pkey")
        .mapInArrow(kernel_task(plan, parts, codes, settings.features_row_max_nnz), CELLS_DDL)
        .persist(StorageLevel.DISK_ONLY)
    )
    checks: dict[str, list[dict[str, Any]]] = {}
    candidates = []
    try:
        for row in cells_df.filter(F.col("view").startswith(CHECK_PREFIX)).select("view", "value").collect():
            checks.setdefault(row["view"][len(CHECK_PREFIX) :], []).append(json.loads(bytes(row["value"])))
        for row in cells_df.filter(F.col("view") == CANDIDATES_ROW).select("value").collect():
            candidates.append(pa.ipc.open_stream(bytes(row["value"])).read_all())
        for view in plan.feature_views:
            uri = s3_uri(settings, settings.staging_bucket, hfiles_prefix(plan.dataset_id, plan.version_id, view, first))
            write_view_hfiles(spark, settings, cells_df.filter(F.col("view") == view), view, uri, plan.timestamp_ms)
    finally:
        cells_df.unpersist()
        codes.unpersist()

    if "cells" in views:
        start, stop = plan.unit_cell_range(first, end)
        # Tasks cut at multiples of the embedding block size, cuts of `views.embedding_block_ranges`
        # too: each block is written whole by one task, as the local executor writes it.
        step = layout.EMBEDDING_BLOCK_CELLS
        cuts = sorted({start, stop, *range((start // step + 1) * step, stop, step)})
        ranges = list(zip(cuts, cuts[1:])) or [(start, stop)]
        n_tasks = len(ranges)
        produced = spark.range(n_tasks, numPartitions=n_tasks).mapInArrow(cells_task(plan, settings, ranges), CELLS_DDL).persist(StorageLevel.DISK_ONLY)
        try:
            for row in produced.filter(F.col("view").startswith(CHECK_PREFIX)).select("view", "value").collect():
                checks.setdefault("cells", []).append(json.loads(bytes(row["value"])))
            sorted_cells = produced.filter(F.col("view") == "cells").repartitionByRange(n_tasks, "row").sortWithinPartitions("row", "qualifier")
            uri = s3_uri(settings, settings.staging_bucket, hfiles_prefix(plan.dataset_id, plan.version_id, "cells", first))
            write_view_hfiles(spark, settings, sorted_cells, "cells", uri, plan.timestamp_ms)
        finally:
            produced.unpersist()

    # The catalog: a few rows per chunk, made on the driver.
    catalog_cells: list[tuple[bytes, bytes, bytes]] = []
    for chunk in range(first, end):
        part = catalog_view_entries(plan, chunk)
        catalog_cells += zip(part.rows, part.qualifiers, part.values)
    catalog = ViewEntries.from_unsorted("catalog", catalog_cells)
    driver_views = [catalog]
    if SAMPLE_VIEW in views:
        # The embedding sample: from every cell's coordinates, which the driver has read already.
        driver_views.append(sample_view_entries(plan, cells_table, code_arrays))
    for made in driver_views:
        checks[made.view] = [made.check(0)]
        frame = spark.createDataFrame([(r, q, v) for r, q, v in zip(made.rows, made.qualifiers, made.values)], "row binary, qualifier binary, value binary").coalesce(1)
        uri = s3_uri(settings, settings.staging_bucket, hfiles_prefix(plan.dataset_id, plan.version_id, made.view, first))
        write_view_hfiles(spark, settings, frame.sortWithinPartitions("row", "qualifier"), made.view, uri, plan.timestamp_ms)
    merged = pa.concat_tables(candidates) if candidates else CANDIDATE_SCHEMA.empty_table()
    return {view: summarize_checks(checks.get(view, [])) for view in views}, merged


def run_batch_spark(s3: S3Client, settings: Settings, dataset_id: str, version_id: str, first: int, end: int | None = None) -> list[LoadChunk]:
    """The spark executor: the unit [first, end) as one Spark application; its load messages."""
    plan = read_plan(s3, settings, dataset_id, version_id)
    try:
        first, end = plan.unit_of(first)
    except ValueError as exc:
        raise Permanent(str(exc)) from exc
    spark = spark_session(settings)
    try:
        checks, candidates = compute_batch(spark, s3, settings, plan, first, end)
    except Exception as exc:
        if _jvm_alive(spark):
            raise
        _forget_session()
        raise Transient(
            f"Spark's JVM stopped while computing chunks {first}-{end - 1} ({type(exc).__name__}); a new one runs the retry. "
            f"If its log says OutOfMemoryError, raise spark_local_memory (now {settings.spark_local_memory}) or lower spark_partition_nnz"
        ) from exc
    put_marker_candidates(s3, settings, plan, first, candidates)
    messages = []
    for view, check in checks.items():
        put_json(s3, settings.staging_bucket, check_key(dataset_id, version_id, view, first), check)
        messages.append(load_message(settings, plan, first, view))
    return messages


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point (an EMR step): writes HFiles and checks to staging, prints the load messages."""
    global _session
    from pyspark.sql import SparkSession

    parser = argparse.ArgumentParser(prog="wideviews-spark-job")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--chunk", type=int, required=True, help="the unit's first chunk")
    parser.add_argument("--chunk-end", type=int, default=None)
    args = parser.parse_args(argv)
    # Under spark-submit the master, the jars and the S3 filesystem come from the submission.
    _session = SparkSession.builder.appName("wideviews-compute").getOrCreate()
    settings = Settings.load()
    for message in run_batch_spark(s3_client(settings), settings, args.dataset, args.version, args.chunk, args.chunk_end):
        sys.stdout.write(message.to_body() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
