"""A seekable, read-only raw stream of known size: the position bookkeeping every ranged reader
shares (the upload on S3, the read-ahead over it). Subclasses set `size` and implement `readinto`."""

from __future__ import annotations

import io


class SizedReader(io.RawIOBase):
    """Read-only and seekable over `size` bytes; `_pos` is the current position."""

    size: int
    _pos: int = 0

    def readable(self) -> bool:
        """True: the stream can be read."""
        return True

    def seekable(self) -> bool:
        """True: any position can be read."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to `offset` from `whence` (never before 0); returns the new position."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos
