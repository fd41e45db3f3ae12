"""Response models of the read API: the OpenAPI schema at /openapi.json is generated from these.

Large bodies (aggregates, a feature's values, cells) are encoded straight from numpy (orjson) rather
than validated field by field; the models still define their schema, and the schemathesis test checks
that every response the live server gives conforms to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from shared.stats import Stat

ARROW_STREAM = "application/vnd.apache.arrow.stream"
CSV = "text/csv"


class ErrorBody(BaseModel):
    """Every error: a short kind and a message naming the problem."""

    error: str = Field(description="bad request | not found | not modified | method not allowed | unavailable | internal")
    message: str


class Health(BaseModel):
    status: str


class DatasetSummary(BaseModel):
    dataset: str
    version: str
    published_at: str | None
    previous_version: str | None
    n_cells: int | None
    n_features: int | None
    title: str | None = None


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class GroupSize(BaseModel):
    name: str
    count: int


class EmbeddingInfo(BaseModel):
    name: str
    columns: list[str]


class DatasetInfo(BaseModel):
    dataset: str
    version: str
    title: str
    description: str
    n_cells: int
    n_features: int
    groupings: dict[str, list[GroupSize]] = Field(description="grouping -> its groups in stored order, with their cell counts")
    embedding: EmbeddingInfo | None
    numeric_columns: list[str] = []
    stats: list[Stat]
    crossed: list[dict[str, Any]] = Field(
        default=[], description='the crossed groupings: [{"grouping", "by", "groups": [{"name", "count"}]}] (read them with grouping=&by=)'
    )


class PublishedVersion(BaseModel):
    version: str
    state: str = Field(description="PUBLISHED (current) or REPLACED (published, then replaced by another; still readable with ?version=)")
    current: bool
    previous: bool
    created_at: str
    published_at: str | None
    n_cells: int
    n_features: int


class VersionList(BaseModel):
    dataset: str
    current_version: str
    versions: list[PublishedVersion] = Field(description="published versions still present, newest first")


class FeatureList(BaseModel):
    dataset: str
    version: str
    prefix: str | None = Field(description="the prefix searched (case-insensitive), null for the full list in matrix order")
    total: int = Field(description="features matching (all of them without a prefix)")
    features: list[str] = Field(description="feature names (what the other endpoints take)")
    symbols: list[str | None] | None = Field(
        None, description="the features' display symbols, in the order of `features` (null where a feature has none); null when the dataset has none"
    )
    next_cursor: str | None


class Aggregates(BaseModel):
    dataset: str
    version: str
    grouping: str
    groups: list[str]
    group_counts: list[int] = Field(description="cells in each group, in the order of `groups`")
    features: list[str] = Field(description="as asked, or ordered by `order_by`")
    stats: dict[str, list[list[float | None]]] = Field(description="stat -> per feature, the value per group (null: undefined)")
    order_by: str | None = None
    by: str | None = Field(default=None, description="the second grouping of a crossed grouping (`by=`)")
    group_pairs: list[list[str]] | None = Field(default=None, description="with `by`: each group's (grouping group, by group)")


class FeatureValues(BaseModel):
    dataset: str
    version: str
    feature: str
    n_cells: int
    indices: list[int] = Field(description="positions (rows of matrix.csv, from 0) of the cells with a non-zero value, ascending")
    values: list[float]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class CellsEmbedding(BaseModel):
    name: str
    columns: list[str]
    coordinates: list[list[float | None]] = Field(description="per cell; null where the cell's metadata had a blank coordinate")


class CellsPage(BaseModel):
    dataset: str
    version: str
    n_cells: int
    cells: list[str] = Field(description="cell ids, in id (byte) order")
    positions: list[int]
    metadata: dict[str, list[str]]
    embedding: CellsEmbedding | None
    numeric: dict[str, list[float | None]]
    next_cursor: str | None


class Cell(BaseModel):
    dataset: str
    version: str
    cell: str
    position: int | None
    metadata: dict[str, str]
    embedding: dict[str, list[float | None]] = Field(description="null coordinates where the metadata had a blank")
    numeric: dict[str, float | None] = Field(description="every numeric column; null where the metadata had a blank")
