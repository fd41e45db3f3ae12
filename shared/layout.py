"""The HBase schema of every view and the binary layout of every value wideviews stores: one module, one spec.

"Value" here is what HBase calls a cell's value; "cell" alone always means a cell of the matrix (a row
of the upload).

Every value starts with a layout version byte (currently 1) and a kind byte; all numbers are
little-endian (numpy reads them without copying):

    stats value     b"\\x01" b"S" | uint32 n_groups | float64[n_groups]
                    row = feature (UTF-8), family `s`, qualifier = stat name (shared.stats.Stat);
                    values in the grouping's group order (the catalog's order). NaN = undefined
                    (empty group, var of one cell, mean_expressing with nnz 0).
    features value  b"\\x01" b"F" | uint8 dtype (b"f" float32 | b"d" float64) | uint32 n
                    | int32[n] cell positions (ascending) | dtype[n] values
                    row = feature UTF-8 + b"\\x00" + uint16 part (big-endian, so parts sort in order),
                    family `f`, qualifier `v`. Only non-zeros are stored; a feature with more
                    non-zeros than `features_row_max_nnz` continues in the next part's row.
    text value      b"\\x01" b"T" | UTF-8 bytes                (cells view: metadata text)
    vector value    b"\\x01" b"V" | uint32 n | float64[n]      (cells view: embedding, numeric columns)
    int value       b"\\x01" b"I" | int64                      (cells view: row position)
    json value      b"\\x01" b"J" | UTF-8 JSON                 (catalog documents)
    histogram value b"\\x01" b"H" | uint32 n_groups | uint32 n_bins | float64[n_bins + 1] edges
                    | uint32[n_groups * n_bins] counts (group-major)
                    distributions view `dist_<grouping>`: row = feature, family `d`, qualifier
                    `hist` (edges shared by the feature's groups; counts of its non-zeros per bin),
                    and `zeros`, `whisker_low`, `whisker_high`, `outliers_low`, `outliers_high` as
                    stats values (float64 per group; whiskers NaN for an empty group).
    markers value   b"\\x01" b"K" | uint32 n | float64[n] score | float64[n] log2fc | float64[n] mean_in
                    | float64[n] mean_out | float64[n] frac_in | float64[n] frac_out
                    | uint32[n] name lengths | UTF-8 feature names, concatenated
                    markers view: row = grouping UTF-8 + b"\\x00" + group UTF-8, family `k`,
                    qualifier `top`; the group's top features by score, best first.
    sample value    b"\\x01" b"P" | uint32 n | uint32 dims | uint32 n_groupings | int32[n] positions
                    | float64[n * dims] coordinates (point-major) | float64[n] weights
                    | int32[n * n_groupings] group indices (point-major) | uint32[n] id lengths
                    | UTF-8 cell ids, concatenated
                    embedding_sample view: row = b"part" + uint16 part (big-endian), family `e`,
                    qualifier `p`; at most SAMPLE_PART_POINTS points per row, in position order.
    embedding block b"\\x01" b"B" | uint32 n | uint32 dims | int32[n] positions | float64[n * dims]
                    coordinates (point-major; all NaN for a cell with a blank one) | uint32[n] id lengths
                    | UTF-8 cell ids, concatenated
                    cells view: row = b"\\x00emb" + uint32 first position (big-endian), family `c`,
                    qualifier `b:<embedding name>`; cells in position order, cut at every multiple of
                    EMBEDDING_BLOCK_CELLS positions and at every chunk's share of the cells view
                    (so every executor writes the same rows), at most EMBEDDING_BLOCK_CELLS a row (a few MB, well below
                    HBase's cell size limit). Cell ids have no control characters, so these
                    rows sort before every cell's row and never collide with one.

Row keys are raw UTF-8 (feature names and cell ids are validated at ingest: no control characters),
so HBase's byte order is the order of the UTF-8 strings.

The schema, view by view (one column family a table; a column is `family:qualifier`). Nothing
outside this module spells a row key, a family or a qualifier: compute builds rows with the
functions below, the publisher and the query read them with the same functions.

    stats_<grouping>   row `feature_row(feature)`; family `s`; qualifier `stats_qualifier(stat)` -> stats value
    dist_<grouping>    row `feature_row(feature)`; family `d`; `HIST_QUALIFIER` -> histogram value,
                       `dist_qualifier(name)` for each of DIST_VECTORS -> stats value
    features           row `feature_part_row(feature, part)`; family `f`; `FEATURES_QUALIFIER` -> features value
    cells              row `cell_row(cell_id)`; family `c`; `CELL_POSITION_QUALIFIER` -> int value (the
                       cell's position), `cell_qualifier("grouping", name)` -> text value,
                       `cell_qualifier("embedding", name)` and `cell_qualifier("numeric", name)` -> vector value
    catalog            row `CATALOG_META_ROW`; family `m`; `CATALOG_DOC_QUALIFIER` -> json value (the dataset
                       document); rows `feature_list_row(chunk)` and `symbol_list_row(chunk)`,
                       `CATALOG_LIST_QUALIFIER` -> json value (the chunk's feature names, display symbols)
    markers            row `markers_row(grouping, group)`; family `k`; `MARKERS_QUALIFIER` -> markers value
    embedding_sample   row `sample_part_row(part)`; family `e`; `SAMPLE_QUALIFIER` -> sample value
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from shared.errors import Permanent

LAYOUT_VERSION = 1
_VERSION = bytes([LAYOUT_VERSION])
# Families (one a table).
STATS_FAMILY = b"s"
DIST_FAMILY = b"d"
FEATURES_FAMILY = b"f"
CELLS_FAMILY = b"c"
CATALOG_FAMILY = b"m"
MARKERS_FAMILY = b"k"
SAMPLE_FAMILY = b"e"
_VIEW_FAMILIES = {
    "features": FEATURES_FAMILY,
    "cells": CELLS_FAMILY,
    "catalog": CATALOG_FAMILY,
    "markers": MARKERS_FAMILY,
    "embedding_sample": SAMPLE_FAMILY,
}


def view_family(view: str) -> bytes:
    """The one column family of a view's table (`stats_*`: s, `dist_*`: d)."""
    if view.startswith("dist_"):
        return DIST_FAMILY
    return _VIEW_FAMILIES.get(view, STATS_FAMILY)


