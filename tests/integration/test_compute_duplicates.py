"""A compute job for a unit computed already (S3 announces one upload twice; ingest emits the jobs
again for each announcement) is not computed again: the load requests not yet recorded are sent."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3

from cli import stack as local_stack
from cli.sample import sample_frames, write_upload_zip
from services.compute.handler import handle_compute_chunk
from services.ingest.split import ingest_upload
from shared.adapters.aws import open_aws
from shared.adapters.s3 import S3RangeReader, delete_prefix, list_keys
from shared.bootstrap import build_deps
from shared.config import Settings
from shared.lifecycle import State
from shared.messages import ComputeChunk
from shared.records import VersionRecord
from shared.staging import chunk_prefix, hfiles_prefix


async def test_a_unit_computed_already_is_not_computed_again(inprocess_moto: Settings, tmp_path: Path) -> None:
    settings = inprocess_moto.model_copy(update={"name_prefix": f"wvdup{uuid.uuid4().hex[:6]}", "chunk_features": 20})
    local_stack.ensure_aws_resources(settings)
    matrix, metadata = sample_frames(120, 50, seed=3)
    path = write_upload_zip(tmp_path / "up.zip", matrix, metadata, {"groupings": ["cell_type"]})
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    dataset_id, version_id = f"dup-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    key = f"uploads/{dataset_id}/x.zip"
    s3.upload_file(str(path), settings.uploads_bucket, key)
    plan = ingest_upload(S3RangeReader(s3, settings.uploads_bucket, key), key, s3, settings, dataset_id, version_id)
    first, end = plan.units[0]
    job = ComputeChunk(dataset_id=dataset_id, version_id=version_id, chunk=first, chunk_end=end)

    async with open_aws(settings) as aws:
        deps = build_deps(settings, aws)
        await deps.records.create_version(VersionRecord(dataset_id, version_id, State.COMPUTING))
        computed = await handle_compute_chunk(job, deps)
        assert sorted(m.view for m in computed) == sorted(plan.unit_views(first, end))
        staged = {m.view: list_keys(s3, settings.staging_bucket, hfiles_prefix(dataset_id, version_id, m.view, first)) for m in computed}
        assert all(staged.values())

        # The unit's input is gone: a job that computed again would fail on it.
        for chunk in range(first, end):
            delete_prefix(s3, settings.staging_bucket, chunk_prefix(dataset_id, version_id, chunk))
        again = await handle_compute_chunk(job, deps)
        assert again == computed
        assert {m.view: list_keys(s3, settings.staging_bucket, hfiles_prefix(dataset_id, version_id, m.view, first)) for m in again} == staged

        # Loads recorded already are not asked for again.
        loaded = computed[0]
        await deps.records.add_finished(dataset_id, version_id, f"{first}:{loaded.view}")
        assert await handle_compute_chunk(job, deps) == computed[1:]
