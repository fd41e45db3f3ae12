"""`wideviews dlq list | show | replay`: inspect dead-letter queues and move messages back to their source.

Every dead letter is named by its dataset, upload key and version, S3 notifications included: from
the attributes the worker set when it moved the message, the body (an upload event's key names the
dataset), and the versions table (an upload's version is the record with its key and upload order;
a service message's upload key is its version's). SQS's own move task is not in the local stack, so
replay is receive, send to the source queue with the body unchanged and the replay count (a message
attribute) plus one, then delete from the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any, Protocol

import boto3

from shared.adapters.aws import open_aws
from shared.config import QUEUE_ROLES, QueueRole, Settings
from shared.errors import InvalidMessage
from shared.messages import UploadEvent, parse_message
from shared.records import Records, VersionRecord
from shared.worker import (
    DATASET_ATTRIBUTE,
    ERROR_ATTRIBUTE,
    REPLAY_ATTRIBUTE,
    SOURCE_ATTRIBUTE,
    UPLOAD_KEY_ATTRIBUTE,
    VERSION_ATTRIBUTE,
)


@dataclass
class DeadLetter:
    queue: QueueRole
    message_id: str
    receipt: str
    body: str
    attributes: dict[str, Any]

    @property
    def replay_count(self) -> int:
        """How many times the message was replayed already."""
        return int(self.attributes.get(REPLAY_ATTRIBUTE, {}).get("StringValue", "0"))

    @property
    def error(self) -> str:
        """The reason its worker gave (or that the redrive policy moved it)."""
        return str(self.attributes.get(ERROR_ATTRIBUTE, {}).get("StringValue", "(moved by the redrive policy)"))

    def attribute(self, name: str) -> str | None:
        """A string attribute the worker set, None when absent."""
        value = self.attributes.get(name, {}).get("StringValue")
        return str(value) if value else None

    def subject(self) -> "Subject":
        """What the message is about, from its body and the attributes its worker set."""
        kind, uploads, dataset, version = "not json", [], None, None
        try:
            parsed = parse_message(self.body)
        except InvalidMessage:
            parsed = None
            kind, uploads = _raw_upload_keys(self.body)
        if isinstance(parsed, list):
            kind = "s3 notification"
            uploads = [(event.key, event.upload_order, event.version_id) for event in parsed]
        elif parsed is not None:
            kind = parsed.type
            dataset, version = getattr(parsed, "dataset_id", None), getattr(parsed, "version_id", None)
            if isinstance(parsed, UploadEvent):
                uploads = [(parsed.key, parsed.upload_order, parsed.version_id)]
        upload_key = uploads[0][0] if uploads else self.attribute(UPLOAD_KEY_ATTRIBUTE)
        return Subject(
            kind=kind,
            dataset=self.attribute(DATASET_ATTRIBUTE) or dataset or (_dataset_of_key(upload_key) if upload_key else None),
            version=self.attribute(VERSION_ATTRIBUTE) or version,
            upload_key=upload_key,
            upload_order=uploads[0][1] if uploads else None,
            derived_version=uploads[0][2] if uploads else None,
        )

    def summary(self, versions: dict[str, list[VersionRecord]] | None = None) -> dict[str, Any]:
        """Queue, id, type, dataset, upload key, version, replays and error; `versions` (by dataset) fills in the rest."""
        subject = self.subject()
        version, upload_key = subject.version, subject.upload_key
        recorded = (versions or {}).get(subject.dataset or "", [])
        if subject.upload_key and subject.upload_order:
            # An upload's version is the record made from this very event (its key and upload order);
            # the id derived from the event alone differs where ingest resolved the object's S3 version.
            same = [r for r in recorded if r.upload_key == subject.upload_key and r.upload_order == subject.upload_order]
            version = same[0].version_id if same else version or subject.derived_version
        elif version and not upload_key:
            upload_key = next((r.upload_key for r in recorded if r.version_id == version), None) or None
        return {
            "queue": self.queue,
            "id": self.message_id,
            "type": subject.kind,
            "dataset": subject.dataset,
            "upload_key": upload_key,
            "version": version,
            "replay_count": self.replay_count,
            "error": self.error,
        }


@dataclass
class Subject:
    """The dataset, version and upload a dead letter is about, as far as the message itself tells."""

    kind: str
    dataset: str | None
    version: str | None
    upload_key: str | None
    upload_order: str | None
    derived_version: str | None


def _dataset_of_key(key: str) -> str:
    # As UploadEvent.dataset_id: the version of a bad key is filed under its second segment.
    parts = key.split("/")
    return (parts[1] if len(parts) >= 3 else key)[:200] or "(none)"


def _raw_upload_keys(body: str) -> tuple[str, list[tuple[str, str | None, str | None]]]:
    """Keys of an S3 notification that did not parse as one (a malformed record): best effort."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return "not json", []
    if not isinstance(data, dict) or not isinstance(data.get("Records"), list):
        return str(data.get("type", "?")) if isinstance(data, dict) else "not json", []
    keys = []
    for record in data["Records"]:
        key = record.get("s3", {}).get("object", {}).get("key") if isinstance(record, dict) else None
        if isinstance(key, str):
            keys.append((key, None, None))
    return "s3 notification", keys


