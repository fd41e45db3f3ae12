"""Ingest against its peers and floors, side by side in one run (issue 13).

CSV (a `wideviews synth` upload ZIP):
  1. inflating the matrix.csv member alone (zipfile, 8 MB reads);
  2. pyarrow's `read_csv`, tuned (64 MB blocks, float32 columns, all threads), on the unzipped file;
  3. polars' `read_csv` (float32 schema, all threads) on the same file;
  4. wideviews ingest end to end: the ZIP in local S3 (a moto server, as the local stack's) to staged
     chunks, plan and cells, in its own process.
h5ad (the same data written by `wideviews synth --format h5ad`):
  5. wideviews ingest of the .h5ad object from local S3;
  6. `anndata.read_h5ad` of the same local file plus writing the same chunks' Parquet parts.

Every measurement runs in a fresh process (peak RSS is that process's). The peers 2 and 3 hold the
whole dense table in memory (8 bytes... 4 bytes a value as float32): `--peer-bytes` limits them to
the first N bytes of the CSV (whole lines) so they fit beside the other engineers' stacks; their
rate is in MB/s of CSV parsed either way.

    python benchmarks/ingest/bench_ingest.py --cells 100000 --features 20000 --density 0.1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
result = {}
exec(compile(sys.argv[1], "<measure>", "exec"))
result["seconds"] = round(time.perf_counter() - t0, 2)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve from the forking parent.
result["peak_rss_mb"] = round(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024)
print("RESULT " + json.dumps(result))
"""

INFLATE = r"""
import zipfile
with zipfile.ZipFile(ZIP) as archive, archive.open("matrix.csv") as member:
    n = 0
    while piece := member.read(8 << 20):
        n += len(piece)
result["bytes"] = n
"""

PYARROW = r"""
import pyarrow as pa, pyarrow.csv as pacsv, io
with open(CSV, "rb") as f:
    header = f.readline().decode().rstrip("\n").split(",")
    body = f.read(LIMIT) if LIMIT else f.read()
body = body[: body.rfind(b"\n") + 1]
types = {name: pa.float32() for name in header[1:]}
types[header[0]] = pa.string()
t = time.perf_counter()
table = pacsv.read_csv(io.BytesIO(body), read_options=pacsv.ReadOptions(column_names=header, block_size=64 << 20, use_threads=True), convert_options=pacsv.ConvertOptions(column_types=types))
result["parse_seconds"] = round(time.perf_counter() - t, 2)
result["bytes"] = len(body)
result["rows"] = table.num_rows
"""

POLARS = r"""
import polars as pl, io
with open(CSV, "rb") as f:
    header = f.readline().decode().rstrip("\n").split(",")
    body = f.read(LIMIT) if LIMIT else f.read()
body = body[: body.rfind(b"\n") + 1]
schema = {name: pl.Float32 for name in header[1:]}
schema[header[0]] = pl.String
t = time.perf_counter()
frame = pl.read_csv(io.BytesIO(body), has_header=False, new_columns=header, schema_overrides=schema)
result["parse_seconds"] = round(time.perf_counter() - t, 2)
result["bytes"] = len(body)
result["rows"] = frame.height
"""

WIDEVIEWS = r"""
import uuid
from shared.adapters.s3 import S3RangeReader, s3_client, list_keys
from shared.config import Settings
from services.ingest.split import ingest_upload
import numpy as np
from services.ingest.csv_matrix import parse_block
from services.ingest.parts import group_by_chunk
settings = Settings(aws_endpoint_url=ENDPOINT, name_prefix="wvbench")
s3 = s3_client(settings)
version = uuid.uuid4().hex
# A worker is long-lived: numba's cached machine code is loaded once per process, not per upload.
parse_block(b"c1,1,0\n", 2, 1)
group_by_chunk(np.zeros(2, np.int64), 1, 1)
import h5py
t = time.perf_counter()
plan = ingest_upload(S3RangeReader(s3, settings.uploads_bucket, KEY), KEY, s3, settings, "bench", version)
result["ingest_seconds"] = round(time.perf_counter() - t, 2)
result["chunks"] = plan.n_chunks
result["cells"] = plan.n_cells
result["parts"] = len([k for k in list_keys(s3, settings.staging_bucket, f"staging/bench/{version}/chunks/")])
"""

ANNDATA = r"""
import io, anndata, numpy as np, pyarrow as pa, pyarrow.parquet as pq
from shared.config import Settings
from services.ingest.matrix import chunk_bounds
t = time.perf_counter()
adata = anndata.read_h5ad(H5AD)
x = adata.X.tocsc()
result["read_seconds"] = round(time.perf_counter() - t, 2)
parts = 0
for start, end in chunk_bounds(adata.n_vars, adata.n_obs, Settings()):
    coo = x[:, start:end].tocoo()
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"feature": coo.col.astype(np.int32), "cell": coo.row.astype(np.int32), "value": coo.data}), sink, compression="snappy", use_dictionary=False)
    parts += 1
result["parts"] = parts
"""


