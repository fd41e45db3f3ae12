"""A 10x Genomics MatrixMarket folder: `matrix.mtx(.gz)`, `features.tsv(.gz)` (or Cell Ranger 2's
`genes.tsv`) and `barcodes.tsv(.gz)`, streamed into staged chunks.

The matrix is `features × barcodes` as Cell Ranger writes it (a `barcodes × features` one is
recognised by its size line). Entries are read in blocks by pyarrow's streaming CSV reader (space
separated), so memory is one block. The size line is checked against the feature and barcode lists
and against the entries the file really holds; several feature types keep "Gene Expression" only.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from services.ingest.matrix import GENE_EXPRESSION, MatrixSummary, Progress, check_feature_count, check_ids, check_names, check_row_count, chunk_ranges, chunk_width, gene_expression_features  # noqa: E501
from services.ingest.parts import ChunkParts
from shared.config import Settings
from shared.errors import BadUpload



def _read_tsv(stream: Any, member: str) -> pa.Table:
    try:
        return pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={f"f{i}": pa.string() for i in range(8)}, strings_can_be_null=False),
        )
    except pa.ArrowInvalid as exc:
        raise BadUpload(f"{member}: {str(exc).strip()}") from exc


def _read_size_line(stream: io.BufferedReader, member: str) -> tuple[str, int, int, int]:
    banner = stream.readline().decode("utf-8", "replace").strip()
    words = banner.lower().split()
    if len(words) != 5 or words[0] != "%%matrixmarket" or words[1] != "matrix":
        raise BadUpload(f"{member}: not a MatrixMarket file (first line {banner[:80]!r})")
    if words[2] != "coordinate" or words[4] != "general" or words[3] not in ("real", "integer", "pattern"):
        raise BadUpload(f"{member}: only 'coordinate real|integer|pattern general' matrices are supported, not {' '.join(words[2:])!r}")
    while True:
        line = stream.readline()
        if not line:
            raise BadUpload(f"{member}: no size line")
        if not line.startswith(b"%") and line.strip():
            break
    try:
        rows, cols, entries = (int(x) for x in line.split())
    except ValueError:
        raise BadUpload(f"{member}: bad size line {line[:80]!r} (expected: rows columns entries)") from None
    return words[3], rows, cols, entries


def split_mtx(upload: Any, open_member: Callable[[Any, str], Any], settings: Settings, new_parts: Callable[[int], ChunkParts], *, progress: Progress | None = None) -> MatrixSummary:
    """Stage the folder's matrix; cell ids are the barcodes."""
    names = {role: upload.members[role].filename.rsplit("/", 1)[-1] for role in ("matrix.mtx", "features.tsv", "barcodes.tsv")}
    features_table = _read_tsv(open_member(upload, "features.tsv"), names["features.tsv"])
    barcodes_table = _read_tsv(open_member(upload, "barcodes.tsv"), names["barcodes.tsv"])
    ids = features_table.column(0).to_pylist()
    symbols = features_table.column(1).to_pylist() if features_table.num_columns > 1 else ids
    types = features_table.column(2).to_pylist() if features_table.num_columns > 2 else [GENE_EXPRESSION] * len(ids)
    barcodes = barcodes_table.column(0).combine_chunks()
    features, keep = gene_expression_features(ids, symbols, types, names["features.tsv"])
    member = names["matrix.mtx"]
    check_row_count(len(barcodes), names["barcodes.tsv"])
    check_ids(barcodes, names["barcodes.tsv"], "barcode")
    check_names(features, "feature", names["features.tsv"])
    check_feature_count(len(features), settings, names["features.tsv"])
    stream = io.BufferedReader(open_member(upload, "matrix.mtx"), buffer_size=1 << 20)
    field, n_rows, n_cols, n_entries = _read_size_line(stream, member)
    if (n_rows, n_cols) == (len(ids), len(barcodes)):
        feature_axis = 0
    elif (n_rows, n_cols) == (len(barcodes), len(ids)):
        feature_axis = 1
    else:
        raise BadUpload(
            f"{member}: mismatched barcodes or features: the size line says {n_rows} x {n_cols}, "
            f"but {names['features.tsv']} has {len(ids)} features and {names['barcodes.tsv']} {len(barcodes)} barcodes"
        )
    columns = ["row", "col"] + ([] if field == "pattern" else ["value"])
    types_of = {"row": pa.int64(), "col": pa.int64(), "value": pa.float64()}
    width = chunk_width(len(barcodes), settings)
    seen = 0
    with new_parts(width) as parts:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=columns, block_size=16 << 20),
                parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False, ignore_empty_lines=True),
                convert_options=pacsv.ConvertOptions(column_types={c: types_of[c] for c in columns}),
            )
            for batch in reader:
                rows = batch.column(0).to_numpy(zero_copy_only=False)
                cols = batch.column(1).to_numpy(zero_copy_only=False)
                values = batch.column(2).to_numpy(zero_copy_only=False) if field != "pattern" else np.ones(batch.num_rows)
                if batch.column(0).null_count or batch.column(1).null_count or (field != "pattern" and batch.column(2).null_count):
                    raise BadUpload(f"{member}: an entry after entry {seen} has an empty field")
                bad = (rows < 1) | (rows > n_rows) | (cols < 1) | (cols > n_cols)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise BadUpload(f"{member}: entry {seen + i + 1} ({rows[i]}, {cols[i]}) lies outside the declared {n_rows} x {n_cols}")
                if not np.isfinite(values).all():
                    i = int(np.flatnonzero(~np.isfinite(values))[0])
                    raise BadUpload(f"{member}: non-finite value {values[i]} at entry {seen + i + 1}")
                seen += batch.num_rows
                if seen > n_entries:
                    raise BadUpload(f"{member}: holds more entries than the {n_entries} its size line declares")
                stored_features, cells = (rows - 1, cols - 1) if feature_axis == 0 else (cols - 1, rows - 1)
                kept = keep[stored_features]
                mask = (kept >= 0) & (values != 0)
                parts.add(kept[mask], cells[mask], values[mask])
                if progress is not None:
                    progress(seen, n_entries, len(barcodes))
        except pa.ArrowInvalid as exc:
            raise BadUpload(f"{member}: {str(exc).strip()} (after entry {seen})") from exc
        if seen != n_entries:
            raise BadUpload(f"{member}: the size line declares {n_entries} entries but the file holds {seen}")
        chunks = chunk_ranges(len(features), width)
        n_parts = parts.finish(len(chunks))
        nnz = parts.nnz
    return MatrixSummary(barcodes, features, "barcode", chunks, n_parts, nnz)