def versions_by_dataset(settings: Settings, letters: list[DeadLetter]) -> dict[str, list[VersionRecord]]:
    """The version records of every dataset the dead letters name (one query per dataset)."""
    datasets = sorted({d for d in (letter.subject().dataset for letter in letters) if d})

    async def query() -> dict[str, list[VersionRecord]]:
        async with open_aws(settings) as aws:
            records = Records(aws.dynamodb, settings)
            return {d: await records.list_versions(d) for d in datasets}

    return asyncio.run(query()) if datasets else {}


class BlockingSqs(Protocol):
    """The calls of boto3's (blocking) SQS client the dead-letter tools make."""

    def get_queue_url(self, **kwargs: Any) -> dict[str, Any]:
        """The URL of a queue by name."""

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        """Up to ten messages, made invisible for a while."""

    def change_message_visibility(self, **kwargs: Any) -> dict[str, Any]:
        """Hold a received message longer, or release it."""

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        """Send one message."""

    def delete_message(self, **kwargs: Any) -> dict[str, Any]:
        """Delete a received message."""


def _sqs(settings: Settings) -> BlockingSqs:
    return boto3.session.Session().client("sqs", **settings.aws_client_kwargs())


def _url(sqs: BlockingSqs, settings: Settings, role: QueueRole, dead_letter: bool) -> str:
    return sqs.get_queue_url(QueueName=settings.queue_name(role, dead_letter=dead_letter))["QueueUrl"]


def receive_dead_letters(settings: Settings, role: QueueRole, *, hold_s: int = 30, limit: int = 1000) -> list[DeadLetter]:
    """Receive (and hold invisible for `hold_s`) up to `limit` messages of a role's DLQ."""
    sqs = _sqs(settings)
    url = _url(sqs, settings, role, True)
    found: dict[str, DeadLetter] = {}
    empty_rounds = 0
    while len(found) < limit and empty_rounds < 2:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=hold_s, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        messages = resp.get("Messages", [])
        empty_rounds = 0 if messages else empty_rounds + 1
        for m in messages:
            found[m["MessageId"]] = DeadLetter(role, m["MessageId"], m["ReceiptHandle"], m["Body"], m.get("MessageAttributes", {}))
    return list(found.values())


def release(settings: Settings, letters: list[DeadLetter]) -> None:
    """Make held messages visible again (after list/show)."""
    sqs = _sqs(settings)
    for letter in letters:
        sqs.change_message_visibility(QueueUrl=_url(sqs, settings, letter.queue, True), ReceiptHandle=letter.receipt, VisibilityTimeout=0)


