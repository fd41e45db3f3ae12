"""Benchmark of the derived views: the kernel with and without them, side by side in one run.

    .venv/bin/python benchmarks/compute/bench_views.py --scale full    # 100,000 cells x 2,000 features

Per density (10% and 30%), on the compute benchmark's synthetic chunk (`synthetic.py`: float32
log-normalised counts, 30 uneven groups, CSC), one core, in alternating rounds (each method once per
round, best of the rounds: the machine is shared):

1. `stats`: `compute_group_stats`, the 12 statistics (today's kernel);
2. `stats+dist`: the same call with `with_distributions=True` (histograms, whiskers, outliers);
3. `all views`: (2) plus the marker fields and the top-100 candidates of every group, i.e. everything
   the compute job derives from one grouping's chunk (the goal: within 1.3x of (1));
4. `crossed grouping`: the same as (3) for a crossed grouping (the 30 groups x 4 donors, ~120
   non-empty groups): a crossed grouping is one more grouping, so it costs about one more kernel;
5. `one pass (floor)`: one pass over the chunk's non-zeros reading each value, row and group code
   (`bench_kernel`'s floor): what any view that has to look at every value once more costs at least;
6. the embedding sample of 1,000,000 points (50,000 kept), for scale.

Peak memory is the resident growth over one call (VmHWM reset), over the chunk's bytes (data and
indices). Times are CPU seconds of the process (the kernel runs on one core here) and wall seconds.
Results go to stdout and benchmarks/results/bench_views_*.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kernel import _one_pass, measure_alternating, peak_growth  # noqa: E402
from services.compute.kernel import compute_group_stats  # noqa: E402
from services.compute.markers import marker_fields, top_candidates  # noqa: E402
from services.compute.sample import sample_embedding  # noqa: E402
from synthetic import make_chunk, make_group_codes  # noqa: E402

N_GROUPS = 30
SCALES = {"small": (20_000, 500, 5), "full": (100_000, 2_000, 7)}


def all_views(chunk: Any, codes: np.ndarray, n_groups: int, names: list[str]) -> Any:
    """Everything compute derives from one grouping's chunk: stats, distributions, marker candidates."""
    stats = compute_group_stats(chunk, codes, n_groups, with_distributions=True)
    return stats, top_candidates("g", names, marker_fields(stats), 100)


def bench_density(n_cells: int, n_features: int, repeats: int, density: float) -> dict[str, Any]:
    codes = make_group_codes(n_cells, N_GROUPS)
    chunk = make_chunk(n_cells, n_features, density, codes)
    donors = np.random.default_rng(9).integers(0, 4, n_cells)
    crossed_keys, crossed = np.unique(codes.astype(np.int64) * 4 + donors, return_inverse=True)
    n_crossed = crossed_keys.size
    names = [f"GENE{j:05d}" for j in range(n_features)]
    chunk_bytes = chunk.data.nbytes + chunk.indices.nbytes + chunk.indptr.nbytes
    print(f"\n{n_cells:,} cells x {n_features:,} features, density {chunk.nnz / (n_cells * n_features):.1%}: {chunk.nnz:,} non-zeros", flush=True)
    all_views(chunk[:, :8], codes, N_GROUPS, names[:8])  # compile outside the clock
    _one_pass(chunk.indptr, chunk.indices, chunk.data, codes, N_GROUPS)
    best = measure_alternating(
        {
            "stats": lambda: compute_group_stats(chunk, codes, N_GROUPS),
            "stats+dist": lambda: compute_group_stats(chunk, codes, N_GROUPS, with_distributions=True),
            "all views": lambda: all_views(chunk, codes, N_GROUPS, names),
            "crossed grouping": lambda: all_views(chunk, crossed, n_crossed, names),
            "one pass (floor)": lambda: _one_pass(chunk.indptr, chunk.indices, chunk.data, codes, N_GROUPS),
        },
        repeats,
    )
    row: dict[str, Any] = {"n_cells": n_cells, "n_features": n_features, "nnz": int(chunk.nnz), "density": chunk.nnz / (n_cells * n_features), "crossed_groups": int(n_crossed)}
    for name, (wall, cpu) in best.items():
        row[name] = {"wall_s": wall, "cpu_s": cpu}
    row["stats"]["peak_over_chunk"] = (chunk_bytes + max(0, peak_growth(lambda: compute_group_stats(chunk, codes, N_GROUPS)))) / chunk_bytes
    row["all views"]["peak_over_chunk"] = (chunk_bytes + max(0, peak_growth(lambda: all_views(chunk, codes, N_GROUPS, names)))) / chunk_bytes
    base = row["stats"]
    for name in ("stats+dist", "all views", "crossed grouping", "one pass (floor)"):
        row[name]["over_stats_cpu"] = row[name]["cpu_s"] / base["cpu_s"]
        row[name]["over_stats_wall"] = row[name]["wall_s"] / base["wall_s"]
    for name in best:
        extra = f"  {row[name]['over_stats_cpu']:.2f}x CPU / {row[name]['over_stats_wall']:.2f}x wall" if name != "stats" else ""
        print(f"{name:18s} {row[name]['cpu_s']:7.3f} s CPU {row[name]['wall_s']:7.3f} s wall{extra}", flush=True)
    print(f"peak memory / chunk: stats {row['stats']['peak_over_chunk']:.3f}x, all views {row['all views']['peak_over_chunk']:.3f}x", flush=True)
    return row


def bench_sample() -> dict[str, Any]:
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 10, size=(40, 2))
    which = rng.integers(0, 40, 1_000_000)
    coords = centres[which] + rng.normal(0, 1, size=(1_000_000, 2))
    codes = [which.astype(np.int32), rng.integers(0, 8, 1_000_000).astype(np.int32)]
    start = time.perf_counter()
    positions, _ = sample_embedding(coords, codes, 50_000, seed=1)
    seconds = time.perf_counter() - start
    print(f"\nembedding sample: 1,000,000 points -> {positions.size:,} in {seconds:.2f} s", flush=True)
    return {"points": 1_000_000, "kept": int(positions.size), "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    n_cells, n_features, repeats = SCALES[args.scale]
    rows = [bench_density(n_cells, n_features, repeats, d) for d in args.densities]
    sample = bench_sample()
    print("\n| | " + " | ".join(f"{r['density']:.1%} density" for r in rows) + " |")
    print("| --- | " + " | ".join("---" for _ in rows) + " |")
    for name in ("stats", "stats+dist", "all views", "crossed grouping", "one pass (floor)"):
        cells = []
        for r in rows:
            text = f"{r[name]['cpu_s']:.3f} s"
            if name != "stats":
                text += f" ({r[name]['over_stats_cpu']:.2f}x)"
            cells.append(text)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| peak memory / chunk, all views | " + " | ".join(f"{r['all views']['peak_over_chunk']:.3f}x" for r in rows) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_views_{args.scale}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": platform.platform(), "rows": rows, "sample": sample}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
