"""`wideviews dlq list | show | replay`: inspect dead-letter queues and move messages back to their source.

SQS's own move task is not in the local stack, so replay is receive, send to the source queue with
the body unchanged and the replay count (a message attribute) plus one, then delete from the DLQ.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import boto3

from shared.config import QUEUE_ROLES, QueueRole, Settings
from shared.worker import ERROR_ATTRIBUTE, REPLAY_ATTRIBUTE, SOURCE_ATTRIBUTE


@dataclass
class DeadLetter:
    queue: QueueRole
    message_id: str
    receipt: str
    body: str
    attributes: dict[str, Any]

    @property
    def replay_count(self) -> int:
        return int(self.attributes.get(REPLAY_ATTRIBUTE, {}).get("StringValue", "0"))

    @property
    def error(self) -> str:
        return str(self.attributes.get(ERROR_ATTRIBUTE, {}).get("StringValue", "(moved by the redrive policy)"))

    def summary(self) -> dict[str, Any]:
        try:
            body = json.loads(self.body)
        except json.JSONDecodeError:
            body = None
        kind = body.get("type", "s3 notification" if "Records" in body else "?") if isinstance(body, dict) else "not json"
        return {
            "queue": self.queue,
            "id": self.message_id,
            "type": kind,
            "dataset": body.get("dataset_id") if isinstance(body, dict) else None,
            "version": body.get("version_id") if isinstance(body, dict) else None,
            "replay_count": self.replay_count,
            "error": self.error,
        }


def _sqs(settings: Settings) -> Any:
    return boto3.session.Session().client("sqs", **settings.aws_client_kwargs())


def _url(sqs: Any, settings: Settings, role: QueueRole, dead_letter: bool) -> str:
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
    attributes = {k: v for k, v in letter.attributes.items() if k not in (ERROR_ATTRIBUTE, SOURCE_ATTRIBUTE, REPLAY_ATTRIBUTE)}
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
    letters = [letter for role in _roles(args.queue) for letter in receive_dead_letters(settings, role, hold_s=10)]
    release(settings, letters)
    if args.json:
        print(json.dumps([l.summary() for l in letters], indent=2))
    else:
        for letter in letters:
            s = letter.summary()
            print(f"{s['queue']:<8} {s['id']}  {s['type']:<16} {s['dataset'] or '-'} {(s['version'] or '-')[:12]}  replays={s['replay_count']}  {s['error']}")
        print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    letters = [letter for role in _roles(args.queue) for letter in receive_dead_letters(settings, role, hold_s=10)]
    release(settings, letters)
    match = [l for l in letters if l.message_id == args.id]
    if not match:
        print(f"error: no dead letter {args.id}", file=sys.stderr)
        return 1
    letter = match[0]
    print(json.dumps({**letter.summary(), "body": letter.body, "attributes": letter.attributes}, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
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
