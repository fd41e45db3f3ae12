"""`wideviews.client` against the live local stack: every answer equals pandas' on the uploaded CSV
(the same reference as the e2e tests), paging and batching lose nothing, errors carry the server's
message, and a 503 is retried after its Retry-After."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import wideviews.client as client_module
from shared.config import Settings
from tests.e2e.reference import STAT_NAMES, Reference, cli, publish_sample
from wideviews.client import ApiError, Client

pytestmark = pytest.mark.stack
TOL = dict(rtol=1e-9, atol=1e-12, equal_nan=True)


@dataclass
class Published:
    dataset_id: str
    ref: Reference
    client: Client


@pytest.fixture(scope="module")
def published(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Published:
    manifest = {"groupings": ["cell_type", "donor", "region"], "crossed": [["cell_type", "donor"]], "embedding": "umap", "title": "client test"}
    dataset_id, ref = publish_sample(stack, tmp_path_factory.mktemp("client"), "client", (600, 90, 5), manifest)
    return Published(dataset_id, ref, Client(f"http://{stack.query_host}:{stack.query_port}"))


def test_client_imports_without_the_server_packages() -> None:
    code = (
        "import sys, wideviews.client\n"
        "bad = sorted(m for m in ('fastapi', 'boto3', 'botocore', 'happybase', 'thriftpy2', 'shared', 'services', 'pydantic') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_datasets_and_description(published: Published) -> None:
    table = published.client.datasets()
    row = table.set_index("dataset").loc[published.dataset_id]
    assert (row["n_cells"], row["n_features"], row["title"]) == (600, 90, "client test")
    groupings = published.client.groupings(published.dataset_id)
    labels = published.ref.metadata["cell_type"]
    expected = labels.value_counts().sort_index()
    assert groupings["cell_type"].to_dict() == expected.to_dict()


def test_features_all_in_matrix_order_and_by_prefix(published: Published) -> None:
    names = list(published.ref.matrix.columns)
    assert published.client.features(published.dataset_id) == names
    # Any case; the server's A-Z order; every page followed.
    want = sorted(n for n in names if n.lower().startswith("gene0004"))
    assert published.client.features(published.dataset_id, "gene0004") == want
    assert published.client.features(published.dataset_id, "GENE000", limit=7) == sorted(n for n in names if n.startswith("GENE000"))[:7]


def test_aggregates_tidy_and_wide_equal_pandas(published: Published, monkeypatch: pytest.MonkeyPatch) -> None:
    features = list(published.ref.matrix.columns[::3])
    groups, expected = published.ref.group_stats("cell_type")
    # Force many small requests: batching must give the same table as one request would.
    monkeypatch.setattr(client_module, "MAX_ANSWER_VALUES", 12 * len(groups) * 4)
    tidy = published.client.aggregates(published.dataset_id, features, "cell_type")
    assert list(tidy.columns) == ["feature", "group", "cells", *STAT_NAMES]
    assert len(tidy) == len(features) * len(groups)
    assert tidy["feature"].drop_duplicates().tolist() == features
    for stat in STAT_NAMES:
        got = tidy.pivot(index="group", columns="feature", values=stat).reindex(index=groups, columns=features)
        want = expected["count"]["n"].to_numpy()[:, None].repeat(len(features), 1) if stat == "count" else expected[stat][features].to_numpy()
        np.testing.assert_allclose(got.to_numpy(dtype=np.float64), want, **TOL, err_msg=stat)
    wide = published.client.aggregates(published.dataset_id, features[:5], "cell_type", ["mean", "frac_expressing"], wide=True)
    assert list(wide.index) == features[:5]
    np.testing.assert_allclose(wide["mean"][groups].to_numpy(), expected["mean"][features[:5]].to_numpy().T, **TOL)
    np.testing.assert_allclose(wide["frac_expressing"][groups].to_numpy(), expected["frac_expressing"][features[:5]].to_numpy().T, **TOL)


def test_aggregates_of_chosen_groups(published: Published) -> None:
    groups, expected = published.ref.group_stats("donor")
    chosen = [groups[2], groups[0]]
    tidy = published.client.aggregates(published.dataset_id, "GENE00007", "donor", "median", groups=chosen)
    assert tidy["group"].tolist() == chosen
    np.testing.assert_allclose(tidy["median"].to_numpy(), expected["median"]["GENE00007"].loc[chosen].to_numpy(), **TOL)


def test_values_dense_and_sparse_equal_the_csv(published: Published) -> None:
    matrix = published.ref.matrix
    one = published.client.values(published.dataset_id, "GENE00011", page_size=7)
    assert one.shape == (600,)
    np.testing.assert_array_equal(one.astype(np.float64), matrix["GENE00011"].to_numpy())
    names = ["GENE00003", "GENE00050", "GENE00089"]
    sparse = published.client.values(published.dataset_id, names, sparse=True, page_size=11)
    assert sparse.shape == (600, 3)
    np.testing.assert_array_equal(sparse.toarray().astype(np.float64), matrix[names].to_numpy())
    assert sparse.nnz == int((matrix[names] != 0).to_numpy().sum())
    dense = published.client.values(published.dataset_id, names)
    np.testing.assert_array_equal(dense.astype(np.float64), matrix[names].to_numpy())


def test_embedding_in_matrix_order_over_several_pages(published: Published) -> None:
    cells = published.client.embedding(published.dataset_id, page_size=128)
    metadata = published.ref.metadata
    assert list(cells.index) == list(published.ref.matrix.index)
    assert cells["position"].tolist() == list(range(600))
    np.testing.assert_allclose(cells[["umap_1", "umap_2"]].to_numpy(), metadata[["umap_1", "umap_2"]].to_numpy(), rtol=0, atol=0)
    for grouping in ("cell_type", "donor", "region"):
        assert cells[grouping].astype(str).tolist() == metadata[grouping].astype(str).tolist()


def test_to_anndata_groups_as_obs_stats_as_layers(published: Published) -> None:
    features = ["GENE00001", "GENE00002", "GENE00030"]
    groups, expected = published.ref.group_stats("region")
    adata = published.client.to_anndata(published.dataset_id, features, "region", ["mean", "var", "nnz"])
    assert list(adata.obs_names) == groups
    assert list(adata.var_names) == features
    assert adata.obs["cells"].tolist() == expected["count"]["n"].tolist()
    np.testing.assert_allclose(adata.X, expected["mean"][features].to_numpy(), **TOL)
    np.testing.assert_allclose(adata.layers["var"], expected["var"][features].to_numpy(), **TOL)
    np.testing.assert_allclose(adata.layers["nnz"], expected["nnz"][features].to_numpy(), **TOL)
    assert adata.uns["wideviews"]["grouping"] == "region"


def test_aggregates_of_a_crossed_grouping(published: Published) -> None:
    meta = published.ref.metadata
    tidy = published.client.aggregates(published.dataset_id, ["GENE00004", "GENE00040"], "cell_type", ["mean", "median"], by="donor")
    labels = meta["cell_type"].astype(str) + " | " + meta["donor"].astype(str)
    expected = published.ref.matrix.groupby(labels)
    assert list(tidy.columns[:5]) == ["feature", "group", "cell_type", "donor", "cells"]
    assert (tidy["cell_type"] + " | " + tidy["donor"]).tolist() == tidy["group"].tolist()
    for row in tidy.itertuples():
        assert row.cells == int((labels == row.group).sum())
        assert row.mean == pytest.approx(expected[row.feature].mean()[row.group], rel=1e-9)
        assert row.median == pytest.approx(expected[row.feature].median()[row.group], rel=1e-9, abs=1e-12)


def test_distributions_equal_numpy(published: Published) -> None:
    table = published.client.distributions(published.dataset_id, ["GENE00011", "GENE00012"], "region")
    labels = published.ref.metadata["region"].astype(str)
    assert len(table) == 2 * labels.nunique()
    for row in table.itertuples():
        values = published.ref.matrix.loc[(labels == row.group).to_numpy(), row.feature].to_numpy()
        nonzero = values[values != 0]
        np.testing.assert_array_equal(row.hist, np.histogram(nonzero, bins=row.edges)[0])
        np.testing.assert_allclose(row.edges, np.histogram_bin_edges(published.ref.matrix[row.feature].to_numpy()[published.ref.matrix[row.feature].to_numpy() != 0], bins=32), rtol=1e-12)
        assert row.zeros == int((values == 0).sum()) and row.hist.sum() + row.zeros == row.cells == len(values)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        assert (row.q1, row.median, row.q3) == pytest.approx((q1, median, q3), rel=1e-9, abs=1e-12)
        assert row.whisker_low == pytest.approx(values[values >= low].min(), rel=1e-12, abs=1e-12)
        assert row.whisker_high == pytest.approx(values[values <= high].max(), rel=1e-12, abs=1e-12)
        assert (row.outliers_low, row.outliers_high) == (int((values < low).sum()), int((values > high).sum()))


def test_markers_are_the_welch_t_ranking(published: Published) -> None:
    matrix, labels = published.ref.matrix, published.ref.metadata["cell_type"].astype(str)
    group = labels.value_counts().index[0]
    table = published.client.markers(published.dataset_id, "cell_type", group, n=10)
    assert table["group"].eq(group).all() and table["rank"].tolist() == list(range(1, len(table) + 1))
    inside, outside = matrix[(labels == group).to_numpy()], matrix[(labels != group).to_numpy()]
    # scanpy's t-test score: (mean_in - mean_out) / sqrt(var_in / n_in + var_out / n_out), ddof=1.
    score = (inside.mean() - outside.mean()) / np.sqrt(inside.var(ddof=1) / len(inside) + outside.var(ddof=1) / len(outside))
    best = score.fillna(0).sort_values(ascending=False, kind="stable")
    np.testing.assert_allclose(table["score"].to_numpy(), best.iloc[: len(table)].to_numpy(), rtol=1e-6)
    assert set(table["feature"]) <= set(best.index[: len(table) + 2])  # ties near the cut may swap
    np.testing.assert_allclose(table["frac_in"].to_numpy(), (inside[table["feature"]] != 0).mean().to_numpy(), rtol=1e-12)


def test_embedding_sample_is_a_weighted_subset(published: Published) -> None:
    sample = published.client.embedding(published.dataset_id, sample=True, page_size=100)
    full = published.ref.metadata
    assert 0 < len(sample) < len(full)
    assert sample["position"].is_monotonic_increasing
    positions = sample["position"].to_numpy()
    assert list(sample.index) == list(published.ref.matrix.index[positions])
    np.testing.assert_array_equal(sample[["umap_1", "umap_2"]].to_numpy(), full[["umap_1", "umap_2"]].to_numpy()[positions])
    assert sample["cell_type"].astype(str).tolist() == full["cell_type"].astype(str).to_numpy()[positions].tolist()
    # Every cell type keeps points, and the weights stand for every cell.
    assert set(sample["cell_type"].astype(str)) == set(full["cell_type"].astype(str))
    assert sample["weight"].sum() == pytest.approx(len(full), rel=1e-6)


def test_error_answers_raise_with_the_server_message(published: Published) -> None:
    with pytest.raises(ApiError) as caught:
        published.client.aggregates(published.dataset_id, "NO-SUCH-GENE", "cell_type", "mean")
    assert caught.value.status == 404
    assert "NO-SUCH-GENE" in caught.value.message
    with pytest.raises(ApiError) as caught:
        published.client.aggregates(published.dataset_id, "GENE00001", "no_such_grouping", "mean")
    assert caught.value.status == 404 and "no_such_grouping" in caught.value.message
    with pytest.raises(ApiError) as caught:
        published.client.dataset("no-such-dataset-here")
    assert caught.value.status == 404


def test_features_with_display_symbols(stack: Settings, published: Published, tmp_path: Path) -> None:
    import anndata
    import scipy.sparse as sp

    ids = [f"ENSG{i:011d}" for i in range(12)]
    symbols = [f"SYM{i}" if i != 3 else None for i in range(12)]
    symbols[5] = "CD3E"
    rng = np.random.default_rng(2)
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["B", "T"], size=30))}, index=[f"c{i}" for i in range(30)])
    anndata.AnnData(X=sp.csr_matrix(rng.poisson(1.0, size=(30, 12)).astype(np.float32)), obs=obs, var=pd.DataFrame({"gene_symbols": symbols}, index=ids)).write_h5ad(tmp_path / "sym.h5ad")
    dataset_id = f"client-sym-{uuid.uuid4().hex[:8]}"
    done = cli(stack, "upload", str(tmp_path / "sym.h5ad"), "--dataset", dataset_id, "--wait", "--timeout", "600")
    assert done.returncode == 0, done.stderr
    listing = published.client.features(dataset_id, with_symbols=True)
    assert listing["feature"].tolist() == ids and listing["symbol"].tolist() == symbols
    found = published.client.features(dataset_id, "cd3", with_symbols=True)
    assert found.to_dict("records") == [{"feature": ids[5], "symbol": "CD3E"}]
    assert published.client.features(dataset_id, "cd3") == [ids[5]]
    # Datasets without symbols: None for each.
    assert published.client.features(published.dataset_id, "GENE0000", with_symbols=True)["symbol"].isna().all()


# --- retries: a 503 with Retry-After, from a server that answers 503 twice before answering ------


class _Flaky(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[float] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append(time.monotonic())
        status, headers, body = type(self).answers.pop(0)
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Flaky", (_Flaky,), {"answers": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()


def test_503_is_retried_after_retry_after(flaky: tuple[str, type[_Flaky]]) -> None:
    url, handler = flaky
    busy = (503, {"Retry-After": "1"}, b'{"error": "unavailable", "message": "HBase unreachable"}')
    handler.answers += [busy, busy, (200, {}, b'{"datasets": []}')]
    table = Client(url).datasets()
    assert table.empty
    assert len(handler.seen) == 3
    gaps = np.diff(handler.seen)
    assert (gaps >= 0.95).all(), gaps


def test_503_beyond_the_retries_raises(flaky: tuple[str, type[_Flaky]]) -> None:
    url, handler = flaky
    busy = (503, {"Retry-After": "0"}, b'{"error": "unavailable", "message": "HBase unreachable"}')
    handler.answers += [busy] * 3
    with pytest.raises(ApiError) as caught:
        Client(url, max_retries=2).datasets()
    assert caught.value.status == 503 and caught.value.message == "HBase unreachable"
    assert len(handler.seen) == 3
