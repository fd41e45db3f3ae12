"""The two kinds of failure every handler raises, and their few subclasses.

`Permanent`: a retry cannot help (bad input, schema violation); the worker loop marks the version
FAILED with the message and moves the message to its dead-letter queue.
`Transient`: a retry can help (throttling, HBase busy, an endpoint unreachable); the message stays
on its queue and reappears after `retry_after_s`.
"""

from __future__ import annotations


class WideviewsError(Exception):
    """Base of every error the product raises on purpose."""


class Permanent(WideviewsError):
    """A failure no retry can mend; the message says what is wrong, for a scientist to read."""


class BadUpload(Permanent):
    """The uploaded ZIP breaks the upload format (names the member, row or column at fault)."""


class InvalidMessage(Permanent):
    """A queue message that does not parse as its declared model."""


class Transient(WideviewsError):
    """A failure a later retry may not meet; `retry_after_s` hints the delay (None: the loop's backoff)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(WideviewsError):
    """A dataset, version or feature the caller named does not exist (HTTP 404)."""


class BadRequest(WideviewsError):
    """A query parameter is missing, malformed or out of bounds (HTTP 400)."""
