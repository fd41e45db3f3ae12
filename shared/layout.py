"""Binary layout of every value wideviews stores in HBase: one module, one byte spec.

Every value starts with a layout version byte (currently 1) and a kind byte; all numbers are
little-endian (numpy reads them without copying):

    stats cell      b"\\x01" b"S" | uint32 n_groups | float64[n_groups]
                    row = feature (UTF-8), family `s`, qualifier = stat name (shared.stats.Stat);
                    values in the grouping's group order (the catalog's order). NaN = undefined
                    (empty group, var of one cell, mean_expressing with nnz 0).
    features cell   b"\\x01" b"F" | uint8 dtype (b"f" float32 | b"d" float64) | uint32 n
                    | int32[n] cell positions (ascending) | dtype[n] values
                    row = feature UTF-8 + b"\\x00" + uint16 part (big-endian, so parts sort in order),
                    family `f`, qualifier `v`. Only non-zeros are stored; a feature with more
                    non-zeros than `features_row_max_nnz` continues in the next part's row.
    text cell       b"\\x01" b"T" | UTF-8 bytes                (cells view: metadata text)
    vector cell     b"\\x01" b"V" | uint32 n | float64[n]      (cells view: embedding, numeric columns)
    int cell        b"\\x01" b"I" | int64                      (cells view: row position)
    json cell       b"\\x01" b"J" | UTF-8 JSON                 (catalog documents)
    histogram cell  b"\\x01" b"H" | uint32 n_groups | uint32 n_bins | float64[n_bins + 1] edges
                    | uint32[n_groups * n_bins] counts (group-major)
                    distributions view `dist_<grouping>`: row = feature, family `d`, qualifier
                    `hist` (edges shared by the feature's groups; counts of its non-zeros per bin),
                    and `zeros`, `whisker_low`, `whisker_high`, `outliers_low`, `outliers_high` as
                    stats cells (float64 per group; whiskers NaN for an empty group).
    markers cell    b"\\x01" b"K" | uint32 n | float64[n] score | float64[n] log2fc | float64[n] mean_in
                    | float64[n] mean_out | float64[n] frac_in | float64[n] frac_out
                    | uint32[n] name lengths | UTF-8 feature names, concatenated
                    markers view: row = grouping UTF-8 + b"\\x00" + group UTF-8, family `k`,
                    qualifier `top`; the group's top features by score, best first.
    sample cell     b"\\x01" b"P" | uint32 n | uint32 dims | uint32 n_groupings | int32[n] positions
                    | float64[n * dims] coordinates (point-major) | float64[n] weights
                    | int32[n * n_groupings] group indices (point-major) | uint32[n] id lengths
                    | UTF-8 cell ids, concatenated
                    embedding_sample view: row = b"part" + uint16 part (big-endian), family `e`,
                    qualifier `p`; at most SAMPLE_PART_POINTS points per row, in position order.
    embedding block b"\\x01" b"B" | uint32 n | uint32 dims | int32[n] positions | float64[n * dims]
                    coordinates (point-major; all NaN for a cell with a blank one) | uint32[n] id lengths
                    | UTF-8 cell ids, concatenated
                    cells view: row = b"\\x00emb" + uint32 first position (big-endian), family `c`,
                    qualifier `b:<embedding name>`; per share of cells written together, its cells in
                    position order, at most EMBEDDING_BLOCK_CELLS a row (a few MB, well below
                    HBase's cell size limit). Cell ids have no control characters, so these
                    rows sort before every cell's row and never collide with one.

Row keys are raw UTF-8 (feature names and cell ids are validated at ingest: no control characters),
so HBase's byte order is the order of the UTF-8 strings.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from shared.errors import Permanent

LAYOUT_VERSION = 1
_VERSION = bytes([LAYOUT_VERSION])
STATS_FAMILY = b"s"
FEATURES_FAMILY = b"f"
CELLS_FAMILY = b"c"
CATALOG_FAMILY = b"m"
FEATURES_QUALIFIER = b"v"
PART_SEPARATOR = b"\x00"
DIST_FAMILY = b"d"
MARKERS_FAMILY = b"k"
SAMPLE_FAMILY = b"e"
HIST_QUALIFIER = b"hist"
DIST_VECTORS = ("zeros", "whisker_low", "whisker_high", "outliers_low", "outliers_high")
MARKERS_QUALIFIER = b"top"
SAMPLE_QUALIFIER = b"p"
SAMPLE_PART_POINTS = 10_000
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


# What each marker entry carries, in the cell's order.
MARKER_FIELDS = ("score", "log2fc", "mean_in", "mean_out", "frac_in", "frac_out")

_DTYPES = {b"f": np.dtype("<f4"), b"d": np.dtype("<f8")}


def _check_header(value: bytes, kind: bytes) -> None:
    if len(value) < 2 or value[0:1] != _VERSION or value[1:2] != kind:
        raise Permanent(f"value is not a layout-{LAYOUT_VERSION} {kind.decode()} cell (starts {value[:2]!r})")


def encode_stats_vector(values: np.ndarray) -> bytes:
    """One stat over all groups of a grouping, as a stats cell."""
    vec = np.ascontiguousarray(values, dtype="<f8")
    return _VERSION + b"S" + struct.pack("<I", vec.size) + vec.tobytes()


def decode_stats_vector(value: bytes) -> np.ndarray:
    """Inverse of `encode_stats_vector` (a read-only float64 array over the cell's bytes)."""
    _check_header(value, b"S")
    (n,) = struct.unpack_from("<I", value, 2)
    return np.frombuffer(value, dtype="<f8", count=n, offset=6)


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


def feature_part_row(feature: str, part: int) -> bytes:
    """Row key of part `part` of a feature's transpose."""
    return feature.encode() + PART_SEPARATOR + struct.pack(">H", part)


def feature_of_part_row(row: bytes) -> tuple[str, int]:
    """Inverse of `feature_part_row`."""
    name, _, part = row.rpartition(PART_SEPARATOR)
    return name.decode(), struct.unpack(">H", part)[0]


def encode_text(text: str) -> bytes:
    """A metadata text value."""
    return _VERSION + b"T" + text.encode()


def decode_text(value: bytes) -> str:
    _check_header(value, b"T")
    return value[2:].decode()


def encode_vector(values: np.ndarray | list[float]) -> bytes:
    """A float64 vector (embedding coordinates, numeric metadata)."""
    vec = np.ascontiguousarray(values, dtype="<f8")
    return _VERSION + b"V" + struct.pack("<I", vec.size) + vec.tobytes()


def decode_vector(value: bytes) -> np.ndarray:
    _check_header(value, b"V")
    (n,) = struct.unpack_from("<I", value, 2)
    return np.frombuffer(value, dtype="<f8", count=n, offset=6)


def encode_int(number: int) -> bytes:
    return _VERSION + b"I" + struct.pack("<q", number)


def decode_int(value: bytes) -> int:
    _check_header(value, b"I")
    return struct.unpack_from("<q", value, 2)[0]


def encode_json(document: Any) -> bytes:
    """A catalog document (compact JSON; NaN is not allowed)."""
    return _VERSION + b"J" + json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode_json(value: bytes) -> Any:
    _check_header(value, b"J")
    return json.loads(value[2:])



def decode_ints(values: list[bytes]) -> np.ndarray:
    """Many int cells at once (int64 array): one pass in numpy instead of one `decode_int` each."""
    if not values:
        return np.empty(0, dtype=np.int64)
    dtype = np.dtype([("head", "S2"), ("value", "<i8")])
    joined = b"".join(values)
    if len(joined) != len(values) * dtype.itemsize:
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} int cells")
    cells = np.frombuffer(joined, dtype=dtype)
    if (cells["head"] != _VERSION + b"I").any():
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} int cells")
    return cells["value"].copy()


