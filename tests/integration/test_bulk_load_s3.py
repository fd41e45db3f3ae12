"""Bulk loads straight from S3 (the RegionServer reads `s3a://` from the moto server), and transient HBase states waited out.

Each test writes its HFiles with the JVM writer into a temporary directory, uploads them to the
staging bucket as compute does (`<prefix>/<family>/<hfile>`), deletes the local copy, and loads from
the S3 prefix alone. The reference is the list of cells the test wrote.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import happybase
import pytest

from services.loader import load
from services.loader.load import bulk_load_view_chunk, ensure_view_table
from shared import jvm
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import put_json, upload_dir
from shared.config import Settings
from shared.errors import Permanent, Transient
from shared.staging import VersionPlan, plan_key
from tests.plans import TIMESTAMP_MS, small_plan

pytestmark = pytest.mark.stack


def _cells(first: int, count: int) -> list[tuple[bytes, bytes, bytes]]:
    """Sorted cells of rows G<first>..G<first+count-1>: two qualifiers each, binary values."""
    cells = []
    for i in range(first, first + count):
        row = f"G{i:05d}".encode()
        cells += [(row, b"mean", i.to_bytes(4, "little") + b"\x00\xff"), (row, b"q1", bytes([i % 256]) * (i % 7))]
    return cells


def _stage_hfiles(settings: Settings, s3: Any, cells: list[tuple[bytes, bytes, bytes]], prefix: str, family: str = "s") -> str:
    """Write `cells` as HFiles, upload them under `prefix/<family>/`, delete the local copy; the s3:// URI."""
    with tempfile.TemporaryDirectory() as tmp:
        cell_file = Path(tmp) / "cells"
        jvm.write_entry_file(cell_file, [c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells])
        jvm.write_hfiles(settings, [cell_file], Path(tmp) / "out", family, timestamp_ms=TIMESTAMP_MS, max_file_bytes=2048)
        upload_dir(s3, Path(tmp) / "out", settings.staging_bucket, prefix)
    return f"s3://{settings.staging_bucket}/{prefix}"


def _scan(settings: Settings, table: str) -> list[tuple[bytes, bytes, bytes]]:
    conn = happybase.Connection(settings.hbase_thrift_host, settings.hbase_thrift_port)
    try:
        return [(row, column.partition(b":")[2], value) for row, data in conn.table(table).scan() for column, value in sorted(data.items())]
    finally:
        conn.close()


@pytest.fixture
def s3(stack: Settings) -> Any:
    return boto3.client("s3", **stack.aws_client_kwargs())


@pytest.fixture
def staged_plan(stack: Settings, s3: Any) -> VersionPlan:
    plan = small_plan("s3load", [f"G{i:05d}" for i in range(300)])
    put_json(s3, stack.staging_bucket, plan_key(plan.dataset_id, plan.version_id), plan.model_dump(mode="json"))
    return plan


class LocalWrites:
    """Files and directories this Python process opens for writing or creates, while recording (an audit hook)."""

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)  # hooks stay for the process: this one records only when asked

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(m in mode for m in "wax+")) or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                self.paths.append(os.fsdecode(args[0]))
        elif event in ("os.mkdir", "tempfile.mkdtemp", "tempfile.mkstemp", "shutil.copyfile", "os.rename"):
            self.paths.append(f"{event} {args[0]!r}")


_local_writes = LocalWrites()


@pytest.fixture
def local_writes() -> Iterator[LocalWrites]:
    _local_writes.paths = []
    yield _local_writes
    _local_writes.recording = False


def test_view_bulk_loads_straight_from_s3_and_the_loader_writes_no_local_file(
    stack: Settings, s3: Any, staged_plan: VersionPlan, local_writes: LocalWrites
) -> None:
    plan = staged_plan
    settings = stack.model_copy(update={"rows_per_region": 100})  # 3 regions: HFiles spanning a boundary get split
    cells = _cells(0, 300)
    prefix = f"staging/{plan.dataset_id}/{plan.version_id}/hfiles/stats_t/000000/"
    uri = _stage_hfiles(settings, s3, cells, prefix)
    hbase = HBase(settings, size=1)

    local_writes.recording = True
    table = bulk_load_view_chunk(s3, hbase, settings, plan.dataset_id, plan.version_id, "stats_t", uri)
    local_writes.recording = False

    assert local_writes.paths == []
    assert table == view_table(settings, plan.dataset_id, plan.version_id, "stats_t")
    assert _scan(settings, table) == cells
    # The HFiles stay in S3 (HBase copied them); split halves of boundary-spanning files went to S3 too.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.staging_bucket, Prefix=prefix)["Contents"]]
    assert len([k for k in keys if "/.tmp/" not in k]) > 3
    assert any("/s/.tmp/" in k for k in keys)


def test_the_loader_module_has_no_download_path() -> None:
    source = Path(load.__file__).read_text()
    for word in ("tempfile", "download", "TemporaryDirectory", "open("):
        assert word not in source, word


