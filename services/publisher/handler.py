"""Publisher: verify every view of a version, then flip the dataset's pointer to it (blue/green)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from services.publisher.markers import write_markers
from services.publisher.verify import verify_version
from shared.adapters.aws import AwsClients
from shared.adapters.hbase import HBase
from shared.adapters.s3 import s3_client
from shared.config import Settings
from shared.errors import NotFound, Transient
from shared.messages import Message, PublishVersion
from shared.records import DatasetRecord, Records, State
from shared.staging import read_plan


@dataclass
class PublisherDeps:
    settings: Settings
    records: Records
    s3: Any
    hbase: HBase


async def make_deps(settings: Settings, aws: AwsClients) -> PublisherDeps:
    return PublisherDeps(settings, Records(aws.dynamodb, settings), s3_client(settings), HBase(settings, size=2))


async def _pointer(records: Records, dataset_id: str) -> DatasetRecord | None:
    try:
        return await records.get_dataset(dataset_id)
    except NotFound:
        return None


async def handle_publish_version(msg: PublishVersion, deps: PublisherDeps) -> list[Message]:
    """Verify, then flip with a condition on the generation read; only ever to a newer upload."""
    ds, ver = msg.dataset_id, msg.version_id
    version = await deps.records.get_version(ds, ver)
    pointer = await _pointer(deps.records, ds)
    if version.state == State.FAILED:
        await deps.records.reset_for_retry(ds, ver, State.VALIDATING)
    elif version.state != State.VALIDATING:
        return []  # published, superseded or deleted already: a duplicate
    if pointer is None or pointer.current_version != ver:
        plan = await asyncio.to_thread(read_plan, deps.s3, deps.settings, ds, ver)
        await asyncio.to_thread(write_markers, deps.s3, deps.hbase, deps.settings, plan)  # the one view merged from all units
        await asyncio.to_thread(verify_version, deps.s3, deps.hbase, deps.settings, plan)
        pointer = await _pointer(deps.records, ds)
        if pointer is not None and pointer.current_version and pointer.current_upload_order > version.upload_order:
            # An upload made later is already current: this one never becomes current.
            await deps.records.transition(ds, ver, State.SUPERSEDED)
            return []
        flipped = await deps.records.flip_pointer(
            ds,
            ver,
            upload_order=version.upload_order,
            seen=pointer,
            previous=pointer.current_version if pointer else None,
        )
        if not flipped:
            raise Transient(f"pointer of {ds} changed while publishing {ver}; re-reading", retry_after_s=1)
        if pointer is not None and pointer.current_version:
            await deps.records.transition(ds, pointer.current_version, State.SUPERSEDED)
    # The flip happened (now or before a crash): finish the state change.
    await deps.records.transition(ds, ver, State.PUBLISHED)
    return []
