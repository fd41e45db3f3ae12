"""Parse blocks of matrix CSV text straight into non-zeros: (row, field, value) triples.

A block is whole lines of the CSV body (no header). Each line is an id field, then `width` numeric
fields. The hot loop is numba (no GIL), so blocks parse on every core at once while another thread
inflates the next ones.

Numbers take the exact fast path of every correct `strtod` (Clinger's): a decimal with at most 19
significant digits whose mantissa `m` is below 2**53 and whose power of ten `k` is within ±22 is
`m / 10**-k` or `m * 10**k`, both exact operands, so IEEE division or multiplication rounds the
exact value correctly: the same float64 as pyarrow's or Python's parser. Anything else (quoted
values, long mantissas, large exponents, `nan`, text) is handed back as a "slow" field that Python's
`float()` settles, so it is parsed the same way and rejected with the same reasons.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import logging
import math
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pyarrow as pa

from services.ingest.matrix import MatrixSummary, Progress, check_feature_count, check_ids, check_names, check_row_count, chunk_ranges, chunk_width
from services.ingest.parts import ChunkParts, group_by_chunk
from shared.config import Settings
from shared.errors import BadUpload

log = logging.getLogger(__name__)

# Status codes of `parse_rows`.
OK, FULL, RAGGED, EMPTY_VALUE = 0, 1, 2, 3

_COMMA, _NEWLINE, _CR, _QUOTE = 44, 10, 13, 34
_POW10 = np.array([10.0**i for i in range(23)], dtype=np.float64)


@dataclass
class ParsedRows:
    """What one call of `parse_rows` produced (arrays trimmed to their filled length)."""

    status: int
    end: int  # offset just past the last complete line parsed
    n_rows: int
    rows: np.ndarray  # int32, row within the call
    fields: np.ndarray  # int32, value field index (0 = first value after the id)
    values: np.ndarray  # float64, never 0
    id_spans: np.ndarray  # int64 (n_rows, 2): byte range of each row's id field (quotes included)
    slow: np.ndarray  # int64 (k, 4): row, field, start, end of values the fast path left to Python
    error_row: int
    error_field: int


@numba.njit(cache=True, nogil=True)
def _field_end(buf: np.ndarray, p: int, end: int) -> int:
    """Offset of the ',' or line end closing the field at `p` (a quoted field may hold both)."""
    if p < end and buf[p] == _QUOTE:
        p += 1
        while p < end:
            if buf[p] == _QUOTE:
                if p + 1 < end and buf[p + 1] == _QUOTE:
                    p += 2
                    continue
                p += 1
                break
            p += 1
    while p < end and buf[p] != _COMMA and buf[p] != _NEWLINE:
        p += 1
    return p


@numba.njit(cache=True, nogil=True, inline="always")
def _record_slow(slow: np.ndarray, n_slow: int, row: int, field: int, start: int, stop: int) -> int:
    """Note a value for Python's `float()` (row, field, byte range); the new count."""
    slow[n_slow, 0] = row
    slow[n_slow, 1] = field
    slow[n_slow, 2] = start
    slow[n_slow, 3] = stop
    return n_slow + 1


