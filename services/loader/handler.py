"""Loader: one load message per (chunk, view) in; the publish request out, exactly once per version."""

from __future__ import annotations

import asyncio

from services.loader.load import bulk_load_view_chunk
from shared.bootstrap import ServiceDeps
from shared.lifecycle import State
from shared.messages import LoadChunk, Message, PublishVersion


async def handle_load_chunk(msg: LoadChunk, deps: ServiceDeps) -> list[Message]:
    """Bulk-load one (chunk, view) into its version's table; ask for publication once all are in."""
    version = await deps.life.begin(msg.dataset_id, msg.version_id, State.LOADING)
    if version is None:
        return []
    await asyncio.to_thread(
        bulk_load_view_chunk, deps.s3, deps.hbase, deps.settings, msg.dataset_id, msg.version_id, msg.view, msg.hfiles_uri
    )
    await deps.life.start_loading(version)
    key = f"{msg.chunk}:{msg.view}"
    version = await deps.records.add_finished(msg.dataset_id, msg.version_id, key)
    # Two loaders may both see the set complete; the conditional claim lets exactly one of them ask.
    if not version.all_finished or not await deps.life.claim_publish(msg.dataset_id, msg.version_id, key):
        return []
    return [PublishVersion(dataset_id=msg.dataset_id, version_id=msg.version_id)]
