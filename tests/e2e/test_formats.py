"""The same data as CSV, h5ad, 10x .h5 and a 10x MatrixMarket folder publishes identical statistics,
through the real stack (upload -> ingest -> compute -> loader -> publisher -> query), equal to pandas
over the CSV; and metadata as it comes (integer groupings, blank numbers, an h5ad's gene symbols) is
served as such."""

from __future__ import annotations

import gzip
import io
import json
import urllib.request
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.io
import scipy.sparse as sp

from cli.synth import SynthData, SynthSpec, write_synth_upload
from shared.config import Settings
from tests.e2e.reference import Reference, assert_aggregates_match, cli, http_json, query_url

pytestmark = pytest.mark.stack

SPEC = SynthSpec(n_cells=180, n_features=47, density=0.25, n_groups=6, seed=21, block_entries=47 * 25)


def _upload(settings: Settings, path: Path, dataset_id: str) -> dict:
    done = cli(settings, "upload", str(path), "--dataset", dataset_id, "--wait", "--json", "--timeout", "600")
    assert done.returncode == 0, f"upload of {path.name} failed: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mtx_zip(ref: Reference, path: Path) -> Path:
    """The CSV's data as a Cell Ranger MatrixMarket folder (written by scipy) with metadata.csv."""
    mtx = io.BytesIO()
    scipy.io.mmwrite(mtx, sp.coo_matrix(ref.matrix.to_numpy().T), precision=17)
    features = "".join(f"ENSSYN{i:011d}\t{f}\tGene Expression\n" for i, f in enumerate(ref.matrix.columns))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("outs/matrix.mtx.gz", gzip.compress(mtx.getvalue()))
        archive.writestr("outs/features.tsv.gz", gzip.compress(features.encode()))
        archive.writestr("outs/barcodes.tsv.gz", gzip.compress(("\n".join(ref.matrix.index) + "\n").encode()))
        archive.writestr("metadata.csv", ref.metadata.to_csv())
        archive.writestr("manifest.json", json.dumps({"groupings": ["cell_type", "donor"], "embedding": "umap"}))
    return path


def _aggregates(settings: Settings, dataset_id: str, grouping: str, features: list[str]) -> dict:
    status, body = http_json(query_url(settings, f"/v1/datasets/{dataset_id}/aggregates", grouping=grouping, features=",".join(features)))
    assert status == 200, body
    return body


def test_every_format_of_the_same_data_publishes_identical_statistics(stack: Settings, tmp_path: Path) -> None:
    data = SynthData(SPEC)
    csv_zip = write_synth_upload(data, tmp_path / "same.zip", "csv")
    ref = Reference.from_zip(csv_zip)
    uploads = {
        "csv": csv_zip,
        "h5ad": write_synth_upload(data, tmp_path / "same.h5ad", "h5ad"),
        "10x-h5": write_synth_upload(data, tmp_path / "same-10x.zip", "10x-h5"),
        # Upper-case suffix: the notification, ingest and the CLI match suffixes in any case.
        "10x-mtx": _mtx_zip(ref, tmp_path / "SAME-MTX.ZIP"),
    }
    datasets = {fmt: f"fmt-{fmt.replace('-', '')}-{uuid.uuid4().hex[:6]}" for fmt in uploads}
    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        versions = dict(zip(uploads, pool.map(lambda fmt: _upload(stack, uploads[fmt], datasets[fmt]), uploads)))
    assert {fmt: v["state"] for fmt, v in versions.items()} == {fmt: "PUBLISHED" for fmt in uploads}
    # Ingest reported its progress on the version record: the whole matrix.csv, every row.
    assert versions["csv"]["ingest"]["rows"] == SPEC.n_cells
    with zipfile.ZipFile(csv_zip) as archive:
        size = archive.getinfo("matrix.csv").file_size
    assert versions["csv"]["ingest"]["bytes_read"] == versions["csv"]["ingest"]["bytes_total"] == size
    features = list(ref.matrix.columns)
    for grouping in ("cell_type", "donor"):
        bodies = {fmt: _aggregates(stack, datasets[fmt], grouping, features) for fmt in uploads}
        assert_aggregates_match(bodies["csv"], ref, grouping)
        for fmt, body in bodies.items():
            # Bit-identical to the CSV's: same groups in the same order, same numbers.
            assert body["groups"] == bodies["csv"]["groups"], fmt
            assert body["stats"] == bodies["csv"]["stats"], f"{fmt} {grouping}"
    # Every format serves the same cells: position, groups and embedding.
    for fmt in uploads:
        status, cell = http_json(query_url(stack, f"/v1/datasets/{datasets[fmt]}/cells/{ref.matrix.index[7]}"))
        assert status == 200, cell
        assert cell["position"] == 7
        assert cell["metadata"] == {g: str(ref.metadata[g].iloc[7]) for g in ("cell_type", "donor")}
        assert cell["embedding"]["umap"] == [ref.metadata["umap_1"].iloc[7], ref.metadata["umap_2"].iloc[7]]


