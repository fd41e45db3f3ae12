"""Loader: one load message per (chunk, view) in; the publish request out, exactly once per version."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from services.loader.load import bulk_load_view_chunk
from shared.adapters.aws import AwsClients
from shared.adapters.hbase import HBase
from shared.adapters.s3 import s3_client
from shared.config import Settings
from shared.messages import LoadChunk, Message, PublishVersion
from shared.lifecycle import State, VersionLife
from shared.records import Records


@dataclass
class LoaderDeps:
    settings: Settings
    records: Records
    life: VersionLife
    s3: Any
    hbase: HBase


async def make_deps(settings: Settings, aws: AwsClients) -> LoaderDeps:
    records = Records(aws.dynamodb, settings)
    return LoaderDeps(settings, records, VersionLife(records), s3_client(settings), HBase(settings, size=2))


async def handle_load_chunk(msg: LoadChunk, deps: LoaderDeps) -> list[Message]:
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
