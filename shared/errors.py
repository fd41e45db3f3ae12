"""The product's errors: every one is either `Permanent` or `Transient`, so the worker loop knows
what to do with anything raised on purpose.

`Permanent`: a retry cannot help (bad input, schema violation, something named that does not
exist); the worker loop marks the version FAILED with the message and moves the message to its
dead-letter queue. The read API answers its subclasses `BadRequest` with 400 and `NotFound` with 404.
`Transient`: a retry can help (throttling, HBase busy, an endpoint unreachable, a conditional write
that lost a race); the message stays on its queue and reappears after `retry_after_s`. The read API
answers 503.

Vendor errors are translated into these once per adapter, at the boundary:
`shared/adapters/aws_errors.py` for every AWS client, `shared/adapters/hbase.py` for Thrift.
"""

from __future__ import annotations


class WideviewsError(Exception):
    """Base of every error the product raises on purpose."""

    # The dataset and version the failure is about, where the raiser knows them better than the
    # message it handles (ingest: the version it resolved from the object an S3 event announces).
    about: dict[str, str] = {}


class Permanent(WideviewsError):
    """A failure no retry can mend; the message says what is wrong, for a scientist to read."""


class BadUpload(Permanent):
    """The uploaded ZIP breaks the upload format (names the member, row or column at fault)."""


class InvalidMessage(Permanent):
    """A queue message that does not parse as its declared model."""


class NotFound(Permanent):
    """A dataset, version, feature, object or table the caller named does not exist (HTTP 404)."""


class BadRequest(Permanent):
    """A query parameter is missing, malformed or out of bounds (HTTP 400)."""


class Transient(WideviewsError):
    """A failure a later retry may not meet; `retry_after_s` hints the delay (None: the loop's backoff)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConditionFailed(Transient):
    """A conditional write found another state than the one it was conditioned on (someone wrote
    first). Callers that expect the race catch it; anywhere else a retry re-reads and decides again."""
