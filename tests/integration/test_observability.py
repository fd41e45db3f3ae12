"""Operators' view: JSON log lines with the message's context, per-stage work on the version record,
and dead letters named by dataset, upload key and version (S3 notifications included)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cli import stack as local_stack
from shared.adapters.aws import open_aws
from shared.config import Settings
from shared.logs import JsonFormatter, configure_logging
from shared.messages import ComputeChunk, LoadChunk, Message, PublishVersion, UploadEvent
from shared.lifecycle import State
from shared.records import Records, VersionRecord
from shared.worker import DATASET_ATTRIBUTE, QueueUrls, Worker
from tests.e2e.reference import cli, wait_for

log = logging.getLogger("wideviews.test.handler")


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the test, formatted as the services format them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("compute"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def private_stack(inprocess_moto: Settings) -> Settings:
    """Queues and tables of their own (in-process moto), so no running service takes these messages."""
    settings = inprocess_moto.model_copy(update={"name_prefix": f"wvobs{uuid.uuid4().hex[:6]}", "wait_time_s": 1})
    local_stack.ensure_aws_resources(settings)
    return settings


async def _run_until(worker: Worker[Any], done: Any, timeout_s: float = 30) -> None:
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(int(timeout_s * 10)):
            if await done():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the worker did not finish the message")
    finally:
        worker.stop()
        await task


async def test_worker_logs_one_json_object_per_line_with_the_message_context(private_stack: Settings, captured_logs: io.StringIO) -> None:
    settings = private_stack
    dataset_id, version_id = f"obs-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    message = ComputeChunk(dataset_id=dataset_id, version_id=version_id, chunk=3)
    handled: list[int] = []

    async def handler(msg: ComputeChunk, deps: None) -> list[Message]:
        await asyncio.to_thread(log.info, "computing the chunk")  # a thread of the handler: the context follows
        await asyncio.sleep(0.3)
        handled.append(msg.chunk)
        return [LoadChunk(dataset_id=dataset_id, version_id=version_id, chunk=3, view="features", hfiles_uri="s3://b/k")]

    async with open_aws(settings) as aws:
        records = Records(aws.dynamodb, settings)
        await records.create_version(VersionRecord(dataset_id, version_id, State.COMPUTING))
        queues = await QueueUrls.resolve(aws.sqs, settings)
        sent = await aws.sqs.send_message(QueueUrl=queues.of(settings, "compute"), MessageBody=message.to_body())
        worker = Worker("compute", handler, settings, None, aws)

        async def finished() -> bool:
            return bool(handled) and '"outcome": "ok"' in captured_logs.getvalue()

        await _run_until(worker, finished)
        version = await records.get_version(dataset_id, version_id)
        # The worker asked SQS for the URLs of its own queue, its DLQ and the next queue only: what its
        # task role allows (deploy/template.yaml), nothing more.
        assert worker.queues is not None
        assert set(worker.queues.urls) == {settings.queue_name("compute"), settings.queue_name("compute", dead_letter=True), settings.queue_name("load")}

    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]  # every line is one JSON object
    ours = [line for line in lines if line.get("message_id") == sent["MessageId"]]
    inner = next(line for line in ours if line["message"] == "computing the chunk")
    expected = {"dataset": dataset_id, "version": version_id, "chunk": 3, "queue": "compute", "level": "INFO", "service": "compute"}
    assert {k: inner[k] for k in expected} == expected
    summary = next(line for line in ours if line.get("outcome") == "ok")
    assert (summary["dataset"], summary["version"], summary["chunk"], summary["type"]) == (dataset_id, version_id, 3, "compute_chunk")
    assert summary["seconds"] >= 0.3
    # The stage's work is on the version record: one message, at least the handler's 0.3 s.
    assert version.work["compute"]["messages"] == 1
    assert 0.3 <= version.work["compute"]["seconds"] <= summary["seconds"]


async def test_an_s3_event_is_logged_under_the_version_ingest_resolved(private_stack: Settings, captured_logs: io.StringIO) -> None:
    """moto's events carry no object version: the version the event alone implies (ETag and size) is
    not the one ingest resolves from the versioned bucket, so the worker's lines must not name it."""
    settings = private_stack
    dataset_id = f"obs-{uuid.uuid4().hex[:8]}"
    event = UploadEvent(
        bucket=settings.uploads_bucket, key=f"uploads/{dataset_id}/a.zip", size_bytes=10, etag="abc", sequencer="01", event_time="2026-12-01T00:00:00.000Z"
    )
    resolved = uuid.uuid4().hex  # what ingest would derive from the object's S3 version
    assert resolved != event.version_id

    async def handler(msg: UploadEvent, deps: None) -> list[Message]:
        log.info("reading the upload")
        return [ComputeChunk(dataset_id=dataset_id, version_id=resolved, chunk=0, chunk_end=1)]

    async with open_aws(settings) as aws:
        queues = await QueueUrls.resolve(aws.sqs, settings)
        sent = await aws.sqs.send_message(QueueUrl=queues.of(settings, "ingest"), MessageBody=event.to_body())
        worker = Worker("ingest", handler, settings, None, aws)

        async def finished() -> bool:
            return '"outcome": "ok"' in captured_logs.getvalue()

        await _run_until(worker, finished)

    ours = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    ours = [line for line in ours if line.get("message_id") == sent["MessageId"]]
    inner = next(line for line in ours if line["message"] == "reading the upload")
    assert (inner["dataset"], inner["upload_key"], "version" in inner) == (dataset_id, event.key, False)
    summary = next(line for line in ours if line.get("outcome") == "ok")
    assert (summary["dataset"], summary["version"], summary["upload_key"]) == (dataset_id, resolved, event.key)
    assert event.version_id not in captured_logs.getvalue()


