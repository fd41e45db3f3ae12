"""Ingest: an S3 upload event in, one compute job per column chunk out."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from shared.adapters.aws import AwsClients
from shared.adapters.s3 import s3_client
from shared.config import Settings
from shared.errors import BadUpload, NotFound
from shared.messages import DATASET_ID_PATTERN, ComputeChunk, Message, UploadEvent
from shared.records import Records, State, VersionRecord
from shared.staging import VersionPlan, read_plan

from services.ingest.split import ingest_upload, open_s3_upload


@dataclass
class IngestDeps:
    settings: Settings
    records: Records
    s3: Any  # blocking boto3 client, used from the splitting thread


async def make_deps(settings: Settings, aws: AwsClients) -> IngestDeps:
    return IngestDeps(settings, Records(aws.dynamodb, settings), s3_client(settings))


def compute_jobs(plan: VersionPlan) -> list[Message]:
    return [
        ComputeChunk(dataset_id=plan.dataset_id, version_id=plan.version_id, chunk=c, n_chunks=plan.n_chunks)
        for c in range(plan.n_chunks)
    ]


async def handle_upload(msg: UploadEvent, deps: IngestDeps) -> list[Message]:
    """Create the upload's version, split its matrix into chunks in staging, emit one compute job per chunk.

    Redelivery: the version id derives from the S3 object, so the same event finds the same version;
    once the plan is recorded the jobs are emitted again (compute is idempotent) and nothing is redone.
    """
    dataset_id = msg.dataset_id
    version_id = msg.version_id
    version, _ = await deps.records.create_version(
        VersionRecord(dataset_id, version_id, State.INGESTING, upload_key=msg.key, upload_order=msg.upload_order)
    )
    if not re.fullmatch(r"uploads/[^/]+/[^/]+\.zip", msg.key) or not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
        raise BadUpload(
            f"upload key {msg.key!r} must be uploads/<dataset_id>/<name>.zip with dataset_id matching {DATASET_ID_PATTERN}"
        )
    if version.state == State.COMPUTING:
        plan = await asyncio.to_thread(read_plan, deps.s3, deps.settings, dataset_id, version_id)
        return compute_jobs(plan)
    if version.state == State.FAILED:
        await deps.records.reset_for_retry(dataset_id, version_id, State.INGESTING)
    elif version.state != State.INGESTING:
        return []  # already past ingest: a late duplicate
    try:
        reader = await asyncio.to_thread(open_s3_upload, deps.s3, msg.bucket, msg.key)
    except NotFound as exc:
        raise BadUpload(f"upload object s3://{msg.bucket}/{msg.key} no longer exists") from exc
    plan = await asyncio.to_thread(ingest_upload, reader, msg.key, deps.s3, deps.settings, dataset_id, version_id)
    await deps.records.record_plan(
        dataset_id,
        version_id,
        n_chunks=plan.n_chunks,
        n_cells=plan.n_cells,
        n_features=len(plan.features),
        views=plan.views,
        expected=plan.expected_keys(),
    )
    return compute_jobs(plan)
