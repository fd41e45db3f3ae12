"""Large views are created pre-split, and a bulk load spanning every region reads back whole."""

from __future__ import annotations

import tempfile
from pathlib import Path

import boto3
import happybase
import numpy as np
import pytest

from services.loader.load import bulk_load_view_chunk
from shared import jvm, layout
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import put_json, upload_dir
from shared.config import Settings
from shared.staging import VersionPlan, plan_key
from tests.plans import small_plan

pytestmark = pytest.mark.stack


def _plan(n_features: int) -> VersionPlan:
    return small_plan("split", [f"G{i:04d}" for i in range(n_features)])


def test_region_boundaries_bound_rows_per_region() -> None:
    plan = _plan(50)
    big = 1 << 40  # bytes never bind here
    assert plan.region_boundaries("stats_t", 20, big) == [b"G0020", b"G0040"]
    assert plan.region_boundaries("features", 20, big) == [b"G0020", b"G0040"]
    assert plan.region_boundaries("catalog", 20, big) == []
    assert plan.region_boundaries("cells", 2, big, ["c3", "c1", "c2", "c0"]) == [b"c2"]


def test_region_boundaries_bound_bytes_per_region() -> None:
    # 50 features with 1,000 non-zeros each: a transpose row is ~8 KB, so 20 KB regions hold 2 features.
    plan = _plan(50).model_copy(update={"nnz": 50_000})
    keys = plan.region_boundaries("features", 20, 20_000)
    assert keys == [f"G{i:04d}".encode() for i in range(2, 50, 2)]


def test_large_view_is_pre_split_and_loads_across_regions(stack: Settings) -> None:
    settings = stack.model_copy(update={"rows_per_region": 20})
    plan = _plan(50)
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    put_json(s3, settings.staging_bucket, plan_key(plan.dataset_id, plan.version_id), plan.model_dump(mode="json"))
    rows = [layout.feature_part_row(f, 0) for f in plan.features]
    values = [layout.encode_feature_part(np.array([0], np.int32), np.array([float(i)])) for i in range(50)]
    with tempfile.TemporaryDirectory() as tmp:
        cells = Path(tmp) / "cells"
        jvm.write_entry_file(cells, rows, [b"v"] * 50, values)
        jvm.write_hfiles(settings, [cells], Path(tmp) / "out", "f", timestamp_ms=plan.timestamp_ms)
        prefix = f"staging/{plan.dataset_id}/{plan.version_id}/hfiles/features/000000/"
        upload_dir(s3, Path(tmp) / "out", settings.staging_bucket, prefix)
    hbase = HBase(settings, size=1)
    table = bulk_load_view_chunk(s3, hbase, settings, plan.dataset_id, plan.version_id, "features", f"s3://{settings.staging_bucket}/{prefix}")
    assert table == view_table(settings, plan.dataset_id, plan.version_id, "features")
    conn = happybase.Connection(settings.hbase_thrift_host, settings.hbase_thrift_port)
    try:
        regions = conn.table(table).regions()
        assert [r["start_key"] for r in regions] == [b"", b"G0020", b"G0040"]
        got = dict(conn.table(table).scan())
    finally:
        conn.close()
    assert sorted(got) == sorted(rows)
    assert [float(layout.decode_feature_part(got[r][b"f:v"])[1][0]) for r in rows] == [float(i) for i in range(50)]
