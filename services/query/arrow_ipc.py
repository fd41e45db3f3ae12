"""Arrow IPC streams written with flatbuffers and numpy alone (the Lambda package has no pyarrow).

The read API sends a few flat tables: signed integer, float and UTF-8 columns, optionally with
dictionary-encoded UTF-8 columns (groupings: few distinct values over many cells); a float column's
NaN (a blank metadata value: stored values are never NaN) is written as null. This
module writes exactly that, following the Arrow columnar format's IPC streaming spec
(format/Message.fbs, Schema.fbs; metadata version V5):

    stream  = schema message, dictionary batch message per dictionary column, record batch message, end
    message = 0xFFFFFFFF | int32 metadata size | Message flatbuffer (padded to 8) | body (buffers, each padded to 8)
    end     = 0xFFFFFFFF 0x00000000

Every column's buffers are its validity bitmap (empty: length 0 means all valid; else one bit per
row, least significant first, 1 = valid), then its values (primitive), or its int32 offsets and its bytes (UTF-8). Any Arrow reader decodes it
(the tests read every answer back with pyarrow).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import flatbuffers
import numpy as np

_CONTINUATION = b"\xff\xff\xff\xff"
_METADATA_V5 = 4
# Message.fbs: union MessageHeader.
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3
# Schema.fbs: union Type.
_TYPE_INT, _TYPE_FLOAT, _TYPE_UTF8 = 2, 3, 5
_PRECISION = {np.dtype("<f4"): 1, np.dtype("<f8"): 2}  # SINGLE, DOUBLE


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "int" | "float" | "utf8" | "dict"
    values: np.ndarray | None = None  # int or float values, or the dictionary codes (int32)
    offsets: np.ndarray | None = None  # int32, for utf8 (of the dictionary, for dict)
    data: bytes = b""
    dictionary_id: int = -1
    validity: bytes = b""  # empty: no nulls
    null_count: int = 0


def _utf8(strings: list[str]) -> tuple[np.ndarray, bytes]:
    encoded = [s.encode() for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype="<i4")
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, b"".join(encoded)


def _column(name: str, values: object, dictionary_id: int) -> _Column:
    if isinstance(values, list) and all(isinstance(v, str) for v in values):
        distinct = list(dict.fromkeys(values))
        # Dictionary-encode text that repeats (groupings); keep ids and other unique text plain.
        if len(values) > 64 and len(distinct) * 4 < len(values):
            code_of = {v: i for i, v in enumerate(distinct)}
            offsets, data = _utf8(distinct)
            codes = np.fromiter((code_of[v] for v in values), dtype="<i4", count=len(values))
            return _Column(name, "dict", codes, offsets, data, dictionary_id)
        offsets, data = _utf8(values)
        return _Column(name, "utf8", None, offsets, data)
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return _Column(name, "int", array.astype(array.dtype.newbyteorder("<"), copy=False))
    if array.dtype.kind == "f":
        dtype = np.dtype("<f4") if array.dtype.itemsize == 4 else np.dtype("<f8")
        missing = np.isnan(array)
        if not missing.any():
            return _Column(name, "float", array.astype(dtype, copy=False))
        validity = np.packbits(~missing, bitorder="little").tobytes()
        return _Column(name, "float", np.where(missing, 0, array).astype(dtype), validity=validity, null_count=int(missing.sum()))
    raise TypeError(f"column {name!r}: no Arrow encoding here for {array.dtype}")


def _key_values(b: flatbuffers.Builder, metadata: dict[str, str]) -> int | None:
    if not metadata:
        return None
    pairs = []
    for key, value in metadata.items():
        k, v = b.CreateString(key), b.CreateString(value)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, k, 0)
        b.PrependUOffsetTRelativeSlot(1, v, 0)
        pairs.append(b.EndObject())
    return _vector_of_offsets(b, pairs)


def _vector_of_offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _type(b: flatbuffers.Builder, column: _Column) -> tuple[int, int]:
    """(Type union tag, offset of the type table) of a column's value type."""
    if column.kind == "int":
        b.StartObject(2)
        b.PrependInt32Slot(0, column.values.dtype.itemsize * 8, 0)  # type: ignore[union-attr]
        b.PrependBoolSlot(1, column.values.dtype.kind == "i", False)  # type: ignore[union-attr]
        return _TYPE_INT, b.EndObject()
    if column.kind == "float":
        b.StartObject(1)
        b.PrependInt16Slot(0, _PRECISION[column.values.dtype], 0)  # type: ignore[union-attr]
        return _TYPE_FLOAT, b.EndObject()
    b.StartObject(0)  # Utf8 {} (also the value type of a dictionary column)
    return _TYPE_UTF8, b.EndObject()


