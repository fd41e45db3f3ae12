"""Publisher: verify every view of a version, then flip the dataset's pointer to it (blue/green)."""

from __future__ import annotations

import asyncio

from services.publisher.markers import write_markers
from services.publisher.verify import verify_version
from shared.bootstrap import ServiceDeps
from shared.lifecycle import State
from shared.messages import Message, PublishVersion
from shared.staging import read_plan


async def handle_publish_version(msg: PublishVersion, deps: ServiceDeps) -> list[Message]:
    """Verify, then flip with a condition on the generation read; only ever to a newer upload."""
    ds, ver = msg.dataset_id, msg.version_id
    version = await deps.life.begin(ds, ver, State.VALIDATING, accepts=frozenset({State.VALIDATING}))
    if version is None:
        return []  # published, overtaken or deleted already: a duplicate
    pointer = await deps.life.pointer(ds)
    if pointer is None or pointer.current_version != ver:
        plan = await asyncio.to_thread(read_plan, deps.s3, deps.settings, ds, ver)
        await asyncio.to_thread(write_markers, deps.s3, deps.hbase, deps.settings, plan)  # the one view merged from all units
        await asyncio.to_thread(verify_version, deps.s3, deps.hbase, deps.settings, plan)
        pointer = await deps.life.pointer(ds)
        if pointer is not None and pointer.current_version and pointer.current_upload_order > version.upload_order:
            # An upload made later is already current: this one never becomes current.
            await deps.life.overtake(version)
            return []
    # Also when the flip happened before a crash: the state changes are finished.
    await deps.life.make_current(version, pointer)
    return []
