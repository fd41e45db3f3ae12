"""A version's plan as the kernel and stack tests need one: one chunk, one grouping, a fresh dataset id."""

from __future__ import annotations

import uuid
from typing import Any

from shared.staging import GroupingPlan, VersionPlan

TIMESTAMP_MS = 1_700_000_000_000


def small_plan(prefix: str, features: list[str], *, n_cells: int = 2, groups: dict[str, int] | None = None, **fields: Any) -> VersionPlan:
    """The plan of one chunk over `features` for a new dataset `<prefix>-<8 hex>`: grouping `t` with
    `groups` (group -> cells; default one group `a` of every cell), plus any other plan `fields`."""
    counts = groups or {"a": n_cells}
    return VersionPlan(
        dataset_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        version_id=uuid.uuid4().hex,
        upload_key="uploads/x/y.zip",
        id_column="cell",
        n_cells=n_cells,
        features=features,
        chunks=[(0, len(features))],
        groupings=[GroupingPlan(name="t", view="stats_t", groups=list(counts), counts=list(counts.values()))],
        timestamp_ms=TIMESTAMP_MS,
        **fields,
    )
