"""Vendor errors become the product's once, at each adapter: a missing S3 object `NotFound`, a lost
conditional write `ConditionFailed`, an unreachable endpoint `Transient` (AWS, blocking and async),
a missing HBase table `NotFound` and an unreachable Thrift server `Transient`. On a real moto server
and the real HBase; every error of the family is permanent or transient."""

from __future__ import annotations

import inspect
import socket
import uuid

import boto3
import pytest

import shared.errors
from shared.adapters.aws import aws_errors, open_aws
from shared.adapters.aws_errors import translated_aws_errors
from shared.adapters.hbase import HBase
from shared.adapters.s3 import S3RangeReader, get_bytes, get_json, s3_client
from shared.config import Settings
from shared.errors import ConditionFailed, NotFound, Permanent, Transient, WideviewsError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_error_of_the_family_is_permanent_or_transient() -> None:
    errors = [c for _, c in inspect.getmembers(shared.errors, inspect.isclass) if issubclass(c, WideviewsError) and c is not WideviewsError]
    assert {c.__name__ for c in errors} >= {"Permanent", "Transient", "NotFound", "BadRequest", "BadUpload", "InvalidMessage", "ConditionFailed"}
    assert all(issubclass(c, (Permanent, Transient)) for c in errors), [c for c in errors if not issubclass(c, (Permanent, Transient))]


def test_missing_s3_object_is_not_found(inprocess_moto: Settings) -> None:
    s3 = s3_client(inprocess_moto)
    key = f"missing/{uuid.uuid4().hex}"
    with pytest.raises(NotFound, match=f"get s3://{inprocess_moto.staging_bucket}/{key}: not found"):
        get_json(s3, inprocess_moto.staging_bucket, key)
    with pytest.raises(NotFound):
        S3RangeReader(s3, inprocess_moto.staging_bucket, key)  # a HEAD: S3 answers a bare 404


def test_unreachable_s3_is_transient(inprocess_moto: Settings) -> None:
    settings = inprocess_moto.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    with pytest.raises(Transient, match="endpoint unreachable"):
        get_bytes(s3_client(settings), settings.staging_bucket, "any")


def test_lost_conditional_write_is_condition_failed(inprocess_moto: Settings) -> None:
    db = boto3.client("dynamodb", **inprocess_moto.aws_client_kwargs())
    table = f"cond-{uuid.uuid4().hex[:8]}"
    db.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    item = {"k": {"S": "one"}}
    db.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(k)")
    with pytest.raises(ConditionFailed, match="put twice: the condition no longer holds"), translated_aws_errors("put twice"):
        db.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(k)")
    # Any other client error passes unchanged (a deployment fault: the loop retries, then gives up).
    with pytest.raises(db.exceptions.ResourceNotFoundException), translated_aws_errors("get"):
        db.get_item(TableName=f"{table}-absent", Key=item)


async def test_async_clients_translate_the_same_way(inprocess_moto: Settings) -> None:
    async with open_aws(inprocess_moto) as aws:
        with pytest.raises(NotFound), aws_errors("get object"):
            await aws.s3.get_object(Bucket=inprocess_moto.staging_bucket, Key=f"missing/{uuid.uuid4().hex}")
    unreachable = inprocess_moto.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    async with open_aws(unreachable) as aws:
        with pytest.raises(Transient, match="receive: endpoint unreachable"), aws_errors("receive"):
            await aws.sqs.get_queue_url(QueueName="any")


@pytest.mark.stack
def test_missing_hbase_table_is_not_found_and_a_dead_thrift_server_transient(stack: Settings) -> None:
    hbase = HBase(stack, size=1)
    with pytest.raises(NotFound, match="get rows: table not found"):
        hbase.rows(f"{stack.hbase_namespace}:absent_{uuid.uuid4().hex}", [b"row"])
    dead = HBase(stack.model_copy(update={"hbase_thrift_port": _closed_port()}), size=1, timeout_ms=2000)
    with pytest.raises(Transient, match="list tables: HBase Thrift unreachable"):
        dead.list_tables()
