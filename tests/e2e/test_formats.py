"""The same data as CSV, h5ad, 10x .h5 and a 10x MatrixMarket folder publishes identical statistics,
through the real stack (upload -> ingest -> compute -> loader -> publisher -> query), equal to pandas
over the CSV; and metadata as it comes (integer groupings, blank numbers) is served as such."""

from __future__ import annotations

import gzip
import io
import json
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    assert status == 200 and "score" not in blank["numeric"] and blank["metadata"] == {"leiden": "2"}
    status, filled = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/cells/c2"))
    assert status == 200 and filled["numeric"] == {"score": 1.25}
