"""The HBase schema of `shared/layout.py`, the way anndata tests its on-disk spec: every view's rows,
as compute writes them for a small dataset, are read back through the layout's parsers alone and
give back the dataset (the matrix, the metadata, the plan, pandas' group statistics). No stack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from services.compute.views import unit_view_entries
from services.publisher.markers import markers_entries
from shared import layout
from shared.staging import EmbeddingPlan, GroupingPlan, VersionPlan
from shared.stats import STATS

FEATURES = ["ACTB", "CD3/CD28", "Ünïcødé-β", "a%2Fb", "GENE 5", "Z"]
SYMBOLS = ["actb", "cd3", "", "ab", "g5", "z"]
CELL_IDS = ["AAAC-1", "AAAG-1", "cell 3", "cell_ü", "c5", "c6", "c7"]
TYPES = ["T", "B", "T", "NK", "B", "T", "NK"]
DONORS = ["d1", "d1", "d2", "d2", "d1", "d2", "d1"]


def _dataset() -> tuple[VersionPlan, pa.Table, np.ndarray]:
    rng = np.random.default_rng(11)
    matrix = (rng.integers(0, 5, size=(len(CELL_IDS), len(FEATURES))) * (rng.random((len(CELL_IDS), len(FEATURES))) < 0.6)).astype(np.float32)
    matrix[:, 3] = 0.0  # a feature without non-zeros
    cells = pa.table(
        {
            "cell_id": CELL_IDS,
            "cell_type": TYPES,
            "donor": DONORS,
            "umap_1": rng.normal(size=len(CELL_IDS)),
            "umap_2": rng.normal(size=len(CELL_IDS)),
            "score": pa.array([0.5, None, 1.5, 2.0, -1.0, 3.0, 0.0], pa.float64()),  # a blank: no value stored
        }
    )
    groupings = [
        GroupingPlan(name=name, view=f"stats_{name}", groups=sorted(set(values)), counts=[values.count(g) for g in sorted(set(values))])
        for name, values in (("cell_type", TYPES), ("donor", DONORS))
    ]
    plan = VersionPlan(
        dataset_id="schema",
        version_id="0123456789abcdef0123456789abcdef",
        upload_key="uploads/schema/x.zip",
        id_column="cell_id",
        n_cells=len(CELL_IDS),
        features=FEATURES,
        chunks=[(0, 3), (3, 6)],
        groupings=groupings,
        embedding=EmbeddingPlan(name="umap", columns=["umap_1", "umap_2"]),
        numeric_columns=["umap_1", "umap_2", "score"],  # as ingest stages them: an embedding's columns are numeric too
        feature_symbols=SYMBOLS,
        timestamp_ms=1,
        cells_split=True,
        batches=[(0, 2)],
        markers_top_n=2,
        embedding_sample_size=5,
    )
    return plan, cells, matrix


def _rows(plan: VersionPlan, cells: pa.Table, matrix: np.ndarray) -> dict[str, list[tuple[bytes, bytes, bytes]]]:
    """Every view's (row, qualifier, value) as compute writes them (one unit: the whole version)."""
    matrices = [sp.csc_array(matrix[:, a:b]) for a, b in plan.chunks]
    unit = unit_view_entries(plan, 0, 2, matrices, cells, max_nnz=3)
    rows = {v.view: list(zip(v.rows, v.qualifiers, v.values)) for v in unit.views}
    rows["markers"] = markers_entries(plan, unit.candidates)
    return rows


def test_every_view_of_a_version_reads_back_through_the_layout() -> None:
    plan, cells, matrix = _dataset()
    rows = _rows(plan, cells, matrix)
    assert set(rows) == set(plan.views)
    frame = cells.to_pandas()

    # stats_<grouping>: one row per feature, one qualifier per statistic, a value per group.
    for grouping in plan.groupings:
        got = {(layout.name_of_row(r), q.decode()): layout.decode_stats_vector(v) for r, q, v in rows[grouping.view]}
        assert {f for f, _ in got} == set(FEATURES) and {s for _, s in got} == set(STATS)
        by_group = pd.DataFrame(matrix, columns=FEATURES).groupby(pd.Categorical(frame[grouping.name], categories=grouping.groups), observed=False)
        for f in FEATURES:
            np.testing.assert_allclose(got[(f, "count")], by_group[f].count().to_numpy())
            np.testing.assert_allclose(got[(f, "sum")], by_group[f].sum().to_numpy())
            np.testing.assert_allclose(got[(f, "mean")], by_group[f].mean().to_numpy())
        # dist_<grouping>: histograms plus zeros hold every cell of every group.
        dist = {}
        for r, q, v in rows[grouping.dist_view]:
            dist.setdefault(layout.name_of_row(r), {})[q] = v
        assert set(dist) == set(FEATURES)
        for f, columns in dist.items():
            assert set(columns) == {layout.HIST_QUALIFIER, *(layout.dist_qualifier(k) for k in layout.DIST_VECTORS)}
            _, hist = layout.decode_histograms(columns[layout.HIST_QUALIFIER])
            zeros = layout.decode_stats_vector(columns[layout.dist_qualifier("zeros")])
            np.testing.assert_array_equal(hist.sum(axis=1) + zeros, grouping.counts)

    # features: each feature's non-zeros, in parts of at most max_nnz, rebuild the matrix.
    rebuilt = np.zeros_like(matrix)
    for r, q, v in rows["features"]:
        feature, _ = layout.feature_of_part_row(r)
        assert q == layout.FEATURES_QUALIFIER
        positions, values = layout.decode_feature_part(v)
        assert positions.size <= 3
        rebuilt[positions, FEATURES.index(feature)] = values
    np.testing.assert_array_equal(rebuilt, matrix)

    # cells: position, grouping values, embedding and numeric columns; a blank has no value.
    seen: dict[str, dict[tuple[str, str], object]] = {}
    block_ids: list[str] = []
    for r, q, v in rows["cells"]:
        kind, name = layout.parse_cell_qualifier(q)
        if r.startswith(layout.EMBEDDING_BLOCK_PREFIX):
            # The embedding again, in blocks of cells (position order): every cell's coordinates in a few rows.
            assert (kind, name) == ("embedding block", "umap")
            positions, coordinates, ids = layout.decode_embedding_block(v)
            np.testing.assert_array_equal(coordinates, frame[["umap_1", "umap_2"]].to_numpy()[positions])
            block_ids += [i.decode() if isinstance(i, bytes) else i for i in ids]
            continue
        decoded = {"position": layout.decode_int, "grouping": layout.decode_text}.get(kind, lambda b: layout.decode_vector(b).tolist())(v)
        seen.setdefault(layout.name_of_row(r), {})[(kind, name)] = decoded
    assert set(seen) == set(CELL_IDS) and block_ids == CELL_IDS
    for i, cell_id in enumerate(CELL_IDS):
        want: dict[tuple[str, str], object] = {("position", ""): i, ("grouping", "cell_type"): TYPES[i], ("grouping", "donor"): DONORS[i]}
        want[("embedding", "umap")] = [frame["umap_1"][i], frame["umap_2"][i]]
        for column in ("umap_1", "umap_2", "score"):
            if not np.isnan(frame[column][i]):
                want[("numeric", column)] = [frame[column][i]]
        assert seen[cell_id] == want, cell_id

    # catalog: the dataset document, and each chunk's feature names and symbols.
    catalog = {r: (q, v) for r, q, v in rows["catalog"]}
    qualifier, doc = catalog.pop(layout.CATALOG_META_ROW)
    assert qualifier == layout.CATALOG_DOC_QUALIFIER
    meta = layout.decode_json(doc)
    assert (meta["n_cells"], meta["n_features"], meta["embedding"]["name"]) == (len(CELL_IDS), len(FEATURES), "umap")
    lists: dict[str, list[str]] = {"features": [], "symbols": []}
    for r in sorted(catalog):
        qualifier, value = catalog[r]
        kind, _ = layout.chunk_of_list_row(r)
        assert qualifier == layout.CATALOG_LIST_QUALIFIER
        lists[kind] += layout.decode_json(value)
    assert lists == {"features": FEATURES, "symbols": SYMBOLS}

    # embedding_sample: sampled cells with their own coordinates.
    (r, q, v), = rows["embedding_sample"]
    assert layout.part_of_sample_row(r) == 0 and q == layout.SAMPLE_QUALIFIER
    positions, coordinates, _, groups, ids = layout.decode_sample_part(v)
    assert ids == [CELL_IDS[p] for p in positions] and 0 < len(ids) <= 5
    np.testing.assert_array_equal(coordinates, frame[["umap_1", "umap_2"]].to_numpy()[positions])
    assert [plan.groupings[0].groups[g] for g in groups[:, 0]] == [TYPES[p] for p in positions]

    # markers: one row per group of every grouping, its best features.
    markers = {layout.grouping_of_markers_row(r): layout.decode_markers(v) for r, q, v in rows["markers"] if q == layout.MARKERS_QUALIFIER}
    assert set(markers) == {(g.name, group) for g in plan.groupings for group in g.groups}
    assert all(set(names) <= set(FEATURES) and len(names) <= 2 for names, _ in markers.values())


def test_row_keys_and_columns_round_trip_and_sort_as_the_views_need() -> None:
    for feature in FEATURES:
        assert layout.name_of_row(layout.feature_row(feature)) == feature
        # A feature's transpose parts sort together, right after its stats row key, in part order.
        parts = [layout.feature_part_row(feature, p) for p in (0, 1, 255, 256)]
        assert parts == sorted(parts) and all(p.startswith(layout.feature_row(feature)) for p in parts)
        assert [layout.feature_of_part_row(p) for p in parts] == [(feature, p) for p in (0, 1, 255, 256)]
    for cell_id in CELL_IDS:
        row = layout.cell_row(cell_id)
        assert layout.name_of_row(row) == cell_id and row < layout.row_after(row) < layout.cell_row(cell_id + "\x01")
    assert layout.parse_cell_qualifier(layout.cell_qualifier("numeric", "n:x")) == ("numeric", "n:x")
    assert layout.qualifier_of(layout.column(layout.CELLS_FAMILY, b"g:a:b")) == b"g:a:b"
    assert layout.stats_column("mean") == b"s:mean" and layout.chunk_of_list_row(layout.feature_list_row(12)) == ("features", 12)
    assert [layout.part_of_sample_row(layout.sample_part_row(p)) for p in (0, 7, 65535)] == [0, 7, 65535]
    assert layout.grouping_of_markers_row(layout.markers_row("cell_type", "B cell")) == ("cell_type", "B cell")
