"""The distributed path end to end on the local stack: ingest plans batches of chunks, compute runs
each batch as one Spark application reading the chunks and writing the HFiles through s3a://
(the stack's moto server), the loader bulk-loads them, the publisher verifies, and every value
read over HTTP equals pandas' on the uploaded CSV."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import stack as local_stack
from cli.sample import write_upload_zip
from shared.config import Settings
from tests.e2e.reference import Reference, assert_cells_match, assert_version_matches
from tests.e2e.test_pipeline import _edge_case_frames, _upload_and_wait

pytestmark = pytest.mark.stack

SPARK_ENV = {"WIDEVIEWS_EXECUTOR": "spark", "WIDEVIEWS_SPARK_BATCH_CHUNKS": "2", "WIDEVIEWS_SPARK_PARTITION_FEATURES": "30"}


@pytest.fixture(scope="module")
def spark_stack(stack: Settings) -> Iterator[Settings]:
    """The stack with its ingest and compute workers on the spark executor, restored afterwards."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in SPARK_ENV.items():
            env.setenv(key, value)
        for name in ("ingest", "compute"):
            local_stack.restart_component(stack, name)
        try:
            yield stack
        finally:
            for key in SPARK_ENV:
                env.delenv(key)
            for name in ("ingest", "compute"):
                local_stack.restart_component(stack, name)


def test_spark_executor_publishes_every_view_equal_to_pandas(spark_stack: Settings, tmp_path: Path) -> None:
    matrix, metadata = _edge_case_frames(300, 130, seed=21)
    groupings = ["cell_type", "donor", "region"]
    path = write_upload_zip(tmp_path / "spark.zip", matrix, metadata, {"groupings": groupings, "embedding": "umap"})
    dataset_id = f"spark-e2e-{uuid.uuid4().hex[:8]}"

    version = _upload_and_wait(spark_stack, path, dataset_id)

    assert version["state"] == "PUBLISHED"
    # 133 features in chunks of 40 (the test stack's width) are 4 chunks, in 2 batches of 2: one
    # Spark application each, so each view was loaded twice, not once per chunk (stats and
    # distributions per grouping, transpose, catalog, cells), and the embedding sample once.
    assert version["n_chunks"] == 4 and version["computed"] == 4
    assert version["expected"] == 2 * (2 * len(groupings) + 3) + 1
    ref = Reference.from_zip(path)
    assert_version_matches(spark_stack, dataset_id, version["version_id"], ref, groupings)
    assert_cells_match(spark_stack, dataset_id, ref, groupings)
