"""Bodies of the read API: JSON (orjson, NaN as null), Arrow IPC streams (no pyarrow), CSV, and page cursors.

A cursor is opaque to clients: URL-safe base64 of a small JSON object that names the version the
first page was read from, so every page of one listing comes from the same version (even after a
flip, for as long as that version stays readable).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from services.query.arrow_ipc import encode_stream
from shared.errors import BadRequest

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def encode_json(body: Any) -> bytes:
    """Compact JSON; numpy arrays as lists, NaN and ±inf as null (orjson's rule)."""
    return orjson.dumps(body, option=_JSON_OPTIONS)


def encode_cursor(fields: dict[str, Any]) -> str:
    """An opaque page cursor for `fields` (JSON-able)."""
    return base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()


def decode_cursor(cursor: str, fields: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """The fields of a cursor this API gave, each of the given type; `BadRequest` for anything else."""
    problem = BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise problem from exc
    if not isinstance(decoded, dict):
        raise problem
    for name, kind in fields.items():
        value = decoded.get(name)
        # bool is an int to isinstance; no cursor field is a bool.
        if name not in decoded or isinstance(value, bool) or not isinstance(value, kind):
            raise problem
    return decoded


def encode_arrow(columns: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """One Arrow IPC stream (schema, one record batch) of the named columns; `metadata` on the schema.

    Text columns with few distinct values (groupings) are dictionary-encoded (see `arrow_ipc`).
    """
    return encode_stream(columns, metadata)


def encode_csv(header: list[str], rows: list[list[Any]]) -> bytes:
    """RFC 4180 CSV (quoted where needed, \\r\\n line ends); None and NaN as empty fields."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None or (isinstance(v, float) and v != v) else v for v in row])
    return out.getvalue().encode()


def fit_page(build: Callable[[int], bytes], n: int, max_bytes: int) -> tuple[bytes, int]:
    """The body of the largest page of at most `n` items that `build(n)` keeps within `max_bytes`.

    Shrinks `n` in proportion to the overshoot until the body fits (a page of one item is kept
    whatever its size: an item is never split). Returns (body, items in it).
    """
    body = build(n)
    while len(body) > max_bytes and n > 1:
        n = max(1, min(n - 1, int(n * max_bytes / len(body) * 0.9)))
        body = build(n)
    return body, n


def as_int_list(values: np.ndarray) -> np.ndarray:
    """Counts as int64 (they are whole numbers stored as float64)."""
    return np.nan_to_num(values, nan=0).astype(np.int64)
