"""Validate an upload and split its matrix into column chunks in staging.

An upload is a ZIP (read in place on S3 with ranged reads) holding a matrix CSV (`matrix.csv` or
`matrix.csv.gz`), an `.h5ad`, a 10x `.h5` or a 10x MatrixMarket folder, with an optional
`metadata.csv` and `manifest.json`; or an `.h5ad` or 10x `.h5` object by itself. The matrix is
read once by its format's reader (`csv_matrix`, `hdf5`, `mtx`) into per-chunk Parquet parts
(`parts`); the metadata, whatever its source, becomes one Arrow table that `plan_metadata` turns
into groupings, an embedding and numeric columns.

Every problem with the upload raises `BadUpload` with a message that names the member, row, column
or value at fault.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from services.ingest.csv_matrix import split_csv_matrix
from services.ingest.matrix import CONTROL, MatrixSummary, Progress, check_ids, check_names, chunk_bounds, first_null
from services.ingest.parts import ChunkParts
from services.ingest.readahead import ReadAhead
from shared.adapters.s3 import S3Client, S3RangeReader, put_bytes, put_json
from shared.config import Settings
from shared.errors import BadUpload
from shared.staging import EmbeddingPlan, GroupingPlan, VersionPlan, cells_key, plan_key

__all__ = ["chunk_bounds", "ingest_upload", "open_s3_upload", "open_upload", "read_manifest", "upload_kind"]

MATRIX, METADATA, MANIFEST = "matrix.csv", "metadata.csv", "manifest.json"
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_IGNORED = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$)")
MAX_GROUPS = 10_000
# Without a manifest, an integer column with at most this many distinct values is also a grouping.
MAX_INTEGER_GROUPS = 200
MISSING_GROUP = "(missing)"
ORIENTATIONS = ("cells_as_rows", "features_as_rows")

# Members an upload ZIP may hold, by role; matched on the lower-cased file name.
ROLES: dict[str, tuple[str, ...]] = {
    "matrix.csv": ("matrix.csv", "matrix.csv.gz"),
    "metadata.csv": ("metadata.csv", "metadata.csv.gz"),
    "manifest.json": ("manifest.json",),
    "matrix.mtx": ("matrix.mtx", "matrix.mtx.gz"),
    "features.tsv": ("features.tsv", "features.tsv.gz", "genes.tsv", "genes.tsv.gz"),
    "barcodes.tsv": ("barcodes.tsv", "barcodes.tsv.gz"),
}
UPLOAD_SUFFIXES = (".zip", ".h5ad", ".h5")
# Local work directory of one upload: `<prefix><pid>-<random>` (see remove_stale_workdirs).
WORKDIR_PREFIX = "wideviews-upload-"


def upload_kind(key: str) -> str | None:
    """The upload's suffix (lower case: `.zip`, `.h5ad`, `.h5`) or None if the key is not an upload."""
    lowered = key.lower()
    return next((s for s in UPLOAD_SUFFIXES if lowered.endswith(s)), None)


@dataclass
class UploadArchive:
    """The validated members of an upload, by role (`matrix.csv`, `h5ad`, `10x.h5`, `matrix.mtx`, ...)."""

    zip: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]
    ignored: list[str] = field(default_factory=list)

    @property
    def matrix_format(self) -> str:
        """The kind of matrix the upload holds: csv, h5ad, 10x-h5 or mtx."""
        for role, name in (("matrix.csv", "csv"), ("h5ad", "h5ad"), ("10x.h5", "10x-h5"), ("matrix.mtx", "mtx")):
            if role in self.members:
                return name
        raise AssertionError("open_upload guarantees a matrix member")


def _check_member_name(info: zipfile.ZipInfo) -> str:
    raw = info.orig_filename
    if not (info.flag_bits & 0x800):
        # Not flagged UTF-8: zipfile decoded the bytes as cp437; they must be plain ASCII or valid UTF-8.
        try:
            raw = raw.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise BadUpload(f"member name {info.orig_filename!r} is not valid UTF-8") from None
    if "\x00" in raw or CONTROL.search(raw):
        raise BadUpload(f"member name {raw!r} contains control characters")
    if "\\" in raw:
        raise BadUpload(f"member name {raw!r} contains a backslash")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise BadUpload(f"member name {raw!r} is an absolute path")
    if ".." in PurePosixPath(raw).parts:
        raise BadUpload(f"member name {raw!r} escapes the archive (..)")
    return raw


