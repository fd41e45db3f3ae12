"""Read API of the derived views: distributions, marker features, the embedding sample, and the
crossed groupings (`by=`) that the aggregates route shares.

The routes follow the app's conventions (`services.query.app`): the version is resolved once per
request (published only, `?version=` pins), the strong ETag and cache headers of `Target`, errors
`{"error", "message"}` through the app's exception handlers (`BadRequest` 400, `NotFound` 404).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.query.encode import as_int_list, decode_cursor, encode_arrow, encode_cursor, encode_json
from services.query.models import ARROW_STREAM
from services.query.reads import Catalog, Grouping, Lru
from shared import layout
from shared.errors import BadRequest, NotFound
from shared.messages import DATASET_ID_PATTERN, VERSION_ID_PATTERN

router = APIRouter()

DatasetIdPath = Annotated[str, Path(pattern=DATASET_ID_PATTERN, description="dataset id")]
VersionQuery = Annotated[
    str | None,
    Query(pattern=VERSION_ID_PATTERN, description="read this published version (32 hex digits) instead of the current one"),
]
GroupingQuery = Annotated[str | None, Query(description="a grouping of the dataset (optional when it has only one)")]
ByQuery = Annotated[str | None, Query(description="a second grouping: read the crossed grouping (grouping × by) the manifest asked for")]
GroupsQuery = Annotated[list[str], Query(description="only these groups, comma-separated (default every group)")]
GroupQuery = Annotated[list[str], Query(description="only this group, verbatim (repeatable; default every group)")]
# The stats a box plot draws beside the distributions view's own fields.
BOX_STATS = ("min", "q1", "median", "q3", "max", "mean")
MAX_DISTRIBUTION_FEATURES = 200


# --- response models --------------------------------------------------------------------------------


class FeatureDistribution(BaseModel):
    feature: str
    edges: list[float] = Field(description="the histogram's 33 bin edges, shared by all groups: the feature's non-zero range")
    hist: list[list[int]] = Field(description="per group, its non-zero values per bin (32 bins)")
    zeros: list[int] = Field(description="per group, its zeros (bins + zeros = the group's cells)")
    whisker_low: list[float | None] = Field(description="per group, the smallest value >= q1 - 1.5 IQR (null: empty group)")
    whisker_high: list[float | None] = Field(description="per group, the largest value <= q3 + 1.5 IQR")
    outliers_low: list[int] = Field(description="per group, values below the low whisker")
    outliers_high: list[int] = Field(description="per group, values above the high whisker")
    min: list[float | None]
    q1: list[float | None]
    median: list[float | None]
    q3: list[float | None]
    max: list[float | None]
    mean: list[float | None]


class Distributions(BaseModel):
    dataset: str
    version: str
    grouping: str
    by: str | None = None
    groups: list[str]
    group_counts: list[int]
    group_pairs: list[list[str]] | None = Field(default=None, description="with `by`: each group's (grouping group, by group)")
    features: list[FeatureDistribution]


class Marker(BaseModel):
    feature: str
    score: float | None = Field(description="Welch's t of the group against all other cells (scanpy's t-test score); null: infinite (no variance on either side)")
    log2fc: float | None = Field(description="log2((mean_in + 1e-9) / (mean_out + 1e-9)); null where undefined")
    mean_in: float | None
    mean_out: float | None
    frac_in: float | None = Field(description="fraction of the group's cells with a non-zero value")
    frac_out: float | None


class GroupMarkers(BaseModel):
    group: str
    count: int
    markers: list[Marker]


class Markers(BaseModel):
    dataset: str
    version: str
    grouping: str
    by: str | None = None
    n: int
    method: str = Field(description="always `t-test`: one-vs-rest Welch t-statistic")
    groups: list[GroupMarkers]


class EmbeddingSample(BaseModel):
    dataset: str
    version: str
    n_cells: int = Field(description="all cells of the dataset")
    n_sampled: int = Field(description="points in the whole sample (all pages)")
    embedding: dict[str, Any] = Field(description='{"name", "columns"}')
    cells: list[str]
    positions: list[int]
    coordinates: list[list[float]]
    weights: list[float] = Field(description="cells each point stands for (its grid cell's cells / points kept there)")
    metadata: dict[str, list[str]]
    next_cursor: str | None


# --- shared with the aggregates route -----------------------------------------------------------------


def resolve_grouping(catalog: Catalog, grouping: str | None, by: str | None = None) -> Grouping:
    """The grouping a request names: `grouping` (optional when there is one), or with `by` the crossed
    grouping of the two. `BadRequest` / `NotFound` name the choices."""
    if grouping is None:
        if len(catalog.groupings) != 1:
            raise BadRequest(f"grouping is required (one of {sorted(catalog.groupings)})")
        grouping = next(iter(catalog.groupings))
    if grouping not in catalog.groupings:
        raise NotFound(f"grouping {grouping!r} not in dataset {catalog.dataset_id!r} (groupings: {sorted(catalog.groupings)})")
    if by is None:
        return catalog.groupings[grouping]
    if (grouping, by) not in catalog.crossed:
        crossed = [f"{a} by {b}" for a, b in catalog.crossed]
        raise NotFound(f"grouping {grouping!r} is not crossed with {by!r} in dataset {catalog.dataset_id!r} (crossed: {crossed or 'none'})")
    return catalog.crossed[(grouping, by)]


def crossed_groupings(catalog: Catalog) -> list[dict[str, Any]]:
    """The dataset's crossed groupings as the dataset document lists them."""
    return [
        {"grouping": a, "by": b, "groups": [{"name": n, "count": c} for n, c in zip(g.groups, g.counts)]}
        for (a, b), g in catalog.crossed.items()
    ]


