"""ReadAhead returns exactly the bytes of the object it reads, sequential or seeking."""

from __future__ import annotations

import io
import os
import zipfile

from services.ingest.readahead import ReadAhead


class CountingReader(io.BytesIO):
    """An in-memory object with a `size`, counting the reads that reach it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        self.reads.append((self.tell(), n))
        return super().read(n)


def test_sequential_and_seeking_reads_return_the_object_bytes() -> None:
    data = os.urandom(1_000_003)
    raw = CountingReader(data)
    ahead = ReadAhead(raw, piece_bytes=65_536, depth=2, first_bytes=4096)
    try:
        stream = io.BufferedReader(ahead, buffer_size=10_000)
        assert stream.read(100) == data[:100]
        assert stream.read() == data[100:]
        for offset, n in [(999_990, 50), (5, 17), (500_000, 200_000), (0, 1)]:
            stream.seek(offset)
            assert stream.read(n) == data[offset : offset + n]
    finally:
        ahead.close()
    # After the first small piece, the stream is read in full pieces (about size / piece reads).
    assert sum(1 for _, n in raw.reads if n == 65_536) >= 14


def test_a_zip_member_read_through_read_ahead_is_intact() -> None:
    payload = os.urandom(300_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("small.txt", b"x" * 10)
        archive.writestr("big.bin", payload)
    ahead = ReadAhead(CountingReader(buf.getvalue()), piece_bytes=32_768, depth=3, first_bytes=1024)
    try:
        with zipfile.ZipFile(io.BufferedReader(ahead, buffer_size=8192)) as archive:
            assert archive.read("small.txt") == b"x" * 10
            assert archive.read("big.bin") == payload
    finally:
        ahead.close()

