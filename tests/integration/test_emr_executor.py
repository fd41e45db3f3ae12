"""The `emr` executor against a moto server running in this process, whose EMR backend the test drives.

The EMR cluster itself cannot run here, so the test checks the exact step request sent and plays the
step's life (COMPLETED, FAILED, CANCELLED) through moto's backend.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import boto3
import pytest
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID

from services.compute.emr import run_unit_emr, step_key
from shared.adapters.aws import open_aws
from shared.adapters.s3 import put_json
from shared.config import Settings
from shared.errors import Permanent
from shared.staging import GroupingPlan, VersionPlan, check_key, plan_key


@pytest.fixture(scope="module")
def moto_settings(inprocess_moto: Settings) -> Settings:
    emr = boto3.client("emr", **inprocess_moto.aws_client_kwargs())
    cluster = emr.run_job_flow(
        Name="wideviews-test",
        ReleaseLabel="emr-7.9.0",
        Instances={"InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True, "MasterInstanceType": "m5.xlarge"},
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )
    return inprocess_moto.model_copy(update={"emr_cluster_id": cluster["JobFlowId"], "emr_code_uri": "s3://wvinproc-staging/code/1.0"})


def _plan(settings: Settings) -> VersionPlan:
    plan = VersionPlan(
        dataset_id="emr-test",
        version_id=uuid.uuid4().hex,
        upload_key="uploads/emr-test/x.zip",
        id_column="cell",
        n_cells=3,
        features=["A", "B"],
        chunks=[(0, 1), (1, 2)],
        batches=[(0, 2)],  # one Spark application (one step) for both chunks
        groupings=[GroupingPlan(name="type", view="stats_type", groups=["x"], counts=[3])],
        timestamp_ms=1,
    )
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    put_json(s3, settings.staging_bucket, plan_key(plan.dataset_id, plan.version_id), plan.model_dump(mode="json"))
    return plan


def _steps(settings: Settings) -> dict[str, Any]:
    backend = get_backend("emr")[DEFAULT_ACCOUNT_ID][settings.region]
    return backend.clusters[settings.emr_cluster_id].steps


class DescribeCounter:
    """The real aiobotocore EMR client, counting the `DescribeStep` calls made through it (what the
    executor's polling can be observed by)."""

    def __init__(self, emr: Any) -> None:
        self.emr = emr
        self.described: list[str] = []

    async def describe_step(self, **kwargs: Any) -> Any:
        self.described.append(kwargs["StepId"])
        return await self.emr.describe_step(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.emr, name)


async def _until(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    """Wait until `condition()` is true (polled every 10 ms), else fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _drive(settings: Settings, plan: VersionPlan, final_state: str, reason: str | None = None) -> Any:
    """Run the executor; once its step appears, write the job's checks (on success) and end the step."""
    s3 = boto3.client("s3", **settings.aws_client_kwargs())
    async with open_aws(settings) as aws:
        emr = DescribeCounter(aws.emr)
        before = {s.id for s in _steps(settings)}
        task = asyncio.create_task(run_unit_emr(emr, s3, settings, plan.dataset_id, plan.version_id, 0))
        await _until(lambda: any(s.id not in before for s in _steps(settings)), "the executor to add a step")
        (step,) = [s for s in _steps(settings) if s.id not in before]
        step.state = "RUNNING"
        # The executor keeps polling while the step runs: it describes the RUNNING step twice more
        # and is still waiting.
        polled = len(emr.described)
        await _until(lambda: len(emr.described) >= polled + 2 or task.done(), "the executor to poll the running step")
        assert not task.done(), "the executor must keep polling while the step runs"
        assert set(emr.described) == {step.id}
        if final_state == "COMPLETED":
            for view in plan.unit_views(0, 2):
                put_json(s3, settings.staging_bucket, check_key(plan.dataset_id, plan.version_id, view, 0), {"rows": 2, "checksum": "00000000000000ab", "cells": 2})
        if reason:
            step.last_state_change_reason = reason
        step.state = final_state
        try:
            return step, await asyncio.wait_for(task, timeout=30)
        except Permanent as exc:
            return step, exc


async def test_step_request_is_the_spark_submit_of_the_job(moto_settings: Settings) -> None:
    plan = _plan(moto_settings)
    step, messages = await _drive(moto_settings, plan, "COMPLETED")
    assert step.name == f"wideviews emr-test {plan.version_id[:12]} chunks 0-1"
    assert step.jar == "command-runner.jar"
    args = step.args
    code = "s3://wvinproc-staging/code/1.0"
    assert args[:7] == ["spark-submit", "--deploy-mode", "cluster", "--py-files", f"{code}/wideviews.zip", "--jars", f"{code}/wideviews-jvm.jar"]
    assert args[-9:] == [f"{code}/spark_job.py", "--dataset", "emr-test", "--version", plan.version_id, "--chunk", "0", "--chunk-end", "2"]
    # Between them only `--conf` pairs: the job's settings for the driver (application master) and
    # the executors, EMRFS on the cluster, and HBase's jars for the executors' HFileOutputFormat2.
    confs = args[7:-9]
    assert confs[::2] == ["--conf"] * (len(confs) // 2)
    env = {
        "WIDEVIEWS_NAME_PREFIX": "wvinproc",
        "WIDEVIEWS_REGION": moto_settings.region,
        "WIDEVIEWS_FEATURES_ROW_MAX_NNZ": str(moto_settings.features_row_max_nnz),
        "WIDEVIEWS_ROWS_PER_REGION": str(moto_settings.rows_per_region),
        "WIDEVIEWS_SPARK_MIN_PARTITIONS": str(moto_settings.spark_min_partitions),
        "WIDEVIEWS_SPARK_PARTITION_FEATURES": str(moto_settings.spark_partition_features),
        "WIDEVIEWS_SPARK_S3_SCHEME": "s3",
    }
    expected_confs = {f"spark.{side}.{key}={value}" for key, value in env.items() for side in ("yarn.appMasterEnv", "executorEnv")}
    expected_confs |= {f"spark.{side}.extraClassPath={moto_settings.emr_hbase_classpath}" for side in ("driver", "executor")}
    assert sorted(confs[1::2]) == sorted(expected_confs)
    # The load messages come from the checks the job wrote, one per view of the unit.
    assert sorted(m.view for m in messages) == sorted(plan.unit_views(0, 2))
    assert {m.hfiles_uri for m in messages} == {f"s3://wvinproc-staging/staging/emr-test/{plan.version_id}/hfiles/{v}/000000/" for v in plan.unit_views(0, 2)}
    # The step id is remembered for a redelivered message.
    s3 = boto3.client("s3", **moto_settings.aws_client_kwargs())
    remembered = s3.get_object(Bucket=moto_settings.staging_bucket, Key=step_key(plan.dataset_id, plan.version_id, 0))["Body"].read()
    assert step.id.encode() in remembered


async def test_failed_step_is_permanent_with_the_steps_reason(moto_settings: Settings) -> None:
    plan = _plan(moto_settings)
    _, result = await _drive(moto_settings, plan, "FAILED", reason="Spark application exited with code 1: OutOfMemoryError")
    assert isinstance(result, Permanent)
    assert "FAILED" in str(result) and "OutOfMemoryError" in str(result)


async def test_cancelled_step_is_permanent(moto_settings: Settings) -> None:
    plan = _plan(moto_settings)
    _, result = await _drive(moto_settings, plan, "CANCELLED", reason="cancelled by operator")
    assert isinstance(result, Permanent)
    assert "CANCELLED" in str(result) and "cancelled by operator" in str(result)


async def test_redelivered_job_follows_the_running_step_instead_of_adding_one(moto_settings: Settings) -> None:
    plan = _plan(moto_settings)
    s3 = boto3.client("s3", **moto_settings.aws_client_kwargs())
    async with open_aws(moto_settings) as aws:
        first_emr, second_emr = DescribeCounter(aws.emr), DescribeCounter(aws.emr)
        first = asyncio.create_task(run_unit_emr(first_emr, s3, moto_settings, plan.dataset_id, plan.version_id, 0))
        key = step_key(plan.dataset_id, plan.version_id, 0)
        await _until(lambda: bool(s3.list_objects_v2(Bucket=moto_settings.staging_bucket, Prefix=key).get("KeyCount")), "the step id to be remembered")
        second = asyncio.create_task(run_unit_emr(second_emr, s3, moto_settings, plan.dataset_id, plan.version_id, 0))
        # The redelivered job has found the remembered step and polls it (twice: it is following it).
        await _until(lambda: len(second_emr.described) >= 2, "the second executor to poll a step")
        ours = [s for s in _steps(moto_settings) if plan.version_id in s.args]
        assert len(ours) == 1
        assert set(second_emr.described) == set(first_emr.described) == {ours[0].id}
        for view in plan.unit_views(0, 2):
            put_json(s3, moto_settings.staging_bucket, check_key(plan.dataset_id, plan.version_id, view, 0), {"rows": 1, "checksum": "0000000000000001", "cells": 1})
        ours[0].state = "COMPLETED"
        a, b = await asyncio.gather(first, second)
        assert [m.view for m in a] == [m.view for m in b]