def group_pairs(catalog: Catalog, chosen: Grouping, grouping: str, by: str | None) -> list[list[str]] | None:
    """With `by`: each crossed group as its (grouping group, by group) names."""
    if by is None:
        return None
    first, second = catalog.groupings[grouping].groups, catalog.groupings[by].groups
    return [[first[a], second[b]] for a, b in chosen.pairs]


def _selected_groups(chosen: Grouping, names: list[str]) -> np.ndarray:
    if not names:
        return np.arange(len(chosen.groups))
    position_of = {g: i for i, g in enumerate(chosen.groups)}
    absent = [g for g in names if g not in position_of]
    if absent:
        raise NotFound(f"groups not in grouping {chosen.name!r}: {absent[:20]}")
    return np.array([position_of[g] for g in dict.fromkeys(names)], dtype=np.int64)


def _repeated(request: Request, comma_form: str, verbatim: str) -> list[str]:
    """Values of `comma_form=A,B` and `verbatim=A` (repeatable) in the order given."""
    out: list[str] = []
    for key, value in request.query_params.multi_items():
        if key == comma_form:
            out += [v for v in value.split(",") if v]
        elif key == verbatim:
            out.append(value)
    return out


def _read_groups(request: Request, dataset_id: str, version: str | None, grouping: str | None, by: str | None) -> tuple[Any, Any, Catalog, Grouping, np.ndarray]:
    """(service, target, catalog, grouping, columns of the groups asked for) of a request for groups of a grouping."""
    service = request.app.state.service
    target = service.target(request, dataset_id, version, "json")
    catalog = service.catalog(target)
    chosen = resolve_grouping(catalog, grouping, by)
    return service, target, catalog, chosen, _selected_groups(chosen, _repeated(request, "groups", "group"))


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


# --- routes ---------------------------------------------------------------------------------------------