def replay(settings: Settings, letter: DeadLetter) -> None:
    """Send the message back to its source queue (body unchanged, replay count + 1), then delete it from the DLQ."""
    sqs = _sqs(settings)
    source = str(letter.attributes.get(SOURCE_ATTRIBUTE, {}).get("StringValue", letter.queue))
    dead_letter_only = (ERROR_ATTRIBUTE, SOURCE_ATTRIBUTE, REPLAY_ATTRIBUTE, DATASET_ATTRIBUTE, VERSION_ATTRIBUTE, UPLOAD_KEY_ATTRIBUTE)
    attributes = {k: v for k, v in letter.attributes.items() if k not in dead_letter_only}
    attributes = {k: {"DataType": v["DataType"], "StringValue": v["StringValue"]} for k, v in attributes.items() if "StringValue" in v}
    attributes[REPLAY_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(letter.replay_count + 1)}
    sqs.send_message(QueueUrl=_url(sqs, settings, source, False), MessageBody=letter.body, MessageAttributes=attributes)  # type: ignore[arg-type]
    sqs.delete_message(QueueUrl=_url(sqs, settings, letter.queue, True), ReceiptHandle=letter.receipt)


def _roles(queue: str | None) -> list[QueueRole]:
    if queue is None:
        return list(QUEUE_ROLES)
    if queue not in QUEUE_ROLES:
        raise SystemExit(f"error: unknown queue {queue!r}; one of {list(QUEUE_ROLES)}")
    return [queue]  # type: ignore[list-item]


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews dlq list`: the dead letters of a queue, with what they are about."""
    letters = [letter for role in _roles(args.queue) for letter in receive_dead_letters(settings, role, hold_s=10)]
    release(settings, letters)
    versions = versions_by_dataset(settings, letters)
    summaries = [letter.summary(versions) for letter in letters]
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        for s in summaries:
            print(
                f"{s['queue']:<8} {s['id']}  {s['type']:<16} dataset={s['dataset'] or '-'} upload={s['upload_key'] or '-'} "
                f"version={(s['version'] or '-')[:12]}  replays={s['replay_count']}  {s['error']}"
            )
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews dlq show`: one dead letter in full."""
    letters = [letter for role in _roles(args.queue) for letter in receive_dead_letters(settings, role, hold_s=10)]
    release(settings, letters)
    match = [l for l in letters if l.message_id == args.id]
    if not match:
        print(f"error: no dead letter {args.id}", file=sys.stderr)
        return 1
    letter = match[0]
    summary = letter.summary(versions_by_dataset(settings, [letter]))
    print(json.dumps({**summary, "body": letter.body, "attributes": letter.attributes}, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews dlq replay`: put dead letters back on their queue."""
    if not args.all and not args.id:
        print("error: name messages with --id (repeatable) or pass --all", file=sys.stderr)
        return 1
    letters = [letter for role in _roles(args.queue) for letter in receive_dead_letters(settings, role)]
    chosen = letters if args.all else [l for l in letters if l.message_id in set(args.id)]
    release(settings, [l for l in letters if l not in chosen])
    for letter in chosen:
        replay(settings, letter)
        print(f"replayed {letter.message_id} to {letter.queue} (replay {letter.replay_count + 1})", file=sys.stderr)
    missing = set(args.id or []) - {l.message_id for l in chosen}
    if missing:
        print(f"error: not found: {sorted(missing)}", file=sys.stderr)
        return 1
    print(f"{len(chosen)} message(s) replayed", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `wideviews dlq list|show|replay`."""
    dlq = subparsers.add_parser("dlq", help="dead-letter queues: list, show, replay")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = sub.add_parser("list", help="messages in the DLQs (all queues, or one)")
    listing.add_argument("queue", nargs="?", choices=list(QUEUE_ROLES))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    show = sub.add_parser("show", help="one dead letter's body, error and attributes")
    show.add_argument("id", help="message id (from `dlq list`)")
    show.add_argument("--queue", choices=list(QUEUE_ROLES))
    show.set_defaults(run=cmd_show)
    rep = sub.add_parser("replay", help="move dead letters back to their source queue")
    rep.add_argument("queue", nargs="?", choices=list(QUEUE_ROLES))
    rep.add_argument("--id", action="append", help="message id to replay (repeatable)")
    rep.add_argument("--all", action="store_true", help="replay every dead letter (of the queue)")
    rep.set_defaults(run=cmd_replay)
