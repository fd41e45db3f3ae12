"""The local stack's moto server answers ranged GETs as S3 does, reading only the range.

`cli.stack.moto_server` replaces moto's read of the whole object for a plain ranged GET. Checked
against Python's own slicing of the uploaded bytes (one object larger than moto's in-memory spool,
so it lives on disk as big HFiles do), through boto3 on a real moto HTTP server in this process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.s3.models import FakeKey
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from cli.stack import moto_server

SIZE = 12 * 1024 * 1024 + 12345


@pytest.fixture
def ranged_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[int]]]:
    """boto3 S3 on an in-process moto with the range patch installed, and a count of whole-object reads."""
    # Restored after the test: the rest of the session keeps moto as it ships.
    monkeypatch.setattr(FakeKey, "value", FakeKey.value)
    monkeypatch.setattr(S3Response, "key_response", S3Response.key_response)
    moto_server.install()
    whole_reads: list[int] = []
    original = moto_server._whole_value

    def counted(key: FakeKey) -> bytes:
        whole_reads.append(key.size)
        return original.fget(key)  # type: ignore[misc,no-any-return]

    monkeypatch.setattr(moto_server, "_whole_value", property(counted, original.fset))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="ranges")
    yield s3, whole_reads
    server.stop()


def test_byte_ranges_match_the_uploaded_bytes_without_reading_the_whole_object(ranged_s3: tuple[Any, list[int]]) -> None:
    s3, whole_reads = ranged_s3
    data = os.urandom(SIZE)
    s3.put_object(Bucket="ranges", Key="hfile", Body=data)
    whole_reads.clear()

    for spec, want in [
        ("bytes=0-0", data[:1]),
        ("bytes=100-4195", data[100:4196]),
        (f"bytes={SIZE - 20}-", data[-20:]),
        ("bytes=-4096", data[-4096:]),  # the trailer read: a suffix range
        (f"bytes=5000000-{SIZE + 999}", data[5_000_000:]),  # an end past the object: clipped
    ]:
        got = s3.get_object(Bucket="ranges", Key="hfile", Range=spec)
        body = got["Body"].read()
        assert body == want, spec
        assert got["ContentLength"] == len(want)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"].endswith(f"/{SIZE}")

    assert whole_reads == []


def test_what_is_not_a_plain_single_range_is_answered_whole_as_moto_does(ranged_s3: tuple[Any, list[int]]) -> None:
    s3, whole_reads = ranged_s3
    data = os.urandom(SIZE)
    s3.put_object(Bucket="ranges", Key="k", Body=data)
    whole_reads.clear()

    assert s3.get_object(Bucket="ranges", Key="k")["Body"].read() == data
    multi = s3.get_object(Bucket="ranges", Key="k", Range="bytes=0-1,5-6")
    assert multi["Body"].read() == data  # moto ignores a multi-range request: the whole object, 200
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket="ranges", Key="k", Range=f"bytes={SIZE}-")
    assert raised.value.response["Error"]["Code"] == "InvalidRange"

    assert whole_reads[:2] == [SIZE, SIZE]
