"""The one translation of AWS (botocore) errors into the product's, for every AWS client: the async
ones of the workers (`shared/adapters/aws.py`), the blocking S3 of the domain code
(`shared/adapters/s3.py`) and the query's blocking DynamoDB. Imports botocore only, so the query
Lambda can use it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import botocore.exceptions

from shared.errors import ConditionFailed, NotFound, Transient

# Error codes a retry may not meet again: throttling and the service's own failures.
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalServerError",
        "RequestTimeout",
    }
)
# An object (or its bucket or version) that does not exist.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "404"})
CONDITION_FAILED_CODE = "ConditionalCheckFailedException"
# The endpoint could not be reached or did not answer in time.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    ConnectionError,
    TimeoutError,
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, '' for anything else."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate_aws_error(
    exc: BaseException, action: str, *, connection_errors: tuple[type[BaseException], ...] = ()
) -> BaseException | None:
    """The product error for a vendor error met while doing `action`, None to let it through as it is.

    Throttling, the service's own failures and an unreachable endpoint are `Transient`; a missing
    object `NotFound`; a failed conditional write `ConditionFailed`. `connection_errors` adds a
    client library's own connection errors (aiohttp's for the async clients).
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        if code in THROTTLING_CODES:
            return Transient(f"{action}: {code}")
        if code == CONDITION_FAILED_CODE:
            return ConditionFailed(f"{action}: the condition no longer holds")
        if code in NOT_FOUND_CODES:
            return NotFound(f"{action}: not found")
        return None
    if isinstance(exc, CONNECTION_ERRORS + connection_errors):
        return Transient(f"{action}: endpoint unreachable ({type(exc).__name__})")
    return None


@contextlib.contextmanager
def translated_aws_errors(action: str, *, connection_errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Raise what `translate_aws_error` makes of an error of the block; others pass unchanged."""
    try:
        yield
    except Exception as exc:
        translated = translate_aws_error(exc, action, connection_errors=connection_errors)
        if translated is None:
            raise
        raise translated from exc
