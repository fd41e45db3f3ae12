"""The AWS resources of a stack: buckets, queues with their dead-letter queues, tables, and the
upload notification; created if missing, safe to repeat."""

from __future__ import annotations

import json
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.config import QUEUE_ROLES, Settings


DLQ_RETENTION_S = 14 * 24 * 3600  # the SQS maximum: a dead letter waits for an operator
UPLOAD_NOTIFICATION_ID = "wideviews-uploads-to-ingest"


def aws_client(settings: Settings, service: str, *, timeout_s: float = 5.0) -> Any:
    """A boto3 client of the stack's endpoint with short timeouts and two attempts (probes and set-up)."""
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2})
    return boto3.session.Session().client(service, config=config, **settings.aws_client_kwargs())


def ensure_aws_resources(settings: Settings) -> None:
    """Create, if missing, the buckets, queues (with DLQ and redrive), tables and upload notification.

    Safe to repeat: existing resources are kept, their attributes set again; the notification is
    written only when it differs, because S3 (and moto) send an `s3:TestEvent` each time it is set.
    """
    s3 = aws_client(settings, "s3")
    sqs = aws_client(settings, "sqs")
    dynamodb = aws_client(settings, "dynamodb")
    for bucket in (settings.uploads_bucket, settings.staging_bucket):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            # Outside us-east-1, S3 wants the region spelled out.
            location = {} if settings.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": settings.region}}
            s3.create_bucket(Bucket=bucket, **location)
    # Versioned uploads: every PUT is its own object version, so two uploads of the same bytes are two
    # versions of the dataset, and any number of events for one object are one (shared.messages).
    s3.put_bucket_versioning(Bucket=settings.uploads_bucket, VersioningConfiguration={"Status": "Enabled"})
    queue_arns: dict[str, str] = {}
    for role in QUEUE_ROLES:
        dlq_url = sqs.create_queue(QueueName=settings.queue_name(role, dead_letter=True))["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)})
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(QueueName=settings.queue_name(role))["QueueUrl"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
        attributes = {"VisibilityTimeout": str(settings.visibility_timeout_s), "RedrivePolicy": json.dumps(redrive)}
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if role == "ingest":
            attributes["Policy"] = json.dumps(_ingest_queue_policy(arn, f"arn:aws:s3:::{settings.uploads_bucket}"))
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        queue_arns[role] = arn
    existing_tables = set(dynamodb.list_tables()["TableNames"])
    tables = {
        settings.datasets_table: [("dataset_id", "HASH")],
        settings.versions_table: [("dataset_id", "HASH"), ("version_id", "RANGE")],
    }
    for table, keys in tables.items():
        if table in existing_tables:
            continue
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )
    for table in tables:
        dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    _ensure_upload_notification(s3, settings, queue_arns["ingest"])


def _ingest_queue_policy(queue_arn: str, bucket_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "uploads-bucket-sends-object-created",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn}},
            }
        ],
    }


def upload_notification(queue_arn: str) -> dict[str, Any]:
    """The uploads bucket's notification: every object created under `uploads/` goes to the ingest queue.

    No suffix rule: S3 matches suffixes case-sensitively, so `X.ZIP` would never arrive. Ingest
    checks the suffix (.zip, .h5ad, .h5 in any case) and fails any other key visibly.
    """
    return {
        "QueueConfigurations": [
            {
                "Id": UPLOAD_NOTIFICATION_ID,
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {
                    "Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}
                },
            }
        ]
    }


class NotifyingS3(Protocol):
    """The calls of boto3's S3 client that set up the uploads bucket's notification."""

    def get_bucket_notification_configuration(self, **kwargs: Any) -> dict[str, Any]:
        """The bucket's notification configuration."""

    def put_bucket_notification_configuration(self, **kwargs: Any) -> dict[str, Any]:
        """Replace the bucket's notification configuration."""


def _ensure_upload_notification(s3: NotifyingS3, settings: Settings, queue_arn: str) -> None:
    wanted = upload_notification(queue_arn)
    current = s3.get_bucket_notification_configuration(Bucket=settings.uploads_bucket)
    current_queues = current.get("QueueConfigurations", [])

    def normal(configs: list[dict[str, Any]]) -> list[Any]:
        return sorted(
            (
                c.get("Id"),
                c["QueueArn"],
                sorted(c["Events"]),
                sorted((r["Name"].lower(), r["Value"]) for r in c.get("Filter", {}).get("Key", {}).get("FilterRules", [])),
            )
            for c in configs
        )

    if normal(current_queues) != normal(wanted["QueueConfigurations"]):
        s3.put_bucket_notification_configuration(Bucket=settings.uploads_bucket, NotificationConfiguration=wanted)
