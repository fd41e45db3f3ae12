"""Compute: one column chunk job in, one load message per (chunk, view) out."""

from __future__ import annotations

import asyncio

from services.compute import job
from shared.bootstrap import ServiceDeps
from shared.lifecycle import State
from shared.messages import ComputeChunk, Message
from shared.staging import read_plan


async def handle_compute_chunk(msg: ComputeChunk, deps: ServiceDeps) -> list[Message]:
    """Run the unit (a chunk, or a batch of chunks on spark/emr) through the configured executor;
    outputs overwrite their own keys, so a rerun is harmless."""
    version = await deps.life.begin(msg.dataset_id, msg.version_id, State.COMPUTING)
    if version is None:
        return []  # published, overtaken or deleted: nothing left to compute
    unit = range(msg.chunk, msg.chunk_end or msg.chunk + 1)
    if {str(c) for c in unit} <= version.computed:
        # A job for a unit computed already: S3 announces one upload more than once and ingest emits the
        # jobs again for each (it cannot tell a duplicate from its own redelivery after a crash). The
        # unit's outputs are staged; only the loads not recorded yet are asked for again.
        plan = await asyncio.to_thread(read_plan, deps.s3, deps.settings, msg.dataset_id, msg.version_id)
        views = plan.unit_views(msg.chunk, unit.stop)
        return [job.load_message(deps.settings, plan, msg.chunk, view) for view in views if f"{msg.chunk}:{view}" not in version.finished]
    executor = deps.settings.executor
    if executor == "local":
        messages = await asyncio.to_thread(job.run_unit, deps.s3, deps.settings, msg.dataset_id, msg.version_id, msg.chunk)
    elif executor == "spark":
        from services.compute import spark_job

        messages = await asyncio.to_thread(spark_job.run_batch_spark, deps.s3, deps.settings, msg.dataset_id, msg.version_id, msg.chunk, msg.chunk_end)
    else:
        from services.compute import emr

        messages = await emr.run_unit_emr(deps.emr, deps.s3, deps.settings, msg.dataset_id, msg.version_id, msg.chunk)
    await deps.records.add_computed(msg.dataset_id, msg.version_id, list(range(msg.chunk, msg.chunk_end or msg.chunk + 1)))
    return list(messages)