def measure(code: str, **constants: object) -> dict:
    """Run `code` in a fresh interpreter with `constants` defined; its result dict, seconds and peak RSS."""
    prelude = "".join(f"{k} = {v!r}\n" for k, v in constants.items())
    done = subprocess.run([sys.executable, "-c", CHILD, prelude + code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(line[len("RESULT ") :])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--workdir", default=None, help="where the synthetic files go (default: a temp dir)")
    parser.add_argument("--peer-bytes", type=float, default=1.5e9, help="CSV bytes the whole-table peers parse (0: all)")
    parser.add_argument("--skip-h5ad", action="store_true")
    args = parser.parse_args()

    from cli.synth import SynthData, SynthSpec, write_synth_upload

    work = Path(args.workdir or tempfile.mkdtemp(prefix="wv-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    data = SynthData(SynthSpec(args.cells, args.features, args.density, 30, seed=0))
    zip_path, csv_path, h5ad_path = work / "upload.zip", work / "matrix.csv", work / "upload.h5ad"
    t = time.perf_counter()
    if not zip_path.exists():
        write_synth_upload(data, zip_path, "csv")
    if not csv_path.exists():
        with zipfile.ZipFile(zip_path) as archive, archive.open("matrix.csv") as src, open(csv_path, "wb") as dst:
            while piece := src.read(8 << 20):
                dst.write(piece)
    if not args.skip_h5ad and not h5ad_path.exists():
        write_synth_upload(data, h5ad_path, "h5ad")
    csv_bytes = csv_path.stat().st_size
    print(f"{args.cells} cells x {args.features} features at {args.density:.0%}: matrix.csv {csv_bytes / 1e9:.2f} GB, ZIP {zip_path.stat().st_size / 1e9:.2f} GB"
          + ("" if args.skip_h5ad else f", h5ad {h5ad_path.stat().st_size / 1e9:.2f} GB") + f" (made in {time.perf_counter() - t:.0f} s); {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")

    limit = int(args.peer_bytes) if args.peer_bytes else 0
    print(f"\n{'':58} {'seconds':>8} {'MB/s of CSV':>12} {'peak RSS':>10}", flush=True)
    r = measure(INFLATE, ZIP=str(zip_path))
    report("inflate matrix.csv alone (zipfile)", r, r.get("bytes", 0), "seconds")
    r = measure(PYARROW, CSV=str(csv_path), LIMIT=limit)
    report(f"pyarrow read_csv, tuned ({r.get('bytes', 0) / 1e9:.2f} GB)", r, r.get("bytes", 0), "parse_seconds")
    r = measure(POLARS, CSV=str(csv_path), LIMIT=limit)
    report(f"polars read_csv ({r.get('bytes', 0) / 1e9:.2f} GB)", r, r.get("bytes", 0), "parse_seconds")
    # A fresh local S3 for each upload: moto holds every object in memory.
    with local_s3() as endpoint:
        r = measure(WIDEVIEWS, ENDPOINT=endpoint, KEY=put(endpoint, zip_path, "uploads/bench/upload.zip"))
        report("wideviews ingest, ZIP in local S3 -> staged chunks", r, csv_bytes, "ingest_seconds")
    if not args.skip_h5ad:
        with local_s3() as endpoint:
            r = measure(WIDEVIEWS, ENDPOINT=endpoint, KEY=put(endpoint, h5ad_path, "uploads/bench/upload.h5ad"))
            report("wideviews ingest, .h5ad in local S3 -> staged chunks", r, csv_bytes, "ingest_seconds")
        r = measure(ANNDATA, H5AD=str(h5ad_path))
        report("anndata.read_h5ad (local file) + the same chunks' parts", r, csv_bytes, "seconds")
        print(f"\nh5ad X (data + indices) is {data_bytes(h5ad_path) / 1e6:.0f} MB uncompressed; the file {h5ad_path.stat().st_size / 1e6:.0f} MB")
    return 0


def report(label: str, result: dict, csv_bytes: int, seconds_key: str) -> None:
    if "error" in result:
        print(f"{label:58} error: {result['error']}", flush=True)
        return
    seconds = result[seconds_key]
    print(f"{label:58} {seconds:8.1f} {csv_bytes / seconds / 1e6:12.0f} {result['peak_rss_mb']:8} MB", flush=True)
    extra = {k: v for k, v in result.items() if k in ("chunks", "parts", "rows", "read_seconds", "seconds") and k != seconds_key}
    if extra:
        print(f"{'':58} {extra}", flush=True)


@contextlib.contextmanager
def local_s3() -> Iterator[str]:
    """A moto server (the local stack's S3) with the uploads and staging buckets; its endpoint."""
    import boto3

    from shared.config import Settings

    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = Settings(aws_endpoint_url=f"http://127.0.0.1:{port}", name_prefix="wvbench")
        s3 = boto3.client("s3", **settings.aws_client_kwargs())
        for _ in range(300):
            try:
                s3.list_buckets()
                break
            except Exception:  # noqa: BLE001 - the server is starting
                time.sleep(0.2)
        for bucket in (settings.uploads_bucket, settings.staging_bucket):
            s3.create_bucket(Bucket=bucket)
        yield settings.aws_endpoint_url or ""
    finally:
        moto.terminate()
        moto.wait()


def put(endpoint: str, path: Path, key: str) -> str:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from shared.config import Settings

    settings = Settings(aws_endpoint_url=endpoint, name_prefix="wvbench")
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    s3.upload_file(str(path), settings.uploads_bucket, key, Config=TransferConfig(multipart_chunksize=64 << 20, max_concurrency=2))
    return key


def data_bytes(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["X"]["data"].size * f["X"]["data"].dtype.itemsize + f["X"]["indices"].size * f["X"]["indices"].dtype.itemsize)


if __name__ == "__main__":
    sys.exit(main())
