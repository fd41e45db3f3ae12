"""AWS clients (aiobotocore) for one deployment; their errors are translated by `shared/adapters/aws_errors.py`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared.adapters.aws_errors import translated_aws_errors
from shared.config import Settings


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Translate the async clients' errors of `action` (`translate_aws_error`, aiohttp's connection
    errors included); the rest unchanged."""
    with translated_aws_errors(action, connection_errors=(aiohttp.ClientError,)):
        yield


@dataclass
class AwsClients:
    """The async clients a service uses; created together, closed together."""

    s3: Any
    sqs: Any
    dynamodb: Any
    emr: Any


@contextlib.asynccontextmanager
async def open_aws(settings: Settings) -> AsyncIterator[AwsClients]:
    """Open S3, SQS, DynamoDB and EMR clients for `settings` (moto server locally)."""
    session = get_session()
    # Our own loop does the retrying with backoff; keep botocore's short so a dead endpoint surfaces fast.
    config = AioConfig(
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    kwargs = settings.aws_client_kwargs()
    async with contextlib.AsyncExitStack() as stack:
        clients = AwsClients(
            s3=await stack.enter_async_context(session.create_client("s3", config=config, **kwargs)),
            sqs=await stack.enter_async_context(session.create_client("sqs", config=config, **kwargs)),
            dynamodb=await stack.enter_async_context(session.create_client("dynamodb", config=config, **kwargs)),
            emr=await stack.enter_async_context(session.create_client("emr", config=config, **kwargs)),
        )
        yield clients


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3 URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