@numba.njit(cache=True, nogil=True)
def _parse_rows(
    buf: np.ndarray,
    start: int,
    end: int,
    width: int,
    rows: np.ndarray,
    fields: np.ndarray,
    values: np.ndarray,
    id_spans: np.ndarray,
    slow: np.ndarray,
    pow10: np.ndarray,
) -> tuple[int, int, int, int, int, int, int]:
    """Parse the lines of buf[start:end] (which ends with a newline) until done or an output is full.

    Returns (status, offset after the last whole line, rows, non-zeros, slow fields, error row,
    error field). A line's outputs are committed only once the whole line parsed, so FULL resumes
    at a line start.
    """
    cap = values.shape[0]
    slow_cap = slow.shape[0]
    row_cap = id_spans.shape[0]
    n_rows = 0
    nnz = 0
    n_slow = 0
    p = start
    while p < end:
        line_start = p
        # Blank lines (also "\r\n") are skipped, as CSV readers do.
        if buf[p] == _NEWLINE:
            p += 1
            continue
        if buf[p] == _CR and p + 1 < end and buf[p + 1] == _NEWLINE:
            p += 2
            continue
        if n_rows == row_cap or cap - nnz < width or slow_cap - n_slow < 1:
            return FULL, line_start, n_rows, nnz, n_slow, -1, -1
        id_end = _field_end(buf, p, end)
        id_spans[n_rows, 0] = p
        id_spans[n_rows, 1] = id_end - 1 if id_end > p and buf[id_end - 1] == _CR and buf[id_end] == _NEWLINE else id_end
        p = id_end
        line_nnz = nnz
        line_slow = n_slow
        field = 0
        while p < end and buf[p] == _COMMA:
            p += 1
            if field >= width:
                return RAGGED, line_start, n_rows, line_nnz, line_slow, n_rows, field + 1
            # Most values of a sparse matrix are a bare "0": skip them before any number parsing.
            if buf[p] == 48 and p + 1 < end and (buf[p + 1] == _COMMA or buf[p + 1] == _NEWLINE):
                p += 1
                field += 1
                continue
            # Fast path: [-+]digits[.digits][(e|E)[-+]digits] followed by ',' or a line end.
            q = p
            negative = False
            if q < end and (buf[q] == 45 or buf[q] == 43):
                negative = buf[q] == 45
                q += 1
            # The digits of the integer part and, past one '.', of the fraction, in one loop: in the
            # integer part a digit past the 19th only scales by ten; in the fraction every digit kept,
            # and every leading zero, divides by ten.
            mantissa = np.uint64(0)
            digits = 0
            any_digit = False
            exp10 = 0
            fraction = False
            while q < end:
                c = buf[q]
                if c == 46 and not fraction:
                    fraction = True
                    q += 1
                    continue
                if c < 48 or c > 57:
                    break
                any_digit = True
                d = c - 48
                if digits > 0 or d != 0:
                    if digits < 19:
                        mantissa = mantissa * np.uint64(10) + np.uint64(d)
                        if fraction:
                            exp10 -= 1
                    elif not fraction:
                        exp10 += 1
                    digits += 1
                elif fraction:
                    exp10 -= 1
                q += 1
            fast = any_digit
            if fast and q < end and (buf[q] == 101 or buf[q] == 69):
                q += 1
                exp_negative = False
                if q < end and (buf[q] == 45 or buf[q] == 43):
                    exp_negative = buf[q] == 45
                    q += 1
                exp_digits = 0
                e = 0
                while q < end and 48 <= buf[q] <= 57:
                    if e < 100000:
                        e = e * 10 + (buf[q] - 48)
                    exp_digits += 1
                    q += 1
                if exp_digits == 0:
                    fast = False
                exp10 += -e if exp_negative else e
            closes = q < end and (buf[q] == _COMMA or buf[q] == _NEWLINE or (buf[q] == _CR and q + 1 < end and buf[q + 1] == _NEWLINE))
            if fast and closes:
                if mantissa != 0:
                    if digits > 19 or mantissa > np.uint64(9007199254740992) or exp10 < -22 or exp10 > 22:
                        n_slow = _record_slow(slow, n_slow, n_rows, field, p, q)
                        if n_slow == slow_cap:
                            return FULL, line_start, n_rows, line_nnz, line_slow, -1, -1
                    else:
                        value = float(mantissa)
                        value = value / pow10[-exp10] if exp10 < 0 else value * pow10[exp10]
                        rows[nnz] = n_rows
                        fields[nnz] = field
                        values[nnz] = -value if negative else value
                        nnz += 1
                p = q
            else:
                q = _field_end(buf, p, end)
                value_end = q - 1 if q > p and buf[q - 1] == _CR and q < end and buf[q] == _NEWLINE else q
                if value_end == p:
                    return EMPTY_VALUE, line_start, n_rows, line_nnz, line_slow, n_rows, field
                n_slow = _record_slow(slow, n_slow, n_rows, field, p, value_end)
                if n_slow == slow_cap:
                    return FULL, line_start, n_rows, line_nnz, line_slow, -1, -1
                p = q
            field += 1
            if p < end and buf[p] == _CR and p + 1 < end and buf[p + 1] == _NEWLINE:
                p += 1
        if p >= end or buf[p] != _NEWLINE:
            # Only a quoted id can leave us here without a newline: the block ended inside it.
            return RAGGED, line_start, n_rows, line_nnz, line_slow, n_rows, field
        if field != width:
            return RAGGED, line_start, n_rows, line_nnz, line_slow, n_rows, field
        p += 1
        n_rows += 1
    return OK, p, n_rows, nnz, n_slow, -1, -1


