"""The staged Parquet parts of a version's column chunks, written from non-zeros in any order.

Readers hand `ChunkParts` non-zeros as (feature, cell, value) in whatever order their format gives
them (row blocks of a CSV or CSR, column blocks of a CSC). They are spooled per chunk to the
worker's local disk (16 bytes a non-zero; memory holds at most `spill_bytes` of them). Every
`generation_nnz` non-zeros (128 M, 2 GB of spool) the spool's chunks are written to staging by a
background thread while reading goes on, one part per chunk that has data in the generation; the
last generation is written by `finish`. So the number of S3 objects is at most `n_chunks` per
generation (one generation up to 128 M non-zeros), not a multiple of how often memory filled, and
the local disk holds at most two generations.

Values are stored as float32 when every value of the matrix is exactly a float32 (counts, most h5ad
files): half the bytes for compute to read, the same numbers. Otherwise float64.
"""

from __future__ import annotations

import io
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shared.adapters.s3 import S3Client, get_bytes, put_bytes
from shared.config import Settings
from shared.staging import chunk_part_key

_FIELDS = (("feature", np.int32), ("cell", np.int32), ("value", np.float64))
# Chunks of a generation encoded and uploaded at once (each holds one chunk's spool in memory).
PART_WRITERS = 3


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
    """Spools non-zeros per column chunk and writes them to staging a generation at a time.

    Every `generation_nnz` non-zeros the spool is rotated and its chunks are encoded and uploaded by
    a background thread while reading goes on; `finish` writes the last generation. A chunk gets at
    most one part per generation (plus one per `part_nnz` of it), and at least one part in all.
    """

    def __init__(
        self,
        s3: S3Client,
        settings: Settings,
        dataset_id: str,
        version_id: str,
        chunk_width: int,
        *,
        spill_bytes: int = 64 << 20,
        part_nnz: int = 32 << 20,
        generation_nnz: int = 128 << 20,
        workdir: str | None = None,
    ) -> None:
        self.s3, self.settings, self.dataset_id, self.version_id = s3, settings, dataset_id, version_id
        self.chunk_width = max(1, chunk_width)
        self.spill_bytes = spill_bytes
        self.part_nnz = part_nnz
        self.generation_nnz = generation_nnz
        self._dir = tempfile.TemporaryDirectory(prefix="wideviews-ingest-", dir=workdir)
        self.root = Path(self._dir.name)
        self.generation = 0
        self.path = self.root / "g0"
        self.path.mkdir()
        self.pending: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.pending_bytes = 0
        self.spooled: dict[int, int] = {}  # chunk -> non-zeros in the current generation's spool
        self.spooled_nnz = 0
        self.nnz = 0
        self.parts = 0
        # Parts written so far: (chunk, part number, stored as float32).
        self.written: list[tuple[int, int, bool]] = []
        self.all_float32 = True
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-generation")
        self._previous: Future[None] | None = None

    @property
    def value_type(self) -> type:
        """float32 while every value seen is exactly a float32 (counts), else float64."""
        return np.float32 if self.all_float32 else np.float64

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
        """Append every pending chunk's non-zeros to its spool files; rotate a full generation."""
        for chunk, pieces in self.pending.items():
            for i, (name, _) in enumerate(_FIELDS):
                with open(self.path / f"{chunk}.{name}", "ab") as f:
                    for piece in pieces:
                        piece[i].tofile(f)
            n = sum(p[2].size for p in pieces)
            self.spooled[chunk] = self.spooled.get(chunk, 0) + n
            self.spooled_nnz += n
        self.pending = {}
        self.pending_bytes = 0
        if self.spooled_nnz >= self.generation_nnz:
            self._rotate()

    def _rotate(self) -> None:
        """Hand the current generation to the writer thread (after the previous one is done)."""
        if self._previous is not None:
            self._previous.result()
        path, spooled, generation = self.path, self.spooled, self.generation
        self._previous = self._writer.submit(self._write_generation, path, spooled, generation, None)
        self.generation += 1
        self.path = self.root / f"g{self.generation}"
        self.path.mkdir()
        self.spooled, self.spooled_nnz = {}, 0

    def _write_generation(self, path: Path, spooled: dict[int, int], generation: int, n_chunks: int | None) -> None:
        """Encode and upload one generation's chunks; the last (`n_chunks` given) also gives every
        chunk without any part an empty one."""
        # One chunk's arrays in memory at a time (read, not mapped: mapped pages would count as the
        # worker's memory until the whole generation is written).
        def read(chunk: int) -> list[np.ndarray]:
            n = spooled.get(chunk, 0)
            return [np.fromfile(path / f"{chunk}.{name}", dtype=dtype, count=n) if n else np.zeros(0, dtype) for name, dtype in _FIELDS]

        present = sorted(c for c, n in spooled.items() if n)
        if self.all_float32 and not all(fits_float32(np.fromfile(path / f"{c}.value", dtype=np.float64, count=spooled[c])) for c in present):
            self.all_float32 = False
        chunks = present
        if n_chunks is not None:
            have = {c for c, _, _ in self.written} | set(chunks)
            chunks = sorted(set(chunks) | (set(range(n_chunks)) - have))

        def write(chunk: int) -> list[tuple[int, int, bool]]:
            feature, cell, value = read(chunk)
            written = []
            for k, start in enumerate(range(0, max(1, value.size), self.part_nnz)):
                sl = slice(start, start + self.part_nnz)
                part = generation * 1000 + k
                self._put_part(chunk, part, np.asarray(feature[sl]), np.asarray(cell[sl]), np.asarray(value[sl]))
                written.append((chunk, part, self.all_float32))
            for name, _ in _FIELDS:
                (path / f"{chunk}.{name}").unlink(missing_ok=True)
            return written

        # A few chunks at once: Parquet encodes without the GIL while another part is being uploaded.
        with ThreadPoolExecutor(max_workers=PART_WRITERS, thread_name_prefix="stage-part") as pool:
            for written in pool.map(write, chunks):
                self.written.extend(written)

    def _put_part(self, chunk: int, part: int, feature: np.ndarray, cell: np.ndarray, value: np.ndarray) -> None:
        table = pa.table({"feature": feature, "cell": cell, "value": value.astype(self.value_type)})
        sink = pa.BufferOutputStream()
        # Snappy without dictionary pages: half the CPU of zstd with them, parts ~1.8x larger.
        pq.write_table(table, sink, compression="snappy", use_dictionary=False)
        put_bytes(self.s3, self.settings.staging_bucket, chunk_part_key(self.dataset_id, self.version_id, chunk, part), sink.getvalue().to_pybytes())

    def finish(self, n_chunks: int) -> int:
        """Write the last generation (an empty chunk still gets one part); returns the part count.

        Values are float32 in every part when every value of the matrix is exactly a float32, else
        float64 in every part: one schema for the whole version, since a compute unit reads several
        chunks at once. Parts an earlier generation wrote as float32 are rewritten as float64 when a
        later one holds a value that is not a float32 (data that changes kind half way: rare).
        """
        self.spill()
        if self._previous is not None:
            self._previous.result()
        self._write_generation(self.path, self.spooled, self.generation, n_chunks)
        if not self.all_float32:
            for chunk, part, as_float32 in self.written:
                if as_float32:
                    key = chunk_part_key(self.dataset_id, self.version_id, chunk, part)
                    table = pq.read_table(io.BytesIO(get_bytes(self.s3, self.settings.staging_bucket, key)))
                    self._put_part(chunk, part, table.column("feature").to_numpy(), table.column("cell").to_numpy(), table.column("value").to_numpy())
        self.parts = len(self.written)
        return self.parts

    def close(self) -> None:
        """Wait for the background writer, then remove the spool directory."""
        self._writer.shutdown(wait=True)
        self._dir.cleanup()

    def __enter__(self) -> "ChunkParts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
