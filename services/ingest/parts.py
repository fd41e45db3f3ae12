"""The staged Parquet parts of a version's column chunks, written from non-zeros in any order.

Readers hand `ChunkParts` non-zeros as (feature, cell, value) in whatever order their format gives
them (row blocks of a CSV or CSR, column blocks of a CSC). They are spooled per chunk to the
worker's local disk (16 bytes a non-zero; memory holds at most `spill_bytes` of them), and only at
`finish` are the chunks written to staging: one part per chunk, or one per `part_nnz` non-zeros of
it, so the number of S3 objects is `n_chunks` plus the data over `part_nnz`, not a multiple of how
often memory filled up.

Values are stored as float32 when every value of the matrix is exactly a float32 (counts, most h5ad
files): half the bytes for compute to read, the same numbers. Otherwise float64.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared.adapters.s3 import put_bytes
from shared.config import Settings
from shared.staging import chunk_part_key

_FIELDS = (("feature", np.int32), ("cell", np.int32), ("value", np.float64))


@numba.njit(cache=True, nogil=True)
def group_by_chunk(keys: np.ndarray, chunk_width: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """A stable counting sort of `keys // chunk_width`: (order, start of each chunk in it, n_chunks + 1)."""
    starts = np.zeros(n_chunks + 1, dtype=np.int64)
    for i in range(keys.size):
        starts[keys[i] // chunk_width + 1] += 1
    for c in range(n_chunks):
        starts[c + 1] += starts[c]
    cursor = starts[:-1].copy()
    order = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        c = keys[i] // chunk_width
        order[cursor[c]] = i
        cursor[c] += 1
    return order, starts


def fits_float32(values: np.ndarray) -> bool:
    """True when every value is exactly a float32 (so storing float32 loses nothing)."""
    return bool(np.array_equal(values.astype(np.float32).astype(np.float64), values))


class ChunkParts:
    """Spools non-zeros per column chunk, then writes each chunk's parts to staging."""

    def __init__(
        self,
        s3: Any,
        settings: Settings,
        dataset_id: str,
        version_id: str,
        chunk_width: int,
        *,
        spill_bytes: int = 64 << 20,
        part_nnz: int = 32 << 20,
        workdir: str | None = None,
    ) -> None:
        self.s3, self.settings, self.dataset_id, self.version_id = s3, settings, dataset_id, version_id
        self.chunk_width = max(1, chunk_width)
        self.spill_bytes = spill_bytes
        self.part_nnz = part_nnz
        self._dir = tempfile.TemporaryDirectory(prefix="wideviews-ingest-", dir=workdir)
        self.path = Path(self._dir.name)
        self.pending: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.pending_bytes = 0
        self.spooled: dict[int, int] = {}  # chunk -> non-zeros on disk
        self.nnz = 0
        self.parts = 0
        self.value_type: type = np.float64

    def add(self, features: np.ndarray, cells: np.ndarray, values: np.ndarray) -> None:
        """Non-zeros with global feature and cell indices (any order, no duplicates)."""
        if not values.size:
            return
        features = features.astype(np.int64, copy=False)
        first, last = int(features.min()) // self.chunk_width, int(features.max()) // self.chunk_width
        if first == last:
            self._add_chunk(first, features - first * self.chunk_width, cells, values)
        else:
            base = first * self.chunk_width
            order, starts = group_by_chunk(features - base, self.chunk_width, last - first + 1)
            for c in range(last - first + 1):
                if starts[c + 1] > starts[c]:
                    take = order[starts[c] : starts[c + 1]]
                    chunk = first + c
                    self._add_chunk(chunk, features[take] - chunk * self.chunk_width, cells[take], values[take])
        self.nnz += values.size
        if self.pending_bytes >= self.spill_bytes:
            self.spill()

    def add_sorted(self, chunk: int, local_features: np.ndarray, cells: np.ndarray, values: np.ndarray) -> None:
        """Non-zeros of one chunk, features already chunk-local."""
        if values.size:
            self._add_chunk(chunk, local_features, cells, values)
            self.nnz += values.size
            if self.pending_bytes >= self.spill_bytes:
                self.spill()

    def _add_chunk(self, chunk: int, features: np.ndarray, cells: np.ndarray, values: np.ndarray) -> None:
        piece = (features.astype(np.int32, copy=False), cells.astype(np.int32, copy=False), values.astype(np.float64, copy=False))
        self.pending.setdefault(chunk, []).append(piece)
        self.pending_bytes += 16 * values.size

    def spill(self) -> None:
        """Append every pending chunk's non-zeros to its spool files."""
        for chunk, pieces in self.pending.items():
            for i, (name, _) in enumerate(_FIELDS):
                with open(self.path / f"{chunk}.{name}", "ab") as f:
                    for piece in pieces:
                        piece[i].tofile(f)
            self.spooled[chunk] = self.spooled.get(chunk, 0) + sum(p[2].size for p in pieces)
        self.pending = {}
        self.pending_bytes = 0

    def _chunk_arrays(self, chunk: int) -> list[np.ndarray]:
        n = self.spooled.get(chunk, 0)
        if not n:
            return [np.zeros(0, dtype) for _, dtype in _FIELDS]
        return [np.memmap(self.path / f"{chunk}.{name}", dtype=dtype, mode="r", shape=(n,)) for name, dtype in _FIELDS]

    def finish(self, n_chunks: int, threads: int = 2) -> int:
        """Write every chunk's parts to staging (an empty chunk still gets one); returns the part count.

        Values are float32 in every part when every value of the matrix is exactly a float32, else
        float64 in every part: one schema for the whole version, since a compute unit reads several
        chunks at once. Chunks are encoded and uploaded on `threads` threads; memory holds about one
        chunk per thread.
        """
        self.spill()
        float32 = all(fits_float32(np.asarray(self._chunk_arrays(c)[2])) for c in range(n_chunks))
        self.value_type = np.float32 if float32 else np.float64
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stage-parts") as pool:
            self.parts = sum(pool.map(self._write_chunk, range(n_chunks)))
        return self.parts

    def _write_chunk(self, chunk: int) -> int:
        feature, cell, value = self._chunk_arrays(chunk)
        parts = 0
        for part, start in enumerate(range(0, max(1, value.size), self.part_nnz)):
            sl = slice(start, start + self.part_nnz)
            table = pa.table({"feature": np.asarray(feature[sl]), "cell": np.asarray(cell[sl]), "value": np.asarray(value[sl]).astype(self.value_type)})
            sink = pa.BufferOutputStream()
            # Snappy without dictionary pages: half the CPU of zstd with them, parts ~1.8x larger.
            pq.write_table(table, sink, compression="snappy", use_dictionary=False)
            put_bytes(self.s3, self.settings.staging_bucket, chunk_part_key(self.dataset_id, self.version_id, chunk, part), sink.getvalue().to_pybytes())
            parts += 1
        for name, _ in _FIELDS:
            (self.path / f"{chunk}.{name}").unlink(missing_ok=True)
        return parts

    def close(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> "ChunkParts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


