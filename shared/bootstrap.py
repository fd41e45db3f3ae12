"""The composition root: every service's dependencies built from `Settings`, in one place.

A worker process calls `run_service` (shared/worker.py), which opens the AWS clients and builds one
`ServiceDeps` here; tests and tools that run a handler in process call `build_deps` the same way.
Nothing else constructs adapters for a handler, and a handler receives nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.adapters.aws import AwsClients, EmrClient
from shared.adapters.hbase import HBase
from shared.adapters.s3 import S3Client, s3_client
from shared.config import Settings
from shared.lifecycle import VersionLife
from shared.records import Records


@dataclass(frozen=True)
class ServiceDeps:
    """What a handler may use: settings, the version records and their lifecycle, staging in S3,
    HBase (connected on first use: ingest and compute never do) and EMR (the `emr` executor)."""

    settings: Settings
    records: Records
    life: VersionLife
    s3: S3Client
    hbase: HBase
    emr: EmrClient


def build_deps(settings: Settings, aws: AwsClients, *, hbase_pool_size: int = 2) -> ServiceDeps:
    """The dependencies of any service's handler, from its settings and its open AWS clients."""
    records = Records(aws.dynamodb, settings)
    return ServiceDeps(
        settings=settings,
        records=records,
        life=VersionLife(records),
        s3=s3_client(settings),
        hbase=HBase(settings, size=hbase_pool_size),
        emr=aws.emr,
    )
