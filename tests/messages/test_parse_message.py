"""`parse_message` on the bodies the queues really carry: S3 event notifications as AWS and moto
write them (tests/events/s3/), and the service messages. No stack: these are pure functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import InvalidMessage
from shared.messages import ComputeChunk, LoadChunk, PublishVersion, S3TestEvent, UploadEvent, parse_message

EVENTS = Path(__file__).resolve().parents[1] / "events" / "s3"
VERSION = "0123456789abcdef0123456789abcdef"


def _body(name: str) -> str:
    return (EVENTS / name).read_text()


def test_moto_put_event_decodes_the_key_and_has_no_object_version() -> None:
    (event,) = parse_message(_body("moto_put.json"))  # type: ignore[misc]
    assert isinstance(event, UploadEvent)
    # `+` is a space, `%2B` a plus, `%C3%BC` a ü: the key as it was PUT.
    assert (event.bucket, event.key) == ("wv-uploads", "uploads/pbmc-3k/run 1+ü.zip")
    assert (event.size_bytes, event.etag, event.object_version) == (22, "76cdb2bad9582d23c1f6f4d868218d6c", None)
    assert event.dataset_id == "pbmc-3k"
    # moto writes no sequencer: the order is the event time alone.
    assert event.upload_order == "2026-12-01T10:22:39.511Z|" + "0" * 32


def test_aws_put_event_on_a_versioned_bucket_names_the_object_version() -> None:
    (event,) = parse_message(_body("aws_put_versioned.json"))  # type: ignore[misc]
    assert isinstance(event, UploadEvent)
    assert (event.bucket, event.key) == ("wv-prod-uploads", "uploads/brain-atlas/Donor A/B (rerun).h5ad")
    assert (event.size_bytes, event.object_version) == (1048576, "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd")
    assert event.dataset_id == "brain-atlas"
    assert event.upload_order == "2026-11-30T17:04:12.884Z|" + "0055AED6DCD90281E5".rjust(32, "0")


def test_only_object_created_records_become_uploads() -> None:
    events = parse_message(_body("aws_multipart_and_delete.json"))
    assert isinstance(events, list) and len(events) == 1  # the delete marker's record is not an upload
    (event,) = events
    assert (event.key, event.size_bytes) == ("uploads/liver/matrix.ZIP", 5368709120)
    assert event.etag == "f9b4b4f0e5d6c7a8b9c0d1e2f3a4b5c6-640"  # a multipart ETag, kept whole


@pytest.mark.parametrize("name", ["moto_test_event.json", "aws_test_event.json"])
def test_s3_test_event_is_recognised(name: str) -> None:
    assert isinstance(parse_message(_body(name)), S3TestEvent)


def test_the_version_is_the_object_not_the_event() -> None:
    """A redelivered event, or another event of the same object, names the same version; another
    object version of the key names another."""
    body = json.loads(_body("aws_put_versioned.json"))
    (first,) = parse_message(json.dumps(body))  # type: ignore[misc]
    body["Records"][0]["eventTime"] = "2026-11-30T17:04:13.001Z"
    body["Records"][0]["eventName"] = "ObjectCreated:CompleteMultipartUpload"
    (again,) = parse_message(json.dumps(body))  # type: ignore[misc]
    body["Records"][0]["s3"]["object"]["versionId"] = "another-version"
    (other,) = parse_message(json.dumps(body))  # type: ignore[misc]
    assert len(first.version_id) == 32 and int(first.version_id, 16) >= 0
    assert first.version_id == again.version_id != other.version_id
    # Unversioned (moto): the same ETag and size are one version; another size another.
    moto = json.loads(_body("moto_put.json"))
    (a,) = parse_message(json.dumps(moto))  # type: ignore[misc]
    moto["Records"][0]["s3"]["object"]["size"] = 23
    (b,) = parse_message(json.dumps(moto))  # type: ignore[misc]
    assert a.version_id != b.version_id


@pytest.mark.parametrize(
    "message",
    [
        ComputeChunk(dataset_id="ds-1", version_id=VERSION, chunk=3, chunk_end=5),
        LoadChunk(dataset_id="ds-1", version_id=VERSION, chunk=3, view="stats_cell_type", hfiles_uri="s3://b/p/"),
        PublishVersion(dataset_id="ds-1", version_id=VERSION),
    ],
    ids=lambda m: m.type,
)
def test_service_messages_round_trip(message: ComputeChunk | LoadChunk | PublishVersion) -> None:
    assert parse_message(message.to_body()) == message


def test_messages_from_before_a_field_was_retired_still_parse() -> None:
    """Bodies in flight (or in a DLQ) from before `n_chunks`, `rows` and `checksum` were retired."""
    old_compute = {"type": "compute_chunk", "schema_version": 1, "dataset_id": "ds-1", "version_id": VERSION, "chunk": 3, "n_chunks": 8, "chunk_end": 5}
    old_load = {
        "type": "load_chunk", "schema_version": 1, "dataset_id": "ds-1", "version_id": VERSION, "chunk": 0,
        "view": "features", "hfiles_uri": "s3://b/p/", "rows": 7, "checksum": "00000000000000ab",
    }
    assert parse_message(json.dumps(old_compute)) == ComputeChunk(dataset_id="ds-1", version_id=VERSION, chunk=3, chunk_end=5)
    assert parse_message(json.dumps(old_load)) == LoadChunk(dataset_id="ds-1", version_id=VERSION, chunk=0, view="features", hfiles_uri="s3://b/p/")
    # Retired is not unknown: any other extra field is still refused.
    with pytest.raises(InvalidMessage, match="invalid load_chunk message"):
        parse_message(json.dumps({**old_load, "rowz": 7}))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"Records": {}}', "without Records"),
        ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "malformed S3 event record"),
        ('{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": "x"}}}]}', "malformed S3 event record"),
        ('{"type": "compute_chunk", "dataset_id": "ds-1", "version_id": "%s", "chunk": -1, "n_chunks": 1}' % VERSION, "invalid compute_chunk message"),
        ('{"type": "publish_version", "dataset_id": "Bad_Id", "version_id": "%s"}' % VERSION, "invalid publish_version message"),
        ('{"type": "rewrite_everything", "dataset_id": "ds-1", "version_id": "%s"}' % VERSION, "invalid rewrite_everything message"),
        ('{"type": "upload", "bucket": "b"}', "invalid upload message"),
    ],
)
def test_bad_bodies_are_invalid_messages_naming_the_problem(body: str, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        parse_message(body)
