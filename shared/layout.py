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