@router.get("/v1/datasets/{dataset_id}/distributions", response_model=Distributions, tags=["features"], summary="Per-group histograms and box plots of several features (violin and box plots)")
def distributions(
    request: Request,
    dataset_id: DatasetIdPath,
    features: Annotated[list[str], Query(description="comma-separated feature names (repeatable)")] = [],  # noqa: B006
    feature: Annotated[list[str], Query(description="one feature name, verbatim (repeatable)")] = [],  # noqa: B006
    grouping: GroupingQuery = None,
    by: ByQuery = None,
    groups: GroupsQuery = [],  # noqa: B006
    group: GroupQuery = [],  # noqa: B006
    version: VersionQuery = None,
) -> Response:
    """Per-group histograms and box-plot vectors of the features, from the `dist_*` view."""
    names = _repeated(request, "features", "feature")
    if not names:
        raise BadRequest("features is required: feature=NAME (repeatable, verbatim) or features=A,B,C")
    if len(names) > MAX_DISTRIBUTION_FEATURES:
        raise BadRequest(f"at most {MAX_DISTRIBUTION_FEATURES} features per request, got {len(names)}")
    service, target, catalog, chosen, columns = _read_groups(request, dataset_id, version, grouping, by)
    estimate = len(names) * len(columns) * (32 * 6 + 14 * 12)
    if estimate > service.max_response_bytes:
        raise BadRequest(f"the answer would be about {estimate:,} bytes, over the {service.max_response_bytes:,}-byte limit: ask for fewer features or groups")
    unique = list(dict.fromkeys(names))
    dist_rows = service.reader.hbase.rows(service.reader._table(catalog, chosen.dist_view), [layout.feature_row(f) for f in unique])
    missing = [f for f in unique if layout.feature_row(f) not in dist_rows]
    if missing:
        raise NotFound(f"features not in dataset {dataset_id!r}: {missing[:20]}")
    box = service.reader.stats(catalog, chosen, unique, list(BOX_STATS))
    out = []
    for name in names:
        row = dist_rows[layout.feature_row(name)]
        edges, hist = layout.decode_histograms(row[layout.column(layout.DIST_FAMILY, layout.HIST_QUALIFIER)])
        vectors = {k: layout.decode_stats_vector(row[layout.column(layout.DIST_FAMILY, layout.dist_qualifier(k))])[columns] for k in layout.DIST_VECTORS}
        out.append(
            {
                "feature": name,
                "edges": edges,
                "hist": hist[columns],
                "zeros": as_int_list(vectors["zeros"]),
                "whisker_low": _nullable(vectors["whisker_low"]),
                "whisker_high": _nullable(vectors["whisker_high"]),
                "outliers_low": as_int_list(vectors["outliers_low"]),
                "outliers_high": as_int_list(vectors["outliers_high"]),
                **{s: _nullable(box[name][s][columns]) for s in BOX_STATS},
            }
        )
    body = {
        "dataset": dataset_id,
        "version": target.version_id,
        "grouping": grouping or chosen.name,
        "by": by,
        "groups": [chosen.groups[c] for c in columns],
        "group_counts": [chosen.counts[c] for c in columns],
        "group_pairs": [p for i, p in enumerate(group_pairs(catalog, chosen, grouping or chosen.name, by) or []) if i in set(columns.tolist())] if by else None,
        "features": out,
    }
    return Response(encode_json(body), media_type="application/json", headers=target.headers())


@router.get("/v1/datasets/{dataset_id}/markers", response_model=Markers, tags=["features"], summary="Marker features of groups: the top features by one-vs-rest Welch t")
def markers(
    request: Request,
    dataset_id: DatasetIdPath,
    grouping: GroupingQuery = None,
    by: ByQuery = None,
    group: GroupQuery = [],  # noqa: B006
    groups: GroupsQuery = [],  # noqa: B006
    n: Annotated[int | None, Query(ge=1, le=10_000, description="markers per group (at most the version's markers_top_n, 100 by default); default 20, or all stored when fewer")] = None,
    version: VersionQuery = None,
) -> Response:
    """The top marker features of the groups, from the `markers` view."""
    service, target, catalog, chosen, columns = _read_groups(request, dataset_id, version, grouping, by)
    if n is None:
        n = min(20, catalog.markers_top_n)
    if n > catalog.markers_top_n:
        raise BadRequest(f"n: at most {catalog.markers_top_n} markers per group are stored in this version, asked for {n}")
    keys = [layout.markers_row(chosen.name, chosen.groups[c]) for c in columns]
    rows = service.reader.hbase.rows(service.reader._table(catalog, "markers"), keys)
    answer = []
    column = layout.column(layout.MARKERS_FAMILY, layout.MARKERS_QUALIFIER)
    for c, key in zip(columns, keys):
        entries: list[dict[str, Any]] = []
        if key in rows:
            features, fields = layout.decode_markers(rows[key][column])
            for i, feature in enumerate(features[:n]):
                entry: dict[str, Any] = {"feature": feature}
                for k in layout.MARKER_FIELDS:
                    value = float(fields[k][i])
                    entry[k] = value if np.isfinite(value) else None
                entries.append(entry)
        answer.append({"group": chosen.groups[c], "count": chosen.counts[c], "markers": entries})
    body = {"dataset": dataset_id, "version": target.version_id, "grouping": grouping or chosen.name, "by": by, "n": n, "method": "t-test", "groups": answer}
    return Response(encode_json(body), media_type="application/json", headers=target.headers())


