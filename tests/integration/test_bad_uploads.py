"""The bad-upload corpus: every broken ZIP is rejected with a reason that names the problem, before any
plan exists, and nothing is written outside the version's own staging prefix."""

from __future__ import annotations

import io
import stat
import struct
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from services.ingest.split import ingest_upload
from shared.adapters.s3 import S3RangeReader, list_keys
from shared.config import Settings
from shared.errors import BadUpload
from shared.staging import plan_key, version_prefix

GOOD_MATRIX = "cell_id,A,B,C\nc1,0,1.5,2\nc2,3,0,0\nc3,1,1,1\n"
GOOD_META = "cell_id,type\nc1,x\nc2,y\nc3,x\n"


def _zip(members: dict[str, str | bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("matrix.csv", GOOD_MATRIX)
        link = zipfile.ZipInfo("metadata.csv")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _encrypted_zip() -> bytes:
    """A ZIP whose member carries the 'encrypted' flag bit (zipfile cannot write real encryption)."""
    data = bytearray(_zip({"matrix.csv": GOOD_MATRIX}, compression=zipfile.ZIP_STORED))
    # Set bit 0 of the general purpose flags in the local header (offset 6) and the central directory (offset 8).
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    for offset in (local + 6, central + 8):
        (flags,) = struct.unpack_from("<H", data, offset)
        struct.pack_into("<H", data, offset, flags | 0x1)
    return bytes(data)


def _non_utf8_name_zip() -> bytes:
    data = bytearray(_zip({"matrix.csv": GOOD_MATRIX, "metaXdata.csv": GOOD_META}, compression=zipfile.ZIP_STORED))
    # Same length, invalid UTF-8, no UTF-8 flag: as old archivers write Latin-1 names.
    return bytes(data.replace(b"metaXdata.csv", b"meta\xffdata.csv"))


def _declared_size_zip() -> bytes:
    return _zip({"matrix.csv": GOOD_MATRIX + "".join(f"c{i},1,1,1\n" for i in range(4, 40))})


def _duplicate_member_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("matrix.csv", GOOD_MATRIX)
        archive.writestr("matrix.csv", "cell_id,A\nc1,1\n")
    return buf.getvalue()


def _bomb_zip() -> bytes:
    return _zip({"matrix.csv": "cell_id,A\n" + "c,0\n" * 2_000_000})


def _h5(build: Callable[[object], None]) -> bytes:
    """An HDF5 file's bytes, built by `build(h5py.File)`."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        build(f)
    return buf.getvalue()


def _h5ad(with_x: bool = True) -> bytes:
    def build(f: object) -> None:
        obs = f.create_group("obs")  # type: ignore[attr-defined]
        obs.attrs["_index"] = "_index"
        obs.create_dataset("_index", data=[b"c1", b"c2"])
        var = f.create_group("var")  # type: ignore[attr-defined]
        var.attrs["_index"] = "_index"
        var.create_dataset("_index", data=[b"A", b"B"])
        if with_x:
            f.create_dataset("X", data=[[1.0, 0.0], [0.0, 2.0]])  # type: ignore[attr-defined]

    return _h5(build)


def _tenx_h5(n_barcodes: int, shape_barcodes: int) -> bytes:
    def build(f: object) -> None:
        m = f.create_group("matrix")  # type: ignore[attr-defined]
        m.create_dataset("barcodes", data=[f"AAAC-{i}".encode() for i in range(n_barcodes)])
        m.create_dataset("shape", data=[2, shape_barcodes])
        m.create_dataset("data", data=[1, 2])
        m.create_dataset("indices", data=[0, 1])
        m.create_dataset("indptr", data=[0, 1] + [2] * (shape_barcodes))
        features = m.create_group("features")
        features.create_dataset("id", data=[b"G1", b"G2"])
        features.create_dataset("name", data=[b"A", b"B"])
        features.create_dataset("feature_type", data=[b"Gene Expression"] * 2)

    return _h5(build)


def _mtx_zip(size_line: str, entries: str, barcodes: str = "AAAC-1\nAAAC-2\n") -> bytes:
    return _zip(
        {
            "matrix.mtx": "%%MatrixMarket matrix coordinate integer general\n%\n" + size_line + "\n" + entries,
            "features.tsv": "G1\tA\tGene Expression\nG2\tB\tGene Expression\n",
            "barcodes.tsv": barcodes,
        }
    )


@dataclass
class Case:
    name: str
    body: Callable[[], bytes]
    reason: str  # a substring the error must contain
    settings: dict[str, object] | None = None


CASES = [
    Case("zip-slip", lambda: _zip({"../evil/matrix.csv": GOOD_MATRIX}), "escapes the archive"),
    Case("absolute-path", lambda: _zip({"/etc/matrix.csv": GOOD_MATRIX}), "absolute path"),
    Case("symlink-member", _symlink_zip, "symbolic link"),
    Case("bomb-by-ratio", _bomb_zip, "zip bomb"),
    Case("bomb-by-declared-size", _declared_size_zip, "declares", {"max_member_bytes": 256}),
    Case("encrypted", _encrypted_zip, "encrypted"),
    Case("not-a-zip", lambda: b"cell_id,A\nc1,1\n", "not a ZIP"),
    Case("empty-file", lambda: b"", "empty"),
    Case("missing-matrix", lambda: _zip({"metadata.csv": GOOD_META}), "no matrix.csv"),
    Case("header-only", lambda: _zip({"matrix.csv": "cell_id,A,B\n"}), "no rows"),
    Case("no-feature-columns", lambda: _zip({"matrix.csv": "cell_id\nc1\n"}), "no feature columns"),
    Case("ragged-row", lambda: _zip({"matrix.csv": "cell_id,A,B\nc1,1,2\nc2,3\n"}), "columns"),
    Case("non-numeric", lambda: _zip({"matrix.csv": "cell_id,A,B\nc1,1,2\nc2,3,abc\n"}), "abc"),
    Case("empty-value", lambda: _zip({"matrix.csv": "cell_id,A,B\nc1,1,2\nc2,,4\n"}), "empty value at data row 2 (cell 'c2'), feature 'A'"),
    Case("nan-value", lambda: _zip({"matrix.csv": "cell_id,A,B\nc1,1,NaN\n"}), "non-finite value nan at data row 1"),
    Case("inf-value", lambda: _zip({"matrix.csv": "cell_id,A,B\nc1,1,2\nc2,inf,4\n"}), "non-finite value inf"),
    Case("duplicate-features", lambda: _zip({"matrix.csv": "cell_id,A,B,A\nc1,1,2,3\n"}), "duplicate column 'A'"),
    Case("duplicate-cell-ids", lambda: _zip({"matrix.csv": "cell_id,A\nc1,1\nc2,2\nc1,3\n"}), "duplicate cell id 'c1'"),
    Case("metadata-missing-cell", lambda: _zip({"matrix.csv": GOOD_MATRIX, "metadata.csv": "cell_id,type\nc1,x\nc2,y\n"}), "no row for cell 'c3'"),
    Case("metadata-extra-cell", lambda: _zip({"matrix.csv": GOOD_MATRIX, "metadata.csv": GOOD_META + "c4,z\n"}), "not in matrix.csv, e.g. 'c4'"),
    Case("non-utf8-member-name", _non_utf8_name_zip, "not valid UTF-8"),
    Case("oversized-header", lambda: _zip({"matrix.csv": "cell_id," + ",".join(f"G{i}" for i in range(500)) + "\nc1," + ",".join("1" * 500) + "\n"}), "header line is longer", {"max_header_bytes": 1000}),
    Case("non-utf8-header", lambda: _zip({"matrix.csv": b"cell_id,A\xff\nc1,1\n"}), "not valid UTF-8"),
    Case("control-char-feature", lambda: _zip({"matrix.csv": "cell_id,A\tB\nc1,1\n"}), "control characters"),
    Case("empty-feature-name", lambda: _zip({"matrix.csv": "cell_id,A,\nc1,1,2\n"}), "empty name"),
    Case("manifest-not-json", lambda: _zip({"matrix.csv": GOOD_MATRIX, "manifest.json": "{groupings: [}"}), "manifest.json is not valid JSON"),
    Case("manifest-unknown-grouping", lambda: _zip({"matrix.csv": GOOD_MATRIX, "metadata.csv": GOOD_META, "manifest.json": '{"groupings": ["donor"]}'}), "grouping 'donor' is not a column of metadata.csv"),
    Case("manifest-unknown-embedding", lambda: _zip({"matrix.csv": GOOD_MATRIX, "metadata.csv": GOOD_META, "manifest.json": '{"embedding": "umap"}'}), "embedding 'umap'"),
    Case("two-matrices", _duplicate_member_zip, "two matrix.csv members"),
    Case("truncated-hdf5", lambda: _zip({"data.h5ad": _h5ad()[:800]}), "not a readable HDF5 file"),
    Case("truncated-hdf5-object", lambda: _h5ad()[:800], "not a readable HDF5 file", {"upload_name": "x.h5ad"}),
    Case("h5ad-without-x", lambda: _zip({"data.h5ad": _h5ad(with_x=False)}), "h5ad has no X"),
    Case("h5ad-beside-matrix-csv", lambda: _zip({"data.h5ad": _h5ad(), "matrix.csv": GOOD_MATRIX}), "more than one matrix"),
    Case("10x-h5-mismatched-barcodes", lambda: _zip({"filtered_feature_bc_matrix.h5": _tenx_h5(3, 2)}), "mismatched barcodes"),
    Case("mtx-mismatched-barcodes", lambda: _mtx_zip("2 3 2", "1 1 1\n2 2 5\n"), "mismatched barcodes"),
    Case("mtx-header-lies-about-entries", lambda: _mtx_zip("2 2 5", "1 1 1\n2 2 5\n"), "declares 5 entries but the file holds 2"),
    Case("mtx-entry-outside-size", lambda: _mtx_zip("2 2 2", "1 1 1\n3 2 5\n"), "outside the declared 2 x 2"),
    Case("mtx-without-barcodes", lambda: _zip({"matrix.mtx": "%%MatrixMarket matrix coordinate integer general\n2 2 0\n", "features.tsv": "G1\tA\n"}), "no barcodes.tsv"),
    Case("gz-member-not-gzip", lambda: _zip({"matrix.csv.gz": GOOD_MATRIX}), "matrix.csv.gz is not valid gzip data"),
    Case("transposed-ragged", lambda: _zip({"matrix.csv": "gene,c1,c2\nA,1,2\nB,3\n", "manifest.json": '{"orientation": "features_as_rows"}'}), "feature row 2"),
    Case("manifest-bad-orientation", lambda: _zip({"matrix.csv": GOOD_MATRIX, "manifest.json": '{"orientation": "sideways"}'}), "'orientation' must be one of"),
    Case("h5ad-symbols-not-a-var-column", lambda: _zip({"data.h5ad": _h5ad(), "manifest.json": '{"feature_symbols": "gene_symbols"}'}), "feature_symbols 'gene_symbols' is not a var column"),
    Case("symbols-without-h5ad", lambda: _zip({"matrix.csv": GOOD_MATRIX, "manifest.json": '{"feature_symbols": "gene_symbols"}'}), "'feature_symbols' names a var column of an .h5ad"),
    Case("metadata-non-finite-number", lambda: _zip({"matrix.csv": GOOD_MATRIX, "metadata.csv": "cell_id,score\nc1,1\nc2,inf\nc3,2\n"}), "non-finite value (inf) at cell 'c2'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_upload_is_rejected_with_a_reason_and_writes_nothing_outside_staging(inprocess_moto: Settings, case: Case) -> None:
    overrides = dict(case.settings or {})
    name = str(overrides.pop("upload_name", f"{uuid.uuid4().hex}.zip"))
    settings = inprocess_moto.model_copy(update=overrides)
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    key = f"uploads/bad-{case.name}/{name}"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=case.body())
    before = set(list_keys(s3, settings.staging_bucket, ""))
    dataset_id, version_id = f"bad-{case.name}", uuid.uuid4().hex
    with pytest.raises(BadUpload) as info:
        ingest_upload(S3RangeReader(s3, settings.uploads_bucket, key), key, s3, settings, dataset_id, version_id)
    assert case.reason in str(info.value), str(info.value)
    added = set(list_keys(s3, settings.staging_bucket, "")) - before
    assert all(k.startswith(version_prefix(dataset_id, version_id)) for k in added), added
    assert plan_key(dataset_id, version_id) not in added


def test_readme_reports_the_corpus_as_it_is() -> None:
    """The README's reliability table gives the corpus' size: it must be this file's."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| bad uploads (the corpus) |")]
    assert row.split("|")[2].strip() == str(len(CASES)), row
    assert len({c.name for c in CASES}) == len(CASES), "two cases share a name"


def test_good_upload_in_a_top_folder_with_macos_debris_is_accepted(inprocess_moto: Settings) -> None:
    s3 = boto3.client("s3", **inprocess_moto.aws_client_kwargs())
    key = f"uploads/good/{uuid.uuid4().hex}.zip"
    body = _zip({"data/matrix.csv": GOOD_MATRIX, "data/metadata.csv": GOOD_META, "__MACOSX/data/._matrix.csv": "junk"})
    s3.put_object(Bucket=inprocess_moto.uploads_bucket, Key=key, Body=body)
    plan = ingest_upload(S3RangeReader(s3, inprocess_moto.uploads_bucket, key), key, s3, inprocess_moto, "good", uuid.uuid4().hex)
    assert plan.n_cells == 3 and plan.features == ["A", "B", "C"]
    assert [(g.name, g.groups, g.counts) for g in plan.groupings] == [("type", ["x", "y"], [2, 1])]
