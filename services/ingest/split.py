"""Validate an uploaded ZIP and split its matrix into column chunks in staging.

The ZIP is read in place on S3 (ranged reads); `matrix.csv` is streamed out of it once, parsed by
pyarrow's streaming CSV reader, and its non-zeros are written to staging as Parquet parts per column
chunk. Memory is bounded by `flush_bytes` plus one CSV block, never by the matrix.

Every problem with the upload raises `BadUpload` with a message that names the member, row, column
or value at fault.
"""

from __future__ import annotations

import csv
import io
import json
import re
import stat
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.adapters.s3 import S3RangeReader, put_bytes, put_json
from shared.config import Settings
from shared.errors import BadUpload
from shared.staging import (
    EmbeddingPlan,
    GroupingPlan,
    VersionPlan,
    cells_key,
    chunk_part_key,
    plan_key,
)

MATRIX, METADATA, MANIFEST = "matrix.csv", "metadata.csv", "manifest.json"
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_IGNORED = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_GROUPS = 10_000
MISSING_GROUP = "(missing)"


@dataclass
class UploadArchive:
    """The validated members of an upload."""

    zip: zipfile.ZipFile
    members: dict[str, zipfile.ZipInfo]
    ignored: list[str] = field(default_factory=list)


def _check_member_name(info: zipfile.ZipInfo) -> str:
    raw = info.orig_filename
    if not (info.flag_bits & 0x800):
        # Not flagged UTF-8: zipfile decoded the bytes as cp437; they must be plain ASCII or valid UTF-8.
        try:
            raw = raw.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise BadUpload(f"member name {info.orig_filename!r} is not valid UTF-8") from None
    if "\x00" in raw or _CONTROL.search(raw):
        raise BadUpload(f"member name {raw!r} contains control characters")
    if "\\" in raw:
        raise BadUpload(f"member name {raw!r} contains a backslash")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise BadUpload(f"member name {raw!r} is an absolute path")
    if ".." in PurePosixPath(raw).parts:
        raise BadUpload(f"member name {raw!r} escapes the archive (..)")
    return raw


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
    # Members may sit at the root or in one top folder (as archivers of a folder produce).
    tops = {PurePosixPath(n).parts[0] for n, _ in names if len(PurePosixPath(n).parts) > 1}
    strip = tops.pop() + "/" if len(tops) == 1 and all("/" in n for n, _ in names) else ""
    for name, info in names:
        short = name[len(strip) :] if strip and name.startswith(strip) else name
        if short in (MATRIX, METADATA, MANIFEST):
            if short in members:
                raise BadUpload(f"upload has two {short} members")
            members[short] = info
        else:
            ignored.append(name)
    if MATRIX not in members:
        found = ", ".join(sorted(n for n, _ in names)) or "nothing"
        raise BadUpload(f"upload has no {MATRIX} (found: {found})")
    return UploadArchive(archive, members, ignored)


