"""Where a version's intermediate files live in the staging bucket, and its plan.

Every key derives from (dataset, version, chunk, view), so a repeated step overwrites its own
output instead of adding to it:

    staging/<dataset>/<version>/plan.json                         the VersionPlan below
    staging/<dataset>/<version>/cells.parquet                     cell ids + metadata, matrix order
    staging/<dataset>/<version>/chunks/<chunk>/part-<n>.parquet   non-zeros of a column chunk (feature, cell, value)
    staging/<dataset>/<version>/hfiles/<view>/<chunk>/<family>/…  HFiles of one (chunk, view)
    staging/<dataset>/<version>/checks/<view>/<chunk>.json        rows and checksum of one (chunk, view)
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from shared.adapters.s3 import get_bytes, get_json
from shared.config import Settings

CHUNK_VIEWS_ALWAYS = ("features", "catalog")
SPLIT_VIEWS = ("cells",)  # written in shares by the chunks' jobs (see VersionPlan.cell_range)


def version_prefix(dataset_id: str, version_id: str) -> str:
    return f"staging/{dataset_id}/{version_id}/"


def plan_key(dataset_id: str, version_id: str) -> str:
    return version_prefix(dataset_id, version_id) + "plan.json"


def cells_key(dataset_id: str, version_id: str) -> str:
    return version_prefix(dataset_id, version_id) + "cells.parquet"


def chunk_prefix(dataset_id: str, version_id: str, chunk: int) -> str:
    return version_prefix(dataset_id, version_id) + f"chunks/{chunk:06d}/"


def chunk_part_key(dataset_id: str, version_id: str, chunk: int, part: int) -> str:
    return chunk_prefix(dataset_id, version_id, chunk) + f"part-{part:06d}.parquet"


def hfiles_prefix(dataset_id: str, version_id: str, view: str, chunk: int) -> str:
    return version_prefix(dataset_id, version_id) + f"hfiles/{view}/{chunk:06d}/"


def check_key(dataset_id: str, version_id: str, view: str, chunk: int) -> str:
    return version_prefix(dataset_id, version_id) + f"checks/{view}/{chunk:06d}.json"


class GroupingPlan(BaseModel):
    """One grouping (a text metadata column): its view, its groups in stored order and their sizes."""

    model_config = ConfigDict(frozen=True)
    name: str
    view: str
    groups: list[str]
    counts: list[int]


class EmbeddingPlan(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    columns: list[str]


class VersionPlan(BaseModel):
    """What ingest found and decided: the contract between ingest, compute and the publisher."""

    model_config = ConfigDict(frozen=True)
    dataset_id: str
    version_id: str
    upload_key: str
    id_column: str
    n_cells: int
    features: list[str]
    chunks: list[tuple[int, int]]
    groupings: list[GroupingPlan]
    embedding: EmbeddingPlan | None = None
    numeric_columns: list[str] = []
    title: str = ""
    description: str = ""
    # HBase cell timestamp of every value of the version: a recomputed chunk rewrites identical keys.
    timestamp_ms: int
    # True: each chunk's job writes an equal share of the cells view (memory bounded by the chunk);
    # False (plans staged before this field): chunk 0 writes all of it.
    cells_split: bool = False

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    @property
    def views(self) -> list[str]:
        return [g.view for g in self.groupings] + list(CHUNK_VIEWS_ALWAYS) + list(SPLIT_VIEWS)

    def cell_range(self, chunk: int) -> tuple[int, int]:
        """The cells (by position) whose rows of the cells view this chunk's job writes: [start, end)."""
        if not self.cells_split:
            return (0, self.n_cells) if chunk == 0 else (0, 0)
        return chunk * self.n_cells // self.n_chunks, (chunk + 1) * self.n_cells // self.n_chunks

    def chunk_views(self, chunk: int) -> list[str]:
        """The views one chunk's job produces: the stats views, the transpose, the catalog, and the
        cells view when the chunk has a share of it."""
        views = [g.view for g in self.groupings] + list(CHUNK_VIEWS_ALWAYS)
        start, end = self.cell_range(chunk)
        shares_cells = end > start if self.cells_split else chunk == 0
        return views + (list(SPLIT_VIEWS) if shares_cells else [])

    def expected_keys(self) -> set[str]:
        """Every `chunk:view` the loader must finish before the version can be published."""
        return {f"{chunk}:{view}" for chunk in range(self.n_chunks) for view in self.chunk_views(chunk)}


def read_plan(s3: Any, settings: Settings, dataset_id: str, version_id: str) -> VersionPlan:
    """The version's plan from staging (`NotFound` if ingest never finished)."""
    return VersionPlan.model_validate(get_json(s3, settings.staging_bucket, plan_key(dataset_id, version_id)))


def read_cells(s3: Any, settings: Settings, plan: VersionPlan) -> pa.Table:
    """Cell ids and metadata, in matrix order."""
    return pq.read_table(io.BytesIO(get_bytes(s3, settings.staging_bucket, cells_key(plan.dataset_id, plan.version_id))))
