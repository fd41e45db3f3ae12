"""One uploaded object makes one version, however many S3 events announce it; two PUTs make two."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

import boto3
import numpy as np
import pytest
from boto3.s3.transfer import TransferConfig

from cli.sample import sample_frames, write_upload_zip
from shared.config import Settings
from tests.e2e.reference import cli, wait_for

pytestmark = pytest.mark.stack

MULTIPART = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)


def _versions_of(settings: Settings, dataset_id: str, key: str) -> list[dict]:
    out = json.loads(cli(settings, "status", dataset_id, "--json").stdout)["datasets"]
    return [v for d in out for v in d["versions"] if v["upload_key"] == key]


def _ingest_queue_idle(settings: Settings) -> bool:
    sqs = boto3.client("sqs", **settings.aws_client_kwargs())
    url = sqs.get_queue_url(QueueName=settings.queue_name("ingest"))["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return all(int(v) == 0 for v in attrs.values())


def test_multipart_upload_and_a_redelivered_event_make_one_version(stack: Settings, tmp_path: Path) -> None:
    dataset_id = f"ident-{uuid.uuid4().hex[:8]}"
    matrix, metadata = sample_frames(60, 12, seed=11)
    path = write_upload_zip(tmp_path / "big.zip", matrix, metadata)
    # Pad past the multipart threshold (an extra member is ignored by ingest): moto then announces the
    # object with both an ObjectCreated:Put and an ObjectCreated:CompleteMultipartUpload event.
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("padding.bin", np.random.default_rng(1).bytes(11 << 20))
    key = f"uploads/{dataset_id}/big.zip"
    s3 = boto3.client("s3", **stack.aws_client_kwargs())
    s3.upload_file(str(path), stack.uploads_bucket, key, Config=MULTIPART)

    published = wait_for(lambda: [v for v in _versions_of(stack, dataset_id, key) if v["state"] == "PUBLISHED"], 600, "the upload to publish")
    # S3 may deliver an event again: send the object's notification once more, by hand.
    head = s3.head_object(Bucket=stack.uploads_bucket, Key=key)
    sqs = boto3.client("sqs", **stack.aws_client_kwargs())
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2030-01-01T00:00:00.000Z",
                "s3": {"bucket": {"name": stack.uploads_bucket}, "object": {"key": key, "size": head["ContentLength"], "eTag": head["ETag"].strip('"')}},
            }
        ]
    }
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=stack.queue_name("ingest"))["QueueUrl"], MessageBody=json.dumps(event))
    wait_for(lambda: _ingest_queue_idle(stack), 120, "the ingest queue to drain")

    versions = _versions_of(stack, dataset_id, key)
    assert [v["version_id"] for v in versions] == [published[0]["version_id"]]
    assert versions[0]["state"] == "PUBLISHED"


def test_two_puts_of_the_same_bytes_make_two_versions_and_wait_follows_each(stack: Settings, tmp_path: Path) -> None:
    dataset_id = f"ident-{uuid.uuid4().hex[:8]}"
    matrix, metadata = sample_frames(50, 10, seed=12)
    path = write_upload_zip(tmp_path / "same.zip", matrix, metadata)

    ids = []
    for _ in range(2):
        done = cli(stack, "upload", str(path), "--dataset", dataset_id, "--wait", "--json", "--timeout", "600")
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout.strip().splitlines()[-1])["version_id"])

    assert ids[0] != ids[1]
    states = {v["version_id"]: v["state"] for v in _versions_of(stack, dataset_id, f"uploads/{dataset_id}/same.zip")}
    assert states == {ids[0]: "REPLACED", ids[1]: "PUBLISHED"}
    current = json.loads(cli(stack, "status", dataset_id, "--json").stdout)["datasets"][0]["current_version"]
    assert current == ids[1]
