"""Where a version's intermediate files live in the staging bucket, and its plan.

Every key derives from (dataset, version, chunk, view), so a repeated step overwrites its own
output instead of adding to it:

    staging/<dataset>/<version>/plan.json                         the VersionPlan below
    staging/<dataset>/<version>/cells.parquet                     cell ids + metadata, matrix order
    staging/<dataset>/<version>/chunks/<chunk>/part-<n>.parquet   non-zeros of a column chunk (feature, cell, value)
    staging/<dataset>/<version>/hfiles/<view>/<unit>/<family>/…   HFiles of one (unit, view)
    staging/<dataset>/<version>/checks/<view>/<unit>.json         rows, checksums and samples of one (unit, view)
    staging/<dataset>/<version>/markers/<unit>.parquet            one unit's marker candidates (below)

Marker candidates: per grouping and group, the unit's best `markers_top_n` features by score, as
Parquet columns grouping (string), group (int32), feature (string) and the float64
`layout.MARKER_FIELDS`. The publisher merges every unit's candidates into the `markers` view once
all units are loaded (the best `markers_top_n` of the union are the best of the whole version).

A *unit* is what one compute job covers, named by its first chunk: one chunk for the local
executor, a batch of chunks (one Spark application, one EMR step) for spark and emr.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from shared import layout
from shared.adapters.s3 import S3Client, get_bytes, get_json
from shared.config import Settings

CHUNK_VIEWS_ALWAYS = ("features", "catalog")
SHARED_VIEWS = ("cells",)  # written in shares by the chunks' jobs (see VersionPlan.cell_range)
MARKERS_VIEW = "markers"  # merged from every unit's candidates by the publisher
SAMPLE_VIEW = "embedding_sample"  # written by the unit of chunk 0, from every cell's coordinates
MERGED_UNIT = 0  # the unit name under which a merged view's HFile check is kept


def version_prefix(dataset_id: str, version_id: str) -> str:
    """The staging prefix of everything a version writes."""
    return f"staging/{dataset_id}/{version_id}/"


def plan_key(dataset_id: str, version_id: str) -> str:
    """The key of the version's plan (JSON)."""
    return version_prefix(dataset_id, version_id) + "plan.json"


def cells_key(dataset_id: str, version_id: str) -> str:
    """The key of the version's cells table (Parquet: ids and metadata)."""
    return version_prefix(dataset_id, version_id) + "cells.parquet"


def chunk_prefix(dataset_id: str, version_id: str, chunk: int) -> str:
    """The prefix of one column chunk's Parquet parts."""
    return version_prefix(dataset_id, version_id) + f"chunks/{chunk:06d}/"


def chunk_part_key(dataset_id: str, version_id: str, chunk: int, part: int) -> str:
    """The key of one Parquet part of a column chunk."""
    return chunk_prefix(dataset_id, version_id, chunk) + f"part-{part:06d}.parquet"


def hfiles_prefix(dataset_id: str, version_id: str, view: str, chunk: int) -> str:
    """The prefix of one (unit, view)'s HFiles (`<family>/<hfile>` under it)."""
    return version_prefix(dataset_id, version_id) + f"hfiles/{view}/{chunk:06d}/"


def check_key(dataset_id: str, version_id: str, view: str, chunk: int) -> str:
    """The key of one (unit, view)'s check: rows, cells, checksum and samples per HFile."""
    return version_prefix(dataset_id, version_id) + f"checks/{view}/{chunk:06d}.json"


def marker_candidates_key(dataset_id: str, version_id: str, chunk: int) -> str:
    """The key of the marker candidates of the unit starting at `chunk` (Parquet)."""
    return version_prefix(dataset_id, version_id) + f"markers/{chunk:06d}.parquet"


def markers_prefix(dataset_id: str, version_id: str) -> str:
    """The prefix of every unit's marker candidates."""
    return version_prefix(dataset_id, version_id) + "markers/"