def _role_of(name: str) -> str | None:
    lowered = PurePosixPath(name).name.lower()
    for role, names in ROLES.items():
        if lowered in names:
            return role
    if lowered.endswith(".h5ad"):
        return "h5ad"
    if lowered.endswith(".h5"):
        return "10x.h5"
    return None


def open_upload(reader: io.RawIOBase, settings: Settings) -> UploadArchive:
    """Open and validate the ZIP before extracting anything: names, kinds, sizes, ratios, encryption."""
    size = getattr(reader, "size", None)
    if size == 0:
        raise BadUpload("upload is empty (0 bytes), not a ZIP archive")
    if size is not None and size > settings.max_upload_bytes:
        raise BadUpload(f"upload is {size} bytes, over the limit of {settings.max_upload_bytes}")
    try:
        archive = zipfile.ZipFile(io.BufferedReader(reader, buffer_size=1 << 20))  # type: ignore[arg-type]
    except zipfile.BadZipFile as exc:
        raise BadUpload(f"upload is not a ZIP archive ({exc})") from exc
    members: dict[str, zipfile.ZipInfo] = {}
    ignored: list[str] = []
    total = 0
    names = []
    for info in archive.infolist():
        name = _check_member_name(info)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BadUpload(f"member {name!r} is a symbolic link")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise BadUpload(f"member {name!r} is encrypted")
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            raise BadUpload(f"member {name!r} uses unsupported compression method {info.compress_type}")
        if info.file_size > settings.max_member_bytes:
            raise BadUpload(f"member {name!r} declares {info.file_size} bytes, over the limit of {settings.max_member_bytes}")
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > (1 << 20) and ratio > settings.max_compression_ratio:
            raise BadUpload(
                f"member {name!r} expands {ratio:.0f}x ({info.compress_size} -> {info.file_size} bytes), "
                f"over the limit of {settings.max_compression_ratio:.0f}x (zip bomb?)"
            )
        total += info.file_size
        if _IGNORED.search(name):
            ignored.append(name)
            continue
        names.append((name, info))
    if total > settings.max_upload_bytes:
        raise BadUpload(f"members expand to {total} bytes, over the limit of {settings.max_upload_bytes}")
    # Members may sit at the root or in one top folder (as archivers of a folder produce); a 10x
    # MatrixMarket folder may also sit in a folder of its own beside metadata.csv.
    tops = {PurePosixPath(n).parts[0] for n, _ in names if len(PurePosixPath(n).parts) > 1}
    strip = tops.pop() + "/" if len(tops) == 1 and all("/" in n for n, _ in names) else ""
    for name, info in names:
        short = name[len(strip) :] if strip and name.startswith(strip) else name
        role = _role_of(short)
        depth = len(PurePosixPath(short).parts)
        if role is None or (depth > 1 and role not in ("matrix.mtx", "features.tsv", "barcodes.tsv")) or depth > 2:
            ignored.append(name)
            continue
        if role in members:
            shown = role if role not in ("h5ad", "10x.h5") else f".{role.split('.')[-1]} file"
            raise BadUpload(f"upload has two {shown} members ({members[role].filename!r} and {name!r})")
        members[role] = info
    matrices = [r for r in ("matrix.csv", "h5ad", "10x.h5", "matrix.mtx") if r in members]
    if not matrices:
        found = ", ".join(sorted(n for n, _ in names)) or "nothing"
        raise BadUpload(
            f"upload has no {MATRIX} (nor matrix.csv.gz, an .h5ad, a 10x .h5 or a 10x matrix.mtx folder; found: {found})"
        )
    if len(matrices) > 1:
        raise BadUpload(f"upload has more than one matrix: {', '.join(members[r].filename for r in matrices)}")
    if "matrix.mtx" in members:
        for needed in ("features.tsv", "barcodes.tsv"):
            if needed not in members:
                raise BadUpload(f"upload has {members['matrix.mtx'].filename} but no {needed} (or .tsv.gz) beside it")
    return UploadArchive(archive, members, ignored)


