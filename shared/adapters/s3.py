"""S3 for the domain code that runs in worker threads (blocking boto3): ranged reads, prefixes, JSON.

`S3RangeReader` makes an S3 object a seekable file, so `zipfile` reads a 500 GB upload's central
directory and streams one member out of it with ranged GETs: no local copy, memory bounded by the
read-ahead buffer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig

from shared.adapters.aws_errors import translated_aws_errors
from shared.config import Settings
from shared.rawio import SizedReader


class S3Client(Protocol):
    """The blocking S3 calls the domain code makes (a boto3 S3 client; thread-safe)."""

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        """An object's metadata (size, ETag, version) without its body."""

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        """An object, or a byte range of it, with a streaming body."""

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        """Write one object in a single request."""

    def delete_objects(self, **kwargs: Any) -> dict[str, Any]:
        """Delete up to 1,000 objects in one request."""

    def get_paginator(self, operation_name: str) -> Any:
        """A paginator over a listing operation (`list_objects_v2`)."""

    def upload_file(self, Filename: str, Bucket: str, Key: str, *args: Any, **kwargs: Any) -> None:  # noqa: N803
        """Upload a local file (multipart when large)."""

    def download_file(self, Bucket: str, Key: str, Filename: str, *args: Any, **kwargs: Any) -> None:  # noqa: N803
        """Download an object to a local file (ranged parts in parallel)."""


def s3_client(settings: Settings) -> S3Client:
    """A blocking S3 client (thread-safe) for `settings`."""
    config = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)
    return boto3.session.Session().client("s3", config=config, **settings.aws_client_kwargs())


class S3RangeReader(SizedReader):
    """A read-only, seekable view of one S3 object through ranged GETs with a read-ahead buffer."""

    def __init__(self, s3: S3Client, bucket: str, key: str, *, object_version: str | None = None, buffer_bytes: int = 8 << 20) -> None:
        super().__init__()
        self._s3, self._bucket, self._key = s3, bucket, key
        # One object version throughout: a later PUT of the key never mixes into this read.
        self._version = {"VersionId": object_version} if object_version else {}
        with translated_aws_errors(f"s3://{bucket}/{key}"):
            head = s3.head_object(Bucket=bucket, Key=key, **self._version)
        self.size = int(head["ContentLength"])
        self.etag = str(head.get("ETag", "")).strip('"')
        self._pos = 0
        self._buf = b""
        self._buf_start = 0
        self._buffer_bytes = buffer_bytes
        self.bytes_fetched = 0

    def _fetch(self, start: int, length: int) -> bytes:
        end = min(self.size, start + length) - 1
        with translated_aws_errors(f"s3://{self._bucket}/{self._key}"):
            resp = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end}", IfMatch=self.etag, **self._version)
            data = resp["Body"].read()
        self.bytes_fetched += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the current position (from the read-ahead buffer, fetching it when needed); returns the bytes read."""
        want = len(buffer)
        if self._pos >= self.size or want == 0:
            return 0
        offset = self._pos - self._buf_start
        if not (0 <= offset < len(self._buf)):
            # Read ahead at least a buffer's worth: zipfile reads in small pieces.
            self._buf = self._fetch(self._pos, max(want, self._buffer_bytes))
            self._buf_start = self._pos
            offset = 0
        chunk = self._buf[offset : offset + want]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def list_object_versions(s3: S3Client, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every version of exactly `key` (VersionId, ETag, LastModified as an aware datetime), newest first."""
    versions: list[dict[str, Any]] = []
    with translated_aws_errors(f"s3://{bucket}/{key}"):
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            versions += [v for v in page.get("Versions", []) if v["Key"] == key]
    return versions


def put_bytes(s3: S3Client, bucket: str, key: str, body: bytes) -> None:
    """Write one object."""
    with translated_aws_errors(f"put s3://{bucket}/{key}"):
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def get_bytes(s3: S3Client, bucket: str, key: str) -> bytes:
    """Read one object whole; `NotFound` if it does not exist."""
    with translated_aws_errors(f"get s3://{bucket}/{key}"):
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def put_json(s3: S3Client, bucket: str, key: str, document: Any) -> None:
    """Write a JSON document (compact) as one object."""
    put_bytes(s3, bucket, key, json.dumps(document, separators=(",", ":")).encode())


def get_json(s3: S3Client, bucket: str, key: str) -> Any:
    """Read a JSON object; `NotFound` if it does not exist."""
    return json.loads(get_bytes(s3, bucket, key))


def list_keys(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    """Every key under a prefix, sorted."""
    keys: list[str] = []
    with translated_aws_errors(f"list s3://{bucket}/{prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
    return sorted(keys)


# Files up to this size go up in one PUT (S3 takes 5 GiB so): HFiles (at most 1 GiB each, WriteHFiles'
# default) are written in parallel per view already, and a multipart upload costs S3 (and the moto
# server, which copies every part once more to assemble the object) a second pass over the bytes.
SINGLE_PUT_BYTES = 2 << 30
_SINGLE_PUT = TransferConfig(multipart_threshold=SINGLE_PUT_BYTES)


def upload_dir(s3: S3Client, local: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under `local` to `prefix` + relative path (one PUT each up to `SINGLE_PUT_BYTES`); returns the keys."""
    keys = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        key = prefix.rstrip("/") + "/" + path.relative_to(local).as_posix()
        with translated_aws_errors(f"upload s3://{bucket}/{key}"):
            s3.upload_file(str(path), bucket, key, Config=_SINGLE_PUT)
        keys.append(key)
    return keys


def download_prefix(s3: S3Client, bucket: str, prefix: str, local: Path) -> list[Path]:
    """Download every object under `prefix` into `local`, keeping relative paths."""
    paths = []
    for key in list_keys(s3, bucket, prefix):
        target = local / key[len(prefix) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        with translated_aws_errors(f"download s3://{bucket}/{key}"):
            s3.download_file(bucket, key, str(target))
        paths.append(target)
    return paths


def delete_prefix(s3: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix`; returns how many."""
    keys = list_keys(s3, bucket, prefix)
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        with translated_aws_errors(f"delete s3://{bucket}/{prefix}"):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    return len(keys)