def test_several_chunk_prefixes_of_a_view_load_in_one_bulk_load(stack: Settings, s3: Any, staged_plan: VersionPlan) -> None:
    plan = staged_plan
    base = f"staging/{plan.dataset_id}/{plan.version_id}/hfiles/stats_t/"
    chunks = [_cells(0, 120), _cells(120, 100), _cells(220, 80)]
    uris = [_stage_hfiles(stack, s3, cells, f"{base}{i:06d}/") for i, cells in enumerate(chunks)]
    table = ensure_view_table(s3, HBase(stack, size=1), stack, plan.dataset_id, plan.version_id, "stats_t")

    summary = jvm.bulk_load(stack, table, [jvm.hbase_hfiles_uri(stack, uri) for uri in uris])

    assert summary["attempts"] == 1 and summary["loaded_families"] == ["s"]
    assert _scan(stack, table) == [cell for cells in chunks for cell in cells]


def test_a_file_that_is_not_an_hfile_is_permanent_and_loads_nothing(stack: Settings, s3: Any, staged_plan: VersionPlan) -> None:
    plan = staged_plan
    prefix = f"staging/{plan.dataset_id}/{plan.version_id}/hfiles/stats_t/000000/"
    uri = _stage_hfiles(stack, s3, _cells(0, 10), prefix)
    s3.put_object(Bucket=stack.staging_bucket, Key=f"{prefix}s/0123456789abcdef", Body=b"not an hfile at all" * 100)

    with pytest.raises(Permanent, match=r"0123456789abcdef \(1900 bytes\) is not an HFile"):
        bulk_load_view_chunk(s3, HBase(stack, size=1), stack, plan.dataset_id, plan.version_id, "stats_t", uri)

    assert _scan(stack, view_table(stack, plan.dataset_id, plan.version_id, "stats_t")) == []


def test_an_empty_prefix_is_permanent(stack: Settings, s3: Any, staged_plan: VersionPlan) -> None:
    plan = staged_plan
    uri = f"s3://{stack.staging_bucket}/staging/{plan.dataset_id}/{plan.version_id}/hfiles/stats_t/000009/"
    with pytest.raises(Permanent, match="does not exist|no HFiles"):
        bulk_load_view_chunk(s3, HBase(stack, size=1), stack, plan.dataset_id, plan.version_id, "stats_t", uri)


def _wait_for_listing(settings: Settings, prefix: str, after_bytes: int, timeout_s: float = 120.0) -> None:
    """Block until the moto server logged a LIST of `prefix` past `after_bytes` of its log (BulkLoad started)."""
    log = settings.home / "logs" / "moto.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(after_bytes)
            if f"prefix={prefix}".encode() in f.read():
                return
        time.sleep(0.1)
    raise TimeoutError(f"no LIST of {prefix} in {log}")


def test_a_load_into_a_disabled_table_waits_until_another_thread_enables_it(stack: Settings, s3: Any, staged_plan: VersionPlan) -> None:
    """The issue's `Table ... is not currently available.` was fatal; now the load waits and succeeds."""
    plan = staged_plan
    prefix = f"staging/{plan.dataset_id}/{plan.version_id}/hfiles/stats_t/000000/"
    cells = _cells(0, 50)
    uri = _stage_hfiles(stack, s3, cells, prefix)
    table = ensure_view_table(s3, HBase(stack, size=1), stack, plan.dataset_id, plan.version_id, "stats_t")
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    conn.disable_table(table)
    moto_log_size = (stack.home / "logs" / "moto.log").stat().st_size
    errors: list[BaseException] = []

    def enable_once_the_load_started() -> None:
        try:
            _wait_for_listing(stack, prefix, moto_log_size)
            conn.enable_table(table)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    enabler = threading.Thread(target=enable_once_the_load_started)
    enabler.start()
    try:
        summary = jvm.bulk_load(stack, table, jvm.hbase_hfiles_uri(stack, uri))
    finally:
        enabler.join()
        conn.close()

    assert errors == []
    assert summary["attempts"] >= 2, summary
    assert _scan(stack, table) == cells


def test_a_table_that_stays_unavailable_is_transient_not_permanent(stack: Settings, s3: Any, staged_plan: VersionPlan) -> None:
    plan = staged_plan
    uri = _stage_hfiles(stack, s3, _cells(0, 5), f"staging/{plan.dataset_id}/{plan.version_id}/hfiles/stats_t/000000/")
    table = ensure_view_table(s3, HBase(stack, size=1), stack, plan.dataset_id, plan.version_id, "stats_t")
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    conn.disable_table(table)
    try:
        started = time.monotonic()
        with pytest.raises(Transient, match=r"still busy after \d+ attempts .* is not available yet"):
            jvm.bulk_load(stack, table, jvm.hbase_hfiles_uri(stack, uri), busy_wait_s=3.0)
        assert time.monotonic() - started >= 3.0
    finally:
        conn.enable_table(table)
        conn.close()
    assert _scan(stack, table) == []


def test_thrift_reads_of_a_disabled_table_are_transient_not_missing(stack: Settings) -> None:
    hbase = HBase(stack, size=1)
    table = f"{stack.hbase_namespace}:disabled_{uuid.uuid4().hex[:8]}"
    hbase.ensure_table(table, b"s")
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    conn.disable_table(table)
    try:
        with pytest.raises(Transient, match="TableNotEnabledException"):
            hbase.row(table, b"G00001")
    finally:
        conn.enable_table(table)
        conn.close()
    assert hbase.row(table, b"G00001") == {}
    hbase.drop_table(table)
