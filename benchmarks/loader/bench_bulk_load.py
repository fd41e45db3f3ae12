"""Bulk load of one view's HFiles from S3: HBase reading `s3a://` itself vs the earlier path (the loader
downloads the prefix to its disk, then HBase copies from there), on the same HFiles, same stack, one run.

    WIDEVIEWS_HOME=/tmp/wv-NAME .venv/bin/python benchmarks/loader/bench_bulk_load.py [--rows 20000] [--value-bytes 2000] [--rounds 3]

Needs a running stack (`wideviews stack up --infra-only` is enough). Writes one transpose-like view
(`--rows` rows of one `--value-bytes` cell each) as HFiles of at most 64 MiB, uploads them once, then
per round loads them into two fresh tables, alternating which path goes first. Both paths run in this
process's tool JVM (started before timing). Prints per-round times and the medians side by side.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import happybase

from shared import jvm
from shared.adapters.s3 import download_prefix, upload_dir
from shared.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--value-bytes", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.load()
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    rng = random.Random(7)
    prefix = f"bench/bulk-load/{uuid.uuid4().hex[:8]}/"
    with tempfile.TemporaryDirectory(prefix="wv-bench-") as tmp:
        rows = [f"GENE{i:07d}".encode() for i in range(args.rows)]
        cell_file = Path(tmp) / "cells"
        jvm.write_entry_file(cell_file, rows, [b"v"] * len(rows), [rng.randbytes(args.value_bytes) for _ in rows])
        summary = jvm.write_hfiles(settings, [cell_file], Path(tmp) / "out", "f", timestamp_ms=1_700_000_000_000, max_file_bytes=64 << 20)
        upload_dir(s3, Path(tmp) / "out", settings.staging_bucket, prefix)
    size_mb = summary["bytes"] / 1e6
    print(f"view: {args.rows} rows, {len(summary['files'])} HFiles, {size_mb:.1f} MB in s3://{settings.staging_bucket}/{prefix}")

    conn = happybase.Connection(settings.hbase_thrift_host, settings.hbase_thrift_port)
    tables: list[str] = []

    def fresh_table() -> str:
        name = f"{settings.hbase_namespace}:bench_{uuid.uuid4().hex[:10]}"
        conn.create_table(name, {"f": dict(max_versions=1)})
        tables.append(name)
        return name

    def from_s3() -> float:
        table = fresh_table()
        started = time.perf_counter()
        jvm.bulk_load(settings, table, f"{settings.spark_s3_scheme}://{settings.staging_bucket}/{prefix}")
        return time.perf_counter() - started

    def download_then_load() -> float:
        table = fresh_table()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="wv-bench-load-") as tmp:
            download_prefix(s3, settings.staging_bucket, prefix, Path(tmp) / "hfiles")
            jvm.bulk_load(settings, table, Path(tmp) / "hfiles")
        return time.perf_counter() - started

    try:
        from_s3()  # warm-up: the tool JVM, its S3 client and HBase's first s3a read
        download_then_load()
        times: dict[str, list[float]] = {"HBase reads s3a:// (now)": [], "download + load (before)": []}
        for round_ in range(args.rounds):
            order = [("HBase reads s3a:// (now)", from_s3), ("download + load (before)", download_then_load)]
            for name, run in order if round_ % 2 == 0 else reversed(order):
                times[name].append(run())
        for name, values in times.items():
            print(f"{name:28s} median {statistics.median(values):6.2f} s  ({', '.join(f'{v:.2f}' for v in values)})  {size_mb / statistics.median(values):6.1f} MB/s")
    finally:
        for table in tables:
            conn.delete_table(table, disable=True)
        conn.close()
        listed = s3.list_objects_v2(Bucket=settings.staging_bucket, Prefix=prefix).get("Contents", [])
        for obj in listed:
            s3.delete_object(Bucket=settings.staging_bucket, Key=obj["Key"])


if __name__ == "__main__":
    main()
