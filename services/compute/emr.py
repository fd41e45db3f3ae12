"""The `emr` executor: a compute unit's Spark application (a batch of chunks) as one EMR step on a running cluster, polled to its end.

The step `spark-submit`s `services/compute/spark_job.py` (shipped with the package zip and the jvm/
jar under `Settings.emr_code_uri`); the job writes HFiles and checks to staging exactly like the other
executors, and this side turns the checks into load messages once the step is COMPLETED. A FAILED,
CANCELLED or INTERRUPTED step is a `Permanent` error carrying the step's own reason.

The step id is remembered in staging, so a redelivered compute message follows the step already
running instead of adding a second one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.adapters.aws import EmrClient, aws_errors
from shared.adapters.s3 import S3Client, get_json, put_json
from shared.config import Settings
from shared.errors import NotFound, Permanent
from shared.messages import LoadChunk
from shared.staging import VersionPlan, check_key, hfiles_prefix, read_plan, version_prefix

TERMINAL_FAILURES = {"FAILED", "CANCELLED", "INTERRUPTED"}


def step_key(dataset_id: str, version_id: str, chunk: int) -> str:
    """The staging key remembering the EMR step of the unit starting at `chunk`."""
    return version_prefix(dataset_id, version_id) + f"steps/{chunk:06d}.json"


def build_step(settings: Settings, dataset_id: str, version_id: str, first: int, end: int) -> dict[str, Any]:
    """The `AddJobFlowSteps` step of one compute unit (chunks [first, end)): spark-submit of the job
    script with the package, the jar and the settings it needs."""
    code = settings.emr_code_uri.rstrip("/")
    env = {
        "WIDEVIEWS_NAME_PREFIX": settings.name_prefix,
        "WIDEVIEWS_REGION": settings.region,
        "WIDEVIEWS_FEATURES_ROW_MAX_NNZ": str(settings.features_row_max_nnz),
        "WIDEVIEWS_ROWS_PER_REGION": str(settings.rows_per_region),
        "WIDEVIEWS_SPARK_MIN_PARTITIONS": str(settings.spark_min_partitions),
        "WIDEVIEWS_SPARK_PARTITION_FEATURES": str(settings.spark_partition_features),
        # EMRFS: the executors read the chunks and write the HFiles as s3:// on the cluster.
        "WIDEVIEWS_SPARK_S3_SCHEME": "s3",
    }
    confs: list[str] = []
    for key, value in env.items():
        confs += ["--conf", f"spark.yarn.appMasterEnv.{key}={value}", "--conf", f"spark.executorEnv.{key}={value}"]
    # HFileOutputFormat2 and SparkHFiles run in the executors: the cluster's HBase jars on both classpaths.
    for side in ("driver", "executor"):
        confs += ["--conf", f"spark.{side}.extraClassPath={settings.emr_hbase_classpath}"]
    return {
        "Name": f"wideviews {dataset_id} {version_id[:12]} chunks {first}-{end - 1}",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": [
                "spark-submit",
                "--deploy-mode",
                "cluster",
                "--py-files",
                f"{code}/wideviews.zip",
                "--jars",
                f"{code}/wideviews-jvm.jar",
                *confs,
                f"{code}/spark_job.py",
                "--dataset",
                dataset_id,
                "--version",
                version_id,
                "--chunk",
                str(first),
                "--chunk-end",
                str(end),
            ],
        },
    }


def load_messages_from_checks(s3: S3Client, settings: Settings, plan: VersionPlan, first: int, end: int) -> list[LoadChunk]:
    """The load messages of a unit whose job already ran, rebuilt from the checks it wrote."""
    chunk = first
    messages = []
    for view in plan.unit_views(first, end):
        try:  # the check is what the publisher verifies against: the job must have written it
            get_json(s3, settings.staging_bucket, check_key(plan.dataset_id, plan.version_id, view, chunk))
        except NotFound as exc:
            raise Permanent(f"the EMR step of chunks {first}-{end - 1} completed but wrote no check for view {view}") from exc
        messages.append(
            LoadChunk(
                dataset_id=plan.dataset_id,
                version_id=plan.version_id,
                chunk=chunk,
                view=view,
                hfiles_uri=f"s3://{settings.staging_bucket}/{hfiles_prefix(plan.dataset_id, plan.version_id, view, chunk)}",
            )
        )
    return messages


async def wait_for_step(emr: EmrClient, cluster_id: str, step_id: str, poll_s: float) -> dict[str, Any]:
    """Poll `DescribeStep` until the step ends; returns its final `Status`."""
    while True:
        with aws_errors("describe EMR step"):
            status = (await emr.describe_step(ClusterId=cluster_id, StepId=step_id))["Step"]["Status"]
        if status["State"] == "COMPLETED" or status["State"] in TERMINAL_FAILURES:
            return status
        await asyncio.sleep(poll_s)


def failure_reason(status: dict[str, Any]) -> str:
    """The step's own account of its failure (reason, message, log file), for the version's error."""
    details = status.get("FailureDetails") or {}
    change = status.get("StateChangeReason") or {}
    parts = [details.get("Reason"), details.get("Message"), change.get("Message"), details.get("LogFile")]
    return "; ".join(p for p in parts if p) or "no reason given"


async def run_unit_emr(emr: EmrClient, s3: S3Client, settings: Settings, dataset_id: str, version_id: str, chunk: int) -> list[LoadChunk]:
    """Add (or follow) the EMR step of the unit starting at `chunk` (one step per unit, never per
    chunk) and wait for it; the load messages once it COMPLETED."""
    if not settings.emr_cluster_id:
        raise Permanent("executor is emr but no emr_cluster_id is configured")
    plan = await asyncio.to_thread(read_plan, s3, settings, dataset_id, version_id)
    try:
        first, end = plan.unit_of(chunk)
    except ValueError as exc:
        raise Permanent(str(exc)) from exc
    key = step_key(dataset_id, version_id, chunk)
    step_id = None
    try:
        step_id = (await asyncio.to_thread(get_json, s3, settings.staging_bucket, key))["step_id"]
    except NotFound:
        pass
    if step_id is not None:
        with aws_errors("describe EMR step"):
            state = (await emr.describe_step(ClusterId=settings.emr_cluster_id, StepId=step_id))["Step"]["Status"]["State"]
        if state in TERMINAL_FAILURES:
            step_id = None  # a replay after a failure: run it again
    if step_id is None:
        with aws_errors("add EMR step"):
            resp = await emr.add_job_flow_steps(JobFlowId=settings.emr_cluster_id, Steps=[build_step(settings, dataset_id, version_id, first, end)])
        step_id = resp["StepIds"][0]
        await asyncio.to_thread(put_json, s3, settings.staging_bucket, key, {"step_id": step_id, "cluster_id": settings.emr_cluster_id})
    status = await wait_for_step(emr, settings.emr_cluster_id, step_id, settings.emr_poll_s)
    if status["State"] != "COMPLETED":
        raise Permanent(f"EMR step {step_id} of chunks {first}-{end - 1} ended {status['State']}: {failure_reason(status)}")
    return await asyncio.to_thread(load_messages_from_checks, s3, settings, plan, first, end)