def test_log_level_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(Settings(log_level="WARNING", service="loader"))
        logging.getLogger("wideviews.test").info("not shown")
        logging.getLogger("wideviews.test").warning("shown")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["level"], line["message"], line["service"]) for line in lines] == [("WARNING", "shown", "loader")]


def _bad_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "no matrix.csv in here")
    return path


@pytest.mark.stack
def test_dead_letters_name_dataset_upload_key_and_version(stack: Settings, tmp_path: Path) -> None:
    dataset_id = f"dlq-{uuid.uuid4().hex[:8]}"
    key = f"uploads/{dataset_id}/broken.zip"
    boto3.client("s3", **stack.aws_client_kwargs()).upload_file(str(_bad_zip(tmp_path / "broken.zip")), stack.uploads_bucket, key)

    def failed() -> dict[str, Any] | None:
        out = cli(stack, "status", dataset_id, "--json")
        versions = json.loads(out.stdout)["datasets"][0]["versions"] if out.returncode == 0 else []
        return versions[0] if versions and versions[0]["state"] == "FAILED" else None

    version = wait_for(failed, 180, "the broken upload to fail")
    assert "matrix.csv" in version["error"]

    def listed() -> dict[str, Any] | None:
        entries = json.loads(cli(stack, "dlq", "list", "ingest", "--json").stdout)
        return next((e for e in entries if e["upload_key"] == key), None)

    entry = wait_for(listed, 60, "the dead letter of the broken upload")
    assert (entry["type"], entry["dataset"], entry["version"]) == ("s3 notification", dataset_id, version["version_id"])

    # A service message moved by the redrive policy (no attributes of ours): named from its body and
    # the version record.
    sqs = boto3.client("sqs", **stack.aws_client_kwargs())
    publish_dlq = sqs.get_queue_url(QueueName=stack.queue_name("publish", dead_letter=True))["QueueUrl"]
    body = PublishVersion(dataset_id=dataset_id, version_id=version["version_id"]).to_body()
    moved = sqs.send_message(QueueUrl=publish_dlq, MessageBody=body)
    shown = json.loads(cli(stack, "dlq", "show", moved["MessageId"], "--queue", "publish").stdout)
    assert (shown["type"], shown["dataset"], shown["upload_key"], shown["version"]) == ("publish_version", dataset_id, key, version["version_id"])
    assert DATASET_ATTRIBUTE not in shown["attributes"]
    sqs.delete_message(QueueUrl=publish_dlq, ReceiptHandle=_receive(sqs, publish_dlq, moved["MessageId"]))


def _receive(sqs: Any, url: str, message_id: str) -> str:
    for _ in range(20):
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            if m["MessageId"] == message_id:
                return str(m["ReceiptHandle"])
    raise AssertionError(f"message {message_id} not found in {url}")