def decode_vectors(values: list[bytes], n: int) -> np.ndarray:
    """Many vector cells of `n` numbers at once, as a (len(values), n) float64 array."""
    if not values:
        return np.empty((0, n), dtype=np.float64)
    dtype = np.dtype([("head", "S2"), ("n", "<u4"), ("value", "<f8", (n,))])
    joined = b"".join(values)
    if len(joined) != len(values) * dtype.itemsize:
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} vector cells of {n} numbers")
    cells = np.frombuffer(joined, dtype=dtype)
    if (cells["head"] != _VERSION + b"V").any() or (cells["n"] != n).any():
        raise Permanent(f"values are not all layout-{LAYOUT_VERSION} vector cells of {n} numbers")
    return cells["value"].copy()


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


def markers_row(grouping: str, group: str) -> bytes:
    """Row key of one group's markers."""
    return grouping.encode() + PART_SEPARATOR + group.encode()


def encode_markers(features: list[str], fields: dict[str, np.ndarray]) -> bytes:
    """One group's ranked markers: feature names and the MARKER_FIELDS vectors, best first."""
    names = [f.encode() for f in features]
    n = len(names)
    head = _VERSION + b"K" + struct.pack("<I", n)
    vectors = b"".join(np.ascontiguousarray(fields[k], dtype="<f8").tobytes() for k in MARKER_FIELDS)
    if len(vectors) != 8 * n * len(MARKER_FIELDS):
        raise ValueError("every marker field needs one value per feature")
    return head + vectors + np.array([len(b) for b in names], dtype="<u4").tobytes() + b"".join(names)


def decode_markers(value: bytes) -> tuple[list[str], dict[str, np.ndarray]]:
    """Inverse of `encode_markers`."""
    _check_header(value, b"K")
    (n,) = struct.unpack_from("<I", value, 2)
    offset = 6
    fields = {}
    for key in MARKER_FIELDS:
        fields[key] = np.frombuffer(value, dtype="<f8", count=n, offset=offset)
        offset += 8 * n
    lengths = np.frombuffer(value, dtype="<u4", count=n, offset=offset)
    offset += 4 * n
    names = []
    for length in lengths.tolist():
        names.append(value[offset : offset + length].decode())
        offset += length
    return names, fields


