"""The derived views end to end: an upload with a crossed grouping and an embedding goes through the
pipeline, and the distributions, markers, crossed aggregates and embedding sample read over HTTP
equal numpy/pandas (and scanpy, for the marker scores) on the uploaded CSV."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.sample import sample_frames, write_upload_zip
from shared.config import Settings
from tests.e2e.reference import Reference, cli, http_json, query_url

pytestmark = pytest.mark.stack

GROUPINGS = ["cell_type", "donor", "region"]


@pytest.fixture(scope="module")
def published(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Reference, dict]:
    matrix, metadata = sample_frames(400, 90, seed=17)
    rng = np.random.default_rng(17)
    matrix["NEG_GENE"] = np.round(rng.normal(0, 2, len(matrix)) * (rng.random(len(matrix)) < 0.5), 3)
    matrix["ZERO_GENE"] = 0.0
    metadata = metadata.copy()
    metadata.loc[metadata.index[:3], "region"] = "tiny"  # a 3-cell group the embedding sample must keep
    path = write_upload_zip(
        tmp_path_factory.mktemp("views") / "up.zip",
        matrix,
        metadata,
        {"groupings": GROUPINGS, "crossed": [["cell_type", "donor"]], "embedding": "umap"},
    )
    dataset_id = f"views-{uuid.uuid4().hex[:8]}"
    done = cli(stack, "upload", str(path), "--dataset", dataset_id, "--wait", "--json", "--timeout", "600")
    assert done.returncode == 0, f"upload failed: {done.stdout}\n{done.stderr}"
    version = json.loads(done.stdout.strip().splitlines()[-1])
    assert version["state"] == "PUBLISHED" and version["n_chunks"] > 1
    return dataset_id, Reference.from_zip(path), version


def _labels(ref: Reference, grouping: str, by: str | None = None) -> pd.Series:
    labels = ref.metadata[grouping].astype(str)
    return labels + " | " + ref.metadata[by].astype(str) if by else labels


def test_distributions_match_numpy_on_the_csv(stack: Settings, published: tuple[str, Reference, dict]) -> None:
    dataset_id, ref, _ = published
    features = list(ref.matrix.columns)
    for grouping, by in (("cell_type", None), ("region", None), ("cell_type", "donor")):
        params = {"grouping": grouping, "features": ",".join(features[:100])} | ({"by": by} if by else {})
        status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/distributions", **params))
        assert status == 200, body
        labels = _labels(ref, grouping, by)
        groups = body["groups"]
        assert body["group_counts"] == [int((labels == g).sum()) for g in groups]
        assert sorted(groups) == sorted(labels.unique())
        for item in body["features"]:
            column = ref.matrix[item["feature"]].to_numpy()
            edges = np.histogram_bin_edges(column[column != 0], 32)
            np.testing.assert_array_equal(item["edges"], edges)
            for k, group in enumerate(groups):
                values = column[(labels == group).to_numpy()]
                assert item["hist"][k] == np.histogram(values[values != 0], bins=edges)[0].tolist()
                assert sum(item["hist"][k]) + item["zeros"][k] == values.size
                q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
                low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
                assert item["whisker_low"][k] == values[values >= low].min()
                assert item["whisker_high"][k] == values[values <= high].max()
                assert (item["outliers_low"][k], item["outliers_high"][k]) == ((values < low).sum(), (values > high).sum())
                assert item["median"][k] == pytest.approx(median, rel=1e-12, abs=1e-12)
        if by:
            assert body["group_pairs"] == [g.split(" | ") for g in groups]


def test_crossed_aggregates_match_pandas(stack: Settings, published: tuple[str, Reference, dict]) -> None:
    dataset_id, ref, _ = published
    features = list(ref.matrix.columns)[:40]
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", by="donor", features=",".join(features), stats="count,mean,var,median"))
    assert status == 200, body
    labels = _labels(ref, "cell_type", "donor")
    grouped = ref.matrix[features].groupby(labels)
    assert body["by"] == "donor" and sorted(body["groups"]) == sorted(labels.unique())
    body_groups = body["groups"]
    for stat, want in (("mean", grouped.mean()), ("median", grouped.median()), ("var", grouped.agg(lambda s: np.var(s.to_numpy(), ddof=1) if len(s) > 1 else np.nan))):
        got = np.array([[np.nan if v is None else v for v in row] for row in body["stats"][stat]], dtype=np.float64)
        np.testing.assert_allclose(got, want.loc[body["groups"]].to_numpy().T, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=stat)
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", by="region", features=features[0]))
    assert status == 404 and "cell_type by donor" in body["message"]
    status, info = http_json(query_url(stack, f"/v1/datasets/{dataset_id}"))
    sizes = labels.value_counts()
    assert info["crossed"] == [{"grouping": "cell_type", "by": "donor", "groups": [{"name": g, "count": int(sizes[g])} for g in body_groups]}]


def _welch(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    a, b = values[inside], values[~inside]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return np.where(np.isnan(score), 0.0, score)


def test_markers_are_the_top_welch_t_of_the_csv_and_scanpys_scores(stack: Settings, published: tuple[str, Reference, dict]) -> None:
    dataset_id, ref, _ = published
    features = np.array(ref.matrix.columns)
    values = ref.matrix.to_numpy()
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/markers", grouping="cell_type", n="5"))
    assert status == 200, body
    labels = _labels(ref, "cell_type")
    assert [g["group"] for g in body["groups"]] == sorted(labels.unique())
    for entry in body["groups"]:
        inside = (labels == entry["group"]).to_numpy()
        score = _welch(values, inside)
        order = sorted(range(len(features)), key=lambda j: (-score[j], features[j]))[:5]
        assert [m["feature"] for m in entry["markers"]] == features[order].tolist(), entry["group"]
        np.testing.assert_allclose([m["score"] for m in entry["markers"]], score[order], rtol=1e-9)
        np.testing.assert_allclose([m["mean_out"] for m in entry["markers"]], values[~inside][:, order].mean(0), rtol=1e-12)
        assert entry["count"] == int(inside.sum())
    # one group of the crossed grouping, by its label
    group = sorted(_labels(ref, "cell_type", "donor").unique())[0]
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/markers", grouping="cell_type", by="donor", group=group, n="3"))
    assert status == 200, body
    inside = (_labels(ref, "cell_type", "donor") == group).to_numpy()
    score = _welch(values, inside)
    assert [m["feature"] for m in body["groups"][0]["markers"]] == features[sorted(range(len(features)), key=lambda j: (-score[j], features[j]))[:3]].tolist()

    # scanpy's rank_genes_groups(method="t-test") on the same CSV: the same scores (see SCANPY_RTOL in tests/kernel)
    sc = pytest.importorskip("scanpy")
    import anndata as ad

    adata = ad.AnnData(X=values.astype(np.float64), obs=pd.DataFrame({"g": pd.Categorical(labels.to_numpy())}, index=ref.matrix.index.astype(str)), var=pd.DataFrame(index=features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(adata, "g", method="t-test", n_genes=len(features))
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/markers", grouping="cell_type", n="10"))
    for entry in body["groups"]:
        theirs = dict(zip(adata.uns["rank_genes_groups"]["names"][entry["group"]], adata.uns["rank_genes_groups"]["scores"][entry["group"]]))
        np.testing.assert_allclose([m["score"] for m in entry["markers"]], [theirs[m["feature"]] for m in entry["markers"]], rtol=1e-6, atol=1e-6)
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/markers", grouping="cell_type", n="100000"))
    assert status == 400
    # Without n: 20, or every stored marker when the version keeps fewer (the test stack keeps 10).
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/markers", grouping="cell_type"))
    assert status == 200 and body["n"] == min(20, stack.markers_top_n)
    assert all(len(entry["markers"]) == min(body["n"], len(features)) for entry in body["groups"])


def test_embedding_sample_keeps_every_group_and_the_csvs_coordinates(stack: Settings, published: tuple[str, Reference, dict]) -> None:
    dataset_id, ref, _ = published
    points: dict[str, list] = {"cells": [], "positions": [], "coordinates": [], "weights": []}
    metadata: dict[str, list] = {g: [] for g in GROUPINGS}
    cursor = None
    while True:
        params = {"limit": "70"} | ({"cursor": cursor} if cursor else {})
        status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/embedding/sample", **params))
        assert status == 200, body
        for key in points:
            points[key] += body[key]
        for g in GROUPINGS:
            metadata[g] += body["metadata"][g]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    size = stack.embedding_sample_size
    assert len(points["cells"]) == body["n_sampled"] == min(size, len(ref.matrix))
    assert points["positions"] == sorted(points["positions"])
    assert [ref.matrix.index[p] for p in points["positions"]] == points["cells"]
    umap = ref.metadata.loc[points["cells"], ["umap_1", "umap_2"]].to_numpy()
    np.testing.assert_allclose(points["coordinates"], umap)
    np.testing.assert_allclose(sum(points["weights"]), len(ref.matrix))
    for g in GROUPINGS:
        assert metadata[g] == ref.metadata.loc[points["cells"], g].astype(str).tolist()
        assert set(metadata[g]) == set(ref.metadata[g].astype(str)), g  # every group, the 3-cell one too
