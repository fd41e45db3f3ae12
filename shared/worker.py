"""The one worker loop for ingest, compute, loader and publisher: the only code that touches a queue.

Per message: receive (long poll), parse into its model, run the handler while a heartbeat extends
the message's visibility, send the handler's outgoing messages, then delete. Failures:

- `Permanent` (and anything on the last allowed receive): the version is marked FAILED with the
  reason, the body goes to the dead-letter queue with the reason as an attribute, the original is deleted.
- `Transient`: the message is re-sent with a delay (exponential backoff, capped) and an attempt count,
  and the original deleted, so an outage never uses up the queue's receive limit; after
  `max_transient_attempts` the version fails.
- An unknown exception: the message is left on the queue and made visible again after a backoff
  through its visibility timeout; on the last receive the queue allows it is handled as `Permanent`.

SIGTERM/SIGINT stop receiving; in-flight handlers get `stop_grace_s` to finish, then their messages
are released (visibility 0) so another worker picks them up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.adapters.aws import AwsClients, SqsClient, aws_errors, open_aws
from shared.bootstrap import ServiceDeps, build_deps
from shared.config import QUEUE_ROLES, QueueRole, Settings
from shared.errors import Permanent, Transient
from shared.logs import configure_logging, log_context
from shared.messages import AnyMessage, Message, S3TestEvent, UploadEvent, parse_message
from shared.lifecycle import VersionLife
from shared.records import Records

log = logging.getLogger("wideviews.worker")
Deps = TypeVar("Deps")
Handler = Callable[[Any, Deps], Awaitable[list[Message]]]
ROUTES: dict[str, QueueRole] = {"compute_chunk": "compute", "load_chunk": "load", "publish_version": "publish"}
REPLAY_ATTRIBUTE = "wideviews-replay-count"
ERROR_ATTRIBUTE = "wideviews-error"
SOURCE_ATTRIBUTE = "wideviews-source-queue"
# Set on a dead letter by the worker that moved it: what `wideviews dlq list` names it by.
DATASET_ATTRIBUTE = "wideviews-dataset"
VERSION_ATTRIBUTE = "wideviews-version"
UPLOAD_KEY_ATTRIBUTE = "wideviews-upload-key"
TRANSIENT_ATTRIBUTE = "wideviews-transient-attempts"


@contextlib.contextmanager
def best_effort(what: str) -> Iterator[None]:
    """Run a step whose failure must not fail the message: the failure is logged, never swallowed silently."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - logged; the caller has a fallback (visibility timeout, redrive)
        log.warning("%s failed (%s: %s)", what, type(exc).__name__, exc)


def _transient_attempts(raw: dict[str, Any]) -> int:
    value = raw.get("MessageAttributes", {}).get(TRANSIENT_ATTRIBUTE, {}).get("StringValue", "0")
    return int(value) if str(value).isdigit() else 0


def backoff_s(receive_count: int, settings: Settings) -> int:
    """Exponential backoff with jitter for the n-th receive, capped (SQS allows 12 h; we cap lower)."""
    base = settings.retry_base_s * (2 ** max(0, receive_count - 1))
    return int(min(settings.retry_max_s, base) * random.uniform(0.8, 1.2)) + 1


@dataclass
class QueueUrls:
    """URLs of queues and dead-letter queues, each resolved once, when first needed.

    A worker resolves only the queues it uses (its own, its DLQ, the next one): its role may get
    the URL of no other queue.
    """

    urls: dict[str, str]

    @classmethod
    async def resolve(cls, sqs: SqsClient, settings: Settings, roles: Iterable[QueueRole] = QUEUE_ROLES) -> "QueueUrls":
        """The URLs of the roles' queues and their DLQs."""
        queues = cls({})
        for role in roles:
            for dead in (False, True):
                await queues.ensure(sqs, settings, role, dead_letter=dead)
        return queues

    async def ensure(self, sqs: SqsClient, settings: Settings, role: QueueRole, *, dead_letter: bool = False) -> str:
        """The URL of a role's queue (or DLQ), asked of SQS the first time only."""
        name = settings.queue_name(role, dead_letter=dead_letter)
        if name not in self.urls:
            with aws_errors("get queue url"):
                self.urls[name] = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        return self.urls[name]

    def of(self, settings: Settings, role: QueueRole, *, dead_letter: bool = False) -> str:
        """The URL of a role's queue (or DLQ) resolved before."""
        return self.urls[settings.queue_name(role, dead_letter=dead_letter)]


