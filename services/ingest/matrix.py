"""What every matrix reader (CSV, h5ad, 10x, MatrixMarket) produces and the checks they share.

A reader streams its format's non-zeros into `ChunkParts` and returns a `MatrixSummary`: the cell
ids and feature names in matrix order, the column chunks, and how many parts and non-zeros it
staged. Names and ids are checked the same way whatever the format.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.config import Settings
from shared.errors import BadUpload

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# How a reader reports progress: (bytes of the matrix read so far, bytes in all or 0 if unknown, rows).
Progress = Callable[[int, int, int], None]


@dataclass
class MatrixSummary:
    cell_ids: pa.Array
    features: list[str]
    id_column: str
    chunks: list[tuple[int, int]]
    parts: int
    nnz: int
    # Display symbols of the features (an h5ad's var column), "" where a feature has none; empty: none.
    symbols: list[str] = field(default_factory=list)


def chunk_width(est_cells: int, settings: Settings) -> int:
    """Features per chunk, so that a chunk's dense float64 working set fits the memory budget."""
    # The kernel needs about 3x the chunk in memory; a dense chunk is the worst case.
    width = settings.chunk_memory_budget_bytes // max(1, est_cells * 8 * 3)
    return max(1, min(settings.chunk_features, width))


def chunk_ranges(n_features: int, width: int) -> list[tuple[int, int]]:
    """Contiguous feature ranges of `width` features (the last one shorter)."""
    return [(start, min(n_features, start + width)) for start in range(0, n_features, width)]


def chunk_bounds(n_features: int, est_cells: int, settings: Settings) -> list[tuple[int, int]]:
    """Contiguous feature ranges sized so that a chunk's dense float64 working set fits the memory budget."""
    return chunk_ranges(n_features, chunk_width(est_cells, settings))


def check_names(names: list[str], what: str, member: str) -> None:
    """Non-empty, unique, no control characters, at most 1024 bytes each."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name.strip():
            raise BadUpload(f"{member}: {what} {i + 1} has an empty name")
        if CONTROL.search(name):
            raise BadUpload(f"{member}: {what} {name!r} contains control characters")
        if len(name.encode()) > 1024:
            raise BadUpload(f"{member}: {what} {name[:40]!r}... is longer than 1024 bytes")
        if name in seen:
            raise BadUpload(f"{member}: duplicate {what} {name!r} (number {seen[name] + 1} and {i + 1})")
        seen[name] = i


def check_feature_count(n_features: int, settings: Settings, member: str) -> None:
    """`BadUpload` when the matrix has more features than `max_features`."""
    if n_features > settings.max_features:
        raise BadUpload(f"{member} has {n_features} features, over the limit of {settings.max_features}")


def check_ids(ids: pa.Array, member: str, what: str = "cell id") -> None:
    """Unique, non-empty, no control characters."""
    if ids.null_count:
        raise BadUpload(f"{member}: empty {what} at position {first_null(ids) + 1}")
    empty = pc.equal(pc.utf8_length(ids), 0)
    if len(ids) and pc.any(empty).as_py():
        raise BadUpload(f"{member}: empty {what} at data row {int(pc.index(empty, True).as_py()) + 1}")
    counts = pc.value_counts(ids)
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        example = dup[0]["values"].as_py()
        raise BadUpload(f"{member}: duplicate {what} {example!r} ({len(dup)} ids appear more than once)")
    if len(ids) and pc.any(pc.match_substring_regex(ids, r"[\x00-\x1f\x7f]")).as_py():
        raise BadUpload(f"{member}: a {what} contains control characters")
    if len(ids) and pc.any(pc.greater(pc.binary_length(ids), 1024)).as_py():
        raise BadUpload(f"{member}: a {what} is longer than 1024 bytes")


def first_null(column: pa.Array) -> int:
    """The position of the column's first null."""
    return int(pc.index(pc.is_null(column), True).as_py())


def check_row_count(n_rows: int, member: str) -> None:
    """`BadUpload` for a matrix without rows, or with more than 2**31 - 1."""
    if n_rows == 0:
        raise BadUpload(f"{member} has a header but no rows")
    if n_rows >= 2**31 - 1:
        raise BadUpload(f"{member} has {n_rows} rows, over the limit of 2**31 - 1")


# The 10x feature type wideviews keeps (antibody capture, CRISPR guides, ... are left out).
GENE_EXPRESSION = "Gene Expression"


def gene_expression_features(ids: list[str], symbols: list[str], types: list[str], member: str) -> tuple[list[str], np.ndarray]:
    """The features a 10x matrix keeps and where each stored feature goes.

    Where the matrix holds several feature types only `Gene Expression` ones are kept, named by
    their symbols when those are unique and non-blank, else by their ids. Returns (names, map of
    stored feature -> kept position, -1 for dropped). `BadUpload` naming `member` when none is kept.
    """
    keep_mask = np.array([t == GENE_EXPRESSION for t in types]) if len(set(types)) > 1 else np.ones(len(ids), dtype=bool)
    if not keep_mask.any():
        raise BadUpload(f"{member}: no {GENE_EXPRESSION} features (feature types: {sorted(set(types))})")
    kept_symbols = [s for s, k in zip(symbols, keep_mask) if k]
    kept_ids = [s for s, k in zip(ids, keep_mask) if k]
    features = kept_symbols if len(set(kept_symbols)) == len(kept_symbols) and all(s.strip() for s in kept_symbols) else kept_ids
    return features, np.where(keep_mask, np.cumsum(keep_mask) - 1, -1).astype(np.int64)
