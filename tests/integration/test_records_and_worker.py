"""Conditional writes of the version records and the worker loop's error paths, on the real moto server."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from shared.adapters.aws import open_aws
from shared.config import Settings
from shared.errors import BadRequest, ConditionFailed, NotFound, Permanent, Transient
from shared.messages import LoadChunk, Message, PublishVersion
from shared.lifecycle import State, VersionLife
from shared.records import Records, VersionRecord
from shared.worker import ERROR_ATTRIBUTE, QueueUrls, Worker

pytestmark = pytest.mark.stack


def _ids() -> tuple[str, str]:
    return f"rec-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex


async def test_version_state_moves_only_along_allowed_transitions(stack: Settings) -> None:
    dataset_id, version_id = _ids()
    async with open_aws(stack) as aws:
        records = Records(aws.dynamodb, stack)
        created, fresh = await records.create_version(VersionRecord(dataset_id, version_id, State.INGESTING, upload_order="1"))
        again, fresh_again = await records.create_version(VersionRecord(dataset_id, version_id, State.INGESTING, upload_order="2"))
        assert (fresh, fresh_again) == (True, False)
        assert again.upload_order == "1"
        assert await records.transition(dataset_id, version_id, State.PUBLISHED) is None
        assert (await records.get_version(dataset_id, version_id)).state == State.INGESTING
        moved = await VersionLife(records).record_plan(dataset_id, version_id, n_chunks=2, n_cells=10, n_features=4, views=["features"], expected={"0:features", "1:features"})
        assert moved is not None and moved.state == State.COMPUTING and moved.expected == {"0:features", "1:features"}
        # The same transition twice: the second is refused, the state stays.
        assert await records.transition(dataset_id, version_id, State.COMPUTING) is None
        failed = await records.transition(dataset_id, version_id, State.FAILED, error="boom")
        assert failed is not None and failed.error == "boom"


async def test_duplicate_finished_key_adds_nothing_and_one_claimant_wins(stack: Settings) -> None:
    dataset_id, version_id = _ids()
    async with open_aws(stack) as aws:
        records = Records(aws.dynamodb, stack)
        await records.create_version(VersionRecord(dataset_id, version_id, State.INGESTING))
        await VersionLife(records).record_plan(dataset_id, version_id, n_chunks=1, n_cells=1, n_features=1, views=["a"], expected={"0:features", "0:catalog"})
        first = await records.add_finished(dataset_id, version_id, "0:features")
        dup = await records.add_finished(dataset_id, version_id, "0:features")
        assert first.finished == dup.finished == {"0:features"} and not dup.all_finished
        done = await records.add_finished(dataset_id, version_id, "0:catalog")
        assert done.all_finished
        # Two loaders finished the set: the first conditional claim wins, the other is refused.
        # (Sequential on purpose: moto does not make concurrent conditional updates atomic; DynamoDB does.)
        assert await VersionLife(records).claim_publish(dataset_id, version_id, "0:catalog") is True
        assert await VersionLife(records).claim_publish(dataset_id, version_id, "0:features") is False
        # The winner's redelivered message claims again (so a crash before sending loses nothing); others never.
        assert await VersionLife(records).claim_publish(dataset_id, version_id, "0:catalog") is True
        assert await VersionLife(records).claim_publish(dataset_id, version_id, "0:features") is False
        claimed = await records.get_version(dataset_id, version_id)
        assert claimed.state == State.VALIDATING
        # The claim is a state change like any other: once in the history (the stage times read it).
        assert [entry.split(" ", 1)[1] for entry in claimed.history] == ["INGESTING", "COMPUTING", "VALIDATING"]


async def test_pointer_flip_is_conditional_on_the_generation_read(stack: Settings) -> None:
    dataset_id, v1 = _ids()
    v2, v3 = uuid.uuid4().hex, uuid.uuid4().hex
    async with open_aws(stack) as aws:
        records = Records(aws.dynamodb, stack)
        assert await records.flip_pointer(dataset_id, v1, upload_order="1", seen=None, previous=None)
        assert not await records.flip_pointer(dataset_id, v2, upload_order="2", seen=None, previous=None)
        seen = await records.get_dataset(dataset_id)
        assert await records.flip_pointer(dataset_id, v2, upload_order="2", seen=seen, previous=v1)
        # A writer holding the stale read loses.
        assert not await records.flip_pointer(dataset_id, v3, upload_order="3", seen=seen, previous=v1)
        now = await records.get_dataset(dataset_id)
        assert (now.current_version, now.previous_version, now.generation) == (v2, v1, 2)


async def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(3):
        resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"], VisibilityTimeout=0)
        out += resp.get("Messages", [])
        if out:
            break
    return out


@pytest.mark.parametrize("error", [Permanent, NotFound, BadRequest])
async def test_permanent_error_fails_version_and_moves_message_to_dlq(stack: Settings, error: type[Permanent]) -> None:
    """Handled once, never retried: `NotFound` and `BadRequest` are permanent too."""
    # A private queue set, so the running services do not consume these messages.
    settings = stack.model_copy(update={"name_prefix": f"wvt{uuid.uuid4().hex[:6]}", "wait_time_s": 1})
    dataset_id, version_id = _ids()
    async with open_aws(stack) as aws:
        await _create_queues(aws.sqs, settings)
        records = Records(aws.dynamodb, stack)
        await records.create_version(VersionRecord(dataset_id, version_id, State.INGESTING))
        seen: list[str] = []

        async def handler(msg: PublishVersion, deps: None) -> list[Message]:
            seen.append(msg.version_id)
            raise error("the upload's matrix.csv is ragged")

        worker = Worker("publish", handler, settings, None, aws)
        worker.records = records  # private queues, but the version records live in the stack's tables
        queues = await QueueUrls.resolve(aws.sqs, settings)
        body = PublishVersion(dataset_id=dataset_id, version_id=version_id).to_body()
        await aws.sqs.send_message(QueueUrl=queues.of(settings, "publish"), MessageBody=body)
        task = asyncio.create_task(worker.run())
        dead = []
        for _ in range(30):
            dead = await _drain(aws.sqs, queues.of(settings, "publish", dead_letter=True))
            if dead:
                break
        worker.stop()
        await task
        assert seen == [version_id]
        assert len(dead) == 1 and dead[0]["Body"] == body
        assert "ragged" in dead[0]["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"]
        version = await records.get_version(dataset_id, version_id)
        assert version.state == State.FAILED and "ragged" in (version.error or "")
        assert await _drain(aws.sqs, queues.of(settings, "publish")) == []
        await _delete_queues(aws.sqs, queues)


async def test_transient_error_is_retried_and_then_succeeds(stack: Settings) -> None:
    settings = stack.model_copy(update={"name_prefix": f"wvt{uuid.uuid4().hex[:6]}", "wait_time_s": 1, "retry_base_s": 1})
    dataset_id, version_id = _ids()
    async with open_aws(stack) as aws:
        await _create_queues(aws.sqs, settings)
        attempts: list[int] = []

        async def handler(msg: LoadChunk, deps: None) -> list[Message]:
            attempts.append(1)
            if len(attempts) < 3:
                raise Transient("HBase busy")
            return [PublishVersion(dataset_id=msg.dataset_id, version_id=msg.version_id)]

        worker = Worker("load", handler, settings, None, aws)
        queues = await QueueUrls.resolve(aws.sqs, settings)
        msg = LoadChunk(dataset_id=dataset_id, version_id=version_id, chunk=0, view="features", hfiles_uri="s3://b/k")
        await aws.sqs.send_message(QueueUrl=queues.of(settings, "load"), MessageBody=msg.to_body())
        task = asyncio.create_task(worker.run())
        out = []
        for _ in range(40):
            out = await _drain(aws.sqs, queues.of(settings, "publish"))
            if out:
                break
        worker.stop()
        await task
        assert len(attempts) == 3
        assert [json.loads(m["Body"])["type"] for m in out] == ["publish_version"]
        assert await _drain(aws.sqs, queues.of(settings, "load", dead_letter=True)) == []
        await _delete_queues(aws.sqs, queues)


async def _create_queues(sqs: Any, settings: Settings) -> None:
    for role in ("ingest", "compute", "load", "publish"):
        dlq = await sqs.create_queue(QueueName=settings.queue_name(role, dead_letter=True))
        arn = (await sqs.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
        await sqs.create_queue(
            QueueName=settings.queue_name(role),
            Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(settings.max_receive_count)})},
        )


async def _delete_queues(sqs: Any, queues: QueueUrls) -> None:
    for url in queues.urls.values():
        await sqs.delete_queue(QueueUrl=url)


async def _validated(life: VersionLife, dataset_id: str, version_id: str, order: str) -> VersionRecord:
    """A version walked to VALIDATING through the lifecycle, as the services walk it."""
    await life.create(VersionRecord(dataset_id, version_id, State.INGESTING, upload_order=order))
    await life.record_plan(dataset_id, version_id, n_chunks=1, n_cells=1, n_features=1, views=["catalog"], expected={"0:catalog"})
    await life.store.add_finished(dataset_id, version_id, "0:catalog")  # type: ignore[attr-defined]
    assert await life.claim_publish(dataset_id, version_id, "0:catalog")
    return await life.store.get_version(dataset_id, version_id)


async def test_publication_replaces_rollback_restores_and_a_late_older_upload_is_overtaken(stack: Settings) -> None:
    dataset_id, v1 = _ids()
    v2, v3 = uuid.uuid4().hex, uuid.uuid4().hex
    async with open_aws(stack) as aws:
        records = Records(aws.dynamodb, stack)
        life = VersionLife(records)
        first = await _validated(life, dataset_id, v1, "1")
        await life.make_current(first, await life.pointer(dataset_id))
        second = await _validated(life, dataset_id, v2, "2")
        await life.make_current(second, await life.pointer(dataset_id))
        states = {v.version_id: v.state for v in await records.list_versions(dataset_id)}
        assert states == {v1: State.REPLACED, v2: State.PUBLISHED}
        # The operator's rollback is the same flip: v1 current again, v2 replaced.
        await life.make_current(await records.get_version(dataset_id, v1), await life.pointer(dataset_id))
        pointer = await records.get_dataset(dataset_id)
        assert (pointer.current_version, pointer.previous_version, pointer.generation) == (v1, v2, 3)
        assert {v.version_id: v.state for v in await records.list_versions(dataset_id)} == {v1: State.PUBLISHED, v2: State.REPLACED}
        # A stale read of the pointer loses and changes nothing.
        with pytest.raises(ConditionFailed):
            await life.make_current(await records.get_version(dataset_id, v2), pointer.__class__(**{**pointer.__dict__, "generation": 1}))
        # An older upload verified late is overtaken: never published, never current, not readable.
        third = await _validated(life, dataset_id, v3, "0")
        await life.overtake(third)
        assert (await records.get_version(dataset_id, v3)).state == State.OVERTAKEN
        assert (await records.get_dataset(dataset_id)).current_version == v1
        # A building version cannot be made current.
        building = uuid.uuid4().hex
        await life.create(VersionRecord(dataset_id, building, State.INGESTING))
        with pytest.raises(NotFound, match="INGESTING: it cannot become current"):
            await life.make_current(await records.get_version(dataset_id, building), await life.pointer(dataset_id))


async def test_a_record_stored_as_superseded_reads_as_replaced_and_moves_on(stack: Settings) -> None:
    """Items written before REPLACED and OVERTAKEN existed keep working: read, rolled back to, deleted."""
    dataset_id, version_id = _ids()
    async with open_aws(stack) as aws:
        await aws.dynamodb.put_item(
            TableName=stack.versions_table,
            Item={"dataset_id": {"S": dataset_id}, "version_id": {"S": version_id}, "state": {"S": "SUPERSEDED"}, "upload_order": {"S": "1"}},
        )
        records = Records(aws.dynamodb, stack)
        assert (await records.get_version(dataset_id, version_id)).state == State.REPLACED
        deleted = await VersionLife(records).delete(await records.get_version(dataset_id, version_id))
        assert deleted is not None and deleted.state == State.DELETED


async def test_a_load_delivered_again_after_it_was_recorded_is_not_loaded_twice(stack: Settings) -> None:
    """HBase takes a load's HFiles: a second delivery of the same message (a crash, a visibility
    timeout) finds none. Once the first is recorded the second must skip the load, not fail the version."""
    from services.loader.handler import handle_load_chunk
    from shared.bootstrap import build_deps

    dataset_id, version_id = _ids()
    async with open_aws(stack) as aws:
        deps = build_deps(stack, aws, hbase_pool_size=1)
        await deps.life.create(VersionRecord(dataset_id, version_id, State.INGESTING, upload_order="1"))
        await deps.life.record_plan(dataset_id, version_id, n_chunks=1, n_cells=1, n_features=1, views=["features", "catalog"], expected={"0:features", "0:catalog"})
        await deps.records.add_finished(dataset_id, version_id, "0:features")
        gone = f"s3://{stack.staging_bucket}/staging/{dataset_id}/{version_id}/hfiles/features/000000/"
        msg = LoadChunk(dataset_id=dataset_id, version_id=version_id, chunk=0, view="features", hfiles_uri=gone)
        assert await handle_load_chunk(msg, deps) == []
        version = await deps.records.get_version(dataset_id, version_id)
        assert version.state == State.LOADING and version.finished == {"0:features"} and version.error is None


async def test_a_load_whose_hfiles_another_delivery_took_is_retried_not_failed(stack: Settings, tmp_path: Path) -> None:
    """Two deliveries of one load at once: the one that finds the HFiles gone (HBase took them, leaving
    the halves it split off in `<family>/.tmp/` and s3a's directory marker) waits for the other to
    record the load instead of failing the version."""
    from cli.sample import sample_frames, write_upload_zip
    from services.ingest.split import ingest_upload
    from services.loader.handler import handle_load_chunk
    from shared.adapters.s3 import S3RangeReader
    from shared.bootstrap import build_deps

    dataset_id, version_id = _ids()
    s3 = boto3.client("s3", **stack.aws_client_kwargs())
    matrix, metadata = sample_frames(30, 10, seed=2)
    key = f"uploads/{dataset_id}/x.zip"
    s3.upload_file(str(write_upload_zip(tmp_path / "x.zip", matrix, metadata, {"groupings": ["cell_type"]})), stack.uploads_bucket, key)
    ingest_upload(S3RangeReader(s3, stack.uploads_bucket, key), key, s3, stack, dataset_id, version_id)  # the plan the loader reads
    prefix = f"staging/{dataset_id}/{version_id}/hfiles/catalog/000000/"
    s3.put_object(Bucket=stack.staging_bucket, Key=prefix + "m/.tmp/0a1b.bottom", Body=b"half")
    s3.put_object(Bucket=stack.staging_bucket, Key=prefix + "m/", Body=b"")
    async with open_aws(stack) as aws:
        deps = build_deps(stack, aws, hbase_pool_size=1)
        await deps.life.create(VersionRecord(dataset_id, version_id, State.INGESTING, upload_order="1"))
        await deps.life.record_plan(dataset_id, version_id, n_chunks=1, n_cells=1, n_features=1, views=["features", "catalog"], expected={"0:features", "0:catalog"})
        msg = LoadChunk(dataset_id=dataset_id, version_id=version_id, chunk=0, view="catalog", hfiles_uri=f"s3://{stack.staging_bucket}/{prefix}")
        with pytest.raises(Transient, match="another delivery"):
            await handle_load_chunk(msg, deps)
        # Once the other delivery has recorded it, this one is done.
        await deps.records.add_finished(dataset_id, version_id, "0:catalog")
        assert await handle_load_chunk(msg, deps) == []
        assert (await deps.records.get_version(dataset_id, version_id)).error is None
