"""The local stack: HBase namespace and tables over Thrift, the upload notification, dead-letter queues,
`wideviews stack status`, process supervision by pid, and docker-compose.yml."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import happybase
import pytest

from cli import stack as local_stack
from shared.adapters.hbase import HBase
from shared.config import QUEUE_ROLES, Settings
from shared.errors import Transient
from tests.deploy.test_compose import compose_client
from tests.tcp import pipe

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def paused(settings: Settings, component: str) -> Iterator[None]:
    """Stop a service for the duration of a test (so the test owns its queue), then start it again."""
    state = local_stack.StackState.read(settings.home)
    record = state.components.get(component)
    was_running = record is not None and local_stack.is_ours(record)
    if was_running:
        local_stack.stop_component(settings, component)
    try:
        yield
    finally:
        if was_running:
            local_stack.restart_component(settings, component)


def _sqs(settings: Settings) -> Any:
    return boto3.client("sqs", **settings.aws_client_kwargs())


def _queue_url(settings: Settings, role: str, *, dead_letter: bool = False) -> str:
    name = settings.queue_name(role, dead_letter=dead_letter)  # type: ignore[arg-type]
    return _sqs(settings).get_queue_url(QueueName=name)["QueueUrl"]


def test_happybase_creates_puts_gets_and_scans_a_table_in_the_namespace(stack: Settings) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = happybase.Connection(
        stack.hbase_thrift_host, stack.hbase_thrift_port, table_prefix=stack.hbase_namespace, table_prefix_separator=":"
    )
    connection.create_table(name, {"v": dict(max_versions=1)})
    try:
        table = connection.table(name)
        rows = {b"GENE00002": b"\x01\x02", b"GENE00001": b"\x00" * 16, b"OTHER": b"x"}
        with table.batch() as batch:
            for row, value in rows.items():
                batch.put(row, {b"v:stats": value})
        assert table.row(b"GENE00001") == {b"v:stats": b"\x00" * 16}
        assert [key for key, _ in table.scan(row_prefix=b"GENE")] == [b"GENE00001", b"GENE00002"]
        assert dict(table.rows([b"OTHER", b"GENE00002"])) == {b"OTHER": {b"v:stats": b"x"}, b"GENE00002": {b"v:stats": b"\x01\x02"}}
        plain = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
        assert f"{stack.hbase_namespace}:{name}".encode() in plain.tables()
        plain.close()
    finally:
        connection.delete_table(name, disable=True)
        connection.close()


def _drain_s3_events(settings: Settings, queue_url: str, wanted_key: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """S3 event records on the queue until one for `wanted_key` arrives; deletes the messages it reads."""
    sqs = _sqs(settings)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30)
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if any(unquote_plus(r["s3"]["object"]["key"]) == wanted_key for r in records):
            return records
    raise AssertionError(f"no S3 event for {wanted_key} within {timeout_s} s; saw {records}")


class _Forward(socketserver.BaseRequestHandler):
    """Pipe one client connection to the port in the server's `target`, both ways."""

    def handle(self) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.server.target), timeout=30)  # type: ignore[attr-defined]
        back = threading.Thread(target=pipe, args=(upstream, self.request), daemon=True)
        back.start()
        pipe(self.request, upstream)
        back.join(30)


def test_hbase_client_made_while_thrift_is_down_connects_once_it_answers(stack: Settings) -> None:
    # Services start while HBase is still starting (stack up overlaps them): making the client must
    # not need Thrift, a call before it answers is Transient, and a later call connects.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hbase = HBase(stack.model_copy(update={"hbase_thrift_port": port}), size=2)
    with pytest.raises(Transient, match="unreachable"):
        hbase.list_tables()
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), _Forward) as gateway:
        gateway.daemon_threads = True
        gateway.target = stack.hbase_thrift_port  # type: ignore[attr-defined]
        threading.Thread(target=gateway.serve_forever, daemon=True).start()
        try:
            tables = hbase.list_tables()
            assert sorted(tables) == sorted(HBase(stack).list_tables())
        finally:
            gateway.shutdown()


