"""The cells view is written in shares by the chunks' jobs: the shares tile the cells exactly once."""

from __future__ import annotations

import pytest

from shared.staging import EmbeddingPlan, GroupingPlan, VersionPlan


def _plan(n_cells: int, n_chunks: int, *, cells_split: bool) -> VersionPlan:
    return VersionPlan(
        dataset_id="shares",
        version_id="0" * 32,
        upload_key="uploads/shares/x.zip",
        id_column="cell",
        n_cells=n_cells,
        features=[f"G{i}" for i in range(n_chunks)],
        chunks=[(i, i + 1) for i in range(n_chunks)],
        groupings=[GroupingPlan(name="t", view="stats_t", groups=["a"], counts=[n_cells])],
        timestamp_ms=1_700_000_000_000,
        cells_split=cells_split,
    )


@pytest.mark.parametrize(("n_cells", "n_chunks"), [(1, 1), (7, 3), (3, 7), (100_003, 98), (10, 10)])
def test_cell_shares_cover_every_cell_once(n_cells: int, n_chunks: int) -> None:
    plan = _plan(n_cells, n_chunks, cells_split=True)
    covered: list[int] = []
    writers = 0
    for chunk in range(n_chunks):
        start, end = plan.cell_range(chunk)
        assert 0 <= start <= end <= n_cells
        covered.extend(range(start, end))
        writes_cells = "cells" in plan.chunk_views(chunk)
        assert writes_cells == (end > start)  # no job writes an empty share
        writers += writes_cells
        # no share is more than one cell larger than another: memory bounded by the chunk count
        assert end - start in (n_cells // n_chunks, -(-n_cells // n_chunks))
    assert covered == list(range(n_cells))
    assert writers == min(n_cells, n_chunks)
    # every unit writes its stats, distributions, transpose and catalog rows; the markers view is the
    # publisher's merge, never a unit's load
    expected = {f"{c}:{v}" for c in range(n_chunks) for v in ("stats_t", "dist_t", "features", "catalog")}
    expected |= {f"{c}:cells" for c in range(n_chunks) if plan.cell_range(c)[1] > plan.cell_range(c)[0]}
    assert plan.expected_keys() == expected


def test_plans_staged_before_the_split_keep_the_cells_view_in_chunk_zero() -> None:
    # a version in flight across an upgrade: its plan (no cells_split field) reads as before
    raw = _plan(50, 4, cells_split=True).model_dump(mode="json")
    del raw["cells_split"]
    plan = VersionPlan.model_validate(raw)
    assert plan.cell_range(0) == (0, 50)
    assert [("cells" in plan.chunk_views(c)) for c in range(4)] == [True, False, False, False]


def test_the_embedding_sample_is_written_by_the_first_unit_and_markers_by_no_unit() -> None:
    plan = _plan(20, 3, cells_split=True).model_copy(update={"embedding": EmbeddingPlan(name="umap", columns=["umap_1", "umap_2"])})
    assert [("embedding_sample" in plan.chunk_views(c)) for c in range(3)] == [True, False, False]
    assert "markers" in plan.views and not any(key.endswith(":markers") for key in plan.expected_keys())
    assert "embedding_sample" not in _plan(20, 3, cells_split=True).views  # no embedding, no sample
