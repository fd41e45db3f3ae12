"""Which version a request may read: the dataset pointer and the version records, read from DynamoDB.

A request reads the dataset's current version (the pointer, cached for `pointer_cache_s`), or a
version it pins (`?version=`, or a page cursor) if that version reached PUBLISHED and is still present:
the current or previous version of the pointer, or a version whose record is PUBLISHED or REPLACED
(gc marks a version DELETED once it dropped its tables). A version still building (INGESTING …
VALIDATING), FAILED, OVERTAKEN (verified but never published), DELETED or unknown is a 404 even when some of its tables exist: nobody reads
unverified data.

The query reads with its own boto3 client (short timeouts, few retries) rather than `shared.records`,
whose async client the read path does not need; an unreachable DynamoDB is `Transient` (HTTP 503).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import boto3
import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config

from services.query.memory_only import require_io
from shared.config import Settings
from shared.errors import NotFound, Transient
from shared.lifecycle import READABLE_STATES, parse_state

T = TypeVar("T")
_de = TypeDeserializer()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in raw.items()}


@dataclass(frozen=True)
class Pointer:
    """The dataset item: which version readers see."""

    dataset_id: str
    current_version: str
    previous_version: str | None
    published_at: str | None


@dataclass(frozen=True)
class VersionInfo:
    """What a reader may know of one version record."""

    dataset_id: str
    version_id: str
    state: str
    created_at: str
    published_at: str | None
    n_cells: int
    n_features: int

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "VersionInfo":
        # The first time the version reached PUBLISHED (history lines are "<iso time> <STATE>[: reason]").
        """What a reader may know of a versions item (legacy state names read as today's)."""
        published = next((h.split(" ", 1)[0] for h in item.get("history", []) if h.split(" ")[1:2] == ["PUBLISHED"]), None)
        return cls(
            dataset_id=item["dataset_id"],
            version_id=item["version_id"],
            state=parse_state(str(item.get("state", ""))).value if item.get("state") else "",
            created_at=str(item.get("created_at", "")),
            published_at=published,
            n_cells=int(item.get("n_cells", 0)),
            n_features=int(item.get("n_features", 0)),
        )


class Pointers:
    """Dataset pointers and version records, each cached for `pointer_cache_s` (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Fail fast: a reader waits at most a few seconds for DynamoDB before getting a 503.
        config = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})
        self._db = boto3.session.Session().client("dynamodb", config=config, **settings.aws_client_kwargs())
        self._ttl_s = settings.pointer_cache_s
        self._pointers: dict[str, tuple[float, Pointer | None]] = {}
        self._versions: dict[tuple[str, str], tuple[float, VersionInfo | None]] = {}
        self._lock = threading.Lock()

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        require_io(action)
        try:
            return fn()
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ResourceNotFoundException",):
                raise Transient(f"{action}: DynamoDB table missing ({code})") from exc
            raise Transient(f"{action}: DynamoDB error {code}") from exc
        except (botocore.exceptions.BotoCoreError, ConnectionError, TimeoutError) as exc:
            raise Transient(f"{action}: DynamoDB unreachable ({type(exc).__name__})") from exc

    def _all_pages(self, action: str, operation: Callable[..., dict[str, Any]], request: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a scan or query, page after page, as plain values."""
        items: list[dict[str, Any]] = []
        kwargs = dict(request)
        while True:
            resp = self._call(action, lambda: operation(**kwargs))
            items += [_item(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def current(self, dataset_id: str, *, fresh: bool = False) -> Pointer:
        """The dataset's pointer; `NotFound` if the dataset was never published."""
        now = time.monotonic()
        with self._lock:
            hit = self._pointers.get(dataset_id)
        if fresh or hit is None or now - hit[0] > self._ttl_s:
            resp = self._call(
                "pointer lookup",
                lambda: self._db.get_item(TableName=self._settings.datasets_table, Key={"dataset_id": {"S": dataset_id}}),
            )
            item = _item(resp["Item"]) if "Item" in resp else None
            pointer = None
            if item and item.get("current_version"):
                pointer = Pointer(dataset_id, item["current_version"], item.get("previous_version"), item.get("published_at"))
            hit = (now, pointer)
            with self._lock:
                self._pointers[dataset_id] = hit
        if hit[1] is None:
            raise NotFound(f"dataset {dataset_id!r} not found")
        return hit[1]

    def all_current(self) -> list[Pointer]:
        """Every published dataset's pointer, by id (a scan: for the dataset listing)."""
        items = self._all_pages("dataset listing", self._db.scan, {"TableName": self._settings.datasets_table})
        pointers = [
            Pointer(i["dataset_id"], i["current_version"], i.get("previous_version"), i.get("published_at"))
            for i in items
            if i.get("current_version")
        ]
        return sorted(pointers, key=lambda p: p.dataset_id)

    def version(self, dataset_id: str, version_id: str) -> VersionInfo | None:
        """The version's record (None if there is none), cached like the pointer."""
        key = (dataset_id, version_id)
        now = time.monotonic()
        with self._lock:
            hit = self._versions.get(key)
        if hit is None or now - hit[0] > self._ttl_s:
            resp = self._call(
                "version lookup",
                lambda: self._db.get_item(
                    TableName=self._settings.versions_table,
                    Key={"dataset_id": {"S": dataset_id}, "version_id": {"S": version_id}},
                ),
            )
            hit = (now, VersionInfo.from_item(_item(resp["Item"])) if "Item" in resp else None)
            with self._lock:
                self._versions[key] = hit
                if len(self._versions) > 4096:
                    self._versions.clear()
        return hit[1]

    def versions(self, dataset_id: str) -> list[VersionInfo]:
        """Every version record of a dataset (a query on the partition key), oldest first."""
        query = {
            "TableName": self._settings.versions_table,
            "KeyConditionExpression": "dataset_id = :d",
            "ExpressionAttributeValues": {":d": {"S": dataset_id}},
        }
        items = self._all_pages("version listing", self._db.query, query)
        return sorted((VersionInfo.from_item(i) for i in items), key=lambda v: (v.created_at, v.version_id))

    def require_readable(self, dataset_id: str, version_id: str) -> Pointer:
        """Check that a pinned version may be read; `NotFound` naming why not. Returns the pointer."""
        pointer = self.current(dataset_id)
        if version_id in (pointer.current_version, pointer.previous_version):
            return pointer
        record = self.version(dataset_id, version_id)
        if record is not None and record.state in READABLE_STATES:
            return pointer
        if record is not None and record.state == "VALIDATING":
            # Flipped a moment ago? The publisher moves the pointer before it marks the version PUBLISHED.
            pointer = self.current(dataset_id, fresh=True)
            if version_id == pointer.current_version:
                return pointer
        if record is None:
            raise NotFound(f"version {version_id} of dataset {dataset_id!r} is not available (no such version)")
        raise NotFound(
            f"version {version_id} of dataset {dataset_id!r} is not available ({record.state}): only published versions are readable"
        )