def read_manifest(upload: UploadArchive | None) -> dict[str, Any]:
    """The optional manifest.json, validated in shape."""
    info = upload.members.get(MANIFEST) if upload is not None else None
    if info is None:
        return {}
    if info.file_size > 1 << 20:
        raise BadUpload(f"{MANIFEST} is larger than 1 MiB")
    try:
        document = json.loads(upload.zip.read(info))  # type: ignore[union-attr]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadUpload(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadUpload(f"{MANIFEST} must be a JSON object")
    groupings = document.get("groupings")
    if groupings is not None and (not isinstance(groupings, list) or not all(isinstance(g, str) for g in groupings)):
        raise BadUpload(f"{MANIFEST}: 'groupings' must be a list of column names")
    crossed = document.get("crossed")
    if crossed is not None and (
        not isinstance(crossed, list)
        or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p) and p[0] != p[1] for p in crossed)
    ):
        raise BadUpload(f"{MANIFEST}: 'crossed' must be a list of pairs of two different grouping names, e.g. [[\"cell_type\", \"donor\"]]")
    for key in ("embedding", "title", "description", "orientation", "matrix"):
        if key in document and not isinstance(document[key], str):
            raise BadUpload(f"{MANIFEST}: {key!r} must be a string")
    if document.get("orientation", ORIENTATIONS[0]) not in ORIENTATIONS:
        raise BadUpload(f"{MANIFEST}: 'orientation' must be one of {list(ORIENTATIONS)}, not {document['orientation']!r}")
    symbols = document.get("feature_symbols")
    if "feature_symbols" in document and symbols is not None and (not isinstance(symbols, str) or not symbols):
        raise BadUpload(f"{MANIFEST}: 'feature_symbols' must name a var column of the .h5ad (a non-empty string), or be null for none")
    if document.get("matrix", "X") not in ("X", "raw.X"):
        raise BadUpload(f"{MANIFEST}: 'matrix' (of an .h5ad) must be 'X' or 'raw.X', not {document['matrix']!r}")
    return document


def open_member(upload: UploadArchive, role: str) -> Any:
    """A member's (decompressed) byte stream; `.gz` members are gunzipped on the fly."""
    info = upload.members[role]
    stream = upload.zip.open(info)
    if info.filename.lower().endswith(".gz"):
        return _CheckedGzip(stream, info.filename)
    return stream


class _CheckedGzip(io.RawIOBase):
    """gzip.GzipFile whose format errors become `BadUpload` naming the member."""

    def __init__(self, raw: Any, name: str) -> None:
        super().__init__()
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self.name = name

    def readable(self) -> bool:
        return True

    def _guard(self, call: Callable[[], bytes]) -> bytes:
        try:
            return call()
        except (gzip.BadGzipFile, OSError, EOFError) as exc:
            raise BadUpload(f"{self.name} is not valid gzip data ({exc or type(exc).__name__})") from exc

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        return self._guard(lambda: self._gz.read(n))

    def readline(self, limit: int = -1) -> bytes:  # type: ignore[override]
        return self._guard(lambda: self._gz.readline(limit))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _new_parts(s3: S3Client, settings: Settings, dataset_id: str, version_id: str, workdir: str) -> Callable[[int], ChunkParts]:
    return lambda width: ChunkParts(s3, settings, dataset_id, version_id, width, workdir=workdir)