def test_integer_groupings_and_blank_numbers_are_served_as_they_come(stack: Settings, tmp_path: Path) -> None:
    leiden = [10, 2, 2, 0, 10, 1, 2, 0, 1, 10, 2, 2]
    scores = ["0.5", "", "1.25", "2", "", "3", "4", "5", "6", "7", "8", "9"]
    path = tmp_path / "meta.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("matrix.csv", "cell_id,A,B\n" + "".join(f"c{i},{i % 3},{(i * 7) % 5}\n" for i in range(12)))
        archive.writestr("metadata.csv", "cell_id,leiden,score\n" + "".join(f"c{i},{leiden[i]},{scores[i]}\n" for i in range(12)))
        archive.writestr("manifest.json", json.dumps({"groupings": ["leiden"]}))
    dataset_id = f"meta-{uuid.uuid4().hex[:8]}"
    assert _upload(stack, path, dataset_id)["state"] == "PUBLISHED"
    status, info = http_json(query_url(stack, f"/v1/datasets/{dataset_id}"))
    assert status == 200
    assert info["groupings"]["leiden"] == [{"name": g, "count": n} for g, n in (("0", 2), ("1", 2), ("2", 5), ("10", 3))]
    body = _aggregates(stack, dataset_id, "leiden", ["A"])
    assert body["groups"] == ["0", "1", "2", "10"]
    # Cells of cluster 10 are c0, c4, c9: A = 0, 1, 0.
    assert body["stats"]["sum"][0][3] == 1.0
    status, blank = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/cells/c1"))
    assert status == 200 and blank["numeric"] == {"score": None} and blank["metadata"] == {"leiden": "2"}
    status, filled = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/cells/c2"))
    assert status == 200 and filled["numeric"] == {"score": 1.25}
    # Every cell at once: blanks are null in JSON and in Arrow (pandas reads the same CSV as NaN).
    expected = [None if s == "" else float(s) for s in scores]
    status, page = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/cells"))
    assert status == 200
    assert [page["numeric"]["score"][page["cells"].index(f"c{i}")] for i in range(12)] == expected
    with urllib.request.urlopen(query_url(stack, f"/v1/datasets/{dataset_id}/cells", format="arrow")) as answer:
        table = pa.ipc.open_stream(answer.read()).read_all()
    by_id = dict(zip(table.column("cell_id").to_pylist(), table.column("score").to_pylist()))
    assert [by_id[f"c{i}"] for i in range(12)] == expected
    assert table.schema.field("score").nullable and table.column("score").null_count == 2