def read_manifest(upload: UploadArchive) -> dict[str, Any]:
    """The optional manifest.json, validated in shape."""
    info = upload.members.get(MANIFEST)
    if info is None:
        return {}
    if info.file_size > 1 << 20:
        raise BadUpload(f"{MANIFEST} is larger than 1 MiB")
    try:
        document = json.loads(upload.zip.read(info))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadUpload(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadUpload(f"{MANIFEST} must be a JSON object")
    groupings = document.get("groupings")
    if groupings is not None and (not isinstance(groupings, list) or not all(isinstance(g, str) for g in groupings)):
        raise BadUpload(f"{MANIFEST}: 'groupings' must be a list of column names")
    for key in ("embedding", "title", "description"):
        if key in document and not isinstance(document[key], str):
            raise BadUpload(f"{MANIFEST}: {key!r} must be a string")
    return document


def _read_header(stream: io.BufferedIOBase, settings: Settings, member: str) -> list[str]:
    line = stream.readline(settings.max_header_bytes + 1)
    if not line:
        raise BadUpload(f"{member} is empty")
    if len(line) > settings.max_header_bytes:
        raise BadUpload(f"{member} header line is longer than {settings.max_header_bytes} bytes")
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise BadUpload(f"{member} header is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    return next(csv.reader([text]))


def _check_names(names: list[str], what: str, member: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name.strip():
            raise BadUpload(f"{member}: {what} {i + 1} has an empty name")
        if _CONTROL.search(name):
            raise BadUpload(f"{member}: {what} {name!r} contains control characters")
        if len(name.encode()) > 1024:
            raise BadUpload(f"{member}: {what} {name[:40]!r}... is longer than 1024 bytes")
        if name in seen:
            raise BadUpload(f"{member}: duplicate {what} {name!r} (columns {seen[name] + 1} and {i + 1})")
        seen[name] = i


def chunk_bounds(n_features: int, est_cells: int, settings: Settings) -> list[tuple[int, int]]:
    """Contiguous feature ranges sized so that a chunk's dense float64 working set fits the memory budget."""
    width = settings.chunk_width(est_cells)
    return [(start, min(n_features, start + width)) for start in range(0, n_features, width)]


@dataclass
class MatrixSummary:
    cell_ids: pa.Array
    features: list[str]
    id_column: str
    chunks: list[tuple[int, int]]
    parts: int
    nnz: int


class _ChunkBuffers:
    """Non-zeros accumulated per chunk, flushed as one Parquet part per chunk when large enough."""

    def __init__(self, s3: Any, settings: Settings, dataset_id: str, version_id: str, chunks: list[tuple[int, int]], flush_bytes: int) -> None:
        self.s3, self.settings, self.dataset_id, self.version_id = s3, settings, dataset_id, version_id
        self.chunks = chunks
        self.flush_bytes = flush_bytes
        self.pending: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in chunks]
        self.pending_bytes = 0
        self.part = 0
        self.nnz = 0

    def add(self, chunk: int, features: np.ndarray, cells: np.ndarray, values: np.ndarray) -> None:
        self.pending[chunk].append((features, cells, values))
        self.pending_bytes += values.nbytes + cells.nbytes + features.nbytes
        self.nnz += values.size
        if self.pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write one part per chunk (an empty chunk still gets its part, so every chunk has one)."""
        for chunk, pieces in enumerate(self.pending):
            if pieces:
                feature = np.concatenate([p[0] for p in pieces])
                cell = np.concatenate([p[1] for p in pieces])
                value = np.concatenate([p[2] for p in pieces])
            else:
                feature = cell = np.zeros(0, np.int32)
                value = np.zeros(0, np.float64)
            table = pa.table({"feature": feature.astype(np.int32), "cell": cell.astype(np.int32), "value": value})
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            put_bytes(self.s3, self.settings.staging_bucket, chunk_part_key(self.dataset_id, self.version_id, chunk, self.part), sink.getvalue().to_pybytes())
        self.pending = [[] for _ in self.chunks]
        self.pending_bytes = 0
        self.part += 1


def _first_null(column: pa.Array) -> int:
    return int(pc.index(pc.is_null(column), True).as_py())


def split_matrix(
    upload: UploadArchive,
    s3: Any,
    settings: Settings,
    dataset_id: str,
    version_id: str,
    *,
    flush_bytes: int = 256 << 20,
) -> MatrixSummary:
    """Stream matrix.csv once: validate every value, write each column chunk's non-zeros to staging."""
    info = upload.members[MATRIX]
    stream = upload.zip.open(info)
    header = _read_header(stream, settings, MATRIX)  # type: ignore[arg-type]
    if len(header) < 2:
        raise BadUpload(f"{MATRIX} has no feature columns (header: {header[:3]})")
    id_column, features = header[0], header[1:]
    _check_names(header, "column", MATRIX)
    if len(features) > settings.max_features:
        raise BadUpload(f"{MATRIX} has {len(features)} features, over the limit of {settings.max_features}")
    # Each row holds at least one byte per value plus a separator: an upper bound on the cell count.
    est_cells = max(1, info.file_size // (2 * len(header)))
    chunks = chunk_bounds(len(features), est_cells, settings)
    buffers = _ChunkBuffers(s3, settings, dataset_id, version_id, chunks, flush_bytes)
    block = max(16 << 20, 4 * len(",".join(header).encode()))
    reader_options = pacsv.ReadOptions(column_names=header, block_size=block, use_threads=True)
    convert = pacsv.ConvertOptions(
        column_types={id_column: pa.string(), **{f: pa.float64() for f in features}},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    ids: list[pa.Array] = []
    row0 = 0
    try:
        batches = pacsv.open_csv(stream, read_options=reader_options, convert_options=convert, parse_options=pacsv.ParseOptions(newlines_in_values=False))
        for batch in batches:
            n = batch.num_rows
            id_col = batch.column(0)
            if id_col.null_count:
                raise BadUpload(f"{MATRIX}: empty cell id at data row {row0 + _first_null(id_col) + 1}")
            ids.append(id_col)
            for c, (start, end) in enumerate(chunks):
                cols = [batch.column(1 + j) for j in range(start, end)]
                for j, col in enumerate(cols):
                    if col.null_count:
                        r = _first_null(col)
                        raise BadUpload(
                            f"{MATRIX}: empty value at data row {row0 + r + 1} (cell {id_col[r].as_py()!r}), feature {features[start + j]!r}"
                        )
                block_values = np.column_stack([col.to_numpy(zero_copy_only=False) for col in cols]) if cols else np.zeros((n, 0))
                finite = np.isfinite(block_values)
                if not finite.all():
                    r, j = (int(x[0]) for x in np.nonzero(~finite))
                    raise BadUpload(
                        f"{MATRIX}: non-finite value {block_values[r, j]} at data row {row0 + r + 1} "
                        f"(cell {id_col[r].as_py()!r}), feature {features[start + j]!r}"
                    )
                rows, local = np.nonzero(block_values)
                buffers.add(c, local.astype(np.int32), (rows + row0).astype(np.int32), block_values[rows, local])
            row0 += n
    except pa.ArrowInvalid as exc:
        if row0 == 0 and "Empty CSV file" in str(exc):
            raise BadUpload(f"{MATRIX} has a header but no rows") from exc
        raise BadUpload(f"{MATRIX}: {str(exc).strip()} (after data row {row0})") from exc
    except UnicodeDecodeError as exc:
        raise BadUpload(f"{MATRIX}: not valid UTF-8 after data row {row0}") from exc
    if row0 == 0:
        raise BadUpload(f"{MATRIX} has a header but no rows")
    if row0 >= 2**31 - 1:
        raise BadUpload(f"{MATRIX} has {row0} rows, over the limit of 2**31 - 1")
    buffers.flush()
    cell_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    _check_ids(cell_ids, MATRIX)
    return MatrixSummary(cell_ids, features, id_column, chunks, buffers.part, buffers.nnz)


def _check_ids(ids: pa.Array, member: str) -> None:
    counts = pc.value_counts(ids)
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        example = dup[0]["values"].as_py()
        raise BadUpload(f"{member}: duplicate cell id {example!r} ({len(dup)} ids appear more than once)")
    if len(ids) and pc.any(pc.match_substring_regex(ids, r"[\x00-\x1f\x7f]")).as_py():
        raise BadUpload(f"{member}: a cell id contains control characters")


def _slug(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:48] or "grouping"


def read_metadata(upload: UploadArchive, cell_ids: pa.Array, manifest: dict[str, Any]) -> tuple[pa.Table, list[GroupingPlan], EmbeddingPlan | None, list[str]]:
    """Cell metadata aligned to matrix order, its groupings (with group counts) and embedding."""
    n_cells = len(cell_ids)
    info = upload.members.get(METADATA)
    if info is None:
        if manifest.get("groupings"):
            raise BadUpload(f"{MANIFEST} names groupings but the upload has no {METADATA}")
        table = pa.table({"cell_id": cell_ids, "all": pa.array(["all"] * n_cells)})
        return table, [GroupingPlan(name="all", view="stats_all", groups=["all"], counts=[n_cells])], None, []
    stream = upload.zip.open(info)
    try:
        raw = pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise BadUpload(f"{METADATA}: {str(exc).strip()}") from exc
    if raw.num_columns < 1:
        raise BadUpload(f"{METADATA} has no columns")
    _check_names(raw.column_names, "column", METADATA)
    id_col = pc.cast(raw.column(0), pa.string()).combine_chunks()
    if id_col.null_count:
        raise BadUpload(f"{METADATA}: empty cell id at data row {_first_null(id_col) + 1}")
    _check_ids(id_col, METADATA)
    # Align to matrix order; every matrix cell must have exactly one metadata row and vice versa.
    position = pc.index_in(cell_ids, value_set=id_col)
    if position.null_count:
        missing = cell_ids[_first_null(position)].as_py()
        raise BadUpload(f"{METADATA} has no row for cell {missing!r} ({position.null_count} matrix cells missing)")
    if len(id_col) != n_cells:
        extra = pc.filter(id_col, pc.invert(pc.is_in(id_col, value_set=cell_ids)))
        raise BadUpload(f"{METADATA} has {len(id_col) - n_cells} cells not in {MATRIX}, e.g. {extra[0].as_py()!r}")
    aligned = raw.take(position)
    columns: dict[str, pa.Array] = {"cell_id": cell_ids}
    text_cols: list[str] = []
    numeric_cols: list[str] = []
    for name in raw.column_names[1:]:
        col = aligned.column(name).combine_chunks()
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            col = pc.cast(col, pa.float64())
            if col.null_count or not np.isfinite(col.to_numpy(zero_copy_only=False)).all():
                raise BadUpload(f"{METADATA}: numeric column {name!r} has empty or non-finite values")
            numeric_cols.append(name)
        elif pa.types.is_boolean(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.fill_null(pc.cast(col, pa.string()), MISSING_GROUP)
            col = pc.if_else(pc.equal(col, ""), MISSING_GROUP, col)
            text_cols.append(name)
        else:
            col = pc.cast(col, pa.string())
            text_cols.append(name)
        columns[name] = col
    table = pa.table(columns)
    wanted = manifest.get("groupings")
    if wanted is not None:
        for name in wanted:
            if name not in text_cols:
                raise BadUpload(f"{MANIFEST} grouping {name!r} is not a text column of {METADATA} (text columns: {text_cols})")
        chosen = list(wanted)
    else:
        chosen = [n for n in text_cols if len(pc.unique(table.column(n))) <= MAX_GROUPS]
    groupings = []
    views: set[str] = set()
    for name in chosen:
        counts = pc.value_counts(table.column(name).combine_chunks())
        groups = [str(v) for v in counts.field("values").to_pylist()]
        sizes = counts.field("counts").to_pylist()
        if len(groups) > MAX_GROUPS:
            raise BadUpload(f"grouping {name!r} has {len(groups)} groups, over the limit of {MAX_GROUPS}")
        order = sorted(range(len(groups)), key=lambda i: groups[i])
        view = "stats_" + _slug(name)
        while view in views:
            view += "_"
        views.add(view)
        groupings.append(GroupingPlan(name=name, view=view, groups=[groups[i] for i in order], counts=[int(sizes[i]) for i in order]))
    if not groupings:
        table = table.append_column("all", pa.array(["all"] * n_cells))
        groupings.append(GroupingPlan(name="all", view="stats_all", groups=["all"], counts=[n_cells]))
    embedding = _find_embedding(numeric_cols, manifest.get("embedding"))
    return table, groupings, embedding, numeric_cols


def _find_embedding(numeric_cols: list[str], wanted: str | None) -> EmbeddingPlan | None:
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
            raise BadUpload(f"{MANIFEST} embedding {wanted!r} has no numeric columns {wanted}_1, {wanted}_2 in {METADATA}")
        return EmbeddingPlan(name=wanted, columns=complete[wanted])
    if not complete:
        return None
    name = "umap" if "umap" in complete else sorted(complete)[0]
    return EmbeddingPlan(name=name, columns=complete[name])


def ingest_upload(reader: io.RawIOBase, upload_key: str, s3: Any, settings: Settings, dataset_id: str, version_id: str) -> VersionPlan:
    """Validate the upload, write its chunks, cells and plan to staging; returns the plan."""
    upload = open_upload(reader, settings)
    manifest = read_manifest(upload)
    matrix = split_matrix(upload, s3, settings, dataset_id, version_id)
    cells, groupings, embedding, numeric_cols = read_metadata(upload, matrix.cell_ids, manifest)
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
        title=str(manifest.get("title", "")),
        description=str(manifest.get("description", "")),
        timestamp_ms=int(time.time() * 1000),
        cells_split=True,
        batches=settings.chunk_batches(len(matrix.chunks), matrix.nnz),
        nnz=matrix.nnz,
    )
    put_json(s3, settings.staging_bucket, plan_key(dataset_id, version_id), plan.model_dump(mode="json"))
    return plan


def open_s3_upload(s3: Any, bucket: str, key: str, object_version: str | None = None) -> S3RangeReader:
    """The upload object (that S3 version of it, when given) as a seekable reader (ranged GETs)."""
    return S3RangeReader(s3, bucket, key, object_version=object_version)