def parse_rows(buf: np.ndarray, start: int, end: int, width: int, *, max_nnz: int = 1 << 22, max_rows: int = 1 << 20, max_slow: int = 1 << 16) -> ParsedRows:
    """Parse whole lines of `buf[start:end]` (uint8; ending with a newline) with `width` values each.

    Stops early with status FULL, at a line start, when an output would overflow; the caller resumes
    from `end`. RAGGED and EMPTY_VALUE name the row (within this call) and the field at fault.
    """
    cap = max(max_nnz, width)
    rows = np.empty(cap, dtype=np.int32)
    fields = np.empty(cap, dtype=np.int32)
    values = np.empty(cap, dtype=np.float64)
    id_spans = np.empty((max_rows, 2), dtype=np.int64)
    slow = np.empty((max(max_slow, width + 1), 4), dtype=np.int64)
    status, stop, n_rows, nnz, n_slow, error_row, error_field = _parse_rows(buf, start, end, width, rows, fields, values, id_spans, slow, _POW10)
    return ParsedRows(status, stop, n_rows, rows[:nnz], fields[:nnz], values[:nnz], id_spans[:n_rows], slow[:n_slow], error_row, error_field)


@numba.njit(cache=True, nogil=True)
def _gather_spans(buf: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bytes of each span, concatenated, with int32 offsets (an Arrow string array's buffers)."""
    n = spans.shape[0]
    offsets = np.zeros(n + 1, dtype=np.int32)
    for i in range(n):
        offsets[i + 1] = offsets[i] + (spans[i, 1] - spans[i, 0])
    data = np.empty(offsets[n], dtype=np.uint8)
    for i in range(n):
        data[offsets[i] : offsets[i + 1]] = buf[spans[i, 0] : spans[i, 1]]
    return data, offsets


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


def unquote(text: str) -> str:
    """A CSV field's text: surrounding quotes removed, doubled quotes undoubled."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def parse_slow_value(text: str) -> float:
    """A value the fast path left: a plain decimal (perhaps quoted) parsed by Python; else ValueError naming why."""
    value = unquote(text)
    if _NON_FINITE.fullmatch(value.strip()):
        raise ValueError(f"non-finite value {float(value.strip())}")
    if not _NUMBER.fullmatch(value):
        raise ValueError(f"non-numeric value {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"non-finite value {value!r} (out of the float64 range)")
    return number


def ids_array(buf: np.ndarray, spans: np.ndarray) -> pa.Array:
    """The id fields of parsed rows as an Arrow string array (quotes removed); UnicodeError if not UTF-8."""
    data, offsets = _gather_spans(buf, spans)
    array = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        array.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise UnicodeError(str(exc)) from exc
    if len(data) and (data == _QUOTE).any():
        array = pa.array([unquote(v) for v in array.to_pylist()], pa.string())
    return array


@dataclass
class ParsedBlock:
    """One block of lines: its rows' ids, the non-zeros grouped by chunk, and the slow fields."""

    n_rows: int
    ids: pa.Array
    # Per chunk present: (chunk, row-within-block, field, value) arrays; chunk = key // chunk_width.
    groups: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]
    slow: list[tuple[int, int, str]]  # (row within block, field, text)
    error: tuple[int, int, int] | None  # (status, row within block, field)
    error_id: str = ""  # the id field of the row at fault


def parse_block(block: bytes, width: int, chunk_width: int | None) -> ParsedBlock:
    """Parse one block of whole lines; with `chunk_width`, group its non-zeros by the field's column
    chunk (cells as rows), else keep them in row order as one group (features as rows: the chunk
    follows the row, known only once earlier blocks are counted)."""
    buf = np.frombuffer(block, dtype=np.uint8)
    start, end = 0, len(buf)
    n_rows = 0
    id_arrays: list[pa.Array] = []
    groups: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    slow: list[tuple[int, int, str]] = []
    error = None
    error_id = ""
    while start < end:
        parsed = parse_rows(buf, start, end, width)
        if parsed.n_rows:
            id_arrays.append(ids_array(buf, parsed.id_spans))
        rows = parsed.rows + n_rows
        if chunk_width is None:
            if rows.size:
                groups.append((-1, rows, parsed.fields, parsed.values))
        elif rows.size:
            n_chunks = -(-width // chunk_width)
            order, starts = group_by_chunk(parsed.fields, chunk_width, n_chunks)
            for c in range(n_chunks):
                if starts[c + 1] > starts[c]:
                    take = order[starts[c] : starts[c + 1]]
                    groups.append((c, rows[take], parsed.fields[take] - c * chunk_width, parsed.values[take]))
        for r, f, s, e in parsed.slow:
            slow.append((int(r) + n_rows, int(f), bytes(buf[s:e]).decode("utf-8", "replace")))
        n_rows += parsed.n_rows
        if parsed.status not in (OK, FULL):
            error = (parsed.status, n_rows, parsed.error_field)
            line = bytes(buf[parsed.end : parsed.end + 4096]).split(b"\n", 1)[0]
            error_id = unquote(line.split(b",", 1)[0].decode("utf-8", "replace").rstrip("\r"))
            break
        start = parsed.end
    ids = pa.concat_arrays(id_arrays) if id_arrays else pa.array([], pa.string())
    return ParsedBlock(n_rows, ids, groups, slow, error, error_id)


def read_line_blocks(stream: Any, block_bytes: int, on_read: Any = None) -> Iterator[bytes]:
    """Whole lines of `stream` in blocks of about `block_bytes` (longer when one line is); a missing
    final newline is added. `on_read(n)` is told every piece read."""
    tail = b""
    while True:
        piece = stream.read(block_bytes)
        if on_read is not None:
            on_read(len(piece))
        if not piece:
            if tail.strip():
                yield tail + b"\n"
            return
        data = tail + piece if tail else piece
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            tail = data
            continue
        tail = data[cut:]
        yield data[:cut]


def pipelined(blocks: Iterator[bytes], work: Any, threads: int, depth: int) -> Iterator[Any]:
    """`work(block, index)` of each block on `threads` threads while a reader thread pulls the next
    blocks (inflating them); results in block order, at most `depth` blocks held at once."""
    pending: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth - threads))
    stop = threading.Event()
    done = object()

    def read_all() -> None:
        try:
            for block in blocks:
                while not stop.is_set():
                    try:
                        pending.put(block, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pending.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            pending.put(exc)

    reader = threading.Thread(target=read_all, name="inflate", daemon=True)
    reader.start()
    in_flight: collections.deque[Future[Any]] = collections.deque()
    index = 0
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="parse") as pool:
            finished = False
            while True:
                while not finished and len(in_flight) < threads:
                    item = pending.get()
                    if item is done:
                        finished = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    in_flight.append(pool.submit(work, item, index))
                    index += 1
                if not in_flight:
                    return
                yield in_flight.popleft().result()
    finally:
        stop.set()
        for future in in_flight:
            future.cancel()
        # Unblock a reader waiting on a full queue, then let it see `stop`.
        with contextlib.suppress(queue.Empty):
            while True:
                pending.get_nowait()
        reader.join(timeout=5)