def test_integer_columns_without_a_manifest_are_groupings_and_numeric_columns(stack: Settings, tmp_path: Path) -> None:
    leiden = [10, 2, 2, 0, 10, 1, 2, 0, 1, 10, 2, 2]
    n_genes = ["3", "", "7", "3", "9", "3", "7", "7", "3", "9", "3", "7"]
    rng = np.random.default_rng(3)
    matrix = pd.DataFrame(rng.integers(0, 4, size=(12, 3)).astype(float), columns=["A", "B", "C"], index=[f"c{i}" for i in range(12)])
    path = tmp_path / "ints.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("matrix.csv", matrix.to_csv(index_label="cell_id"))
        archive.writestr("metadata.csv", "cell_id,leiden,n_genes\n" + "".join(f"c{i},{leiden[i]},{n_genes[i]}\n" for i in range(12)))
    dataset_id = f"ints-{uuid.uuid4().hex[:8]}"
    assert _upload(stack, path, dataset_id)["state"] == "PUBLISHED"
    status, info = http_json(query_url(stack, f"/v1/datasets/{dataset_id}"))
    assert status == 200
    assert [g["name"] for g in info["groupings"]["leiden"]] == ["0", "1", "2", "10"]
    assert [g["name"] for g in info["groupings"]["n_genes"]] == ["3", "7", "9", "(missing)"]
    assert info["numeric_columns"] == ["leiden", "n_genes"]
    # As a grouping: the stats equal pandas' groupby on the integers.
    body = _aggregates(stack, dataset_id, "leiden", ["A", "B", "C"])
    expected = matrix.groupby(np.array(leiden)).mean()
    assert body["stats"]["mean"] == [[float(expected.loc[g, f]) for g in (0, 1, 2, 10)] for f in ("A", "B", "C")]
    # As numbers: the same values, the blank as null.
    status, page = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/cells", include="numeric"))
    assert status == 200
    order = [page["cells"].index(f"c{i}") for i in range(12)]
    assert [page["numeric"]["leiden"][j] for j in order] == [float(v) for v in leiden]
    assert [page["numeric"]["n_genes"][j] for j in order] == [float(v) if v else None for v in n_genes]
    status, cell = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/cells/c4"))
    assert cell["metadata"] == {"leiden": "10", "n_genes": "9"} and cell["numeric"] == {"leiden": 10.0, "n_genes": 9.0}


def test_h5ad_var_symbols_are_served_and_searchable(stack: Settings, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ids = [f"ENSG{i:011d}" for i in range(30)]
    symbols = [f"GENE{i % 25}" if i != 4 else None for i in range(30)]  # GENE0..4 twice; one without a symbol
    symbols[7] = "CD3E"
    counts = rng.poisson(0.6, size=(40, 30)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["B", "T"], size=40))}, index=[f"cell{i}" for i in range(40)])
    var = pd.DataFrame({"symbol_col": pd.Categorical(symbols), "gene_name": [f"decoy{i}" for i in range(30)]}, index=ids)
    h5ad = tmp_path / "sym.h5ad"
    anndata.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var).write_h5ad(h5ad)
    path = tmp_path / "sym.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(h5ad, "sym.h5ad")
        archive.writestr("manifest.json", json.dumps({"feature_symbols": "symbol_col"}))
    dataset_id = f"sym-{uuid.uuid4().hex[:8]}"
    assert _upload(stack, path, dataset_id)["state"] == "PUBLISHED"
    status, listing = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/features"))
    assert status == 200
    assert listing["features"] == ids and listing["symbols"] == symbols
    # A scientist types the symbol: the feature's id comes back with it, and reads by the id.
    status, found = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/features", prefix="cd3"))
    assert status == 200 and found["features"] == [ids[7]] and found["symbols"] == ["CD3E"]
    status, found = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/features", prefix="gene1"))
    expected = [i for i in range(30) if symbols[i] is not None and symbols[i].startswith("GENE1")]
    assert found["features"][0] == ids[1] and sorted(found["features"]) == sorted(ids[i] for i in expected)
    body = _aggregates(stack, dataset_id, "cell_type", [ids[7]])
    frame = pd.DataFrame(counts, index=obs.index, columns=ids)
    assert body["stats"]["sum"] == [[float(frame.loc[obs.cell_type == g, ids[7]].sum()) for g in ("B", "T")]]