def sample_part_row(part: int) -> bytes:
    """Row key of one part of the embedding sample."""
    return b"part" + struct.pack(">H", part)


def encode_sample_part(positions: np.ndarray, coordinates: np.ndarray, weights: np.ndarray, groups: np.ndarray, cell_ids: list[str]) -> bytes:
    """Points of the embedding sample: positions (n), coordinates (n, dims), weights (n), group indices
    (n, n_groupings), cell ids."""
    coords = np.ascontiguousarray(coordinates, dtype="<f8")
    codes = np.ascontiguousarray(groups, dtype="<i4")
    n, dims = coords.shape
    ids = [c.encode() for c in cell_ids]
    if len(ids) != n or codes.shape[0] != n or np.asarray(positions).size != n or np.asarray(weights).size != n:
        raise ValueError("every sample field needs one entry per point")
    return (
        _VERSION
        + b"P"
        + struct.pack("<III", n, dims, codes.shape[1])
        + np.ascontiguousarray(positions, dtype="<i4").tobytes()
        + coords.tobytes()
        + np.ascontiguousarray(weights, dtype="<f8").tobytes()
        + codes.tobytes()
        + np.array([len(b) for b in ids], dtype="<u4").tobytes()
        + b"".join(ids)
    )


def decode_sample_part(value: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Inverse of `encode_sample_part`: (positions, coordinates, weights, group indices, cell ids)."""
    _check_header(value, b"P")
    n, dims, n_groupings = struct.unpack_from("<III", value, 2)
    offset = 14
    positions = np.frombuffer(value, dtype="<i4", count=n, offset=offset)
    offset += 4 * n
    coords = np.frombuffer(value, dtype="<f8", count=n * dims, offset=offset).reshape(n, dims)
    offset += 8 * n * dims
    weights = np.frombuffer(value, dtype="<f8", count=n, offset=offset)
    offset += 8 * n
    codes = np.frombuffer(value, dtype="<i4", count=n * n_groupings, offset=offset).reshape(n, n_groupings)
    offset += 4 * n * n_groupings
    lengths = np.frombuffer(value, dtype="<u4", count=n, offset=offset)
    offset += 4 * n
    ids = []
    for length in lengths.tolist():
        ids.append(value[offset : offset + length].decode())
        offset += length
    return positions, coords, weights, codes, ids


# The cells view's embedding blocks (see the docstring): a row prefix no cell id can start with.
EMBEDDING_BLOCK_PREFIX = b"\x00emb"
EMBEDDING_BLOCK_QUALIFIER_PREFIX = b"b:"
EMBEDDING_BLOCK_CELLS = 50_000


def embedding_block_row(first_position: int) -> bytes:
    """Row key of the embedding block of the share of cells starting at `first_position`."""
    return EMBEDDING_BLOCK_PREFIX + struct.pack(">I", first_position)


def encode_embedding_block(positions: np.ndarray, coordinates: np.ndarray, cell_ids: list[str]) -> bytes:
    """A share's cells in one value: positions (n), coordinates (n, dims; NaN where blank), cell ids."""
    coords = np.ascontiguousarray(coordinates, dtype="<f8")
    n, dims = coords.shape
    ids = [c.encode() for c in cell_ids]
    if len(ids) != n or np.asarray(positions).size != n:
        raise ValueError("every embedding block field needs one entry per cell")
    return (
        _VERSION
        + b"B"
        + struct.pack("<II", n, dims)
        + np.ascontiguousarray(positions, dtype="<i4").tobytes()
        + coords.tobytes()
        + np.array([len(b) for b in ids], dtype="<u4").tobytes()
        + b"".join(ids)
    )


def decode_embedding_block(value: bytes) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Inverse of `encode_embedding_block`: (int32 positions, float64 (n, dims) coordinates, UTF-8 cell ids as bytes)."""
    _check_header(value, b"B")
    n, dims = struct.unpack_from("<II", value, 2)
    offset = 10
    positions = np.frombuffer(value, dtype="<i4", count=n, offset=offset)
    offset += 4 * n
    coords = np.frombuffer(value, dtype="<f8", count=n * dims, offset=offset).reshape(n, dims)
    offset += 8 * n * dims
    lengths = np.frombuffer(value, dtype="<u4", count=n, offset=offset)
    ends = (offset + 4 * n + np.cumsum(lengths, dtype=np.int64)).tolist()
    if n and ends[-1] != len(value):
        raise Permanent(f"embedding block of {n} cells has {len(value)} bytes, its fields say {ends[-1]}")
    starts = [offset + 4 * n] + ends[:-1]
    return positions, coords, [value[a:b] for a, b in zip(starts, ends)]
