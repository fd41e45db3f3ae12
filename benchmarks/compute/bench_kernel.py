"""Benchmark of the compute kernel against scanpy, pandas and the seed's Spark pandas-UDF median.

    .venv/bin/python benchmarks/compute/bench_kernel.py --scale small   # about a minute
    .venv/bin/python benchmarks/compute/bench_kernel.py --scale full    # 100,000 cells x 2,000 features

One run, side by side, per density (10% and 30%) on the same synthetic chunk (`synthetic.py`: float32
log-normalised counts with many ties, 30 groups of uneven sizes, CSC as a column chunk arrives):

1. `compute_group_stats`: all 12 statistics, on one core (as every peer below) and on all cores;
2. `scanpy.get.aggregate` with mean, var, count_nonzero and median (its fastest input, CSR);
3. pandas groupby with the same 12 statistics, on a slice of columns, scaled per column;
4. the seed's approach: PySpark local mode (one core), a `GROUPED_AGG` pandas UDF median per column
   (median only), on a batch of columns as the seed batched them (128 at full scale: a Spark job's
   fixed cost spread as in the seed; a 16-column slice doubles the per-column cost), scaled per column;

and two floors measured in the same run: one pass over the non-zeros (value, row and group code of
each, summed per group: what any grouped statistic must read) and `np.sort` of the non-zeros.
Times are the best of a few runs (wall clock; the machine is shared). Memory is the peak resident
growth while a method runs (VmHWM reset through /proc/self/clear_refs), compared with the chunk's
in-memory size. Results go to stdout as a table and to benchmarks/results/*.json.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from services.compute.kernel import compute_group_stats  # noqa: E402
from synthetic import make_chunk, make_group_codes  # noqa: E402

N_GROUPS = 30


@dataclass(frozen=True)
class Scale:
    n_cells: int
    n_features: int
    pandas_columns: int  # pandas runs on this many columns, scaled to all
    spark_columns: int  # the seed's Spark UDF runs on this many columns, scaled to all
    repeats: int


SCALES = {
    "small": Scale(n_cells=20_000, n_features=500, pandas_columns=50, spark_columns=50, repeats=5),
    "full": Scale(n_cells=100_000, n_features=2_000, pandas_columns=100, spark_columns=128, repeats=7),
}


# --- measuring -------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS, so that a method's allocations show as RSS growth."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_growth(fn: Callable[[], Any]) -> int:
    """Peak resident memory growth in bytes over one call of fn (-1 where /proc cannot tell)."""
    gc.collect()
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        baseline_kib = _status_kib("VmRSS")
    except OSError:
        return -1
    result = fn()
    peak_kib = _status_kib("VmHWM")
    del result
    return (peak_kib - baseline_kib) * 1024


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, float, int, Any]:
    """Best wall time, its CPU time, peak resident growth in bytes of one more call, the last result."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        result = None
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best_wall:
            best_wall, best_cpu = wall, cpu
    result = None
    peak = peak_growth(fn)
    return best_wall, best_cpu, peak, fn()