# The qualifiers, separators and fixed rows of each view stand beside the functions that use them.
COLUMN_SEPARATOR = b":"


def column(family: bytes, qualifier: bytes) -> bytes:
    """The HBase column `family:qualifier`, as Thrift reads and returns it."""
    return family + COLUMN_SEPARATOR + qualifier


def qualifier_of(column_name: bytes) -> bytes:
    """The qualifier of a `family:qualifier` column."""
    return column_name.partition(COLUMN_SEPARATOR)[2]


def feature_row(feature: str) -> bytes:
    """Row key of a feature in a `stats_*` or `dist_*` view, and the prefix of its `features` rows
    (so a feature's region boundary is the same in every feature-keyed view)."""
    return feature.encode()


def cell_row(cell_id: str) -> bytes:
    """Row key of a cell in the cells view."""
    return cell_id.encode()


def name_of_row(row: bytes) -> str:
    """The feature or cell id a `feature_row` or `cell_row` key was made of (the inverse of both)."""
    return row.decode()


def row_after(row: bytes) -> bytes:
    """The smallest row key greater than `row`: where a scan resumes after it (page cursors)."""
    return row + b"\x00"


def stats_qualifier(stat: str) -> bytes:
    """Qualifier of one statistic (shared.stats.Stat) in a `stats_*` view."""
    return stat.encode()


def stats_column(stat: str) -> bytes:
    """Column of one statistic in a `stats_*` view."""
    return column(STATS_FAMILY, stats_qualifier(stat))


HIST_QUALIFIER = b"hist"
DIST_VECTORS = ("zeros", "whisker_low", "whisker_high", "outliers_low", "outliers_high")


def dist_qualifier(name: str) -> bytes:
    """Qualifier of one per-group vector (DIST_VECTORS) in a `dist_*` view."""
    if name not in DIST_VECTORS:
        raise ValueError(f"{name!r} is not a distributions vector ({DIST_VECTORS})")
    return name.encode()


