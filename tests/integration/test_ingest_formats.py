"""Every input format of the same data stages the same matrix and the same groupings.

The reference is pandas over the synthetic CSV; the other formats are written by their own tools
where one is at hand (anndata for h5ad, scipy for MatrixMarket, pandas for the CSV variants) and by
`wideviews synth` otherwise (10x .h5, whose layout scanpy's reader is checked to accept). The staged
Parquet parts are read back here, independently of compute.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
import zipfile
from pathlib import Path

import anndata
import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
import scipy.sparse as sp

from cli.synth import SynthData, SynthSpec, write_synth_upload
from services.ingest.parts import ChunkParts
from services.ingest.split import ingest_upload
from shared.adapters.s3 import S3RangeReader, get_bytes, list_keys
from shared.config import Settings
from shared.staging import VersionPlan, cells_key, version_prefix

SPEC = SynthSpec(n_cells=157, n_features=23, density=0.2, n_groups=5, seed=11, block_entries=23 * 20)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """(matrix, metadata, the CSV upload ZIP) of the synthetic data, read by pandas."""
    path = write_synth_upload(SynthData(SPEC), tmp_path_factory.mktemp("ref") / "ref.zip", "csv")
    with zipfile.ZipFile(path) as archive:
        matrix = pd.read_csv(archive.open("matrix.csv"), index_col=0)
        metadata = pd.read_csv(archive.open("metadata.csv"), index_col=0).loc[matrix.index]
    return matrix, metadata, path


def _ingest(settings: Settings, name: str, body: bytes) -> tuple[VersionPlan, np.ndarray, pa.Table, list[str]]:
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    dataset_id, version_id = f"fmt-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    key = f"uploads/{dataset_id}/{name}"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=body)
    plan = ingest_upload(S3RangeReader(s3, settings.uploads_bucket, key), key, s3, settings, dataset_id, version_id)
    dense = np.zeros((plan.n_cells, len(plan.features)))
    part_keys = sorted(k for k in list_keys(s3, settings.staging_bucket, version_prefix(dataset_id, version_id)) if "/chunks/" in k)
    for k in part_keys:
        chunk = int(k.split("/chunks/")[1].split("/")[0])
        table = pq.read_table(io.BytesIO(get_bytes(s3, settings.staging_bucket, k)))
        start = plan.chunks[chunk][0]
        dense[table.column("cell").to_numpy(), start + table.column("feature").to_numpy()] = table.column("value").to_numpy()
    cells = pq.read_table(io.BytesIO(get_bytes(s3, settings.staging_bucket, cells_key(dataset_id, version_id))))
    return plan, dense, cells, part_keys


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _anndata(matrix: pd.DataFrame, metadata: pd.DataFrame, x: object, raw: bool = False) -> anndata.AnnData:
    obs = pd.DataFrame({"cell_type": pd.Categorical(metadata["cell_type"]), "donor": pd.Categorical(metadata["donor"])}, index=matrix.index)
    var = pd.DataFrame(index=matrix.columns)
    if raw:
        # raw.X holds the data; X something else (as after normalisation).
        adata = anndata.AnnData(X=np.ones(matrix.shape, dtype=np.float32), obs=obs, var=var)
        adata.raw = anndata.AnnData(X=x, obs=obs, var=var)
    else:
        adata = anndata.AnnData(X=x, obs=obs, var=var)
    adata.obsm["X_umap"] = metadata[["umap_1", "umap_2"]].to_numpy()
    return adata


def _h5ad_bytes(adata: anndata.AnnData, tmp: Path) -> bytes:
    path = tmp / f"{uuid.uuid4().hex}.h5ad"
    adata.write_h5ad(path)
    return path.read_bytes()


MANIFEST = json.dumps({"groupings": ["cell_type", "donor"], "embedding": "umap"})


def _variants(matrix: pd.DataFrame, metadata: pd.DataFrame, ref_zip: Path, tmp: Path) -> dict[str, tuple[str, bytes]]:
    """upload name and bytes of each format of the same data."""
    values = matrix.to_numpy()
    meta_csv = metadata.to_csv()
    crlf_bom = matrix.to_csv(lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC).encode("utf-8-sig")
    transposed = matrix.T.rename_axis("gene").to_csv()
    mtx = io.BytesIO()
    scipy.io.mmwrite(mtx, sp.coo_matrix(values.T))
    feature_lines = "".join(f"ENSSYN{i:011d}\t{f}\tGene Expression\n" for i, f in enumerate(matrix.columns))
    variants = {
        "csv": ("up.zip", ref_zip.read_bytes()),
        "csv-gz-crlf-bom-quoted": ("UP.ZIP", _zip({"matrix.csv.gz": gzip.compress(crlf_bom), "metadata.csv": meta_csv, "manifest.json": MANIFEST})),
        "csv-transposed": (
            "up.zip",
            _zip({"matrix.csv": transposed, "metadata.csv": meta_csv, "manifest.json": json.dumps({"groupings": ["cell_type", "donor"], "orientation": "features_as_rows"})}),
        ),
        "h5ad-synth": ("up.h5ad", write_synth_upload(SynthData(SPEC), tmp / "s.h5ad", "h5ad").read_bytes()),
        "h5ad-anndata-csr-zipped": ("up.Zip", _zip({"data.h5ad": _h5ad_bytes(_anndata(matrix, metadata, sp.csr_matrix(values)), tmp), "manifest.json": MANIFEST})),
        "h5ad-anndata-csc": ("up.H5AD", _h5ad_bytes(_anndata(matrix, metadata, sp.csc_matrix(values)), tmp)),
        "h5ad-anndata-dense": ("up.h5ad", _h5ad_bytes(_anndata(matrix, metadata, values), tmp)),
        "h5ad-anndata-raw": (
            "up.zip",
            _zip({"d.h5ad": _h5ad_bytes(_anndata(matrix, metadata, sp.csr_matrix(values), raw=True), tmp), "manifest.json": json.dumps({"matrix": "raw.X"})}),
        ),
        "10x-h5": ("up.zip", write_synth_upload(SynthData(SPEC), tmp / "tenx.zip", "10x-h5").read_bytes()),
        "10x-mtx": (
            "up.zip",
            _zip(
                {
                    "filtered_feature_bc_matrix/matrix.mtx.gz": gzip.compress(mtx.getvalue()),
                    "filtered_feature_bc_matrix/features.tsv.gz": gzip.compress(feature_lines.encode()),
                    "filtered_feature_bc_matrix/barcodes.tsv.gz": gzip.compress(("\n".join(matrix.index) + "\n").encode()),
                    "metadata.csv": meta_csv,
                    "manifest.json": MANIFEST,
                }
            ),
        ),
    }
    return variants


FORMATS = ["csv", "csv-gz-crlf-bom-quoted", "csv-transposed", "h5ad-synth", "h5ad-anndata-csr-zipped", "h5ad-anndata-csc", "h5ad-anndata-dense", "h5ad-anndata-raw", "10x-h5", "10x-mtx"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_of_the_same_data_stages_the_same_matrix_and_groupings(
    inprocess_moto: Settings, reference: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path, fmt: str
) -> None:
    matrix, metadata, ref_zip = reference
    name, body = _variants(matrix, metadata, ref_zip, tmp_path)[fmt]
    plan, dense, cells, part_keys = _ingest(inprocess_moto, name, body)
    assert plan.features == list(matrix.columns)
    assert cells.column("cell_id").to_pylist() == list(matrix.index)
    np.testing.assert_array_equal(dense, matrix.to_numpy())
    # One part per chunk: the spool keeps S3 objects to the chunk count.
    assert len(part_keys) == plan.n_chunks
    expected = {g: metadata[g].value_counts().sort_index() for g in ("cell_type", "donor")}
    got = {g.name: (g.groups, g.counts) for g in plan.groupings}
    assert set(got) == {"cell_type", "donor"}
    for grouping, counts in expected.items():
        assert got[grouping] == (list(counts.index), [int(c) for c in counts.to_numpy()])
        assert cells.column(grouping).to_pylist() == list(metadata[grouping])
    assert plan.embedding is not None and plan.embedding.name == "umap"
    np.testing.assert_array_equal(cells.column("umap_1").to_numpy(), metadata["umap_1"].to_numpy())


def test_counts_are_staged_as_float32_and_lognormalised_values_as_float64(inprocess_moto: Settings, tmp_path: Path) -> None:
    counts = SynthData(SynthSpec(n_cells=60, n_features=9, density=0.3, n_groups=3, seed=2, values="counts"))
    _, dense, _, keys = _ingest(inprocess_moto, "c.zip", write_synth_upload(counts, tmp_path / "c.zip", "csv").read_bytes())
    s3 = boto3.client("s3", **inprocess_moto.aws_client_kwargs())
    assert pq.read_schema(io.BytesIO(get_bytes(s3, inprocess_moto.staging_bucket, keys[0]))).field("value").type == pa.float32()
    assert np.array_equal(dense, np.round(dense)) and dense.max() >= 2
    _, _, _, keys = _ingest(inprocess_moto, "l.zip", write_synth_upload(SynthData(SPEC), tmp_path / "l.zip", "csv").read_bytes())
    assert pq.read_schema(io.BytesIO(get_bytes(s3, inprocess_moto.staging_bucket, keys[0]))).field("value").type == pa.float64()


def test_csv_values_parse_exactly_as_pandas_does(inprocess_moto: Settings) -> None:
    # The fast path and its fallbacks: long mantissas, exponents, signs, tiny and huge numbers, quotes.
    texts = ["0", "-0.0", "1e22", "1e23", "0.1", "-2.5E-3", "123456789012345678901", "9007199254740993", "4.9e-324", "1.7976931348623157e308", "+5", ".5", "5.", '"7.25"', "0.30000000000000004"]
    rows = [f"c{i}," + ",".join(texts[(i + j) % len(texts)] for j in range(6)) for i in range(len(texts))]
    body = "cell_id,a,b,c,d,e,f\n" + "\n".join(rows) + "\n"
    plan, dense, _, _ = _ingest(inprocess_moto, "v.zip", _zip({"matrix.csv": body}))
    expected = pd.read_csv(io.StringIO(body), index_col=0, float_precision="round_trip").to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(dense, expected)


def test_metadata_as_it_comes_integer_groupings_and_blank_numbers(inprocess_moto: Settings) -> None:
    matrix = "cell_id,A\n" + "".join(f"c{i},{i % 3}\n" for i in range(12))
    leiden = [10, 2, 2, 0, 10, 1, 2, 0, 1, 10, 2, 2]
    scores = ["0.5", "", "1.25", "2", "", "3", "4", "5", "6", "7", "8", "9"]
    metadata = "cell_id,leiden,score,batch\n" + "".join(f"c{i},{leiden[i]},{scores[i]},{'b' + str(i % 2)}\n" for i in range(12))
    # Named in the manifest: the integer column is a grouping, labels ordered numerically.
    plan, _, cells, _ = _ingest(inprocess_moto, "m.zip", _zip({"matrix.csv": matrix, "metadata.csv": metadata, "manifest.json": '{"groupings": ["leiden"]}'}))
    (grouping,) = plan.groupings
    assert (grouping.name, grouping.groups, grouping.counts) == ("leiden", ["0", "1", "2", "10"], [2, 2, 5, 3])
    assert cells.column("leiden").to_pylist() == [str(v) for v in leiden]
    # A blank numeric value is a null, not a failure.
    assert plan.numeric_columns == ["score"]
    assert cells.column("score").to_pylist() == [None if s == "" else float(s) for s in scores]
    # Without a manifest: text columns and integer columns of at most 200 values are groupings, and
    # those integer columns numeric columns as well.
    plan, _, _, _ = _ingest(inprocess_moto, "n.zip", _zip({"matrix.csv": matrix, "metadata.csv": metadata}))
    assert [(g.name, g.groups) for g in plan.groupings] == [("leiden", ["0", "1", "2", "10"]), ("batch", ["b0", "b1"])]
    assert plan.numeric_columns == ["leiden", "score"]


def test_parts_are_written_a_generation_at_a_time_and_one_schema_for_the_version(inprocess_moto: Settings) -> None:
    s3 = boto3.client("s3", **inprocess_moto.aws_client_kwargs())
    dataset_id, version_id = "gens", uuid.uuid4().hex
    rng = np.random.default_rng(3)
    n_cells, n_features, width = 50, 10, 4  # chunks of features [0,4) [4,8) [8,10)
    dense = np.zeros((n_cells, n_features))
    with ChunkParts(s3, inprocess_moto, dataset_id, version_id, width, spill_bytes=16 * 40, generation_nnz=100) as parts:
        for block in range(5):
            rows = slice(block * 10, block * 10 + 10)
            values = np.where(rng.random((10, n_features)) < 0.6, rng.integers(1, 9, (10, n_features)).astype(np.float64), 0.0)
            if block == 4:
                values[values != 0] += 0.1  # the last generation holds values that are not float32
            dense[rows] = values
            cells, features = np.nonzero(values)
            parts.add(features, cells + block * 10, values[cells, features])
        n_parts = parts.finish(3)
        generations = parts.generation + 1
    assert generations >= 3
    keys = sorted(k for k in list_keys(s3, inprocess_moto.staging_bucket, version_prefix(dataset_id, version_id)))
    assert len(keys) == n_parts and n_parts <= 3 * generations
    staged = np.zeros_like(dense)
    for key in keys:
        table = pq.read_table(io.BytesIO(get_bytes(s3, inprocess_moto.staging_bucket, key)))
        assert table.schema.field("value").type == pa.float64(), key  # rewritten from float32 where needed
        chunk = int(key.split("/chunks/")[1].split("/")[0])
        staged[table.column("cell").to_numpy(), chunk * width + table.column("feature").to_numpy()] = table.column("value").to_numpy()
    np.testing.assert_array_equal(staged, dense)
