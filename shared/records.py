"""DynamoDB records: the `versions` item of each upload and the `datasets` pointer item.

The adapter of `shared/lifecycle.py`, which decides every state change; here are the writes. Every
write is conditional on what was read, so a redelivered message or a racing worker can never move a
version backwards or flip a pointer twice:

- version state follows `lifecycle.TRANSITIONS` only (checked in the condition expression, not just in Python);
- finished (chunk, view) keys are an ADD to a string set, so a duplicate adds nothing;
- the publish claim is a conditional set of `publish_claimed`, so exactly one loader asks;
- the pointer flip is conditional on the `generation` that was read (monotonic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from shared.adapters.aws import DynamoDbClient, aws_errors
from shared.config import Settings
from shared.errors import ConditionFailed, NotFound
from shared.lifecycle import State, allowed_from, parse_state


_ser = TypeSerializer()
_de = TypeDeserializer()


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds (what records store)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in raw.items()}


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items()}


@dataclass
class VersionRecord:
    """One upload of a dataset and how far it got."""

    dataset_id: str
    version_id: str
    state: State
    upload_key: str = ""
    upload_order: str = ""
    created_at: str = ""
    updated_at: str = ""
    n_chunks: int = 0
    n_cells: int = 0
    n_features: int = 0
    views: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    # Chunks whose views compute has written (`<chunk>`), for progress within COMPUTING.
    computed: set[str] = field(default_factory=set)
    publish_claimed: bool = False
    error: str | None = None
    history: list[str] = field(default_factory=list)
    # Per stage (the worker's queue role): messages handled for this version and the handlers' seconds.
    work: dict[str, dict[str, float]] = field(default_factory=dict)
    # Ingest's progress within INGESTING: bytes of the matrix read (of `ingest_bytes_total`, 0 if
    # unknown, e.g. a .gz member) and rows parsed.
    ingest_bytes_read: int = 0
    ingest_bytes_total: int = 0
    ingest_rows: int = 0

    @property
    def all_finished(self) -> bool:
        """True once every expected `unit:view` key has been loaded."""
        return bool(self.expected) and self.expected <= self.finished

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "VersionRecord":
        """The record of a versions item (plain values)."""
        return cls(
            dataset_id=item["dataset_id"],
            version_id=item["version_id"],
            state=parse_state(item["state"]),
            upload_key=item.get("upload_key", ""),
            upload_order=item.get("upload_order", ""),
            created_at=item.get("created_at", ""),
            updated_at=item.get("updated_at", ""),
            n_chunks=int(item.get("n_chunks", 0)),
            n_cells=int(item.get("n_cells", 0)),
            n_features=int(item.get("n_features", 0)),
            views=list(item.get("views", [])),
            expected=set(item.get("expected", [])),
            finished=set(item.get("finished", [])),
            computed=set(item.get("computed", [])),
            publish_claimed=bool(item.get("publish_claimed", False)),
            error=item.get("error"),
            history=list(item.get("history", [])),
            work=_stage_work(item),
            ingest_bytes_read=int(item.get("ingest_bytes_read", 0)),
            ingest_bytes_total=int(item.get("ingest_bytes_total", 0)),
            ingest_rows=int(item.get("ingest_rows", 0)),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly view for the CLI and the API."""
        return {
            "dataset_id": self.dataset_id,
            "version_id": self.version_id,
            "state": self.state.value,
            "upload_key": self.upload_key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "n_cells": self.n_cells,
            "n_features": self.n_features,
            "n_chunks": self.n_chunks,
            "views": self.views,
            "computed": len(self.computed),
            "done": len(self.finished & self.expected),
            "expected": len(self.expected),
            "error": self.error,
            "work": self.work,
            "ingest": {"bytes_read": self.ingest_bytes_read, "bytes_total": self.ingest_bytes_total, "rows": self.ingest_rows},
        }