CELL_POSITION_QUALIFIER = b"pos"
# The cells view's qualifier prefixes, by the kind of column they hold.
_CELL_KINDS: dict[str, bytes] = {"grouping": b"g:", "embedding": b"e:", "numeric": b"n:"}


def cell_qualifier(kind: str, name: str) -> bytes:
    """Qualifier of a cell's metadata column: kind `grouping` (text), `embedding` or `numeric` (vector)."""
    return _CELL_KINDS[kind] + name.encode()


def parse_cell_qualifier(qualifier: bytes) -> tuple[str, str]:
    """(kind, name) of a cells view qualifier: ("position", ""), `cell_qualifier`'s (kind, name),
    ("embedding block", embedding); ("unknown", text) for anything else."""
    if qualifier == CELL_POSITION_QUALIFIER:
        return "position", ""
    if qualifier.startswith(EMBEDDING_BLOCK_QUALIFIER_PREFIX):
        return "embedding block", qualifier[len(EMBEDDING_BLOCK_QUALIFIER_PREFIX) :].decode()
    for kind, prefix in _CELL_KINDS.items():
        if qualifier.startswith(prefix):
            return kind, qualifier[len(prefix) :].decode()
    return "unknown", qualifier.decode(errors="replace")


CATALOG_META_ROW = b"meta"
CATALOG_DOC_QUALIFIER = b"doc"
CATALOG_LIST_QUALIFIER = b"list"
FEATURE_LIST_PREFIX = b"features:"
SYMBOL_LIST_PREFIX = b"symbols:"


def feature_list_row(chunk: int) -> bytes:
    """Catalog row of chunk `chunk`'s feature names (`FEATURE_LIST_PREFIX` + 6 digits: chunk order)."""
    return _chunk_row(FEATURE_LIST_PREFIX, chunk)


def symbol_list_row(chunk: int) -> bytes:
    """Catalog row of chunk `chunk`'s feature display symbols (`SYMBOL_LIST_PREFIX` + 6 digits)."""
    return _chunk_row(SYMBOL_LIST_PREFIX, chunk)


def _chunk_row(prefix: bytes, chunk: int) -> bytes:
    return prefix + f"{chunk:06d}".encode()


def chunk_of_list_row(row: bytes) -> tuple[str, int]:
    """Inverse of `feature_list_row` and `symbol_list_row`: ("features" | "symbols", chunk)."""
    kind, _, chunk = row.partition(b":")
    return kind.decode(), int(chunk)


# What each marker entry carries, in the value's order.
MARKER_FIELDS = ("score", "log2fc", "mean_in", "mean_out", "frac_in", "frac_out")

_DTYPES = {b"f": np.dtype("<f4"), b"d": np.dtype("<f8")}


def _check_header(value: bytes, kind: bytes) -> None:
    if len(value) < 2 or value[0:1] != _VERSION or value[1:2] != kind:
        raise Permanent(f"value is not a layout-{LAYOUT_VERSION} {kind.decode()} value (starts {value[:2]!r})")


def _encode_floats(kind: bytes, values: np.ndarray | list[float]) -> bytes:
    vec = np.ascontiguousarray(values, dtype="<f8")
    return _VERSION + kind + struct.pack("<I", vec.size) + vec.tobytes()


def _decode_floats(kind: bytes, value: bytes) -> np.ndarray:
    _check_header(value, kind)
    (n,) = struct.unpack_from("<I", value, 2)
    return np.frombuffer(value, dtype="<f8", count=n, offset=6)


def encode_stats_vector(values: np.ndarray) -> bytes:
    """One stat over all groups of a grouping, as a stats value."""
    return _encode_floats(b"S", values)


def decode_stats_vector(value: bytes) -> np.ndarray:
    """Inverse of `encode_stats_vector` (a read-only float64 array over the value's bytes)."""
    return _decode_floats(b"S", value)