def split_matrix(
    upload: UploadArchive,
    s3: S3Client,
    settings: Settings,
    dataset_id: str,
    version_id: str,
    *,
    manifest: dict[str, Any] | None = None,
    workdir: str | None = None,
    progress: Progress | None = None,
) -> tuple[MatrixSummary, pa.Table | None]:
    """Read the upload's matrix once into staged chunks; also the cell metadata its format carries
    (an h5ad's `obs` and `obsm`), else None."""
    manifest = manifest or {}
    with tempfile.TemporaryDirectory(prefix="wideviews-ingest-", dir=workdir) as tmp:
        new_parts = _new_parts(s3, settings, dataset_id, version_id, tmp)
        kind = upload.matrix_format
        if kind == "csv":
            info = upload.members["matrix.csv"]
            size = 0 if info.filename.lower().endswith(".gz") else info.file_size
            summary = split_csv_matrix(
                open_member(upload, "matrix.csv"),
                PurePosixPath(info.filename).name,
                size,
                settings,
                new_parts,
                features_as_rows=manifest.get("orientation") == "features_as_rows",
                progress=progress,
            )
            return summary, None
        if kind == "mtx":
            from services.ingest.mtx import split_mtx

            return split_mtx(upload, open_member, settings, new_parts, progress=progress), None
        # HDF5 needs random access: the member is copied to local disk first.
        role = "h5ad" if kind == "h5ad" else "10x.h5"
        local = Path(tmp) / PurePosixPath(upload.members[role].filename).name
        with upload.zip.open(upload.members[role]) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        return _split_hdf5(kind, local, settings, new_parts, manifest, progress)


def _split_hdf5(kind: str, local: Path, settings: Settings, new_parts: Callable[[int], ChunkParts], manifest: dict[str, Any], progress: Progress | None) -> tuple[MatrixSummary, pa.Table | None]:
    from services.ingest.hdf5 import split_10x_h5, split_h5ad

    if kind == "h5ad":
        symbols = {"symbols": manifest["feature_symbols"]} if "feature_symbols" in manifest else {}
        return split_h5ad(local, settings, new_parts, matrix=manifest.get("matrix", "X"), progress=progress, **symbols)
    return split_10x_h5(local, settings, new_parts, progress=progress), None


def _slug(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:48] or "grouping"


