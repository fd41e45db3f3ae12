"""Publisher: verify every view of a version, then flip the dataset's pointer to it (blue/green)."""

from __future__ import annotations

import asyncio
import logging
import time

from services.publisher.markers import write_markers
from services.publisher.verify import verify_version
from shared.bootstrap import ServiceDeps
from shared.lifecycle import State
from shared.messages import Message, PublishVersion
from shared.staging import MARKERS_VIEW, read_plan

log = logging.getLogger(__name__)


async def handle_publish_version(msg: PublishVersion, deps: ServiceDeps) -> list[Message]:
    """Verify, then flip with a condition on the generation read; only ever to a newer upload."""
    ds, ver = msg.dataset_id, msg.version_id
    version = await deps.life.begin(ds, ver, State.VALIDATING, accepts=frozenset({State.VALIDATING}))
    if version is None:
        return []  # published, overtaken or deleted already: a duplicate
    pointer = await deps.life.pointer(ds)
    if pointer is None or pointer.current_version != ver:
        started = time.monotonic()
        plan = await asyncio.to_thread(read_plan, deps.s3, deps.settings, ds, ver)
        # The one view merged from all units is written while the loaded views are checked (it reads
        # S3 and writes its own small table: nothing they count), then checked itself.
        loaded = [view for view in plan.views if view != MARKERS_VIEW]

        async def merge_markers() -> float:
            await asyncio.to_thread(write_markers, deps.s3, deps.hbase, deps.settings, plan)
            return time.monotonic() - started

        merged_s, views = await asyncio.gather(merge_markers(), asyncio.to_thread(verify_version, deps.s3, deps.hbase, deps.settings, plan, views=loaded))
        views |= await asyncio.to_thread(verify_version, deps.s3, deps.hbase, deps.settings, plan, views=[MARKERS_VIEW])
        slowest = max(views, key=lambda view: views[view]["seconds"])
        log.info(
            "version %s verified in %.1f s: %d views (%d rows), the slowest %s in %.1f s; markers merged meanwhile in %.1f s",
            ver, time.monotonic() - started, len(views), sum(v["rows"] for v in views.values()), slowest, views[slowest]["seconds"], merged_s,
        )  # fmt: skip
        pointer = await deps.life.pointer(ds)
        if pointer is not None and pointer.current_version and pointer.current_upload_order > version.upload_order:
            # An upload made later is already current: this one never becomes current.
            await deps.life.overtake(version)
            return []
    # Also when the flip happened before a crash: the state changes are finished.
    await deps.life.make_current(version, pointer)
    return []
