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
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_upload_is_rejected_with_a_reason_and_writes_nothing_outside_staging(inprocess_moto: Settings, case: Case) -> None:
    settings = inprocess_moto.model_copy(update=case.settings or {})
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    key = f"uploads/bad-{case.name}/{uuid.uuid4().hex}.zip"
    s3.put_object(Bucket=settings.uploads_bucket, Key=key, Body=case.body())
    before = set(list_keys(s3, settings.staging_bucket, ""))
    dataset_id, version_id = f"bad-{case.name}", uuid.uuid4().hex
    with pytest.raises(BadUpload) as info:
        ingest_upload(S3RangeReader(s3, settings.uploads_bucket, key), key, s3, settings, dataset_id, version_id)
    assert case.reason in str(info.value), str(info.value)
    added = set(list_keys(s3, settings.staging_bucket, "")) - before
    assert all(k.startswith(version_prefix(dataset_id, version_id)) for k in added), added
    assert plan_key(dataset_id, version_id) not in added


def test_corpus_has_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


def test_good_upload_in_a_top_folder_with_macos_debris_is_accepted(inprocess_moto: Settings) -> None:
    s3 = boto3.client("s3", **inprocess_moto.aws_client_kwargs())
    key = f"uploads/good/{uuid.uuid4().hex}.zip"
    body = _zip({"data/matrix.csv": GOOD_MATRIX, "data/metadata.csv": GOOD_META, "__MACOSX/data/._matrix.csv": "junk"})
    s3.put_object(Bucket=inprocess_moto.uploads_bucket, Key=key, Body=body)
    plan = ingest_upload(S3RangeReader(s3, inprocess_moto.uploads_bucket, key), key, s3, inprocess_moto, "good", uuid.uuid4().hex)
    assert plan.n_cells == 3 and plan.features == ["A", "B", "C"]
    assert [(g.name, g.groups, g.counts) for g in plan.groupings] == [("type", ["x", "y"], [2, 1])]
