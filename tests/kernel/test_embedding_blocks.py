"""The cells view's embedding blocks: the layout round-trips, and a share's blocks hold exactly what
its per-cell rows hold (ids, positions, coordinates; a blank coordinate blanks the cell)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from services.compute.views import cells_view_entries, embedding_block_ranges
from shared import layout
from shared.errors import Permanent
from shared.staging import EmbeddingPlan, VersionPlan
from tests.plans import small_plan


def _plan(n_cells: int) -> VersionPlan:
    embedding = EmbeddingPlan(name="umap", columns=["umap_1", "umap_2"])
    groups = {"a": n_cells - n_cells // 2, "b": n_cells // 2}
    return small_plan("blocks", ["G0"], n_cells=n_cells, groups=groups, embedding=embedding, numeric_columns=["umap_1", "umap_2"])


def test_embedding_block_round_trips() -> None:
    coords = np.array([[1.5, -2.0], [np.nan, np.nan], [3.25, 1e-300]])
    ids = ["c1", "é/ü,2", "z"]
    value = layout.encode_embedding_block(np.array([7, 8, 9]), coords, ids)
    positions, decoded, raw_ids = layout.decode_embedding_block(value)
    assert positions.tolist() == [7, 8, 9] and [i.decode() for i in raw_ids] == ids
    np.testing.assert_array_equal(decoded, coords)
    with pytest.raises(Permanent, match="embedding block"):
        layout.decode_embedding_block(value[:-1])
    # Rows of blocks sort in position order and before any cell id (no control characters in ids).
    assert layout.embedding_block_row(5) < layout.embedding_block_row(256) < " ".encode()


def test_a_shares_blocks_hold_its_cells_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "EMBEDDING_BLOCK_CELLS", 4)  # several blocks in one share
    n = 11
    rng = np.random.default_rng(3)
    umap = rng.normal(size=(n, 2))
    umap[5, 1] = np.nan  # a blank coordinate
    ids = [f"cell-{(i * 7) % n:02d}" for i in range(n)]
    table = pa.table({"cell_id": ids, "t": ["a", "b"] * 5 + ["a"], "umap_1": umap[:, 0], "umap_2": umap[:, 1]})
    start, end, offset = 2, 10, 100
    view = cells_view_entries(_plan(n), table, start, end, offset=offset)
    family_blocks = [(r, q, v) for r, q, v in zip(view.rows, view.qualifiers, view.values) if r.startswith(layout.EMBEDDING_BLOCK_PREFIX)]
    # Cut at multiples of 4 positions: [102, 104), [104, 108), [108, 110).
    assert [r for r, _, _ in family_blocks] == [layout.embedding_block_row(p) for p in (102, 104, 108)]
    assert {q for _, q, _ in family_blocks} == {b"b:umap"}
    positions, coords, raw = zip(*(layout.decode_embedding_block(v) for _, _, v in family_blocks))
    assert np.concatenate(positions).tolist() == list(range(offset + start, offset + end))
    assert [i.decode() for block in raw for i in block] == ids[start:end]
    expected = umap[start:end].copy()
    expected[5 - start] = np.nan  # as the per-cell rows: no embedding for a cell with a blank coordinate
    np.testing.assert_array_equal(np.concatenate(coords), expected)
    # The per-cell rows are unchanged: one `pos` per cell, its embedding where it has one.
    cell_rows = {r: v for r, q, v in zip(view.rows, view.qualifiers, view.values) if q == b"e:umap"}
    assert len(cell_rows) == end - start - 1 and ids[5].encode() not in cell_rows
    # The check counts the blocks apart from the cells' own key range.
    check = view.check(0)
    assert check["rows"] == end - start + 3 and check["block_rows"] == 3
    assert bytes.fromhex(check["block_row"]) == layout.embedding_block_row(offset + start)
    assert bytes.fromhex(check["first_row"]) == min(i.encode() for i in ids[start:end])


def test_blocks_are_the_same_whatever_ranges_the_cells_are_split_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local executor writes a unit's cells in one range, Spark in one task per block: same rows."""
    monkeypatch.setattr(layout, "EMBEDDING_BLOCK_CELLS", 4)
    n = 23
    rng = np.random.default_rng(5)
    umap = rng.normal(size=(n, 2))
    table = pa.table({"cell_id": [f"c{i:02d}" for i in range(n)], "t": ["a"] * n, "umap_1": umap[:, 0], "umap_2": umap[:, 1]})

    def blocks(view: Any) -> list[tuple[bytes, bytes]]:
        return [(r, v) for r, v in zip(view.rows, view.values) if r.startswith(layout.EMBEDDING_BLOCK_PREFIX)]

    whole = blocks(cells_view_entries(_plan(n), table, 3, 21))
    ranges = embedding_block_ranges(_plan(n), 3, 21)
    assert ranges == [(3, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 21)]
    pieces = [b for lo, hi in ranges for b in blocks(cells_view_entries(_plan(n), table, lo, hi))]
    assert pieces == whole
