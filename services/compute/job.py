"""The compute job of one column chunk: staging in, HFiles and checks out, LoadChunk messages back.

The same job runs three ways (`Settings.executor`):

- `local`: in the worker process (`run_unit`: a unit of one or more chunks, one after another);
- `spark`: the kernel runs per feature partition inside a local Spark session (`services.compute.spark_job`);
- `emr`: an EMR step `spark-submit`s `services/compute/spark_job.py` on a cluster (`services.compute.emr`).

All three call the same kernel on the same columns, so their cells are identical bit for bit.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from services.compute.views import UnitViews, ViewEntries, summarize_checks, unit_view_entries, view_family
from shared import jvm
from shared.adapters.s3 import S3Client, get_bytes, list_keys, put_bytes, put_json, upload_dir
from shared.config import Settings
from shared.errors import Permanent
from shared.messages import LoadChunk
from shared.staging import VersionPlan, check_key, chunk_prefix, hfiles_prefix, marker_candidates_key, read_cells, read_plan

# Views of a unit staged at once (HFile writes in the tool JVM overlapping uploads to S3).
STAGE_THREADS = 3


def load_chunk_matrix(s3: S3Client, settings: Settings, plan: VersionPlan, chunk: int) -> sp.csc_array:
    """The chunk as a cells × features CSC matrix, from its staged non-zero parts."""
    start, end = plan.chunks[chunk]
    keys = list_keys(s3, settings.staging_bucket, chunk_prefix(plan.dataset_id, plan.version_id, chunk))
    if not keys:
        raise Permanent(f"chunk {chunk} of version {plan.version_id} has no staged parts")
    parts = [pq.read_table(io.BytesIO(get_bytes(s3, settings.staging_bucket, k))) for k in keys]
    table = pa.concat_tables(parts)
    values = table.column("value").to_numpy()
    cells = table.column("cell").to_numpy()
    features = table.column("feature").to_numpy()
    matrix = sp.csc_array((values, (cells, features)), shape=(plan.n_cells, end - start))
    matrix.sum_duplicates()  # sorts indices; staged non-zeros have no duplicates
    return matrix


def write_view_hfiles(settings: Settings, cells: ViewEntries, workdir: Path, timestamp_ms: int) -> Path:
    """Write one view's sorted cells as HFiles (through the jvm/ writer) under `workdir/<view>/`.

    Every cell gets the version's timestamp, so a recomputed chunk rewrites identical cells.
    """
    cell_file = workdir / f"{cells.view}.cells"
    jvm.write_entry_file(cell_file, cells.rows, cells.qualifiers, cells.values)
    out = workdir / cells.view / "hfiles"
    jvm.write_hfiles(settings, [cell_file], out, view_family(cells.view).decode(), timestamp_ms=timestamp_ms)
    cell_file.unlink()
    return out


def stage_unit_outputs(s3: S3Client, settings: Settings, plan: VersionPlan, chunk: int, views: list[ViewEntries], workdir: Path) -> list[LoadChunk]:
    """HFiles and checks of every view of the unit starting at `chunk` to staging; the load messages for them.

    The views are written and uploaded `STAGE_THREADS` at a time: one view's HFiles are written by
    the tool JVM while another's upload to S3, so the unit's I/O waits overlap."""

    def stage(cells: ViewEntries) -> LoadChunk:
        hfiles = write_view_hfiles(settings, cells, workdir, plan.timestamp_ms)
        prefix = hfiles_prefix(plan.dataset_id, plan.version_id, cells.view, chunk)
        upload_dir(s3, hfiles, settings.staging_bucket, prefix)
        check = summarize_checks([cells.check(chunk)])
        put_json(s3, settings.staging_bucket, check_key(plan.dataset_id, plan.version_id, cells.view, chunk), check)
        shutil.rmtree(hfiles.parent, ignore_errors=True)
        return load_message(settings, plan, chunk, cells.view)

    with ThreadPoolExecutor(max_workers=STAGE_THREADS, thread_name_prefix="stage") as pool:
        return list(pool.map(stage, views))


def load_message(settings: Settings, plan: VersionPlan, first: int, view: str) -> LoadChunk:
    """The load request of one view of the unit starting at chunk `first` (its HFiles' staging prefix)."""
    prefix = hfiles_prefix(plan.dataset_id, plan.version_id, view, first)
    return LoadChunk(dataset_id=plan.dataset_id, version_id=plan.version_id, chunk=first, view=view, hfiles_uri=f"s3://{settings.staging_bucket}/{prefix}")


def put_marker_candidates(s3: S3Client, settings: Settings, plan: VersionPlan, first: int, candidates: pa.Table) -> None:
    """One unit's marker candidates to staging, for the publisher's merge."""
    sink = io.BytesIO()
    pq.write_table(candidates, sink)
    put_bytes(s3, settings.staging_bucket, marker_candidates_key(plan.dataset_id, plan.version_id, first), sink.getvalue())


def compute_unit_views(s3: S3Client, settings: Settings, plan: VersionPlan, first: int, end: int) -> UnitViews:
    """Read the unit's chunks (one at a time) and the cells, run the kernel: every view's entries of the
    unit and its marker candidates."""
    if not (0 <= first < end <= plan.n_chunks):
        raise Permanent(f"chunks {first}-{end - 1} are out of range: version {plan.version_id} has {plan.n_chunks} chunks")
    cells = read_cells(s3, settings, plan)
    matrices = (load_chunk_matrix(s3, settings, plan, chunk) for chunk in range(first, end))
    return unit_view_entries(plan, first, end, matrices, cells, settings.features_row_max_nnz, settings.compute_threads)


def compute_chunk_views(s3: S3Client, settings: Settings, plan: VersionPlan, chunk: int) -> UnitViews:
    """Every view's entries of one chunk alone (a unit of one chunk)."""
    return compute_unit_views(s3, settings, plan, chunk, chunk + 1)


def run_unit(s3: S3Client, settings: Settings, dataset_id: str, version_id: str, first: int) -> list[LoadChunk]:
    """The local executor: the whole job of the unit starting at chunk `first`, in this process."""
    plan = read_plan(s3, settings, dataset_id, version_id)
    try:
        first, end = plan.unit_of(first)
    except ValueError as exc:
        raise Permanent(str(exc)) from exc
    outputs = compute_unit_views(s3, settings, plan, first, end)
    put_marker_candidates(s3, settings, plan, first, outputs.candidates)
    with tempfile.TemporaryDirectory(prefix=f"wideviews-{version_id[:8]}-{first}-") as tmp:
        return stage_unit_outputs(s3, settings, plan, first, outputs.views, Path(tmp))


def run_from_command_line(prog: str, runner: Callable[[S3Client, Settings, str, str, int], list[LoadChunk]], argv: list[str] | None) -> int:
    """`--dataset D --version V --chunk N`: run one chunk's job, print its load messages as JSON lines."""
    from shared.adapters.s3 import s3_client

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--chunk", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings.load()
    for message in runner(s3_client(settings), settings, args.dataset, args.version, args.chunk):
        sys.stdout.write(message.to_body() + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line of the local job (a shell or a debugger runs it)."""
    return run_from_command_line("wideviews-compute-job", run_unit, argv)


if __name__ == "__main__":
    raise SystemExit(main())