def test_any_key_under_uploads_arrives_as_s3_event_on_ingest_queue_and_keys_elsewhere_do_not(stack: Settings) -> None:
    # No suffix rule (S3 matches suffixes case-sensitively): X.ZIP arrives, and so does notes.csv,
    # which ingest then fails visibly instead of the upload vanishing.
    dataset = f"ds-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", **stack.aws_client_kwargs())
    with paused(stack, "ingest"):
        queue_url = _queue_url(stack, "ingest")
        for key in (f"elsewhere/{dataset}/y.zip", f"{dataset}/uploads/z.zip"):
            s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=b"not under uploads/")
        arriving = [f"uploads/{dataset}/notes.csv", f"uploads/{dataset}/UPPER.ZIP"]
        for key in arriving:
            s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=b"PK\x05\x06" + b"\x00" * 18)
        # Put last: moto sends events synchronously, so once its event is read the others had their chance.
        wanted = f"uploads/{dataset}/my upload.zip"
        s3.put_object(Bucket=stack.uploads_bucket, Key=wanted, Body=b"PK\x05\x06" + b"\x00" * 18)
        records = _drain_s3_events(stack, queue_url, wanted)
    ours = [r for r in records if dataset in unquote_plus(r["s3"]["object"]["key"])]
    assert sorted(unquote_plus(r["s3"]["object"]["key"]) for r in ours) == sorted([*arriving, wanted]), ours
    event = next(r for r in ours if unquote_plus(r["s3"]["object"]["key"]) == wanted)
    assert event["eventSource"] == "aws:s3"
    assert event["eventName"].startswith("ObjectCreated:")
    assert event["s3"]["bucket"]["name"] == stack.uploads_bucket
    assert event["s3"]["object"]["size"] == 22


def test_message_received_max_receive_count_times_moves_to_its_dead_letter_queue(stack: Settings) -> None:
    sqs = _sqs(stack)
    marker = uuid.uuid4().hex
    body = json.dumps({"type": "poison_for_test", "marker": marker})
    with paused(stack, "publisher"):
        queue_url = _queue_url(stack, "publish")
        dlq_url = _queue_url(stack, "publish", dead_letter=True)
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        receives = 0
        deadline = time.monotonic() + 60
        # Each receive without a delete is a failed attempt; visibility 0 makes it visible again at once.
        while time.monotonic() < deadline:
            response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1)
            got = [m for m in response.get("Messages", []) if m["Body"] == body]
            receives += len(got)
            if not got and receives >= stack.max_receive_count:
                break
        assert receives == stack.max_receive_count
        dead: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not dead:
            response = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            dead = [m for m in response.get("Messages", []) if m["Body"] == body]
        assert len(dead) == 1
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=dead[0]["ReceiptHandle"])