def _field(b: flatbuffers.Builder, column: _Column) -> int:
    name = b.CreateString(column.name)
    type_tag, type_offset = _type(b, column)
    dictionary = None
    if column.kind == "dict":
        b.StartObject(2)  # Int: the index type, int32 signed
        b.PrependInt32Slot(0, 32, 0)
        b.PrependBoolSlot(1, True, False)
        index_type = b.EndObject()
        b.StartObject(4)  # DictionaryEncoding { id: long; indexType: Int; isOrdered: bool; dictionaryKind }
        b.PrependInt64Slot(0, column.dictionary_id, 0)
        b.PrependUOffsetTRelativeSlot(1, index_type, 0)
        dictionary = b.EndObject()
    children = _vector_of_offsets(b, [])
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    # Float columns may hold nulls (blank metadata) on any page: declared nullable always, so that every
    # page of one listing has the same schema.
    b.PrependBoolSlot(1, column.kind == "float", False)
    b.PrependUint8Slot(2, type_tag, 0)
    b.PrependUOffsetTRelativeSlot(3, type_offset, 0)
    if dictionary is not None:
        b.PrependUOffsetTRelativeSlot(4, dictionary, 0)
    b.PrependUOffsetTRelativeSlot(5, children, 0)
    return b.EndObject()


def _message(header_type: int, build_header: object, body_length: int) -> bytes:
    """One framed message: continuation, size, the Message flatbuffer padded to 8 bytes."""
    b = flatbuffers.Builder(1024)
    header = build_header(b)  # type: ignore[operator]
    b.StartObject(5)
    b.PrependInt16Slot(0, _METADATA_V5, 0)
    b.PrependUint8Slot(1, header_type, 0)
    b.PrependUOffsetTRelativeSlot(2, header, 0)
    b.PrependInt64Slot(3, body_length, 0)
    b.Finish(b.EndObject())
    meta = bytes(b.Output())
    meta += b"\x00" * (-(len(meta) + 8) % 8)
    return _CONTINUATION + struct.pack("<i", len(meta)) + meta


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 8)


def _int64_pairs(b: flatbuffers.Builder, pairs: list[tuple[int, int]]) -> int:
    """A flatbuffer vector of structs of two int64 (first, second), in the pairs' order."""
    b.StartVector(16, len(pairs), 8)
    for first, second in reversed(pairs):
        b.Prep(8, 16)
        b.PrependInt64(second)
        b.PrependInt64(first)
    return b.EndVector()


def _batch(length: int, nodes: list[tuple[int, int]], buffers: list[bytes]) -> tuple[object, bytes]:
    """(header builder of a RecordBatch, its body) for the given field nodes and buffers."""
    layout: list[tuple[int, int]] = []
    body = bytearray()
    for buf in buffers:
        layout.append((len(body), len(buf)))
        body += _padded(buf)

    def header(b: flatbuffers.Builder) -> int:
        buffers_vec = _int64_pairs(b, layout)  # Buffer structs: offset, length
        nodes_vec = _int64_pairs(b, nodes)  # FieldNode structs: length, null_count
        b.StartObject(5)
        b.PrependInt64Slot(0, length, 0)
        b.PrependUOffsetTRelativeSlot(1, nodes_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, buffers_vec, 0)
        return b.EndObject()

    return header, bytes(body)


def _column_buffers(column: _Column) -> list[bytes]:
    if column.kind == "utf8":
        return [b"", column.offsets.tobytes(), column.data]  # type: ignore[union-attr]
    return [column.validity, column.values.tobytes()]  # type: ignore[union-attr]


def encode_stream(columns: dict[str, object], metadata: dict[str, str] | None = None) -> bytes:
    """An Arrow IPC stream of one record batch: numpy int/float arrays and lists of str, equal lengths.

    Text columns with few distinct values over many rows are dictionary-encoded (int32 codes).
    `metadata` goes on the schema (what pyarrow reads as `schema.metadata`).
    """
    cols = [_column(name, values, i) for i, (name, values) in enumerate(columns.items())]
    lengths = {len(c.values) if c.values is not None else len(c.offsets) - 1 for c in cols}  # type: ignore[arg-type]
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths: {sorted(lengths)}")
    length = lengths.pop() if lengths else 0

    def schema(b: flatbuffers.Builder) -> int:
        custom = _key_values(b, metadata or {})
        fields = _vector_of_offsets(b, [_field(b, c) for c in cols])
        b.StartObject(4)
        b.PrependInt16Slot(0, 0, 0)  # little-endian
        b.PrependUOffsetTRelativeSlot(1, fields, 0)
        if custom is not None:
            b.PrependUOffsetTRelativeSlot(2, custom, 0)
        return b.EndObject()

    out = bytearray(_message(_SCHEMA, schema, 0))
    for c in cols:
        if c.kind != "dict":
            continue
        n_values = len(c.offsets) - 1  # type: ignore[arg-type]
        batch, body = _batch(n_values, [(n_values, 0)], [b"", c.offsets.tobytes(), c.data])  # type: ignore[union-attr]

        def dictionary(b: flatbuffers.Builder, batch: object = batch, dictionary_id: int = c.dictionary_id) -> int:
            data = batch(b)  # type: ignore[operator]
            b.StartObject(3)  # DictionaryBatch { id: long; data: RecordBatch; isDelta: bool }
            b.PrependInt64Slot(0, dictionary_id, 0)
            b.PrependUOffsetTRelativeSlot(1, data, 0)
            return b.EndObject()

        out += _message(_DICTIONARY_BATCH, dictionary, len(body)) + body
    buffers = [buf for c in cols for buf in _column_buffers(c)]
    batch, body = _batch(length, [(length, c.null_count) for c in cols], buffers)
    out += _message(_RECORD_BATCH, batch, len(body)) + body
    out += _CONTINUATION + b"\x00\x00\x00\x00"
    return bytes(out)
