"""Every SQS message between services: pydantic models with a `type` and a `schema_version`.

S3's own upload notifications (the ingest queue's input) are modelled here too, so the worker
loop validates everything it receives the same way.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from shared.errors import InvalidMessage

DATASET_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
VERSION_ID_PATTERN = r"^[0-9a-f]{32}$"
VIEW_PATTERN = r"^(features|cells|catalog|markers|embedding_sample|(stats|dist)_[A-Za-z0-9_]{1,80})$"
DatasetId = Annotated[str, Field(pattern=DATASET_ID_PATTERN)]
VersionId = Annotated[str, Field(pattern=VERSION_ID_PATTERN)]
ViewName = Annotated[str, Field(pattern=VIEW_PATTERN)]
SCHEMA_VERSION = 1
_UPLOAD_NAMESPACE = uuid.UUID("5b0c4c52-8a8e-4f5e-9d4f-7769646576ee")


class Message(BaseModel):
    """Base of the service messages: frozen, no unknown fields (a DLQ replay count travels as an SQS attribute).

    Fields a model dropped stay readable: `retired_fields` lists them, and a body that still carries
    them (a message in flight, or in a DLQ, from before) parses with them ignored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    retired_fields: ClassVar[frozenset[str]] = frozenset()
    schema_version: Literal[1] = SCHEMA_VERSION
    dataset_id: DatasetId
    version_id: VersionId

    @model_validator(mode="before")
    @classmethod
    def _ignore_retired_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.retired_fields & data.keys():
            return {k: v for k, v in data.items() if k not in cls.retired_fields}
        return data

    def to_body(self) -> str:
        """The message as an SQS body (JSON)."""
        return self.model_dump_json()


class ComputeChunk(Message):
    """Compute every view's share of one compute unit of a version: the column chunk `chunk` (local
    executor), or the chunks [chunk, chunk_end) in one Spark application (spark, emr)."""

    # n_chunks: the version's chunk count, never read (the plan holds it).
    retired_fields: ClassVar[frozenset[str]] = frozenset({"n_chunks"})
    type: Literal["compute_chunk"] = "compute_chunk"
    chunk: int = Field(ge=0)
    chunk_end: int | None = Field(default=None, ge=1)


class LoadChunk(Message):
    """Bulk-load the HFiles of one (unit, view) into the version's table; `chunk` names the unit."""

    # rows, checksum: copies of the unit's check, never read (the publisher reads the check itself).
    retired_fields: ClassVar[frozenset[str]] = frozenset({"rows", "checksum"})
    type: Literal["load_chunk"] = "load_chunk"
    chunk: int = Field(ge=0)
    view: ViewName
    hfiles_uri: str = Field(pattern=r"^s3://")


class PublishVersion(Message):
    """Verify every view of a version and flip the dataset's pointer to it."""

    type: Literal["publish_version"] = "publish_version"


ServiceMessage = Annotated[Union[ComputeChunk, LoadChunk, PublishVersion], Field(discriminator="type")]
_service_adapter: TypeAdapter[ServiceMessage] = TypeAdapter(ServiceMessage)


def upload_version_id(bucket: str, key: str, *, object_version: str | None, etag: str, size_bytes: int) -> str:
    """The version id of one uploaded object: its S3 version id where the bucket is versioned (two
    PUTs of the same bytes are two objects), else its ETag and size (the same bytes twice are one)."""
    identity = f"v:{object_version}" if object_version else f"e:{etag.strip(chr(34))}:{size_bytes}"
    return uuid.uuid5(_UPLOAD_NAMESPACE, f"{bucket}/{key}/{identity}").hex


class UploadEvent(BaseModel):
    """One object-created record of an S3 event notification, keys decoded."""

    model_config = ConfigDict(frozen=True)
    type: Literal["upload"] = "upload"
    schema_version: Literal[1] = SCHEMA_VERSION
    bucket: str
    key: str
    size_bytes: int
    etag: str
    sequencer: str
    event_time: str
    # The S3 object version the event announces: in the event where the bucket is versioned (real
    # S3), or filled in by ingest from a HEAD of the key (moto's events carry none).
    object_version: str | None = None

    @property
    def dataset_id(self) -> str:
        """The key's second segment (`uploads/<dataset_id>/…`), unvalidated: the version record is filed
        under it even when it is invalid, so the failure is visible in `wideviews status`."""
        parts = self.key.split("/")
        return (parts[1] if len(parts) >= 3 else self.key)[:200] or "(none)"

    @property
    def upload_order(self) -> str:
        """Sortable upload order: event time, then S3's sequencer (hex, same-key ordering)."""
        return f"{self.event_time}|{self.sequencer.rjust(32, '0')}"

    @property
    def version_id(self) -> str:
        """The version this upload creates: derived from the object it reads, not from the event.

        S3 may deliver an event twice, and moto announces one multipart upload with both a `Put` and
        a `CompleteMultipartUpload` event whose times differ: all of them name one version.
        """
        return upload_version_id(self.bucket, self.key, object_version=self.object_version, etag=self.etag, size_bytes=self.size_bytes)

    def to_body(self) -> str:
        """The event as an SQS body (JSON), as `wideviews dlq` and tests send it."""
        return self.model_dump_json()


class S3TestEvent(BaseModel):
    """The `s3:TestEvent` S3 sends when a notification is configured: acknowledged and ignored."""

    model_config = ConfigDict(frozen=True)
    type: Literal["s3_test_event"] = "s3_test_event"


def parse_s3_notification(body: dict[str, Any]) -> list[UploadEvent] | S3TestEvent:
    """Upload events of an S3 notification body (`+` is a space in keys, then %-decoding)."""
    if body.get("Event") == "s3:TestEvent":
        return S3TestEvent()
    records = body.get("Records")
    if not isinstance(records, list):
        raise InvalidMessage("S3 notification without Records")
    events = []
    for record in records:
        try:
            s3 = record["s3"]
            if not str(record.get("eventName", "")).startswith("ObjectCreated"):
                continue
            events.append(
                UploadEvent(
                    bucket=s3["bucket"]["name"],
                    key=unquote_plus(s3["object"]["key"]),
                    size_bytes=int(s3["object"].get("size", 0)),
                    etag=str(s3["object"].get("eTag", "")).strip('"'),
                    sequencer=str(s3["object"].get("sequencer", "0")),
                    event_time=str(record.get("eventTime", "")),
                    object_version=s3["object"].get("versionId") or None,
                )
            )
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise InvalidMessage(f"malformed S3 event record: {exc}") from exc
    return events


AnyMessage = Union[ComputeChunk, LoadChunk, PublishVersion, UploadEvent, S3TestEvent]


def parse_message(body: str) -> AnyMessage | list[UploadEvent]:
    """Parse a queue body: a service message by its `type`, or an S3 notification.

    Raises `InvalidMessage` (permanent) naming what is wrong.
    """
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"message body is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(data, dict):
        raise InvalidMessage("message body is not a JSON object")
    if "Records" in data or data.get("Event") == "s3:TestEvent":
        return parse_s3_notification(data)
    kind = data.get("type")
    if kind == "upload":
        try:
            return UploadEvent.model_validate(data)
        except ValidationError as exc:
            raise InvalidMessage(f"invalid upload message: {exc}") from exc
    try:
        return _service_adapter.validate_python(data)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid {kind or 'untyped'} message: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from exc
