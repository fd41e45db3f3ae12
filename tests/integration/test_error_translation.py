"""Vendor errors become the product's once, at each adapter: a missing S3 object `NotFound`, a lost
conditional write `ConditionFailed`, an unreachable endpoint `Transient` (AWS, blocking and async),
a missing HBase table `NotFound`, an unreachable Thrift server and any HBase error HBase itself marks
retryable `Transient`. On a real moto server and the real HBase (and, for the errors HBase gives only
when its ZooKeeper session or a RegionServer is lost, a Thrift server answering them as HBase 2's
does); every error of the family is permanent or transient."""

from __future__ import annotations

import inspect
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import boto3
import happybase  # noqa: F401 - loads HBase's Thrift IDL as the module Hbase_thrift
import pytest
from Hbase_thrift import Hbase as HbaseService
from Hbase_thrift import IOError as ThriftIOError
from thriftpy2.rpc import make_server

import shared.errors
from cli.stack.probes import port_open
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


# What HBase 2's Thrift server sends when its ZooKeeper session expired under a read (the message
# is the Java stack trace; `canRetry` is false only for HBase's DoNotRetryIOException family).
SESSION_EXPIRED = (
    "java.io.IOException: org.apache.zookeeper.KeeperException$SessionExpiredException: KeeperErrorCode = Session expired"
    " for /hbase/meta-region-server\n\tat org.apache.hadoop.hbase.zookeeper.ReadOnlyZKClient$ZKTask$1.exec(ReadOnlyZKClient.java:208)"
)
NO_SUCH_FAMILY = "org.apache.hadoop.hbase.regionserver.NoSuchColumnFamilyException: Column family x does not exist in region"


class _AnsweringHBaseErrors:
    """Thrift handler answering `getTableNames` with HBase's IOError for `message` and `can_retry`."""

    def __init__(self, message: str, can_retry: bool) -> None:
        self.message, self.can_retry = message, can_retry

    def getTableNames(self) -> list[bytes]:  # noqa: N802 - the Thrift IDL's name
        error = ThriftIOError(message=self.message)
        error.canRetry = self.can_retry
        raise error


@pytest.fixture
def thrift_answering() -> Iterator[Callable[[str, bool], Settings]]:
    """Start Thrift servers (speaking HBase's Thrift1 IDL) that answer with a given HBase IOError."""
    servers = []

    def start(message: str, can_retry: bool) -> Settings:
        port = _closed_port()
        # No client timeout (the idle pooled connections the test leaves are not errors to log), and
        # daemon connection threads, which end with the process.
        server = make_server(HbaseService, _AnsweringHBaseErrors(message, can_retry), "127.0.0.1", port, client_timeout=None)
        server.daemon = True
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        servers.append((server, thread, port))
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):  # serve() binds the port in its thread
            assert time.monotonic() < deadline, "the Thrift server did not listen"
            time.sleep(0.01)
        return Settings(hbase_thrift_host="127.0.0.1", hbase_thrift_port=port)

    yield start
    for server, thread, port in servers:
        server.close()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # wakes its accept() to see the close
        thread.join(5)
        assert not thread.is_alive()


def test_an_hbase_error_hbase_marks_retryable_is_transient_and_one_it_does_not_passes(thrift_answering: Callable[[str, bool], Settings]) -> None:
    expired = HBase(thrift_answering(SESSION_EXPIRED, True), size=1, timeout_ms=2000)
    with pytest.raises(Transient, match=r"list tables: HBase unavailable \(java.io.IOException: .*SessionExpiredException"):
        expired.list_tables()
    missing_family = HBase(thrift_answering(NO_SUCH_FAMILY, False), size=1, timeout_ms=2000)
    with pytest.raises(ThriftIOError, match="NoSuchColumnFamilyException"):
        missing_family.list_tables()
