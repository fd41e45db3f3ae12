"""Write the query benchmark's dataset as an upload ZIP in bounded memory (streamed, block by block).

    python benchmarks/query/make_dataset.py --out /tmp/q.zip --cells 100000 --features 20000 --density 0.1 --groups 30

matrix.csv holds single-digit counts (0 with probability 1 - density, else 1..9): the query's cost
depends on the number and layout of the non-zeros, not on their digits, and one-byte values keep a
100,000 x 20,000 CSV at 4 GB. Cells fall into `--groups` cell types of uneven sizes (a Dirichlet draw)
and 4 donors, and carry a 2-D `umap` embedding. Memory: one block of `--block-rows` rows at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np


def matrix_block(rng: np.random.Generator, first: int, n_rows: int, n_features: int, density: float) -> bytes:
    """CSV text of rows `first .. first + n_rows`: `cell-NNNNNNN,d,d,...\\n` with digits d."""
    digits = np.where(rng.random((n_rows, n_features)) < density, rng.integers(1, 10, size=(n_rows, n_features)), 0)
    # Each value is one digit followed by a comma (a newline after the last): two bytes per value.
    text = np.empty((n_rows, 2 * n_features), dtype=np.uint8)
    text[:, 0::2] = digits + ord("0")
    text[:, 1::2] = ord(",")
    text[:, -1] = ord("\n")
    out = bytearray()
    for i in range(n_rows):
        out += f"cell-{first + i:07d},".encode()
        out += text[i].tobytes()
    return bytes(out)


def write_dataset(path: Path, n_cells: int, n_features: int, density: float, n_groups: int, block_rows: int, seed: int) -> None:
    """The upload ZIP: matrix.csv, metadata.csv and manifest.json, written block by block."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(n_groups, 1.5))
    cell_type = rng.choice(n_groups, size=n_cells, p=sizes)
    centers = rng.normal(0, 8, size=(n_groups, 2))
    umap = centers[cell_type] + rng.normal(0, 1, size=(n_cells, 2))
    donor = rng.integers(0, 4, size=n_cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as archive:
        with archive.open("matrix.csv", "w", force_zip64=True) as out:
            out.write(("cell_id," + ",".join(f"GENE{i:05d}" for i in range(n_features)) + "\n").encode())
            for first in range(0, n_cells, block_rows):
                out.write(matrix_block(rng, first, min(block_rows, n_cells - first), n_features, density))
                print(f"\r{min(first + block_rows, n_cells)}/{n_cells} rows", end="", file=sys.stderr)
        print(file=sys.stderr)
        with archive.open("metadata.csv", "w", force_zip64=True) as out:
            out.write(b"cell_id,cell_type,donor,umap_1,umap_2\n")
            for first in range(0, n_cells, 10_000):
                rows = range(first, min(first + 10_000, n_cells))
                out.write(
                    "".join(
                        f"cell-{i:07d},type-{cell_type[i]:02d},D{donor[i] + 1},{umap[i, 0]:.5f},{umap[i, 1]:.5f}\n" for i in rows
                    ).encode()
                )
        manifest = {"groupings": ["cell_type", "donor"], "embedding": "umap", "title": f"query benchmark ({n_cells} x {n_features})"}
        archive.writestr("manifest.json", json.dumps(manifest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--block-rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    started = time.monotonic()
    write_dataset(args.out, args.cells, args.features, args.density, args.groups, args.block_rows, args.seed)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
