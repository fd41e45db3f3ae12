"""The `spark` executor runs for real: one local Spark application per batch of chunks, reading the
staged chunks through s3a:// from the stack's moto server and writing HFiles there from its
executors. Loaded into HBase, its cells are exactly the local executor's, byte for byte."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import boto3
import happybase
import numpy as np
import pyarrow as pa
import pytest

from cli.sample import sample_frames, write_upload_zip
from services.compute import job
from services.compute.spark_job import feature_partitions, run_batch_spark, spark_session
from services.ingest.split import ingest_upload
from services.loader.load import bulk_load_view_chunk
from services.publisher.markers import markers_entries, read_candidates
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import S3RangeReader, get_json, list_keys
from shared.config import Settings
from shared.staging import check_key, version_prefix

pytestmark = pytest.mark.stack


def _scan(settings: Settings, table: str) -> list[tuple[bytes, bytes, bytes, int]]:
    connection = happybase.Connection(settings.hbase_thrift_host, settings.hbase_thrift_port)
    try:
        return [
            (row, qualifier.split(b":", 1)[1], value, ts)
            for row, data in connection.table(table).scan(include_timestamp=True)
            for qualifier, (value, ts) in sorted(data.items())
        ]
    finally:
        connection.close()


def test_spark_batch_writes_the_local_executors_cells_through_s3a(stack: Settings, tmp_path: Path) -> None:
    settings = stack.model_copy(
        update={
            "executor": "spark",
            "chunk_features": 25,
            "spark_partition_features": 20,  # several partitions per batch
            "spark_batch_chunks": 2,  # two batches: [0, 2) and [2, 3)
            "features_row_max_nnz": 16,  # transpose rows split in parts
            "rows_per_region": 17,  # region boundaries inside the batch cut partitions too
        }
    )
    matrix, metadata = sample_frames(240, 60, seed=5)
    matrix["ALL_ZERO"] = 0.0  # no non-zero reaches its partition
    matrix["NEGATIVE"] = np.round(np.random.default_rng(1).normal(0, 1, len(matrix)), 3)
    manifest = {"groupings": ["cell_type", "donor"], "crossed": [["cell_type", "donor"]], "embedding": "umap"}
    path = write_upload_zip(tmp_path / "up.zip", matrix, metadata, manifest)
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    dataset_id = f"spark-{uuid.uuid4().hex[:8]}"
    key = f"uploads/{dataset_id}/x.zip"
    s3.upload_file(str(path), settings.uploads_bucket, key)
    version_id = uuid.uuid4().hex
    plan = ingest_upload(S3RangeReader(s3, settings.uploads_bucket, key), key, s3, settings, dataset_id, version_id)
    assert plan.batches == [(0, 2), (2, 3)]
    assert [g.name for g in plan.crossed] == ["cell_type × donor"] and plan.embedding is not None
    assert len(feature_partitions(plan, 0, 2, settings)) >= 3

    # The local executor's cells of every chunk, per view: the reference.
    expected: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
    local_candidates = []
    for chunk in range(plan.n_chunks):
        outputs = job.compute_chunk_views(s3, settings, plan, chunk)
        local_candidates.append(outputs.candidates)
        for cells in outputs.views:
            expected.setdefault(cells.view, []).extend(zip(cells.rows, cells.qualifiers, cells.values))
    # every new view is there: distributions of every grouping (the crossed one too), the embedding sample
    assert {"dist_cell_type", "dist_donor", "stats_cell_type_by_donor", "dist_cell_type_by_donor", "embedding_sample"} <= set(expected)

    hbase = HBase(settings, size=1)
    loaded: dict[str, int] = {}
    for first, end in plan.batches:
        messages = run_batch_spark(s3, settings, dataset_id, version_id, first, end)
        assert sorted(m.view for m in messages) == sorted(plan.unit_views(first, end))
        for message in messages:
            assert message.chunk == first
            bulk_load_view_chunk(s3, hbase, settings, dataset_id, version_id, message.view, message.hfiles_uri)
            # The rows the unit's check records (what the publisher verifies the table against).
            check = get_json(s3, settings.staging_bucket, check_key(dataset_id, version_id, message.view, message.chunk))
            loaded[message.view] = loaded.get(message.view, 0) + check["rows"]

    for view, cells in expected.items():
        got = _scan(settings, view_table(settings, dataset_id, version_id, view))
        assert [(r, q, v) for r, q, v, _ in got] == sorted(cells), view
        assert {ts for *_, ts in got} == {plan.timestamp_ms}, view
        assert loaded[view] == len({r for r, _, _ in cells}), view
    # The markers merged from the spark batches' candidates are the local chunks' merged, byte for byte.
    local_markers = markers_entries(plan, pa.concat_tables(local_candidates))
    assert local_markers == markers_entries(plan, read_candidates(s3, settings, plan))
    assert len(local_markers) == sum(len(g.groups) for g in plan.stats_groupings)
    # The transpose really was split into parts of at most 16 non-zeros.
    assert any(row.endswith(b"\x00\x00\x01") for row, _, _ in expected["features"])
    # Nothing but HFiles and checks was written by the job; no HFile staged twice.
    keys = list_keys(s3, settings.staging_bucket, version_prefix(dataset_id, version_id) + "hfiles/")
    assert keys and all("/_temporary/" not in k for k in keys)


def test_a_session_whose_jvm_died_is_replaced(stack: Settings) -> None:
    """Spark's JVM may die under a job (an executor's OutOfMemoryError ends local mode's one JVM): the
    next message must get a new JVM, not a session whose every call is refused."""
    spark = spark_session(stack)
    java = spark.sparkContext._gateway.proc  # spark-submit execs the JVM: this is its process
    os.kill(java.pid, signal.SIGKILL)
    assert java.wait(timeout=60) == -signal.SIGKILL
    fresh = spark_session(stack)
    assert fresh is not spark
    assert fresh.sparkContext._gateway.proc.pid != java.pid
    assert fresh.range(1000).selectExpr("sum(id)").first()[0] == sum(range(1000))