def measure_alternating(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each fn over `repeats` rounds in which every fn runs once in turn."""
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            del result
            if wall < best[name][0]:
                best[name] = (wall, cpu)
    return best


@numba.njit(cache=True, nogil=True)
def _one_pass(indptr, indices, data, codes, n_groups):  # type: ignore[no-untyped-def]
    """Floor: read every non-zero's value, row and group code once, summing per group."""
    sums = np.zeros(n_groups)
    for c in range(indptr.shape[0] - 1):
        for k in range(indptr[c], indptr[c + 1]):
            sums[codes[indices[k]]] += data[k]
    return sums


# --- the methods -------------------------------------------------------------------------------------


def run_kernel(chunk: sp.csc_array, codes: np.ndarray, threads: int = 1) -> Any:
    return compute_group_stats(chunk, codes, N_GROUPS, threads=threads)


def make_scanpy_input(chunk: sp.csc_array, codes: np.ndarray) -> Any:
    import anndata

    obs = pd.DataFrame(
        {"group": pd.Categorical.from_codes(codes, categories=[f"g{i:02d}" for i in range(N_GROUPS)])},
        index=[f"c{i}" for i in range(chunk.shape[0])],
    )
    return anndata.AnnData(X=sp.csr_matrix(chunk), obs=obs)  # CSR: scanpy's fast path


def run_scanpy(adata: Any) -> Any:
    import scanpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scanpy.get.aggregate(adata, by="group", func=["mean", "var", "count_nonzero", "median"])


def run_pandas(frame: pd.DataFrame, codes: np.ndarray) -> dict[str, pd.DataFrame]:
    groups = pd.Categorical.from_codes(codes, categories=range(N_GROUPS))
    grouped = frame.groupby(groups, observed=False)
    nnz = (frame != 0).groupby(groups, observed=False).sum()
    count = grouped.size()
    total = grouped.sum()
    return {
        "count": count,
        "nnz": nnz,
        "sum": total,
        "mean": grouped.mean(),
        "var": grouped.var(ddof=1),
        "min": grouped.min(),
        "max": grouped.max(),
        "median": grouped.median(),
        "q1": grouped.quantile(0.25),
        "q3": grouped.quantile(0.75),
        "frac_expressing": nnz.div(count, axis=0),
        "mean_expressing": total / nnz,
    }


class SeedSpark:
    """The seed's approach: a wide Spark DataFrame, groupby(group).agg(median pandas UDF per column)."""

    def __init__(self) -> None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        self._tmp = tempfile.TemporaryDirectory(prefix="wideviews-bench-spark-")
        self.spark = (
            SparkSession.builder.master("local[1]")  # one core, as the kernel
            .appName("wideviews-bench-seed-median")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "1")
            .config("spark.local.dir", self._tmp.name)
            .config("spark.sql.warehouse.dir", os.path.join(self._tmp.name, "warehouse"))
            .config("spark.driver.memory", "2g")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")

    def median_per_column(self, frame: pd.DataFrame, codes: np.ndarray) -> pd.DataFrame:
        from pyspark.sql import functions
        from pyspark.sql import types

        def median_of(values: pd.Series) -> float:
            return float(values.median())

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the seed's (now deprecated) PandasUDFType spelling
            median = functions.pandas_udf(median_of, types.FloatType(), functions.PandasUDFType.GROUPED_AGG)

        with_group = frame.assign(group=codes.astype(np.int32))
        with_group.columns = [str(c) for c in with_group.columns]
        table = self.spark.createDataFrame(with_group).cache()
        table.count()  # materialise the input: time only the aggregation, as the seed's step
        features = [c for c in table.columns if c != "group"]
        wall = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = table.groupby("group").agg(*[median(table[c]).alias(c) for c in features]).toPandas()
        wall = time.perf_counter() - wall
        table.unpersist()
        self.last_wall_s = wall
        return result

    def stop(self) -> None:
        self.spark.stop()
        self._tmp.cleanup()


# --- the run -----------------------------------------------------------------------------------------


def check_against_scanpy(stats: Any, aggregated: Any) -> float:
    """Largest relative difference of mean, var, count_nonzero and median (scanpy works in float32)."""
    order = [int(name[1:]) for name in aggregated.obs["group"].astype(str)]
    worst = 0.0
    for ours, theirs in (("mean", "mean"), ("var", "var"), ("nnz", "count_nonzero"), ("median", "median")):
        expected = np.asarray(aggregated.layers[theirs], dtype=np.float64)
        got = stats.values[ours][:, order].T
        scale = np.maximum(np.abs(expected), 1e-3)
        worst = max(worst, float(np.nanmax(np.abs(got - expected) / scale)))
    return worst


def bench_density(scale: Scale, density: float, spark: SeedSpark | None) -> dict[str, Any]:
    codes = make_group_codes(scale.n_cells, N_GROUPS)
    t = time.perf_counter()
    chunk = make_chunk(scale.n_cells, scale.n_features, density, codes)
    generate_s = time.perf_counter() - t
    nnz = int(chunk.nnz)
    chunk_bytes = int(chunk.data.nbytes + chunk.indices.nbytes + chunk.indptr.nbytes)
    per_million = 1e6 / nnz
    row: dict[str, Any] = {
        "density_target": density,
        "density": nnz / (scale.n_cells * scale.n_features),
        "n_cells": scale.n_cells,
        "n_features": scale.n_features,
        "n_groups": N_GROUPS,
        "group_sizes": np.bincount(codes).tolist(),
        "nnz": nnz,
        "chunk_bytes": chunk_bytes,
        "generate_s": generate_s,
    }
    print(f"\n== density {density:.0%}: {nnz:,} non-zeros, chunk {chunk_bytes / 2**20:.0f} MiB", flush=True)

    # warm the compiled code (numba cache) outside the timings
    compute_group_stats(chunk[:, :2], codes, N_GROUPS)
    _one_pass(chunk.indptr, chunk.indices, chunk.data, codes, N_GROUPS)

    # The kernel and the floors take turns, so a burst of load on the shared machine hits them alike.
    values = chunk.data.copy()
    cores = os.cpu_count() or 1
    best = measure_alternating(
        {
            "kernel": lambda: run_kernel(chunk, codes),
            "kernel_all_cores": lambda: run_kernel(chunk, codes, threads=cores),
            "sort": lambda: np.sort(values),
            "one_pass": lambda: _one_pass(chunk.indptr, chunk.indices, chunk.data, codes, N_GROUPS),
        },
        scale.repeats,
    )
    (wall, cpu), (wall_sort, cpu_sort), (wall_pass, cpu_pass) = best["kernel"], best["sort"], best["one_pass"]
    peak = peak_growth(lambda: run_kernel(chunk, codes))
    stats = run_kernel(chunk, codes)
    row["kernel"] = {"wall_s": wall, "cpu_s": cpu, "peak_extra_bytes": peak}
    row["floor_sort"] = {"wall_s": wall_sort, "cpu_s": cpu_sort}
    row["floor_one_pass"] = {"wall_s": wall_pass, "cpu_s": cpu_pass}
    wall_all, cpu_all = best["kernel_all_cores"]
    row["kernel_all_cores"] = {"cores": cores, "wall_s": wall_all, "cpu_s": cpu_all}
    same = run_kernel(chunk, codes, threads=cores)
    row["kernel_all_cores"]["same_bits"] = all(
        stats.values[s].tobytes() == same.values[s].tobytes() for s in stats.values
    )
    del same
    print(f"kernel        {wall:8.3f} s   on {cores} cores {wall_all:.3f} s", flush=True)
    print(f"np.sort       {wall_sort:8.3f} s   one pass {wall_pass:.3f} s", flush=True)

    adata = make_scanpy_input(chunk, codes)
    wall_sc, cpu_sc, peak_sc, aggregated = measure(lambda: run_scanpy(adata), max(1, scale.repeats - 1))
    row["scanpy"] = {"wall_s": wall_sc, "cpu_s": cpu_sc, "peak_extra_bytes": peak_sc}
    row["max_rel_diff_vs_scanpy"] = check_against_scanpy(stats, aggregated)
    del adata, aggregated
    print(f"scanpy        {wall_sc:8.3f} s   (max rel diff {row['max_rel_diff_vs_scanpy']:.1e})", flush=True)

    n_pandas = min(scale.pandas_columns, scale.n_features)
    frame = pd.DataFrame(chunk[:, :n_pandas].toarray().astype(np.float64))
    wall_pd, _, peak_pd, _ = measure(lambda: run_pandas(frame, codes), 1)
    row["pandas"] = {
        "columns_run": n_pandas,
        "wall_s_run": wall_pd,
        "wall_s": wall_pd * scale.n_features / n_pandas,
        "peak_extra_bytes_run": peak_pd,
    }
    del frame
    scaled = row["pandas"]["wall_s"]
    print(f"pandas        {scaled:8.3f} s   ({n_pandas} columns in {wall_pd:.2f} s, scaled)", flush=True)

    if spark is not None:
        n_spark = min(scale.spark_columns, scale.n_features)
        frame = pd.DataFrame(chunk[:, :n_spark].toarray())
        for _ in range(2):  # the first calls start the Python workers and warm the JVM (JIT)
            spark.median_per_column(frame, codes)
        wall_sp = float("inf")
        for _ in range(3):  # best of three: the figure most favourable to the seed
            spark.median_per_column(frame, codes)
            wall_sp = min(wall_sp, spark.last_wall_s)
        row["seed_spark_median"] = {
            "columns_run": n_spark,
            "wall_s_run": wall_sp,
            "wall_s": wall_sp * scale.n_features / n_spark,
        }
        scaled = row["seed_spark_median"]["wall_s"]
        print(f"seed Spark    {scaled:8.1f} s   (median only; {n_spark} columns in {wall_sp:.2f} s, scaled)")

    kernel_s = row["kernel"]["wall_s"]
    row["kernel"]["ns_per_nnz"] = kernel_s / nnz * 1e9
    row["kernel"]["ms_per_million_nnz"] = kernel_s * per_million * 1e3
    row["kernel"]["peak_over_chunk"] = (chunk_bytes + max(0, row["kernel"]["peak_extra_bytes"])) / chunk_bytes
    row["ratios"] = {
        "kernel_over_sort_floor": kernel_s / wall_sort,
        "kernel_over_one_pass_floor": kernel_s / wall_pass,
        # CPU time: less disturbed than wall time when the shared machine is busy
        "kernel_over_sort_floor_cpu": row["kernel"]["cpu_s"] / cpu_sort,
        "scanpy_over_kernel_cpu": row["scanpy"]["cpu_s"] / row["kernel"]["cpu_s"],
        "scanpy_over_kernel": row["scanpy"]["wall_s"] / kernel_s,
        "scanpy_over_kernel_all_cores": row["scanpy"]["wall_s"] / wall_all,
        "kernel_speedup_all_cores": kernel_s / wall_all,
        "pandas_over_kernel": row["pandas"]["wall_s"] / kernel_s,
    }
    if spark is not None:
        row["ratios"]["seed_spark_over_kernel"] = row["seed_spark_median"]["wall_s"] / kernel_s
        # what the goal against the seed leaves: the seed's time over the floors' (no kernel beats a floor)
        row["ratios"]["seed_spark_over_one_pass_floor"] = row["seed_spark_median"]["wall_s"] / wall_pass
        row["ratios"]["seed_spark_over_sort_floor"] = row["seed_spark_median"]["wall_s"] / wall_sort
    return row


# The printed table: (label, format of one row's figure); rows with the seed's figures only when measured.
_TABLE: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("non-zeros", lambda r: f"{r['nnz']:,}"),
    ("chunk in memory", lambda r: f"{r['chunk_bytes'] / 2**20:.0f} MiB"),
    ("kernel, all 12 stats, 1 core", lambda r: f"{r['kernel']['wall_s']:.3f} s"),
    ("  per million non-zeros", lambda r: f"{r['kernel']['ms_per_million_nnz']:.2f} ms"),
    ("  peak memory / chunk", lambda r: f"{r['kernel']['peak_over_chunk']:.2f}x"),
    ("  on all cores", lambda r: f"{r['kernel_all_cores']['wall_s']:.3f} s ({r['kernel_all_cores']['cores']})"),
    ("floor: one pass over non-zeros", lambda r: f"{r['floor_one_pass']['wall_s']:.3f} s"),
    ("floor: np.sort of non-zeros", lambda r: f"{r['floor_sort']['wall_s']:.3f} s"),
    ("scanpy aggregate (4 stats)", lambda r: f"{r['scanpy']['wall_s']:.3f} s"),
    ("pandas groupby (12, scaled)", lambda r: f"{r['pandas']['wall_s']:.2f} s"),
    ("seed Spark UDF median (scaled)", lambda r: f"{r['seed_spark_median']['wall_s']:.1f} s"),
    ("kernel / np.sort floor", lambda r: f"{r['ratios']['kernel_over_sort_floor']:.2f}x"),
    ("kernel / one-pass floor", lambda r: f"{r['ratios']['kernel_over_one_pass_floor']:.2f}x"),
    ("  CPU time: kernel / np.sort", lambda r: f"{r['ratios']['kernel_over_sort_floor_cpu']:.2f}x"),
    ("speed-up vs scanpy", lambda r: f"{r['ratios']['scanpy_over_kernel']:.1f}x"),
    ("  CPU time: scanpy / kernel", lambda r: f"{r['ratios']['scanpy_over_kernel_cpu']:.1f}x"),
    ("  kernel on all cores", lambda r: f"{r['ratios']['scanpy_over_kernel_all_cores']:.1f}x"),
    ("speed-up vs pandas", lambda r: f"{r['ratios']['pandas_over_kernel']:.0f}x"),
    ("speed-up vs seed Spark", lambda r: f"{r['ratios']['seed_spark_over_kernel']:.0f}x"),
    ("  one-pass floor vs seed", lambda r: f"{r['ratios']['seed_spark_over_one_pass_floor']:.0f}x"),
    ("  np.sort floor vs seed", lambda r: f"{r['ratios']['seed_spark_over_sort_floor']:.0f}x"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'':34}" + "".join(f"{'density ' + format(r['density'], '.1%'):>18}" for r in rows)
    print("\n" + header)
    with_seed = all("seed_spark_median" in r for r in rows)
    for label, figure in _TABLE:
        if "seed" in label and not with_seed:
            continue
        print(f"{label:34}" + "".join(f"{figure(r):>18}" for r in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--no-spark", action="store_true", help="skip the seed's Spark UDF median")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    started = time.perf_counter()
    spark = None if args.no_spark else SeedSpark()
    try:
        rows = [bench_density(scale, density, spark) for density in args.densities]
    finally:
        if spark is not None:
            spark.stop()
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = args.out / f"bench_kernel_{args.scale}_{stamp}.json"
    report = {
        "scale": args.scale,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_average_at_end": os.getloadavg(),
        "total_s": time.perf_counter() - started,
        "rows": rows,
    }
    path.write_text(json.dumps(report, indent=2))
    load = report["load_average_at_end"][0]
    print(f"\nwrote {path.relative_to(ROOT)} in {report['total_s']:.0f} s (load average {load:.1f})")


if __name__ == "__main__":
    main()
