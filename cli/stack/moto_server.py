"""The local stack's AWS: moto's server, with S3 ranged GETs that read only the range asked for.

    python -m cli.stack.moto_server -H 127.0.0.1 -p PORT    (the arguments of `python -m moto.server`)

moto answers a GET with a `Range` by reading the whole object out of its buffer (`FakeKey.value`) and
slicing the range from that copy. Readers of large objects read by ranges: s3a reads an HFile's
trailer, index and blocks each with a GET of its own (HBase's bulk load and the loader's BulkLoad
both open every HFile, about seven GETs per file), and ingest reads the upload ZIP in ranges. At 100k
cells × 20k features each GET of a transpose HFile copied ~250 MB to send a few kB, and each GET of the
ZIP 0.56 GB. Real S3 reads only the range, and so does this server: during a plain GET of an object
(version id allowed) whose `Range` is one byte range, the key's value is a window onto its buffer,
and moto's own range handling (`S3Response._handle_range_header`: validation, 206, Content-Range,
416) slices just those bytes from it. Anything the window reaches otherwise is read whole, as moto
does. Every other request is moto's own, unchanged.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

from moto.s3.models import FakeKey
from moto.s3.responses import S3Response
from moto.server import main

_ranged = threading.local()
_whole_value: property = FakeKey.value  # type: ignore[assignment]


class KeyWindow:
    """A FakeKey's value as moto's range handling uses it (`len`, a slice) without copying the object."""

    def __init__(self, key: FakeKey) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice) or index.step not in (None, 1):
            return bytes(self)[index]  # type: ignore[no-any-return]
        start, stop, _ = index.indices(len(self))
        with self.key.lock:
            buffer = self.key._value_buffer
            buffer.seek(start)
            return buffer.read(max(0, stop - start))  # type: ignore[no-any-return]

    def __bytes__(self) -> bytes:
        return _whole_value.fget(self.key)  # type: ignore[misc,no-any-return]


def _value(key: FakeKey) -> Any:
    return KeyWindow(key) if getattr(_ranged, "active", False) else _whole_value.fget(key)  # type: ignore[misc]


def _is_plain_ranged_get(request: Any, full_url: str) -> bool:
    """A GET of an object's bytes (no sub-resource but a version id, no part number) with one byte range."""
    if request.method != "GET":
        return False
    spec = request.headers.get("range") or ""
    if not spec.startswith("bytes=") or "," in spec:
        return False
    return set(parse_qs(urlparse(full_url).query, keep_blank_values=True)) <= {"versionId"}


_key_response = S3Response.key_response


def key_response(self: S3Response, request: Any, full_url: str, headers: dict[str, Any]) -> Any:
    """moto's key response, reading only the range of a plain ranged GET."""
    if not _is_plain_ranged_get(request, full_url):
        return _key_response(self, request, full_url, headers)
    _ranged.active = True
    try:
        status, response_headers, body = _key_response(self, request, full_url, headers)
    finally:
        _ranged.active = False
    if isinstance(body, KeyWindow):
        body = bytes(body)  # a path that did not slice it (the whole object, as moto sends it)
    return status, response_headers, body


def install() -> None:
    """Make this process's moto read only the range of a plain ranged GET."""
    FakeKey.value = property(_value, _whole_value.fset)  # type: ignore[method-assign,assignment]
    S3Response.key_response = key_response  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    main()
