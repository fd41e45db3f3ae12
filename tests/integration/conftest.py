"""A moto server inside the test process, for tests that drive moto's backends directly (EMR) or need
only S3 (executors): cheaper than the whole stack, and still the real HTTP API."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from shared.config import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def inprocess_moto() -> Iterator[Settings]:
    """Settings pointing at an in-process moto server with the staging and uploads buckets created."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    settings = Settings(aws_endpoint_url=f"http://127.0.0.1:{port}", name_prefix="wvinproc", emr_poll_s=0.05)
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    for bucket in (settings.staging_bucket, settings.uploads_bucket):
        s3.create_bucket(Bucket=bucket)
    yield settings
    server.stop()