class GroupingPlan(BaseModel):
    """One grouping (a text metadata column): its view, its groups in stored order and their sizes.

    A crossed grouping (`crossed` = the names of two groupings) has as groups the non-empty
    combinations of theirs, labelled `"<a> | <b>"`, with `pairs` their group indices in each.
    """

    model_config = ConfigDict(frozen=True)
    name: str
    view: str
    groups: list[str]
    counts: list[int]
    crossed: list[str] = []
    pairs: list[tuple[int, int]] = []

    @property
    def dist_view(self) -> str:
        """The view of the grouping's distributions."""
        return "dist_" + self.view.removeprefix("stats_")


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
    # Display symbols of the features, in feature order ("" where none; empty: the upload had none).
    feature_symbols: list[str] = []
    title: str = ""
    description: str = ""
    # HBase cell timestamp of every value of the version: a recomputed chunk rewrites identical keys.
    timestamp_ms: int
    # True: each chunk's job writes an equal share of the cells view (memory bounded by the chunk);
    # False (plans staged before this field): chunk 0 writes all of it.
    cells_split: bool = False
    # spark/emr: the chunk ranges [first, end) that one Spark application computes; empty: one unit
    # per chunk (the local executor).
    batches: list[tuple[int, int]] = []
    # Non-zeros of the whole matrix (0 in plans staged before this field): sizes Spark's partitions.
    nnz: int = 0
    # Pairs of groupings crossed into one more grouping each (the manifest's "crossed").
    crossed: list[GroupingPlan] = []
    # Features kept per group in the markers view, and points at most in the embedding sample.
    markers_top_n: int = 100
    embedding_sample_size: int = 50_000

    @property
    def stats_groupings(self) -> list[GroupingPlan]:
        """Every grouping with stats and distributions views: the metadata's, then the crossed ones."""
        return list(self.groupings) + list(self.crossed)

    @property
    def feature_views(self) -> list[str]:
        """The views whose rows are features (stats, distributions, transpose): cut alike."""
        return [v for g in self.stats_groupings for v in (g.view, g.dist_view)] + ["features"]

    @property
    def n_chunks(self) -> int:
        """How many column chunks the matrix was cut into."""
        return len(self.chunks)

    @property
    def units(self) -> list[tuple[int, int]]:
        """The compute units as chunk ranges [first, end), in order; a unit is named by its first chunk."""
        return list(self.batches) or [(c, c + 1) for c in range(self.n_chunks)]

    def unit_of(self, first: int) -> tuple[int, int]:
        """The unit that starts at chunk `first` (`Permanent`-worthy `ValueError` if none does)."""
        for unit in self.units:
            if unit[0] == first:
                return unit
        raise ValueError(f"no compute unit of version {self.version_id} starts at chunk {first}")

    def unit_cell_range(self, first: int, end: int) -> tuple[int, int]:
        """The cells whose rows of the cells view the unit writes: its chunks' shares, joined."""
        return self.cell_range(first)[0], self.cell_range(end - 1)[1]

    def unit_views(self, first: int, end: int) -> list[str]:
        """The views one unit's job produces (the cells view only where it has a share of it)."""
        views = self.feature_views + ["catalog"]
        if self.cells_split:
            start, stop = self.unit_cell_range(first, end)
            shares_cells = stop > start
        else:
            shares_cells = first == 0
        sample = [SAMPLE_VIEW] if self.embedding is not None and first == 0 else []
        return views + (list(SHARED_VIEWS) if shares_cells else []) + sample

    def region_rows(self, view: str, rows_per_region: int, region_bytes: int) -> int:
        """Rows per region of a view's table: at most `rows_per_region`, and at most `region_bytes`
        of the view's estimated row size (a transpose row holds a feature's non-zeros at 8 bytes
        each, at the mean density: at 10 M cells it is megabytes, a cells row is ~100 bytes)."""
        if view == "features":
            row_bytes = 16 + 8 * self.nnz / max(1, len(self.features))
        elif view == "cells":
            row_bytes = 64 + 24 * (len(self.groupings) + len(self.numeric_columns) + 2)
        elif view.startswith("dist_"):
            groups = next((len(g.groups) for g in self.stats_groupings if g.dist_view == view), 1)
            row_bytes = 300 + groups * (4 * 32 + 5 * 8)
        else:
            groups = next((len(g.groups) for g in self.stats_groupings if g.view == view), 1)
            row_bytes = 12 * (16 + 8 * groups)
        return max(1, min(rows_per_region, int(region_bytes // max(1.0, row_bytes))))

    def region_boundaries(self, view: str, rows_per_region: int, region_bytes: int, cell_ids: list[str] | None = None) -> list[bytes]:
        """Row keys to pre-split a view's table at (`region_rows` rows per region). Stats and
        transpose rows are features (a transpose row `<feature>\\0<part>` sorts right after its
        feature, so a feature's parts stay in one region); the cells view splits on `cell_ids`."""
        if view in ("catalog", MARKERS_VIEW, SAMPLE_VIEW):
            return []
        step = self.region_rows(view, rows_per_region, region_bytes)
        names = sorted(layout.cell_row(c) for c in cell_ids or []) if view == "cells" else sorted(layout.feature_row(f) for f in self.features)
        return sorted(set(names[step::step]))

    @property
    def views(self) -> list[str]:
        """Every view of the version: the units' and the merged `markers`."""
        sample = [SAMPLE_VIEW] if self.embedding is not None else []
        return self.feature_views + ["catalog"] + list(SHARED_VIEWS) + sample + [MARKERS_VIEW]

    def cell_range(self, chunk: int) -> tuple[int, int]:
        """The cells (by position) whose rows of the cells view this chunk's job writes: [start, end)."""
        if not self.cells_split:
            return (0, self.n_cells) if chunk == 0 else (0, 0)
        return chunk * self.n_cells // self.n_chunks, (chunk + 1) * self.n_cells // self.n_chunks

    def chunk_views(self, chunk: int) -> list[str]:
        """The views one chunk's job produces (local executor: a unit is a chunk)."""
        return self.unit_views(chunk, chunk + 1)

    def expected_keys(self) -> set[str]:
        """Every `unit:view` the loader must finish before the version can be published."""
        return {f"{first}:{view}" for first, end in self.units for view in self.unit_views(first, end)}


def read_plan(s3: S3Client, settings: Settings, dataset_id: str, version_id: str) -> VersionPlan:
    """The version's plan from staging (`NotFound` if ingest never finished)."""
    return VersionPlan.model_validate(get_json(s3, settings.staging_bucket, plan_key(dataset_id, version_id)))


def read_cells(s3: S3Client, settings: Settings, plan: VersionPlan) -> pa.Table:
    """Cell ids and metadata, in matrix order."""
    return pq.read_table(io.BytesIO(get_bytes(s3, settings.staging_bucket, cells_key(plan.dataset_id, plan.version_id))))
