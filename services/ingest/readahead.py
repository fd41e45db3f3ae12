"""Read-ahead over a seekable raw reader (the upload on S3): the next ranges are fetched by a
background thread while the current one is inflated and parsed, so S3 latency is hidden.

Only sequential reads are served from the read-ahead; a seek elsewhere (ZIP directory lookups)
drops it and reads a small piece directly. Memory: `depth` + 1 pieces of `piece_bytes` (32 MB:
each GET has a cost of its own, and the local S3, moto, copies the object per ranged GET, so
8 MB ranges of a 0.5 GB object came at 25 MB/s there and 32 MB ones at 87 MB/s).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from shared.rawio import SizedReader


class ReadAhead(SizedReader):
    """`raw` (with `size`, `seek`, `read`) read `piece_bytes` at a time, `depth` pieces ahead."""

    def __init__(self, raw: Any, *, piece_bytes: int = 32 << 20, depth: int = 2, first_bytes: int = 1 << 20) -> None:
        super().__init__()
        self.raw = raw
        self.size = raw.size
        self.piece_bytes = piece_bytes
        self.first_bytes = first_bytes
        self.depth = depth
        self._pos = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-read-ahead")
        self._ahead: list[tuple[int, Future[bytes]]] = []  # (offset, piece), consecutive
        self._buf = b""
        self._buf_start = 0

    def _fetch(self, offset: int, length: int) -> bytes:
        # The raw reader is only used from this pool's single thread.
        self.raw.seek(offset)
        return self.raw.read(min(length, self.size - offset))

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the current position, from the read-ahead when it holds it; returns the bytes read."""
        if self._pos >= self.size:
            return 0
        if not (self._buf_start <= self._pos < self._buf_start + len(self._buf)):
            self._load(self._pos)
        start = self._pos - self._buf_start
        n = min(len(buffer), len(self._buf) - start)
        buffer[:n] = self._buf[start : start + n]
        self._pos += n
        return n

    def _load(self, offset: int) -> None:
        """Make the piece holding `offset` current, from the read-ahead when it is next in line.

        A read that does not continue the current piece (ZIP directory lookups, a small member)
        fetches a small piece and starts no read-ahead; reading on from the end of a piece is a
        stream, and gets full pieces, `depth` of them ahead.
        """
        streaming = bool(self._buf) and offset == self._buf_start + len(self._buf)
        if self._ahead and self._ahead[0][0] <= offset < self._ahead[0][0] + self.piece_bytes:
            piece_offset, future = self._ahead.pop(0)
        else:
            for _, stale in self._ahead:
                stale.result()  # finish it: the raw reader is not shared between two fetches
            self._ahead = []
            piece_offset = offset
            future = self._pool.submit(self._fetch, offset, self.piece_bytes if streaming else self.first_bytes)
        self._buf, self._buf_start = future.result(), piece_offset
        if not streaming and not self._ahead:
            return
        next_offset = (self._ahead[-1][0] if self._ahead else piece_offset + len(self._buf)) + (self.piece_bytes if self._ahead else 0)
        while len(self._ahead) < self.depth and next_offset < self.size:
            self._ahead.append((next_offset, self._pool.submit(self._fetch, next_offset, self.piece_bytes)))
            next_offset += self.piece_bytes

    def close(self) -> None:
        """Cancel the read-ahead and stop its thread."""
        for _, future in self._ahead:
            future.cancel()
        self._pool.shutdown(wait=True)
        super().close()