async def send_messages(sqs: SqsClient, queues: QueueUrls, settings: Settings, messages: list[Message]) -> None:
    """Send outgoing messages to the queue of their type, in batches of 10."""
    by_queue: dict[str, list[Message]] = {}
    for message in messages:
        url = await queues.ensure(sqs, settings, ROUTES[message.type])  # type: ignore[attr-defined]
        by_queue.setdefault(url, []).append(message)
    for url, batch in by_queue.items():
        for start in range(0, len(batch), 10):
            entries = [{"Id": str(i), "MessageBody": m.to_body()} for i, m in enumerate(batch[start : start + 10])]
            with aws_errors("send messages"):
                resp = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            if resp.get("Failed"):
                raise Transient(f"send_message_batch failed for {len(resp['Failed'])} entries")


class Worker(Generic[Deps]):
    """Runs one handler over one queue until stopped."""

    def __init__(
        self,
        role: QueueRole,
        handler: Handler[Deps],
        settings: Settings,
        deps: Deps,
        aws: AwsClients,
        *,
        concurrency: int = 1,
        stop_grace_s: float = 20.0,
    ) -> None:
        self.role = role
        self.handler = handler
        self.settings = settings
        self.deps = deps
        self.aws = aws
        self.records = Records(aws.dynamodb, settings)
        self.concurrency = concurrency
        self.stop_grace_s = stop_grace_s
        self.stopping = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.queues: QueueUrls | None = None

    @property
    def life(self) -> VersionLife:
        """The owner of the versions' states, over this worker's records."""
        return VersionLife(self.records)

    @property
    def queue_url(self) -> str:
        """The URL of the queue this worker receives from."""
        assert self.queues is not None
        return self.queues.of(self.settings, self.role)

    async def run(self) -> None:
        """Receive and handle messages until `stop()`; never raises for one bad message."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        while self.queues is None and not self.stopping.is_set():
            try:
                self.queues = await QueueUrls.resolve(self.aws.sqs, self.settings, (self.role,))
            except Exception as exc:  # the stack may still be coming up
                log.warning("queues not reachable yet: %s", exc)
                await self._sleep(2)
        log.info("worker %s started", self.role)
        receive_failures = 0
        while not self.stopping.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                with aws_errors("receive"):
                    resp = await self.aws.sqs.receive_message(
                        QueueUrl=self.queue_url,
                        MaxNumberOfMessages=min(10, free),
                        WaitTimeSeconds=self.settings.wait_time_s,
                        VisibilityTimeout=self.settings.visibility_timeout_s,
                        AttributeNames=["ApproximateReceiveCount"],
                        MessageAttributeNames=["All"],
                    )
                receive_failures = 0
            except Exception as exc:
                receive_failures += 1
                delay = min(30, 2**receive_failures)
                log.warning("receive failed (%s); retrying in %s s", exc, delay)
                await self._sleep(delay)
                continue
            for raw in resp.get("Messages", []):
                task = asyncio.create_task(self._process(raw))
                self._inflight[raw["MessageId"]] = task
                task.add_done_callback(lambda _t, mid=raw["MessageId"]: self._inflight.pop(mid, None))
        await self._drain()
        log.info("worker %s stopped", self.role)

    def stop(self) -> None:
        """Stop receiving; in-flight messages finish or are released."""
        self.stopping.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _drain(self) -> None:
        if not self._inflight:
            return
        tasks = list(self._inflight.values())
        _, pending = await asyncio.wait(tasks, timeout=self.stop_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _heartbeat(self, receipt: str) -> None:
        """Keep a long-running message invisible to other workers while its handler runs."""
        period = max(1.0, self.settings.visibility_timeout_s / 3)
        while True:
            await asyncio.sleep(period)
            with best_effort("extending the message's visibility"):
                await self.aws.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=self.settings.visibility_timeout_s
                )

    async def _process(self, raw: dict[str, Any]) -> None:
        with log_context(queue=self.role, message_id=raw.get("MessageId")):
            await self._handle(raw)

    async def _handle(self, raw: dict[str, Any]) -> None:
        started = time.monotonic()
        receipt = raw["ReceiptHandle"]
        receive_count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        kind = "?"
        about: dict[str, Any] = {}
        message: AnyMessage | None = None
        heartbeat = asyncio.create_task(self._heartbeat(receipt))
        outcome = "ok"
        try:
            parsed = parse_message(raw["Body"])
            messages: list[AnyMessage] = list(parsed) if isinstance(parsed, list) else [parsed]
            outgoing: list[Message] = []
            for message in messages:
                kind = message.type
                about = _about(message)
                if isinstance(message, S3TestEvent):
                    outcome = "ignored"
                    continue
                with log_context(**about):
                    handled_at = time.monotonic()
                    sent = await self.handler(message, self.deps)
                    await self._count_work(message, sent, time.monotonic() - handled_at)
                about.update(_resolved_version(sent))
                outgoing += sent
            assert self.queues is not None
            await send_messages(self.aws.sqs, self.queues, self.settings, outgoing)
            await self._delete(receipt)
        except asyncio.CancelledError:
            outcome = "released"
            with best_effort("releasing the message"):
                await self.aws.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=0)
        except Transient as exc:
            attempts = _transient_attempts(raw) + 1
            if attempts > self.settings.max_transient_attempts:
                outcome = f"failed after {attempts - 1} transient retries: {exc}"
                await self._fail(raw, receipt, _failing(about, message, exc), Permanent(f"gave up after {attempts - 1} retries: {exc}"))
            else:
                delay = int(exc.retry_after_s) if exc.retry_after_s is not None else backoff_s(attempts, self.settings)
                outcome = f"retry {attempts} in {delay}s (Transient: {exc})"
                await self._retry_later(raw, receipt, attempts, delay)
        except Exception as exc:
            # Unknown errors may be bugs: they count against the queue's receive limit.
            last_try = receive_count >= self.settings.max_receive_count - 1
            if isinstance(exc, Permanent) or last_try:
                outcome = f"failed: {exc}"
                await self._fail(raw, receipt, _failing(about, message, exc), exc)
            else:
                delay = backoff_s(receive_count, self.settings)
                outcome = f"retry in {delay}s ({type(exc).__name__}: {exc})"
                with log_context(**about):
                    log.exception("unexpected error in %s handler", self.role)
                with best_effort("delaying the message's retry"):
                    await self.aws.sqs.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=min(delay, 43_000)
                    )
        finally:
            heartbeat.cancel()
            fields = {
                "type": kind,
                **about,
                "outcome": outcome[:500],
                "seconds": round(time.monotonic() - started, 3),
                "receive": receive_count,
            }
            log.info("message %s", outcome.split(" ", 1)[0].rstrip(":"), extra={"fields": fields})

    async def _count_work(self, message: AnyMessage, sent: list[Message], seconds: float) -> None:
        """Add the handler's time to the version's record, under this worker's stage; never fails the message.

        The version is the one the outgoing messages name when they agree (ingest names the version
        it resolved from the object, which an S3 event alone may not), else the incoming message's.
        """
        resolved = _resolved_version(sent)
        dataset_id, version_id = resolved.get("dataset", getattr(message, "dataset_id", None)), resolved.get("version", getattr(message, "version_id", None))
        if not dataset_id or not version_id:
            return
        try:
            await self.records.add_stage_work(dataset_id, version_id, self.role, seconds)
        except Exception as exc:  # bookkeeping: the message's work is done whatever happens here
            log.warning("could not count the stage's work (%s: %s)", type(exc).__name__, exc)

    async def _retry_later(self, raw: dict[str, Any], receipt: str, attempts: int, delay_s: int) -> None:
        """Re-send the message with a delay and an attempt count, then delete the original.

        A transient outage (HBase restarting, an endpoint cut off) must not use up the queue's
        receive limit, or a long outage would dead-letter healthy work: the copy starts at receive 1.
        If the send fails the original stays and comes back after its visibility timeout.
        """
        attributes = {k: v for k, v in raw.get("MessageAttributes", {}).items() if "StringValue" in v}
        attributes = {k: {"DataType": v["DataType"], "StringValue": v["StringValue"]} for k, v in attributes.items()}
        attributes[TRANSIENT_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(attempts)}
        try:
            with aws_errors("re-send for retry"):
                await self.aws.sqs.send_message(
                    QueueUrl=self.queue_url, MessageBody=raw["Body"], MessageAttributes=attributes, DelaySeconds=min(900, delay_s)
                )
            await self._delete(receipt)
        except Exception as exc:
            log.warning("could not re-send for retry (%s); the message returns after its visibility timeout", exc)
            with best_effort("delaying the message's retry"):
                await self.aws.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=min(delay_s, 43_000))

    async def _delete(self, receipt: str) -> None:
        with aws_errors("delete message"):
            await self.aws.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)

    async def _fail(self, raw: dict[str, Any], receipt: str, about: dict[str, Any], exc: Exception) -> None:
        """Mark the version FAILED, move the message to the DLQ with the reason and what it is about, delete the original."""
        reason = str(exc) or type(exc).__name__
        dataset_id, version_id = about.get("dataset"), about.get("version")
        if dataset_id and version_id:
            with best_effort(f"marking version {version_id} FAILED"):
                await self.life.fail(dataset_id, version_id, reason)
        assert self.queues is not None
        named = {
            ERROR_ATTRIBUTE: reason[:1000],
            SOURCE_ATTRIBUTE: self.role,
            DATASET_ATTRIBUTE: dataset_id,
            VERSION_ATTRIBUTE: version_id,
            UPLOAD_KEY_ATTRIBUTE: about.get("upload_key"),
        }
        attributes = {k: v for k, v in raw.get("MessageAttributes", {}).items() if k not in named}
        attributes.update({k: {"DataType": "String", "StringValue": str(v)[:1000]} for k, v in named.items() if v})
        try:
            with aws_errors("move to DLQ"):
                await self.aws.sqs.send_message(
                    QueueUrl=self.queues.of(self.settings, self.role, dead_letter=True),
                    MessageBody=raw["Body"],
                    MessageAttributes=attributes,
                )
            await self._delete(receipt)
        except Exception as move_exc:  # the redrive policy still moves it after maxReceiveCount
            log.warning("could not move message to DLQ: %s", move_exc)


def _about(message: AnyMessage) -> dict[str, Any]:
    """The log and dead-letter fields naming what a message is about (dataset, version, chunk, view, upload key).

    An S3 event that carries no object version (moto's never do) names no version: ingest resolves
    it from the object, and the worker adds it once the handler has (`_resolved_version`)."""
    unresolved = isinstance(message, UploadEvent) and message.object_version is None
    fields = {
        "dataset": getattr(message, "dataset_id", None),
        "version": None if unresolved else getattr(message, "version_id", None),
        "chunk": getattr(message, "chunk", None),
        "view": getattr(message, "view", None),
        "upload_key": message.key if isinstance(message, UploadEvent) else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _resolved_version(sent: list[Message]) -> dict[str, str]:
    """The dataset and version the outgoing messages name, when they all name the same one."""
    named = {(m.dataset_id, m.version_id) for m in sent if hasattr(m, "version_id")}  # type: ignore[attr-defined]
    if len(named) != 1:
        return {}
    dataset_id, version_id = named.pop()
    return {"dataset": dataset_id, "version": version_id}


def _failing(about: dict[str, Any], message: AnyMessage | None, exc: BaseException) -> dict[str, Any]:
    """What a failure is about (the version it marks FAILED and the dead letter names): what the error
    says (ingest: the version it resolved), else the message's own fields, else the version the
    message implies (an S3 event in an unversioned bucket: its ETag and size are the identity)."""
    named = getattr(exc, "about", {})
    if named:
        return {**about, **named}
    if "version" in about or message is None or not hasattr(message, "version_id"):
        return about
    return {**about, "version": message.version_id}


def run_service(
    role: QueueRole,
    handler: Handler[ServiceDeps],
    *,
    concurrency: int | Callable[[Settings], int] = 1,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Entry point of a worker process: settings from the environment, JSON logs, the handler's
    dependencies from the composition root (`shared.bootstrap`), then run until SIGTERM.

    `concurrency` is the messages handled at once, or a function of the settings giving it.
    `prepare` runs once before the first message (ingest removes a killed predecessor's spools).
    """
    settings = Settings.load()
    if callable(concurrency):
        concurrency = concurrency(settings)
    configure_logging(settings)
    if prepare is not None:
        prepare()

    async def main() -> None:
        async with open_aws(settings) as aws:
            await Worker(role, handler, settings, build_deps(settings, aws), aws, concurrency=concurrency).run()

    asyncio.run(main())