def _stage_work(item: dict[str, Any]) -> dict[str, dict[str, float]]:
    """`work_<stage>_messages` and `work_<stage>_seconds` attributes as {stage: {"messages", "seconds"}}."""
    work: dict[str, dict[str, float]] = {}
    for name, value in item.items():
        if name.startswith("work_") and name.endswith(("_messages", "_seconds")):
            stage, measure = name[len("work_") :].rsplit("_", 1)
            work.setdefault(stage, {"messages": 0, "seconds": 0.0})[measure] = value
    return work


@dataclass
class DatasetRecord:
    """The blue/green pointer of a dataset."""

    dataset_id: str
    current_version: str | None
    previous_version: str | None
    published_at: str | None
    generation: int
    current_upload_order: str = ""

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "DatasetRecord":
        """The record of a datasets item (plain values)."""
        return cls(
            dataset_id=item["dataset_id"],
            current_version=item.get("current_version"),
            previous_version=item.get("previous_version"),
            published_at=item.get("published_at"),
            generation=int(item.get("generation", 0)),
            current_upload_order=item.get("current_upload_order", ""),
        )


class Records:
    """Reads and conditional writes of the `versions` and `datasets` tables."""

    def __init__(self, dynamodb: DynamoDbClient, settings: Settings) -> None:
        self._db = dynamodb
        self._versions = settings.versions_table
        self._datasets = settings.datasets_table

    # --- versions -----------------------------------------------------------------------------

    async def create_version(self, record: VersionRecord) -> tuple[VersionRecord, bool]:
        """Create the version item unless it exists; returns (the item as stored, created?)."""
        now = now_iso()
        item = {
            "dataset_id": record.dataset_id,
            "version_id": record.version_id,
            "state": record.state.value,
            "upload_key": record.upload_key,
            "upload_order": record.upload_order,
            "created_at": now,
            "updated_at": now,
            "history": [f"{now} {record.state.value}"],
        }
        try:
            with aws_errors("create version"):
                await self._db.put_item(
                    TableName=self._versions,
                    Item=_values(item),
                    ConditionExpression="attribute_not_exists(version_id)",
                )
            return VersionRecord.from_item(item), True
        except ConditionFailed:
            pass
        return await self.get_version(record.dataset_id, record.version_id), False

    async def get_version(self, dataset_id: str, version_id: str) -> VersionRecord:
        """The version item; `NotFound` if absent."""
        with aws_errors("get version"):
            resp = await self._db.get_item(
                TableName=self._versions,
                Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                ConsistentRead=True,
            )
        if "Item" not in resp:
            raise NotFound(f"version {version_id} of dataset {dataset_id} not found")
        return VersionRecord.from_item(_item(resp["Item"]))

    async def list_versions(self, dataset_id: str | None = None) -> list[VersionRecord]:
        """All versions (of one dataset, or of all), oldest upload first."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self._versions}
        if dataset_id:
            kwargs.update(KeyConditionExpression="dataset_id = :d", ExpressionAttributeValues=_values({":d": dataset_id}))
        while True:
            with aws_errors("list versions"):
                resp = await (self._db.query(**kwargs) if dataset_id else self._db.scan(**kwargs))
            items += [_item(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        records = [VersionRecord.from_item(i) for i in items]
        return sorted(records, key=lambda r: (r.dataset_id, r.upload_order, r.created_at))

    async def transition(
        self,
        dataset_id: str,
        version_id: str,
        to: State,
        *,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> VersionRecord | None:
        """Move a version to `to` if allowed from its current state; None if the condition failed.

        Repeating the same transition is a no-op that returns None (the state is already `to`).
        """
        sources = allowed_from(to)
        now = now_iso()
        names = {"#s": "state", "#u": "updated_at", "#h": "history"}
        values: dict[str, Any] = {":to": to.value, ":now": now, ":h": [f"{now} {to.value}" + (f": {error}" if error else "")]}
        sets = ["#s = :to", "#u = :now", "#h = list_append(if_not_exists(#h, :empty), :h)"]
        values[":empty"] = []
        conds = []
        for i, state in enumerate(sources):
            values[f":f{i}"] = state
            conds.append(f":f{i}")
        if error is not None:
            names["#e"] = "error"
            values[":e"] = error[:4000]
            sets.append("#e = :e")
        for i, (key, value) in enumerate((extra or {}).items()):
            names[f"#x{i}"] = key
            values[f":x{i}"] = value
            sets.append(f"#x{i} = :x{i}")
        try:
            with aws_errors("transition version"):
                resp = await self._db.update_item(
                    TableName=self._versions,
                    Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                    UpdateExpression="SET " + ", ".join(sets),
                    ConditionExpression=f"attribute_exists(version_id) AND #s IN ({', '.join(conds)})",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=_values(values),
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailed:
            return None
        return VersionRecord.from_item(_item(resp["Attributes"]))

    async def add_finished(self, dataset_id: str, version_id: str, key: str) -> VersionRecord:
        """Add a finished `chunk:view` key (a set ADD: a duplicate adds nothing); returns the new item."""
        return await self._add_to_set(dataset_id, version_id, "finished", {key})

    async def add_computed(self, dataset_id: str, version_id: str, chunks: list[int]) -> VersionRecord:
        """Add chunks whose views compute has written (a set ADD: a rerun adds nothing)."""
        return await self._add_to_set(dataset_id, version_id, "computed", {str(c) for c in chunks})

    async def _add_to_set(self, dataset_id: str, version_id: str, attribute: str, keys: set[str]) -> VersionRecord:
        with aws_errors(f"add {attribute}"):
            resp = await self._db.update_item(
                TableName=self._versions,
                Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                UpdateExpression="ADD #a :k SET updated_at = :now",
                ConditionExpression="attribute_exists(version_id)",
                ExpressionAttributeNames={"#a": attribute},
                ExpressionAttributeValues=_values({":k": keys, ":now": now_iso()}),
                ReturnValues="ALL_NEW",
            )
        return VersionRecord.from_item(_item(resp["Attributes"]))

    async def add_stage_work(self, dataset_id: str, version_id: str, stage: str, seconds: float) -> None:
        """Count one handled message of a stage and its handler's seconds (ADDs: concurrent workers lose none).

        Conditional on the version existing, so a message naming an unknown version creates no item.
        """
        with aws_errors("add stage work"):
            await self._db.update_item(
                TableName=self._versions,
                Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                UpdateExpression="ADD #m :one, #s :seconds",
                ConditionExpression="attribute_exists(version_id)",
                ExpressionAttributeNames={"#m": f"work_{stage}_messages", "#s": f"work_{stage}_seconds"},
                ExpressionAttributeValues=_values({":one": 1, ":seconds": Decimal(str(round(seconds, 3)))}),
            )

    async def record_ingest_progress(self, dataset_id: str, version_id: str, bytes_read: int, bytes_total: int, rows: int) -> None:
        """Set ingest's progress (bytes of the matrix read, rows parsed). Conditional on the version
        still INGESTING: a late report never writes on a version that moved on."""
        with aws_errors("record ingest progress"):
            try:
                await self._db.update_item(
                    TableName=self._versions,
                    Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                    UpdateExpression="SET ingest_bytes_read = :b, ingest_bytes_total = :t, ingest_rows = :r",
                    ConditionExpression="#s = :ingesting",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues=_values({":b": bytes_read, ":t": bytes_total, ":r": rows, ":ingesting": State.INGESTING.value}),
                )
            except ConditionFailed:
                pass  # the version moved on: its progress no longer matters

    async def claim_publish(self, dataset_id: str, version_id: str, claimant: str, *, to: State, from_states: list[str]) -> bool:
        """Claim the right to ask for publication and move to `to`, conditional on a state in
        `from_states` and no claim yet, or on the claim being `claimant`'s and the state `to`.

        True for exactly one claimant (the `chunk:view` whose load completed the set), and again for
        that same claimant on a redelivery, so a crash between the claim and the send loses nothing.
        The first claim adds the state change to the history; a redelivery's changes nothing.
        """
        sources = {f":from{i}": name for i, name in enumerate(from_states)}
        now = now_iso()
        first = await self._update_if(
            "claim publish",
            dataset_id,
            version_id,
            "SET publish_claimed = :t, publish_claimed_by = :me, #s = :v, updated_at = :now, #h = list_append(if_not_exists(#h, :empty), :h)",
            f"attribute_exists(version_id) AND (attribute_not_exists(publish_claimed) OR publish_claimed = :f) AND #s IN ({', '.join(sources)})",
            {"#s": "state", "#h": "history"},
            {":t": True, ":f": False, ":me": claimant, ":v": to.value, ":now": now, ":h": [f"{now} {to.value}"], ":empty": [], **sources},
        )
        return first or await self._update_if(
            "claim publish again",
            dataset_id,
            version_id,
            "SET updated_at = :now",
            "attribute_exists(version_id) AND publish_claimed_by = :me AND #s = :v",
            {"#s": "state"},
            {":me": claimant, ":v": to.value, ":now": now},
        )

    async def _update_if(
        self, action: str, dataset_id: str, version_id: str, update: str, condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> bool:
        """One conditional update of a version's item; False when its condition did not hold."""
        try:
            with aws_errors(action):
                await self._db.update_item(
                    TableName=self._versions,
                    Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=_values(values),
                )
            return True
        except ConditionFailed:
            return False

    async def reset_for_retry(self, dataset_id: str, version_id: str, to: State) -> VersionRecord | None:
        """FAILED -> `to` for a DLQ replay, clearing the error and the publish claim."""
        record = await self.transition(dataset_id, version_id, to, extra={"publish_claimed": False})
        if record is not None:
            with aws_errors("clear error"):
                await self._db.update_item(
                    TableName=self._versions,
                    Key=_values({"dataset_id": dataset_id, "version_id": version_id}),
                    UpdateExpression="REMOVE #e",
                    ExpressionAttributeNames={"#e": "error"},
                )
        return record

    # --- datasets -----------------------------------------------------------------------------

    async def get_dataset(self, dataset_id: str, *, consistent: bool = True) -> DatasetRecord:
        """The dataset pointer; `NotFound` if the dataset was never published."""
        with aws_errors("get dataset"):
            resp = await self._db.get_item(
                TableName=self._datasets, Key=_values({"dataset_id": dataset_id}), ConsistentRead=consistent
            )
        if "Item" not in resp:
            raise NotFound(f"dataset {dataset_id} not found")
        return DatasetRecord.from_item(_item(resp["Item"]))

    async def list_datasets(self) -> list[DatasetRecord]:
        """Every dataset pointer, by id."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self._datasets}
        while True:
            with aws_errors("list datasets"):
                resp = await self._db.scan(**kwargs)
            items += [_item(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted((DatasetRecord.from_item(i) for i in items), key=lambda d: d.dataset_id)

    async def flip_pointer(
        self, dataset_id: str, version_id: str, *, upload_order: str, seen: DatasetRecord | None, previous: str | None
    ) -> bool:
        """Point the dataset at `version_id`, conditional on the generation that was read.

        `seen` None means the dataset had no item. Returns False if someone else wrote first.
        """
        generation = (seen.generation if seen else 0) + 1
        item = {
            "dataset_id": dataset_id,
            "current_version": version_id,
            "previous_version": previous,
            "published_at": now_iso(),
            "generation": generation,
            "current_upload_order": upload_order,
        }
        kwargs: dict[str, Any] = {"TableName": self._datasets, "Item": _values({k: v for k, v in item.items() if v is not None})}
        if seen is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(dataset_id)"
        else:
            kwargs["ConditionExpression"] = "generation = :g"
            kwargs["ExpressionAttributeValues"] = _values({":g": seen.generation})
        try:
            with aws_errors("flip pointer"):
                await self._db.put_item(**kwargs)
            return True
        except ConditionFailed:
            return False

