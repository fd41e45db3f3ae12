"""Ingest: an S3 upload event in, one compute job per column chunk out."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from shared.adapters.s3 import S3Client, list_object_versions
from shared.bootstrap import ServiceDeps
from shared.errors import BadUpload, NotFound, WideviewsError
from shared.lifecycle import State
from shared.messages import DATASET_ID_PATTERN, ComputeChunk, Message, UploadEvent
from shared.records import VersionRecord
from shared.staging import VersionPlan, read_plan

from services.ingest.split import ingest_upload, open_s3_upload


def compute_jobs(plan: VersionPlan) -> list[Message]:
    """One job per compute unit (a run of chunks: one local job, or one Spark application)."""
    return [
        ComputeChunk(dataset_id=plan.dataset_id, version_id=plan.version_id, chunk=first, chunk_end=end)
        for first, end in plan.units
    ]


def resolve_object_version(s3: S3Client, msg: UploadEvent) -> UploadEvent:
    """The event with the S3 version of the object it announces, when the event carries none (moto's
    never do): of the key's versions with the event's ETag, the newest made at or before the event.
    The same event always resolves the same way. Where the bucket is not versioned, or that version
    no longer exists, the event is kept as it is: its version is identified by ETag and size.
    """
    if msg.object_version is not None:
        return msg
    event_time = _parse_time(msg.event_time)
    best: tuple[datetime, str] | None = None
    for version in list_object_versions(s3, msg.bucket, msg.key):
        made = version["LastModified"]
        if version["ETag"].strip('"') != msg.etag or version["VersionId"] in (None, "null"):
            continue
        if event_time is not None and made > event_time:
            continue
        if best is None or made > best[0]:
            best = (made, version["VersionId"])
    return msg if best is None else msg.model_copy(update={"object_version": best[1]})


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def handle_upload(msg: UploadEvent, deps: ServiceDeps) -> list[Message]:
    """Create the upload's version, split its matrix into chunks in staging, emit the compute jobs.

    One object makes one version however many events announce it: the version id derives from the
    object's S3 version (or ETag and size). Redelivery finds the same version; once the plan is
    recorded the jobs are emitted again (compute is idempotent) and nothing is redone.
    """
    resolved = await asyncio.to_thread(resolve_object_version, deps.s3, msg)
    try:
        return await _ingest(resolved, deps)
    except WideviewsError as exc:
        # The worker marks FAILED (or retries) and names in its log and dead letter this version.
        exc.about = {"dataset": resolved.dataset_id, "version": resolved.version_id}
        raise


async def _ingest(msg: UploadEvent, deps: ServiceDeps) -> list[Message]:
    dataset_id = msg.dataset_id
    version_id = msg.version_id
    version = await deps.life.create(VersionRecord(dataset_id, version_id, State.INGESTING, upload_key=msg.key, upload_order=msg.upload_order))
    if not re.fullmatch(r"uploads/[^/]+/[^/]+\.(zip|h5ad|h5)", msg.key, re.IGNORECASE) or not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
        raise BadUpload(
            f"upload key {msg.key!r} must be uploads/<dataset_id>/<name>.zip (or .h5ad, or a 10x .h5; any case) "
            f"with dataset_id matching {DATASET_ID_PATTERN}"
        )
    if version.state == State.COMPUTING:
        plan = await asyncio.to_thread(read_plan, deps.s3, deps.settings, dataset_id, version_id)
        return compute_jobs(plan)
    if await deps.life.admit(version, State.INGESTING, accepts=frozenset({State.INGESTING})) is None:
        return []  # already past ingest: a late duplicate
    try:
        reader = await asyncio.to_thread(open_s3_upload, deps.s3, msg.bucket, msg.key, msg.object_version)
    except NotFound as exc:
        raise BadUpload(f"upload object s3://{msg.bucket}/{msg.key} no longer exists") from exc
    loop = asyncio.get_running_loop()
    last: list[tuple[int, int, int]] = []

    def progress(bytes_read: int, bytes_total: int, rows: int) -> None:
        # From the splitting thread; fire and forget (a lost report only delays the next one).
        last[:] = [(bytes_read, bytes_total, rows)]
        asyncio.run_coroutine_threadsafe(deps.records.record_ingest_progress(dataset_id, version_id, bytes_read, bytes_total, rows), loop)

    plan = await asyncio.to_thread(ingest_upload, reader, msg.key, deps.s3, deps.settings, dataset_id, version_id, progress=progress)
    if last:
        await deps.records.record_ingest_progress(dataset_id, version_id, *last[0])
    await deps.life.record_plan(
        dataset_id,
        version_id,
        n_chunks=plan.n_chunks,
        n_cells=plan.n_cells,
        n_features=len(plan.features),
        views=plan.views,
        expected=plan.expected_keys(),
    )
    return compute_jobs(plan)
