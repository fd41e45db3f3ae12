"""The `spark` executor runs for real (local Spark) and produces exactly the local executor's cells."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import boto3
import numpy as np

from cli.sample import sample_frames, write_upload_zip
from services.compute import job
from services.compute.spark_job import compute_chunk_views_spark
from services.ingest.split import ingest_upload
from shared.adapters.s3 import S3RangeReader, download_prefix
from shared.config import Settings
from shared.staging import chunk_prefix


def test_spark_executor_output_equals_local_bit_for_bit(inprocess_moto: Settings, tmp_path: Path) -> None:
    settings = inprocess_moto.model_copy(update={"chunk_features": 25, "features_row_max_nnz": 16})
    matrix, metadata = sample_frames(240, 60, seed=5)
    matrix["ALL_ZERO"] = 0.0  # no non-zero reaches any Spark partition
    matrix["NEGATIVE"] = np.round(np.random.default_rng(1).normal(0, 1, len(matrix)), 3)
    path = write_upload_zip(tmp_path / "up.zip", matrix, metadata)
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    key = f"uploads/spark-eq/{uuid.uuid4().hex}.zip"
    s3.upload_file(str(path), settings.uploads_bucket, key)
    version_id = uuid.uuid4().hex
    plan = ingest_upload(S3RangeReader(s3, settings.uploads_bucket, key), key, s3, settings, "spark-eq", version_id)
    assert plan.n_chunks == 3
    for chunk in range(plan.n_chunks):
        local = job.compute_chunk_views(s3, settings, plan, chunk)
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "chunk"
            download_prefix(s3, settings.staging_bucket, chunk_prefix(plan.dataset_id, plan.version_id, chunk), staged)
            spark = compute_chunk_views_spark(s3, settings, plan, chunk, staged)
        assert [v.view for v in spark] == [v.view for v in local]
        for a, b in zip(spark, local):
            assert a.rows == b.rows, a.view
            assert a.qualifiers == b.qualifiers, a.view
            assert a.values == b.values, a.view
            assert a.checksum() == b.checksum()
    # The transpose really was split into parts of at most 16 non-zeros.
    features = job.compute_chunk_views(s3, settings, plan, 0)
    assert any(row.endswith(b"\x00\x00\x01") for row in next(v for v in features if v.view == "features").rows)