@router.get(
    "/v1/datasets/{dataset_id}/embedding/sample",
    response_model=EmbeddingSample,
    tags=["cells"],
    summary="A density-aware sample of the embedding (at most 50,000 points by default), paged (JSON or Arrow)",
    responses={200: {"model": EmbeddingSample, "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}}},
)
def embedding_sample(
    request: Request,
    dataset_id: DatasetIdPath,
    limit: Annotated[int | None, Query(ge=1, le=100_000, description="points per page (default 10,000 as JSON, 100,000 as Arrow)")] = None,
    cursor: Annotated[str | None, Query(max_length=4096, description="the next_cursor of the previous page")] = None,
    format: Annotated[Literal["json", "arrow"] | None, Query(description=f"`arrow` for an Arrow IPC stream (same as `Accept: {ARROW_STREAM}`)")] = None,  # noqa: A002
    version: VersionQuery = None,
) -> Response:
    """The embedding sample (every group kept, weighted), as JSON or an Arrow stream."""
    service = request.app.state.service
    arrow = format == "arrow" if format is not None else ARROW_STREAM in request.headers.get("accept", "")
    offset, cursor_version = 0, None
    if cursor is not None:
        fields = decode_cursor(cursor, {"v": str, "o": int})
        cursor_version, offset = fields["v"], fields["o"]
        if offset < 0:
            raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
    target = service.target(request, dataset_id, version, "arrow" if arrow else "json", cursor_version)
    catalog = service.catalog(target)
    if catalog.embedding_name is None:
        raise NotFound(f"dataset {dataset_id!r} has no embedding")
    sample = _sample(service, catalog)
    n_sampled = sample[0].size
    if offset > n_sampled:
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
    end = min(n_sampled, offset + (limit or (100_000 if arrow else 10_000)))
    positions, coordinates, weights, codes = (a[offset:end] for a in sample[:4])
    ids = sample[4][offset:end]
    next_offset = end if end < n_sampled else None
    metadata = {g.name: [g.groups[c] for c in codes[:, k]] for k, g in enumerate(catalog.groupings.values())}
    nxt = encode_cursor({"v": target.version_id, "o": next_offset}) if next_offset is not None else None
    if arrow:
        columns: dict[str, Any] = {"cell_id": ids, "position": positions.astype(np.int32)}
        columns.update(metadata)
        for d, name in enumerate(catalog.embedding_columns):
            columns[name] = coordinates[:, d].copy()
        columns["weight"] = weights
        meta = {"dataset": dataset_id, "version": target.version_id, "n_cells": str(catalog.n_cells), "n_sampled": str(n_sampled), "next_cursor": nxt or ""}
        return Response(encode_arrow(columns, meta), media_type=ARROW_STREAM, headers=target.headers(X_Next_Cursor=nxt))
    body = {
        "dataset": dataset_id,
        "version": target.version_id,
        "n_cells": catalog.n_cells,
        "n_sampled": n_sampled,
        "embedding": {"name": catalog.embedding_name, "columns": catalog.embedding_columns},
        "cells": ids,
        "positions": positions,
        "coordinates": coordinates,
        "weights": weights,
        "metadata": metadata,
        "next_cursor": nxt,
    }
    return Response(encode_json(body), media_type="application/json", headers=target.headers(X_Next_Cursor=nxt))


# Decoded samples of recent versions (a version's sample never changes; 50,000 points are ~3 MB).
_samples: Lru[tuple[str, str], tuple] = Lru(4)


def _sample(service: Any, catalog: Catalog) -> tuple:
    """The version's whole sample, parts joined: (positions, coordinates, weights, group codes, ids)."""

    def load() -> tuple:
        table = service.reader._table(catalog, "embedding_sample")
        if table not in service.reader.hbase.list_tables():
            raise NotFound(f"version {catalog.version_id} of dataset {catalog.dataset_id!r} has no embedding sample (made before it existed)")
        column = layout.column(layout.SAMPLE_FAMILY, layout.SAMPLE_QUALIFIER)
        rows = dict(service.reader.hbase.scan(table, row_prefix=layout.SAMPLE_ROW_PREFIX))
        parts = [layout.decode_sample_part(rows[k][column]) for k in sorted(rows)]
        if not parts:
            raise NotFound(f"version {catalog.version_id} of dataset {catalog.dataset_id!r} has an empty embedding sample")
        joined = [np.concatenate([p[i] for p in parts]) for i in range(4)]
        return (*joined, [i for p in parts for i in p[4]])

    return _samples.get_or_load((catalog.dataset_id, catalog.version_id), load)