def test_every_queue_has_visibility_timeout_and_redrive_to_its_own_dead_letter_queue(stack: Settings) -> None:
    sqs = _sqs(stack)
    for role in QUEUE_ROLES:
        attributes = sqs.get_queue_attributes(QueueUrl=_queue_url(stack, role), AttributeNames=["All"])["Attributes"]
        dlq_attributes = sqs.get_queue_attributes(
            QueueUrl=_queue_url(stack, role, dead_letter=True), AttributeNames=["QueueArn"]
        )["Attributes"]
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_attributes["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == stack.max_receive_count
        assert int(attributes["VisibilityTimeout"]) == stack.visibility_timeout_s


def test_dynamodb_tables_have_their_keys_and_pay_per_request(stack: Settings) -> None:
    dynamodb = boto3.client("dynamodb", **stack.aws_client_kwargs())
    expected = {
        stack.datasets_table: [{"AttributeName": "dataset_id", "KeyType": "HASH"}],
        stack.versions_table: [
            {"AttributeName": "dataset_id", "KeyType": "HASH"},
            {"AttributeName": "version_id", "KeyType": "RANGE"},
        ],
    }
    for table, key_schema in expected.items():
        description = dynamodb.describe_table(TableName=table)["Table"]
        assert description["KeySchema"] == key_schema
        assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_stack_status_json_shows_every_component_healthy(stack: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "stack", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
        env=stack.child_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    expected = {*local_stack.INFRA, *(n for n in local_stack.SERVICE_MODULES if local_stack.service_available(stack, n))}
    assert set(report["components"]) == expected
    assert {name: c["healthy"] for name, c in report["components"].items()} == {name: True for name in expected}
    assert report["healthy"] is True
    assert report["s3_endpoint"] == stack.aws_endpoint_url
    assert report["hbase_thrift"] == f"{stack.hbase_thrift_host}:{stack.hbase_thrift_port}"
    assert report["query_url"] == f"http://{stack.query_host}:{stack.query_port}"
    if "query" in expected:
        with urllib.request.urlopen(report["query_url"] + "/healthz", timeout=5) as response:
            assert response.status == 200


def test_up_on_a_running_stack_reuses_every_process(stack: Settings) -> None:
    before = {n: r.pid for n, r in local_stack.StackState.read(stack.home).components.items()}
    again = local_stack.up(Settings.load(home=stack.home))
    after = {n: r.pid for n, r in local_stack.StackState.read(stack.home).components.items()}
    assert after == before
    assert (again.hbase_thrift_port, again.aws_endpoint_url) == (stack.hbase_thrift_port, stack.aws_endpoint_url)


def test_hbase_master_restarts_while_thrift_is_down_and_keeps_its_tables(stack: Settings) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port, table_prefix=stack.hbase_namespace, table_prefix_separator=":")
    connection.create_table(name, {"v": dict(max_versions=1)})
    connection.table(name).put(b"GENE00001", {b"v:x": b"kept"})
    connection.close()
    old_master = local_stack.StackState.read(stack.home).components["hbase-master"].pid

    local_stack.stop_component(stack, "hbase-thrift")
    local_stack.restart_component(stack, "hbase-master")
    local_stack.restart_component(stack, "hbase-thrift")

    assert local_stack.StackState.read(stack.home).components["hbase-master"].pid != old_master
    connection = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port, table_prefix=stack.hbase_namespace, table_prefix_separator=":")
    try:
        assert connection.table(name).row(b"GENE00001") == {b"v:x": b"kept"}
    finally:
        connection.delete_table(name, disable=True)
        connection.close()


def test_down_stops_its_own_processes_and_never_a_reused_pid(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path / "home")
    ours = local_stack.spawn(settings, "ingest", ["sleep", "300"], settings.child_env())
    # A stranger: a process whose pid the stack file claims, as after a crash and pid reuse.
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        stale = local_stack.ProcessRecord(pid=stranger.pid, cmd=["java", "HMaster"], log="x", started_at="then")
        state = local_stack.StackState(components={"ingest": ours, "hbase-master": stale})
        state.write(settings.home)
        assert local_stack.is_ours(ours) and not local_stack.is_ours(stale)

        stopped = local_stack.down(settings)

        assert sorted(stopped) == ["hbase-master", "ingest"]
        assert not local_stack.is_ours(ours)
        assert stranger.poll() is None, "a process the stack did not start was signalled"
        assert local_stack.StackState.read(settings.home).components == {}
        assert list((settings.home / "run").glob("*.pid")) == []
    finally:
        stranger.kill()
        stranger.wait()


def test_docker_compose_file_is_valid() -> None:
    client = compose_client()
    if client is None:
        pytest.skip("no docker compose client (`make setup` installs Debian's docker-compose when it can)")
    result = subprocess.run([*client, "config", "-q"], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
