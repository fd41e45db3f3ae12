"""AWS clients (aiobotocore) for one deployment; their errors are translated by `shared/adapters/aws_errors.py`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

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


class SqsClient(Protocol):
    """The SQS calls the worker loop makes (an aiobotocore SQS client); keyword arguments as boto3's."""

    async def get_queue_url(self, *, QueueName: str) -> dict[str, Any]:  # noqa: N803
        """The URL of the queue named `QueueName`."""

    async def receive_message(self, *, QueueUrl: str, MaxNumberOfMessages: int, WaitTimeSeconds: int, **options: Any) -> dict[str, Any]:  # noqa: N803
        """Long-poll up to `MaxNumberOfMessages` messages of the queue."""

    async def send_message(self, *, QueueUrl: str, MessageBody: str, **options: Any) -> dict[str, Any]:  # noqa: N803
        """Send one message to the queue."""

    async def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        """Send up to ten messages to the queue in one call."""

    async def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> dict[str, Any]:  # noqa: N803
        """Delete a received message by its receipt handle."""

    async def change_message_visibility(self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> dict[str, Any]:  # noqa: N803
        """Hide a received message for `VisibilityTimeout` more seconds (0: release it)."""


class DynamoDbClient(Protocol):
    """The DynamoDB calls of `shared.records` (an aiobotocore DynamoDB client): items in DynamoDB's
    typed JSON, conditions as expressions."""

    async def get_item(self, *, TableName: str, Key: dict[str, Any], ConsistentRead: bool = False) -> dict[str, Any]:  # noqa: N803
        """One item by its key (no `Item` in the answer when absent)."""

    async def put_item(self, *, TableName: str, Item: dict[str, Any], **condition: Any) -> dict[str, Any]:  # noqa: N803
        """Write one item, conditionally when a condition expression is given."""

    async def update_item(self, *, TableName: str, Key: dict[str, Any], UpdateExpression: str, **condition: Any) -> dict[str, Any]:  # noqa: N803
        """Update one item's attributes, conditionally when a condition expression is given."""

    async def query(self, *, TableName: str, **options: Any) -> dict[str, Any]:  # noqa: N803
        """One page of the items of a partition key."""

    async def scan(self, *, TableName: str, **options: Any) -> dict[str, Any]:  # noqa: N803
        """One page of the table's items."""


class EmrClient(Protocol):
    """The EMR calls of the `emr` executor (an aiobotocore EMR client)."""

    async def add_job_flow_steps(self, *, JobFlowId: str, Steps: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        """Add steps to a running cluster; their ids in `StepIds`."""

    async def describe_step(self, *, ClusterId: str, StepId: str) -> dict[str, Any]:  # noqa: N803
        """One step's status."""


@dataclass
class AwsClients:
    """The async clients a service uses; created together, closed together. (The domain code's S3
    is the blocking `shared.adapters.s3.S3Client`; this async one serves tests and tools.)"""

    s3: Any
    sqs: SqsClient
    dynamodb: DynamoDbClient
    emr: EmrClient


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