def read_metadata_csv(upload: UploadArchive | None) -> tuple[pa.Table | None, str]:
    """metadata.csv (or .csv.gz) as read, with its member name; (None, "") without one."""
    if upload is None or "metadata.csv" not in upload.members:
        return None, ""
    member = PurePosixPath(upload.members["metadata.csv"].filename).name
    try:
        raw = pacsv.read_csv(
            open_member(upload, "metadata.csv"),
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            # Blank numeric values are nulls; blank text values are the group (missing).
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise BadUpload(f"{member}: {str(exc).strip()}") from exc
    except UnicodeDecodeError as exc:
        raise BadUpload(f"{member}: not valid UTF-8 ({exc.reason})") from exc
    if raw.num_columns < 1:
        raise BadUpload(f"{member} has no columns")
    check_names(raw.column_names, "column", member)
    return raw, member


def align_metadata(raw: pa.Table, cell_ids: pa.Array, member: str, matrix_member: str) -> pa.Table:
    """Rows of `raw` (first column = cell id) in matrix order; every cell exactly once."""
    n_cells = len(cell_ids)
    id_col = pc.cast(raw.column(0), pa.string()).combine_chunks()
    if id_col.null_count:
        raise BadUpload(f"{member}: empty cell id at data row {first_null(id_col) + 1}")
    check_ids(id_col, member)
    position = pc.index_in(cell_ids, value_set=id_col)
    if position.null_count:
        missing = cell_ids[first_null(position)].as_py()
        raise BadUpload(f"{member} has no row for cell {missing!r} ({position.null_count} {matrix_member} cells missing)")
    if len(id_col) != n_cells:
        extra = pc.filter(id_col, pc.invert(pc.is_in(id_col, value_set=cell_ids)))
        raise BadUpload(f"{member} has {len(id_col) - n_cells} cells not in {matrix_member}, e.g. {extra[0].as_py()!r}")
    return raw.take(position)


def _group_labels(col: pa.Array) -> tuple[pa.Array, list[str]]:
    """A column as group labels and the groups in display order: numbers ordered numerically
    (integers as "0", "1", …), text alphabetically; nulls and blanks are the group (missing)."""
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
        distinct = pc.unique(col.drop_null()).sort()
        order = pc.cast(distinct, pa.string()).to_pylist() + ([MISSING_GROUP] if col.null_count else [])
        return pc.fill_null(pc.cast(col, pa.string()), MISSING_GROUP), order
    labels = pc.fill_null(pc.cast(col, pa.string()), MISSING_GROUP)
    labels = pc.if_else(pc.equal(labels, ""), MISSING_GROUP, labels)
    groups = pc.unique(labels).to_pylist()
    named = [g for g in groups if g != MISSING_GROUP]
    if named and all(re.fullmatch(r"-?\d{1,18}", g) for g in named):
        # Cluster numbers stored as text (an h5ad's leiden categories): numeric order, 2 before 10.
        return labels, sorted(named, key=int) + [g for g in groups if g == MISSING_GROUP]
    return labels, sorted(groups)


def plan_metadata(
    aligned: pa.Table | None, cell_ids: pa.Array, manifest: dict[str, Any], member: str
) -> tuple[pa.Table, list[GroupingPlan], EmbeddingPlan | None, list[str]]:
    """Cell metadata (aligned to matrix order, first column the id) -> the cells table, its
    groupings (with group counts), embedding and numeric columns.

    A column named in the manifest's groupings is a grouping whatever its type (integers become
    labels "0", "1", … ordered numerically). Without a manifest, text columns with at most 10,000
    groups are groupings, and integer columns with at most 200 distinct values (cluster numbers)
    are groupings and numeric columns both: the staged column holds the labels, which compute reads
    back as numbers. Numeric columns keep their blanks as nulls (served as null).
    """
    n_cells = len(cell_ids)
    if aligned is None:
        if manifest.get("groupings"):
            raise BadUpload(f"{MANIFEST} names groupings but the upload has no {METADATA}")
        table = pa.table({"cell_id": cell_ids, "all": pa.array(["all"] * n_cells)})
        return table, [GroupingPlan(name="all", view="stats_all", groups=["all"], counts=[n_cells])], None, []
    names = aligned.column_names[1:]
    wanted = manifest.get("groupings")
    if wanted is not None:
        for name in wanted:
            if name not in names:
                raise BadUpload(f"{MANIFEST} grouping {name!r} is not a column of {member} (columns: {names})")
    columns: dict[str, pa.Array] = {"cell_id": cell_ids}
    numeric_cols: list[str] = []
    candidates: list[str] = []  # groupings when the manifest names none
    order_of: dict[str, list[str]] = {}
    for name in names:
        col = aligned.column(name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        is_number = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        as_grouping = name in wanted if wanted is not None else (
            not is_number or (pa.types.is_integer(col.type) and len(pc.unique(col.drop_null())) <= MAX_INTEGER_GROUPS)
        )
        if is_number and not as_grouping:
            values = pc.cast(col, pa.float64())
            present = ~pc.is_null(values).to_numpy(zero_copy_only=False)
            finite = np.isfinite(values.to_numpy(zero_copy_only=False))
            if not finite[present].all():
                row = int(np.flatnonzero(present & ~finite)[0])
                raise BadUpload(f"{member}: numeric column {name!r} has a non-finite value ({values[row].as_py()}) at cell {cell_ids[row].as_py()!r}")
            numeric_cols.append(name)
            columns[name] = values
            continue
        labels, order = _group_labels(col)
        columns[name] = labels
        order_of[name] = order
        if wanted is None and (len(order) <= MAX_GROUPS):
            candidates.append(name)
        if wanted is None and is_number:
            # Cluster numbers, or a small count (genes detected at low depth): also offered as numbers.
            numeric_cols.append(name)
    chosen = list(wanted) if wanted is not None else candidates
    table = pa.table(columns)
    groupings = []
    views: set[str] = set()
    for name in chosen:
        order = order_of[name]
        if len(order) > MAX_GROUPS:
            raise BadUpload(f"grouping {name!r} has {len(order)} groups, over the limit of {MAX_GROUPS}")
        counts = pc.value_counts(table.column(name))
        size_of = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        view = "stats_" + _slug(name)
        while view in views:
            view += "_"
        views.add(view)
        groupings.append(GroupingPlan(name=name, view=view, groups=order, counts=[int(size_of.get(g, 0)) for g in order]))
    if not groupings:
        table = table.append_column("all", pa.array(["all"] * n_cells))
        groupings.append(GroupingPlan(name="all", view="stats_all", groups=["all"], counts=[n_cells]))
    embedding = _find_embedding(numeric_cols, manifest.get("embedding"), member)
    return table, groupings, embedding, numeric_cols


def plan_crossed(cells: pa.Table, groupings: list[GroupingPlan], pairs: list[list[str]]) -> list[GroupingPlan]:
    """The manifest's crossed groupings: per pair (a, b) one more grouping whose groups are the
    non-empty (a group, b group) combinations, in a's order then b's, labelled `"<a> | <b>"`."""
    by_name = {g.name: g for g in groupings}
    views = {g.view for g in groupings}
    crossed = []
    for first, second in pairs:
        for name in (first, second):
            if name not in by_name:
                raise BadUpload(f"{MANIFEST}: crossed grouping {name!r} is not a grouping (groupings: {sorted(by_name)})")
        a, b = by_name[first], by_name[second]
        codes = []
        for g in (a, b):
            index = pc.index_in(cells.column(g.name).cast(pa.string()), value_set=pa.array(g.groups, type=pa.string()))
            codes.append(index.to_numpy(zero_copy_only=False).astype(np.int64))
        keys, counts = np.unique(codes[0] * len(b.groups) + codes[1], return_counts=True)
        if keys.size > MAX_GROUPS:
            raise BadUpload(f"crossed grouping {first!r} x {second!r} has {keys.size} non-empty groups, over the limit of {MAX_GROUPS}")
        pairs_of = [(int(k // len(b.groups)), int(k % len(b.groups))) for k in keys]
        view = ("stats_" + _slug(first) + "_by_" + _slug(second))[:80]
        while view in views:
            view += "_"
        views.add(view)
        crossed.append(
            GroupingPlan(
                name=f"{first} × {second}",
                view=view,
                groups=[f"{a.groups[i]} | {b.groups[j]}" for i, j in pairs_of],
                counts=[int(c) for c in counts],
                crossed=[first, second],
                pairs=pairs_of,
            )
        )
    return crossed


def _find_embedding(numeric_cols: list[str], wanted: str | None, member: str = METADATA) -> EmbeddingPlan | None:
    """`<name>_1, <name>_2, ...` numeric columns form an embedding; the manifest may name which one."""
    families: dict[str, list[tuple[int, str]]] = {}
    for col in numeric_cols:
        match = re.fullmatch(r"(.+)_(\d+)", col)
        if match:
            families.setdefault(match.group(1), []).append((int(match.group(2)), col))
    complete = {
        name: [c for _, c in sorted(cols)]
        for name, cols in families.items()
        if sorted(i for i, _ in cols) == list(range(1, len(cols) + 1)) and len(cols) >= 2
    }
    if wanted is not None:
        if wanted not in complete:
            raise BadUpload(f"{MANIFEST} embedding {wanted!r} has no numeric columns {wanted}_1, {wanted}_2 in {member}")
        return EmbeddingPlan(name=wanted, columns=complete[wanted])
    if not complete:
        return None
    name = "umap" if "umap" in complete else sorted(complete)[0]
    return EmbeddingPlan(name=name, columns=complete[name])


def ingest_upload(
    reader: io.RawIOBase,
    upload_key: str,
    s3: S3Client,
    settings: Settings,
    dataset_id: str,
    version_id: str,
    *,
    progress: Progress | None = None,
) -> VersionPlan:
    """Validate the upload, write its chunks, cells and plan to staging; returns the plan."""
    kind = upload_kind(upload_key) or ".zip"
    ahead = ReadAhead(reader) if getattr(reader, "size", None) else None
    try:
        return _ingest_upload(ahead or reader, upload_key, kind, s3, settings, dataset_id, version_id, progress)
    finally:
        if ahead is not None:
            ahead.close()


def _ingest_upload(
    reader: io.RawIOBase, upload_key: str, kind: str, s3: S3Client, settings: Settings, dataset_id: str, version_id: str, progress: Progress | None
) -> VersionPlan:
    with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-") as workdir:
        if kind == ".zip":
            upload: UploadArchive | None = open_upload(reader, settings)
            manifest = read_manifest(upload)
            if manifest.get("feature_symbols") and "h5ad" not in upload.members:  # type: ignore[union-attr]
                raise BadUpload(f"{MANIFEST}: 'feature_symbols' names a var column of an .h5ad, but this upload's matrix is not one")
            matrix, own_metadata = split_matrix(upload, s3, settings, dataset_id, version_id, manifest=manifest, workdir=workdir, progress=progress)  # type: ignore[arg-type]
            matrix_member = PurePosixPath(next(upload.members[r].filename for r in ("matrix.csv", "h5ad", "10x.h5", "matrix.mtx") if r in upload.members)).name  # type: ignore[union-attr]
        else:
            upload, manifest = None, {}
            matrix_member = PurePosixPath(upload_key).name
            local = Path(workdir) / ("upload" + kind)
            _copy_object(reader, local, settings)
            with tempfile.TemporaryDirectory(prefix="wideviews-ingest-", dir=workdir) as tmp:
                new_parts = _new_parts(s3, settings, dataset_id, version_id, tmp)
                matrix, own_metadata = _split_hdf5("h5ad" if kind == ".h5ad" else "10x-h5", local, settings, new_parts, manifest, progress)
        raw, member = read_metadata_csv(upload)
        if raw is not None and own_metadata is not None:
            raise BadUpload(f"upload has both {member} and the metadata of {matrix_member} (obs): keep one")
        if raw is None and own_metadata is not None:
            raw, member = own_metadata, f"{matrix_member} obs"
        aligned = align_metadata(raw, matrix.cell_ids, member, matrix_member) if raw is not None else None
        cells, groupings, embedding, numeric_cols = plan_metadata(aligned, matrix.cell_ids, manifest, member or METADATA)
        crossed = plan_crossed(cells, groupings, manifest.get("crossed") or [])
    sink = pa.BufferOutputStream()
    pq.write_table(cells, sink, compression="zstd")
    put_bytes(s3, settings.staging_bucket, cells_key(dataset_id, version_id), sink.getvalue().to_pybytes())
    plan = VersionPlan(
        dataset_id=dataset_id,
        version_id=version_id,
        upload_key=upload_key,
        id_column=matrix.id_column,
        n_cells=len(matrix.cell_ids),
        features=matrix.features,
        chunks=matrix.chunks,
        groupings=groupings,
        embedding=embedding,
        numeric_columns=numeric_cols,
        feature_symbols=matrix.symbols,
        title=str(manifest.get("title", "")),
        description=str(manifest.get("description", "")),
        timestamp_ms=int(time.time() * 1000),
        cells_split=True,
        batches=settings.chunk_batches(len(matrix.chunks), matrix.nnz),
        nnz=matrix.nnz,
        crossed=crossed,
        markers_top_n=settings.markers_top_n,
        embedding_sample_size=settings.embedding_sample_size,
    )
    put_json(s3, settings.staging_bucket, plan_key(dataset_id, version_id), plan.model_dump(mode="json"))
    return plan


def _copy_object(reader: io.RawIOBase, local: Path, settings: Settings) -> None:
    size = getattr(reader, "size", None)
    if size == 0:
        raise BadUpload("upload is empty (0 bytes)")
    if size is not None and size > settings.max_upload_bytes:
        raise BadUpload(f"upload is {size} bytes, over the limit of {settings.max_upload_bytes}")
    with open(local, "wb") as dst:
        shutil.copyfileobj(reader, dst, 8 << 20)


def remove_stale_workdirs(root: str | None = None) -> list[str]:
    """Remove the local work directories (spool, HDF5 copies) of ingest processes that are gone:
    a worker killed mid-upload leaves its directory behind. Returns what was removed."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        pid = path.name[len(WORKDIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def open_s3_upload(s3: S3Client, bucket: str, key: str, object_version: str | None = None) -> S3RangeReader:
    """The upload object (that S3 version of it, when given) as a seekable reader (ranged GETs)."""
    return S3RangeReader(s3, bucket, key, object_version=object_version)
