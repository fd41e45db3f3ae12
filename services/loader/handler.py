"""Loader: one load message per (chunk, view) in; the publish request out, exactly once per version."""

from __future__ import annotations

import asyncio

from services.loader.load import bulk_load_view_chunk, hfiles_present
from shared.bootstrap import ServiceDeps
from shared.errors import Permanent, Transient
from shared.lifecycle import State
from shared.messages import LoadChunk, Message, PublishVersion


async def handle_load_chunk(msg: LoadChunk, deps: ServiceDeps) -> list[Message]:
    """Bulk-load one (chunk, view) into its version's table; ask for publication once all are in."""
    version = await deps.life.begin(msg.dataset_id, msg.version_id, State.LOADING)
    if version is None:
        return []
    key = f"{msg.chunk}:{msg.view}"
    # A redelivered message whose load is recorded: HBase took (and removed) its HFiles already.
    if key not in version.finished:
        try:
            await asyncio.to_thread(
                bulk_load_view_chunk, deps.s3, deps.hbase, deps.settings, msg.dataset_id, msg.version_id, msg.view, msg.hfiles_uri
            )
        except Permanent:
            # Two deliveries of one message at once (a crash, a visibility timeout): the other one
            # took the HFiles and records the load in a moment. Retried, this delivery finds it.
            if not await asyncio.to_thread(hfiles_present, deps.s3, msg.hfiles_uri):
                latest = await deps.records.get_version(msg.dataset_id, msg.version_id)
                if key not in latest.finished:
                    raise Transient(f"the HFiles of {key} are gone and their load is not recorded yet: another delivery is loading them") from None
            else:
                raise
    await deps.life.start_loading(version)
    version = await deps.records.add_finished(msg.dataset_id, msg.version_id, key)
    # Two loaders may both see the set complete; the conditional claim lets exactly one of them ask.
    if not version.all_finished or not await deps.life.claim_publish(msg.dataset_id, msg.version_id, key):
        return []
    return [PublishVersion(dataset_id=msg.dataset_id, version_id=msg.version_id)]