def encode_feature_part(indices: np.ndarray, values: np.ndarray) -> bytes:
    """Non-zeros of one feature (cell positions and values) as a features cell; float32 kept as is."""
    code = b"f" if values.dtype == np.float32 else b"d"
    vals = np.ascontiguousarray(values, dtype=_DTYPES[code])
    idx = np.ascontiguousarray(indices, dtype="<i4")
    return _VERSION + b"F" + code + struct.pack("<I", idx.size) + idx.tobytes() + vals.tobytes()


def decode_feature_part(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_feature_part`: (int32 cell positions, float32|float64 values)."""
    _check_header(value, b"F")
    dtype = _DTYPES[value[2:3]]
    (n,) = struct.unpack_from("<I", value, 3)
    idx = np.frombuffer(value, dtype="<i4", count=n, offset=7)
    vals = np.frombuffer(value, dtype=dtype, count=n, offset=7 + 4 * n)
    return idx, vals


FEATURES_QUALIFIER = b"v"
PART_SEPARATOR = b"\x00"


def feature_part_row(feature: str, part: int) -> bytes:
    """Row key of part `part` of a feature's transpose."""
    return feature_row(feature) + PART_SEPARATOR + struct.pack(">H", part)


def feature_of_part_row(row: bytes) -> tuple[str, int]:
    """Inverse of `feature_part_row`."""
    # The part is the last two bytes (which may hold a 0 byte themselves), the separator before them.
    if len(row) < 3 or row[-3:-2] != PART_SEPARATOR:
        raise Permanent(f"{row!r} is not a features row")
    return row[:-3].decode(), struct.unpack(">H", row[-2:])[0]


def encode_text(text: str) -> bytes:
    """A metadata text value."""
    return _VERSION + b"T" + text.encode()


def decode_text(value: bytes) -> str:
    """Inverse of `encode_text`."""
    _check_header(value, b"T")
    return value[2:].decode()


def encode_vector(values: np.ndarray | list[float]) -> bytes:
    """A float64 vector (embedding coordinates, numeric metadata)."""
    return _encode_floats(b"V", values)


def decode_vector(value: bytes) -> np.ndarray:
    """Inverse of `encode_vector` (a read-only float64 array)."""
    return _decode_floats(b"V", value)


def encode_int(number: int) -> bytes:
    """A cell's position in the matrix."""
    return _VERSION + b"I" + struct.pack("<q", number)


def decode_int(value: bytes) -> int:
    """Inverse of `encode_int`."""
    _check_header(value, b"I")
    return struct.unpack_from("<q", value, 2)[0]


def encode_json(document: Any) -> bytes:
    """A catalog document (compact JSON; NaN is not allowed)."""
    return _VERSION + b"J" + json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode_json(value: bytes) -> Any:
    """Inverse of `encode_json`."""
    _check_header(value, b"J")
    return json.loads(value[2:])


def _decode_many(values: list[bytes], kind: bytes, fields: list[tuple[Any, ...]], what: str) -> np.ndarray:
    """Values of one fixed size read as a numpy record array in one pass; each checked for its header."""
    dtype = np.dtype([("head", "S2"), *fields])
    joined = b"".join(values)
    if len(joined) != len(values) * dtype.itemsize:
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} {what}")
    decoded = np.frombuffer(joined, dtype=dtype)
    if (decoded["head"] != _VERSION + kind).any():
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} {what}")
    return decoded


def decode_ints(values: list[bytes]) -> np.ndarray:
    """Many int values at once (int64 array): one pass in numpy instead of one `decode_int` each."""
    if not values:
        return np.empty(0, dtype=np.int64)
    return _decode_many(values, b"I", [("value", "<i8")], "int values")["value"].copy()


def decode_vectors(values: list[bytes], n: int) -> np.ndarray:
    """Many vector values of `n` numbers at once, as a (len(values), n) float64 array."""
    if not values:
        return np.empty((0, n), dtype=np.float64)
    what = f"vector values of {n} numbers"
    decoded = _decode_many(values, b"V", [("n", "<u4"), ("value", "<f8", (n,))], what)
    if (decoded["n"] != n).any():
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} {what}")
    return decoded["value"].copy()


def encode_histograms(edges: np.ndarray, counts: np.ndarray) -> bytes:
    """One feature's histograms over all groups: shared edges (n_bins + 1) and counts (n_groups, n_bins)."""
    e = np.ascontiguousarray(edges, dtype="<f8")
    c = np.ascontiguousarray(counts, dtype="<u4")
    n_groups, n_bins = c.shape
    if e.size != n_bins + 1:
        raise ValueError(f"{e.size} edges for {n_bins} bins")
    return _VERSION + b"H" + struct.pack("<II", n_groups, n_bins) + e.tobytes() + c.tobytes()


def decode_histograms(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `encode_histograms`: (edges float64, counts uint32 (n_groups, n_bins))."""
    _check_header(value, b"H")
    n_groups, n_bins = struct.unpack_from("<II", value, 2)
    edges = np.frombuffer(value, dtype="<f8", count=n_bins + 1, offset=10)
    counts = np.frombuffer(value, dtype="<u4", count=n_groups * n_bins, offset=10 + 8 * (n_bins + 1))
    return edges, counts.reshape(n_groups, n_bins)


MARKERS_QUALIFIER = b"top"


def markers_row(grouping: str, group: str) -> bytes:
    """Row key of one group's markers."""
    return grouping.encode() + PART_SEPARATOR + group.encode()


def grouping_of_markers_row(row: bytes) -> tuple[str, str]:
    """Inverse of `markers_row`: (grouping, group)."""
    grouping, _, group = row.partition(PART_SEPARATOR)
    return grouping.decode(), group.decode()


def _pack_names(names: list[str]) -> bytes:
    """uint32 UTF-8 lengths, then the UTF-8 names concatenated (a value's last fields)."""
    encoded = [name.encode() for name in names]
    return np.array([len(b) for b in encoded], dtype="<u4").tobytes() + b"".join(encoded)


def _unpack_names(value: bytes, offset: int, n: int, what: str) -> list[bytes]:
    """Inverse of `_pack_names` for `n` names at `offset`, as UTF-8 bytes; they must end the value
    (`Permanent` naming `what` otherwise)."""
    lengths = np.frombuffer(value, dtype="<u4", count=n, offset=offset)
    ends = (offset + 4 * n + np.cumsum(lengths, dtype=np.int64)).tolist()
    if n and ends[-1] != len(value):
        raise Permanent(f"{what} has {len(value)} bytes, its fields say {ends[-1]}")
    starts = [offset + 4 * n] + ends[:-1]
    return [value[a:b] for a, b in zip(starts, ends)]


def _pack_points(positions: np.ndarray, coordinates: np.ndarray) -> bytes:
    """int32 positions, then float64 coordinates point-major."""
    return np.ascontiguousarray(positions, dtype="<i4").tobytes() + coordinates.tobytes()


def _unpack_points(value: bytes, offset: int, n: int, dims: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Inverse of `_pack_points` at `offset`: (positions, (n, dims) coordinates, the offset after them)."""
    positions = np.frombuffer(value, dtype="<i4", count=n, offset=offset)
    offset += 4 * n
    coords = np.frombuffer(value, dtype="<f8", count=n * dims, offset=offset).reshape(n, dims)
    return positions, coords, offset + 8 * n * dims


def encode_markers(features: list[str], fields: dict[str, np.ndarray]) -> bytes:
    """One group's ranked markers: feature names and the MARKER_FIELDS vectors, best first."""
    n = len(features)
    head = _VERSION + b"K" + struct.pack("<I", n)
    vectors = b"".join(np.ascontiguousarray(fields[k], dtype="<f8").tobytes() for k in MARKER_FIELDS)
    if len(vectors) != 8 * n * len(MARKER_FIELDS):
        raise ValueError("every marker field needs one value per feature")
    return head + vectors + _pack_names(features)


def decode_markers(value: bytes) -> tuple[list[str], dict[str, np.ndarray]]:
    """Inverse of `encode_markers`."""
    _check_header(value, b"K")
    (n,) = struct.unpack_from("<I", value, 2)
    offset = 6
    fields = {}
    for key in MARKER_FIELDS:
        fields[key] = np.frombuffer(value, dtype="<f8", count=n, offset=offset)
        offset += 8 * n
    return [name.decode() for name in _unpack_names(value, offset, n, f"markers value of {n} features")], fields


SAMPLE_ROW_PREFIX = b"part"
SAMPLE_QUALIFIER = b"p"
SAMPLE_PART_POINTS = 10_000


def sample_part_row(part: int) -> bytes:
    """Row key of one part of the embedding sample."""
    return SAMPLE_ROW_PREFIX + struct.pack(">H", part)


def part_of_sample_row(row: bytes) -> int:
    """Inverse of `sample_part_row`."""
    if not row.startswith(SAMPLE_ROW_PREFIX) or len(row) != len(SAMPLE_ROW_PREFIX) + 2:
        raise Permanent(f"{row!r} is not an embedding sample row")
    return struct.unpack(">H", row[len(SAMPLE_ROW_PREFIX) :])[0]


def encode_sample_part(positions: np.ndarray, coordinates: np.ndarray, weights: np.ndarray, groups: np.ndarray, cell_ids: list[str]) -> bytes:
    """Points of the embedding sample: positions (n), coordinates (n, dims), weights (n), group indices
    (n, n_groupings), cell ids."""
    coords = np.ascontiguousarray(coordinates, dtype="<f8")
    codes = np.ascontiguousarray(groups, dtype="<i4")
    n, dims = coords.shape
    if len(cell_ids) != n or codes.shape[0] != n or np.asarray(positions).size != n or np.asarray(weights).size != n:
        raise ValueError("every sample field needs one entry per point")
    head = _VERSION + b"P" + struct.pack("<III", n, dims, codes.shape[1])
    return head + _pack_points(positions, coords) + np.ascontiguousarray(weights, dtype="<f8").tobytes() + codes.tobytes() + _pack_names(cell_ids)


def decode_sample_part(value: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Inverse of `encode_sample_part`: (positions, coordinates, weights, group indices, cell ids)."""
    _check_header(value, b"P")
    n, dims, n_groupings = struct.unpack_from("<III", value, 2)
    positions, coords, offset = _unpack_points(value, 14, n, dims)
    weights = np.frombuffer(value, dtype="<f8", count=n, offset=offset)
    offset += 8 * n
    codes = np.frombuffer(value, dtype="<i4", count=n * n_groupings, offset=offset).reshape(n, n_groupings)
    offset += 4 * n * n_groupings
    return positions, coords, weights, codes, [cell_id.decode() for cell_id in _unpack_names(value, offset, n, f"sample value of {n} points")]


# The cells view's embedding blocks (see the docstring): a row prefix no cell id can start with.
EMBEDDING_BLOCK_PREFIX = b"\x00emb"
EMBEDDING_BLOCK_QUALIFIER_PREFIX = b"b:"
EMBEDDING_BLOCK_CELLS = 50_000


def embedding_block_qualifier(embedding: str) -> bytes:
    """Qualifier of an embedding's blocks in the cells view."""
    return EMBEDDING_BLOCK_QUALIFIER_PREFIX + embedding.encode()


def embedding_block_row(first_position: int) -> bytes:
    """Row key of the embedding block of the share of cells starting at `first_position`."""
    return EMBEDDING_BLOCK_PREFIX + struct.pack(">I", first_position)


def encode_embedding_block(positions: np.ndarray, coordinates: np.ndarray, cell_ids: list[str]) -> bytes:
    """A share's cells in one value: positions (n), coordinates (n, dims; NaN where blank), cell ids."""
    coords = np.ascontiguousarray(coordinates, dtype="<f8")
    n, dims = coords.shape
    if len(cell_ids) != n or np.asarray(positions).size != n:
        raise ValueError("every embedding block field needs one entry per cell")
    return _VERSION + b"B" + struct.pack("<II", n, dims) + _pack_points(positions, coords) + _pack_names(cell_ids)


def decode_embedding_block(value: bytes) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Inverse of `encode_embedding_block`: (int32 positions, float64 (n, dims) coordinates, UTF-8 cell ids as bytes)."""
    _check_header(value, b"B")
    n, dims = struct.unpack_from("<II", value, 2)
    positions, coords, offset = _unpack_points(value, 10, n, dims)
    return positions, coords, _unpack_names(value, offset, n, f"embedding block of {n} cells")
