"""One chunk's share of every view, as HBase entries sorted the way an HFile needs them. No I/O.

An entry is what HBase calls a cell (row, qualifier, value); "cell" alone means a cell of the matrix.

A view's entries are three parallel lists (row, qualifier, value) sorted by (row, qualifier) in
unsigned byte order, with rows and checksums counted for the publisher's verification.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from services.compute.kernel import GroupStats, compute_group_stats, sparse_columns
from services.compute.markers import CANDIDATE_SCHEMA, marker_fields, top_candidates
from services.compute.sample import sample_embedding
from shared import layout
from shared.adapters.hbase import entry_checksum, combine_checksums
from shared.errors import Permanent
from shared.stats import STATS
from shared.staging import SAMPLE_VIEW, GroupingPlan, VersionPlan

def view_family(view: str) -> bytes:
    """The one column family of a view's table."""
    return layout.view_family(view)


@dataclass
class ViewEntries:
    """Sorted entries of one (chunk, view)."""

    view: str
    rows: list[bytes]
    qualifiers: list[bytes]
    values: list[bytes]

    @property
    def n_rows(self) -> int:
        """How many distinct rows the entries hold."""
        return len(set(self.rows))

    def checksum(self) -> int:
        """The entries' checksum (`entry_checksum` summed mod 2**64), as the publisher recomputes it."""
        return combine_checksums(entry_checksum(r, q, v) for r, q, v in zip(self.rows, self.qualifiers, self.values))

    def check(self, task: int) -> dict[str, Any]:
        """What one task's HFile of this view holds, for the publisher: cells, rows, checksum, key
        range, and one sampled row (the middle one) with the checksum of its cells."""
        doc: dict[str, Any] = {"task": task, "cells": len(self.rows), "rows": self.n_rows, "checksum": f"{self.checksum():016x}"}
        if self.rows:
            sample = self.rows[len(self.rows) // 2]
            lo, hi = bisect.bisect_left(self.rows, sample), bisect.bisect_right(self.rows, sample)
            picked = combine_checksums(entry_checksum(r, q, v) for r, q, v in zip(self.rows[lo:hi], self.qualifiers[lo:hi], self.values[lo:hi]))
            doc.update(first_row=self.rows[0].hex(), last_row=self.rows[-1].hex(), sample_row=sample.hex(), sample_checksum=f"{picked:016x}")
            # The cells view's embedding blocks sort before every cell (in the first region): counted
            # apart, so the task's cells keep their own key range for the publisher's per-region check.
            n_blocks = 0
            while n_blocks < len(self.rows) and self.rows[n_blocks].startswith(layout.EMBEDDING_BLOCK_PREFIX):
                n_blocks += 1
            if 0 < n_blocks < len(self.rows):
                doc.update(block_rows=len(set(self.rows[:n_blocks])), block_row=self.rows[0].hex(), first_row=self.rows[n_blocks].hex())
        return doc

    @classmethod
    def from_unsorted(cls, view: str, entries: list[tuple[bytes, bytes, bytes]]) -> "ViewEntries":
        """The view's entries sorted by (row, qualifier), the order an HFile needs."""
        entries.sort(key=lambda c: (c[0], c[1]))
        return cls(view, [c[0] for c in entries], [c[1] for c in entries], [c[2] for c in entries])


def summarize_checks(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """One (unit, view)'s check: totals over its tasks' checks (`ViewEntries.check`), which it keeps."""
    tasks = sorted(tasks, key=lambda t: t["task"])
    checksum = sum(int(t["checksum"], 16) for t in tasks) % (1 << 64)
    return {"rows": sum(t["rows"] for t in tasks), "cells": sum(t["cells"] for t in tasks), "checksum": f"{checksum:016x}", "hfiles": tasks}


def group_codes(cells: pa.Table, plan: VersionPlan) -> list[np.ndarray]:
    """Per grouping of `plan.stats_groupings` (the metadata's, then the crossed), each cell's group
    index in the plan's group order."""
    codes = []
    for grouping in plan.groupings:
        column = cells.column(grouping.name).cast(pa.string())
        index = pc.index_in(column, value_set=pa.array(grouping.groups, type=pa.string()))
        if index.null_count:
            missing = pc.filter(column, pc.is_null(index))[0].as_py()
            raise Permanent(f"grouping {grouping.name!r}: cell value {missing!r} is not one of the plan's groups")
        codes.append(index.to_numpy(zero_copy_only=False).astype(np.int32))
    by_name = {g.name: (g, c) for g, c in zip(plan.groupings, codes)}
    for crossed in plan.crossed:
        codes.append(crossed_codes(crossed, *(by_name[name] for name in crossed.crossed)))
    return codes


def crossed_codes(crossed: GroupingPlan, first: tuple[GroupingPlan, np.ndarray], second: tuple[GroupingPlan, np.ndarray]) -> np.ndarray:
    """Each cell's group in a crossed grouping: the index of its (first, second) pair in `crossed.pairs`."""
    width = len(second[0].groups)
    keys = np.array([a * width + b for a, b in crossed.pairs], dtype=np.int64)
    cell_keys = first[1].astype(np.int64) * width + second[1]
    order = np.argsort(keys, kind="stable")
    at = np.searchsorted(keys[order], cell_keys)
    found = order[np.minimum(at, keys.size - 1)] if keys.size else np.zeros_like(cell_keys)
    if not keys.size or (keys[found] != cell_keys).any():
        raise Permanent(f"crossed grouping {crossed.name!r}: a cell's pair of groups is not one of the plan's")
    return found.astype(np.int32)


def stats_view_entries(
    view: str, features: list[str], chunk: sp.csc_array | np.ndarray, codes: np.ndarray, n_groups: int, threads: int = 1
) -> ViewEntries:
    """Rows = feature, qualifiers = the 12 stat names, values = a stats vector over the groups."""
    return stats_entries(view, features, compute_group_stats(chunk, codes, n_groups, threads=threads))


def stats_entries(view: str, features: list[str], stats: GroupStats) -> ViewEntries:
    """The stats view's entries of computed stats."""
    entries = []
    qualifiers = [layout.stats_qualifier(s) for s in STATS]
    for f, feature in enumerate(features):
        row = layout.feature_row(feature)
        for stat, qualifier in zip(STATS, qualifiers):
            entries.append((row, qualifier, layout.encode_stats_vector(stats.values[stat][f])))
    return ViewEntries.from_unsorted(view, entries)


def dist_entries(view: str, features: list[str], stats: GroupStats) -> ViewEntries:
    """The distributions view's entries: per feature its histograms (`hist`) and the box-plot vectors."""
    dist = stats.distributions
    if dist is None:
        raise ValueError("stats computed without distributions")
    vectors = {
        "zeros": dist.zeros,
        "whisker_low": dist.whisker_low,
        "whisker_high": dist.whisker_high,
        "outliers_low": dist.outliers_low,
        "outliers_high": dist.outliers_high,
    }
    qualifiers = [(layout.dist_qualifier(name), vectors[name]) for name in layout.DIST_VECTORS]
    entries = []
    for f, feature in enumerate(features):
        row = layout.feature_row(feature)
        entries.append((row, layout.HIST_QUALIFIER, layout.encode_histograms(dist.edges[f], dist.hist[f])))
        for qualifier, values in qualifiers:
            entries.append((row, qualifier, layout.encode_stats_vector(values[f])))
    return ViewEntries.from_unsorted(view, entries)


@dataclass
class GroupingOutputs:
    """What one grouping gives for a set of features: its stats and distributions views' cells and
    its marker candidates."""

    stats: ViewEntries
    dist: ViewEntries
    candidates: pa.Table


def grouping_outputs(
    grouping: GroupingPlan, features: list[str], chunk: sp.csc_array | np.ndarray, codes: np.ndarray, top_n: int, threads: int = 1
) -> GroupingOutputs:
    """One kernel run (stats and distributions) of a grouping over some features, and its views."""
    stats = compute_group_stats(chunk, codes, len(grouping.groups), threads=threads, with_distributions=True)
    candidates = top_candidates(grouping.name, features, marker_fields(stats), top_n)
    return GroupingOutputs(stats_entries(grouping.view, features, stats), dist_entries(grouping.dist_view, features, stats), candidates)


def features_view_entries(features: list[str], chunk: sp.csc_array | np.ndarray, max_nnz: int) -> ViewEntries:
    """The transpose: per feature its non-zeros (cell positions, values), split in parts of `max_nnz`."""
    csc = sparse_columns(chunk)
    entries = []
    for f, feature in enumerate(features):
        lo, hi = int(csc.indptr[f]), int(csc.indptr[f + 1])
        idx, vals = csc.indices[lo:hi], csc.data[lo:hi]
        # Keep float32 where it is exact: half the bytes for count data, same values.
        if vals.dtype == np.float64 and np.array_equal(vals.astype(np.float32).astype(np.float64), vals):
            vals = vals.astype(np.float32)
        n_parts = max(1, -(-(hi - lo) // max_nnz))
        for part in range(n_parts):
            sl = slice(part * max_nnz, (part + 1) * max_nnz)
            entries.append((layout.feature_part_row(feature, part), layout.FEATURES_QUALIFIER, layout.encode_feature_part(idx[sl], vals[sl])))
    return ViewEntries.from_unsorted("features", entries)


def numeric_values(column: pa.ChunkedArray) -> np.ndarray:
    """A staged numeric column as float64, NaN where blank. An integer column that ingest made a
    grouping as well is staged as its labels ("0", "1", …, or the missing group): parsed back."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        integers = pc.match_substring_regex(column, r"^-?[0-9]{1,18}$")
        column = pc.cast(pc.if_else(integers, column, pa.scalar(None, column.type)), pa.float64())
    return column.to_numpy()


def cells_view_entries(plan: VersionPlan, cells: pa.Table, start: int = 0, end: int | None = None, *, offset: int = 0) -> ViewEntries:
    """Rows = cell id: its position, grouping values, embedding coordinates and numeric metadata; for
    the cells at rows [start, end) of `cells` only (the share of one job). `cells` starts at the
    cell at position `offset` of the matrix (a slice of the staged table)."""
    end = cells.num_rows if end is None else end
    cells = cells.slice(start, end - start)
    ids = cells.column("cell_id").to_pylist()
    text = {g.name: cells.column(g.name).to_pylist() for g in plan.groupings}
    numeric = {c: numeric_values(cells.column(c)) for c in plan.numeric_columns}
    emb = np.column_stack([numeric[c] for c in plan.embedding.columns]) if plan.embedding else None
    out = []
    for i, cell_id in enumerate(ids):
        row = layout.cell_row(cell_id)
        out.append((row, layout.CELL_POSITION_QUALIFIER, layout.encode_int(offset + start + i)))
        for name, values in text.items():
            out.append((row, layout.cell_qualifier("grouping", name), layout.encode_text(values[i])))
        # A blank (null, NaN here) metadata value gets no cell at all: the query serves it as absent.
        if emb is not None and plan.embedding is not None and not np.isnan(emb[i]).any():
            out.append((row, layout.cell_qualifier("embedding", plan.embedding.name), layout.encode_vector(emb[i])))
        for name, values in numeric.items():
            if not np.isnan(values[i]):
                out.append((row, layout.cell_qualifier("numeric", name), layout.encode_vector(values[i : i + 1])))
    if emb is not None and plan.embedding is not None:
        # The share's whole embedding in a few rows too: the query reads all cells' coordinates in
        # about k rows, not n (`shared.layout`: at most EMBEDDING_BLOCK_CELLS cells a row).
        qualifier = layout.embedding_block_qualifier(plan.embedding.name)
        # As the per-cell rows: a cell with a blank coordinate has no embedding at all (all NaN).
        coordinates = np.where(np.isnan(emb).any(axis=1, keepdims=True), np.nan, emb)
        # Blocks are cut at multiples of EMBEDDING_BLOCK_CELLS positions and at the chunks' shares,
        # so the same cells make the same blocks however an executor splits the cells into jobs.
        first = offset + start
        for lo, hi in embedding_block_ranges(plan, first, first + len(ids)):
            positions = np.arange(lo, hi)
            value = layout.encode_embedding_block(positions, coordinates[lo - first : hi - first], ids[lo - first : hi - first])
            out.append((layout.embedding_block_row(lo), qualifier, value))
    return ViewEntries.from_unsorted("cells", out)


def embedding_block_ranges(plan: VersionPlan, start: int, stop: int) -> list[tuple[int, int]]:
    """[start, stop) cut at every multiple of `layout.EMBEDDING_BLOCK_CELLS` positions and at every
    chunk's share of the cells view: the same blocks whichever job writes which cells."""
    step = layout.EMBEDDING_BLOCK_CELLS
    shares = {plan.cell_range(c)[0] for c in range(plan.n_chunks)} if plan.cells_split else set()
    cuts = sorted({start, stop, *range((start // step + 1) * step, stop, step), *(s for s in shares if start < s < stop)})
    return list(zip(cuts, cuts[1:]))


def catalog_view_entries(plan: VersionPlan, chunk: int) -> ViewEntries:
    """The chunk's feature list (and their display symbols, if any); chunk 0 adds the dataset's `meta` document."""
    start, end = plan.chunks[chunk]
    out = [(layout.feature_list_row(chunk), layout.CATALOG_LIST_QUALIFIER, layout.encode_json(plan.features[start:end]))]
    if plan.feature_symbols:
        out.append((layout.symbol_list_row(chunk), layout.CATALOG_LIST_QUALIFIER, layout.encode_json(plan.feature_symbols[start:end])))
    if chunk == 0:
        meta = {
            "dataset_id": plan.dataset_id,
            "version_id": plan.version_id,
            "n_cells": plan.n_cells,
            "n_features": len(plan.features),
            "n_chunks": plan.n_chunks,
            "id_column": plan.id_column,
            "groupings": [g.model_dump() for g in plan.groupings],
            "crossed": [g.model_dump() for g in plan.crossed],
            "markers_top_n": plan.markers_top_n,
            "embedding": plan.embedding.model_dump() if plan.embedding else None,
            "numeric_columns": plan.numeric_columns,
            "title": plan.title,
            "description": plan.description,
            "upload_key": plan.upload_key,
        }
        out.append((layout.CATALOG_META_ROW, layout.CATALOG_DOC_QUALIFIER, layout.encode_json(meta)))
    return ViewEntries.from_unsorted("catalog", out)


def sample_view_entries(plan: VersionPlan, cells: pa.Table, codes: list[np.ndarray]) -> ViewEntries:
    """The embedding sample (`services.compute.sample`) of every cell, in parts of SAMPLE_PART_POINTS."""
    if plan.embedding is None:
        raise ValueError("the version has no embedding")
    coordinates = np.column_stack([cells.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in plan.embedding.columns])
    positions, weights = sample_embedding(coordinates, codes, plan.embedding_sample_size, int(plan.version_id[:16], 16))
    ids = cells.column("cell_id").take(pa.array(positions)).to_pylist()
    groups = np.column_stack([c[positions] for c in codes[: len(plan.groupings)]]) if plan.groupings else np.empty((positions.size, 0))
    out = []
    step = layout.SAMPLE_PART_POINTS
    for part, start in enumerate(range(0, max(1, positions.size), step)):
        sl = slice(start, start + step)
        value = layout.encode_sample_part(positions[sl], coordinates[positions[sl]], weights[sl], groups[sl], ids[sl])
        out.append((layout.sample_part_row(part), layout.SAMPLE_QUALIFIER, value))
    return ViewEntries.from_unsorted(SAMPLE_VIEW, out)


@dataclass
class UnitViews:
    """Every view's entries of one compute unit, and its marker candidates (merged by the publisher)."""

    views: list[ViewEntries]
    candidates: pa.Table


def unit_view_entries(
    plan: VersionPlan, first: int, end: int, matrices: Iterable[sp.csc_array], cells: pa.Table, max_nnz: int, threads: int = 1
) -> UnitViews:
    """Every view's entries of the compute unit [first, end) (the whole local job, minus I/O): each
    chunk's matrix (in order, read lazily) through the kernel on `threads` cores, the rows of all
    the unit's chunks merged in row order, so each view is one sorted run of HFiles."""
    codes = group_codes(cells, plan)
    views = plan.unit_views(first, end)
    collected: dict[str, list[tuple[bytes, bytes, bytes]]] = {view: [] for view in views}
    candidates = []
    for chunk, matrix in zip(range(first, end), matrices):
        start, stop = plan.chunks[chunk]
        features = plan.features[start:stop]
        parts = []
        for grouping, code in zip(plan.stats_groupings, codes):
            outputs = grouping_outputs(grouping, features, matrix, code, plan.markers_top_n, threads)
            parts += [outputs.stats, outputs.dist]
            candidates.append(outputs.candidates)
        parts += [features_view_entries(features, matrix, max_nnz), catalog_view_entries(plan, chunk)]
        for part in parts:
            collected[part.view].extend(zip(part.rows, part.qualifiers, part.values))
    if "cells" in collected:
        part = cells_view_entries(plan, cells, *plan.unit_cell_range(first, end))
        collected["cells"].extend(zip(part.rows, part.qualifiers, part.values))
    if SAMPLE_VIEW in collected:
        part = sample_view_entries(plan, cells, codes)
        collected[SAMPLE_VIEW].extend(zip(part.rows, part.qualifiers, part.values))
    merged = pa.concat_tables(candidates) if candidates else CANDIDATE_SCHEMA.empty_table()
    return UnitViews([ViewEntries.from_unsorted(view, collected[view]) for view in views], merged)