def read_header(stream: Any, settings: Settings, member: str) -> list[str]:
    """The header line's fields (a UTF-8 BOM, quotes and CRLF handled)."""
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


def split_csv_matrix(
    stream: Any,
    member: str,
    size_bytes: int,
    settings: Settings,
    new_parts: Callable[[int], ChunkParts],
    *,
    features_as_rows: bool = False,
    progress: Progress | None = None,
    threads: int = 0,
    block_bytes: int = 8 << 20,
) -> MatrixSummary:
    """Stream a matrix CSV once: validate every value and stage each column chunk's non-zeros.

    Cells as rows (`<id>,<feature 1>,…` header) or, with `features_as_rows`, features as rows
    (`<id>,<cell 1>,…`). `size_bytes` is the CSV's size if known (0 if not), used for the chunk width
    and progress. `new_parts(chunk_width)` makes the sink. Raises `BadUpload` naming the row and
    column of a bad value.
    """
    header = read_header(stream, settings, member)
    if len(header) < 2:
        what = "cell" if features_as_rows else "feature"
        raise BadUpload(f"{member} has no {what} columns (header: {header[:3]})")
    id_column, columns = header[0], header[1:]
    check_names(header, "column", member)
    width = len(columns)
    if features_as_rows:
        n_cells = width
        cell_ids: pa.Array = pa.array(columns, pa.string())
        check_ids(cell_ids, member)
        chunk_w = chunk_width(n_cells, settings)
    else:
        check_feature_count(width, settings, member)
        # Each row holds at least one byte per value plus a separator: an upper bound on the cell count.
        est_cells = max(1, (size_bytes or (1 << 40)) // (2 * len(header)))
        chunk_w = chunk_width(min(est_cells, 2**31), settings)
    threads = threads or max(1, os.cpu_count() or 1)
    read_bytes = [len(",".join(header)) + 1]

    def on_read(n: int) -> None:
        read_bytes[0] += n

    row0 = 0
    ids: list[pa.Array] = []
    started = last_report = time.monotonic()
    with new_parts(chunk_w) as parts:
        blocks = read_line_blocks(stream, max(block_bytes, 2 * len(",".join(header))), on_read)
        work = lambda block, _index: parse_block(block, width, None if features_as_rows else chunk_w)  # noqa: E731
        try:
            for parsed in pipelined(blocks, work, threads, depth=threads + 2):
                _stage_block(parsed, row0, member, id_column, columns, features_as_rows, chunk_w, parts)
                ids.append(parsed.ids)
                row0 += parsed.n_rows
                if features_as_rows:
                    check_feature_count(row0, settings, member)
                if progress is not None and time.monotonic() - last_report >= 1.0:
                    progress(read_bytes[0], size_bytes, row0)
                    last_report = time.monotonic()
        except UnicodeError as exc:
            raise BadUpload(f"{member}: not valid UTF-8 after data row {row0} ({exc})") from exc
        except zlib.error as exc:
            raise BadUpload(f"{member}: the compressed data is corrupt after data row {row0} ({exc})") from exc
        check_row_count(row0, member)
        row_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        if features_as_rows:
            features = row_ids.to_pylist()
            check_names(features, "feature", member)
            chunks = chunk_ranges(len(features), chunk_w)
        else:
            check_ids(row_ids, member)
            cell_ids = row_ids
            features = columns
            chunks = chunk_ranges(len(features), chunk_w)
        parsed_s = time.monotonic() - started
        n_parts = parts.finish(len(chunks))
        log.info(
            "%s: %d rows, %d non-zeros parsed in %.1f s (%.0f MB/s), %d parts staged in %.1f s",
            member, row0, parts.nnz, parsed_s, read_bytes[0] / max(parsed_s, 1e-9) / 1e6, n_parts, time.monotonic() - started - parsed_s,
        )
        if progress is not None:
            progress(read_bytes[0], size_bytes, row0)
        return MatrixSummary(cell_ids, features, id_column, chunks, n_parts, parts.nnz)


def _stage_block(
    parsed: ParsedBlock, row0: int, member: str, id_column: str, columns: list[str], features_as_rows: bool, chunk_w: int, parts: ChunkParts
) -> None:
    """Check one parsed block and hand its non-zeros (global indices) to the parts."""
    row_word = "feature row" if features_as_rows else "data row"

    def where(row: int, field: int) -> str:
        row_id = parsed.ids[row].as_py() if row < len(parsed.ids) else parsed.error_id
        if features_as_rows:
            return f"{row_word} {row0 + row + 1} (feature {row_id!r}), cell {columns[field]!r}"
        return f"{row_word} {row0 + row + 1} (cell {row_id!r}), feature {columns[field]!r}"

    if parsed.error is not None:
        status, row, field = parsed.error
        if status == EMPTY_VALUE:
            raise BadUpload(f"{member}: empty value at {where(row, field)}")
        found = f"more than {len(columns) + 1}" if field > len(columns) else str(field + 1)
        what = "feature" if features_as_rows else "cell"
        raise BadUpload(
            f"{member}: {row_word} {row0 + row + 1} ({what} {parsed.error_id!r}) has {found} columns, expected {len(columns) + 1} as the header (ragged row)"
        )
    for row, field, text in parsed.slow:
        try:
            value = parse_slow_value(text)
        except ValueError as exc:
            raise BadUpload(f"{member}: {exc} at {where(row, field)}") from None
        if value != 0.0:
            parsed.groups.append(
                (-1 if features_as_rows else field // chunk_w, np.array([row], np.int32), np.array([field - (0 if features_as_rows else (field // chunk_w) * chunk_w)], np.int32), np.array([value]))
            )
    for chunk, rows, fields, values in parsed.groups:
        if features_as_rows:
            # Rows are features: global feature = row0 + row, cell = field.
            parts.add(rows.astype(np.int64) + row0, fields, values)
        else:
            parts.add_sorted(chunk, fields, rows + row0, values)
