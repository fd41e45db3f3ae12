"""`wideviews rollback` and `wideviews gc`: move the pointer back, and remove versions no reader can use."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.adapters.aws import open_aws
from shared.adapters.hbase import HBase, version_table_prefix, view_table
from shared.adapters.s3 import delete_prefix, s3_client
from shared.config import Settings
from shared.errors import ConditionFailed, NotFound
from shared.lifecycle import BUILDING, ROLLBACK_TARGETS, State, VersionLife
from shared.records import Records
from shared.staging import version_prefix


async def rollback(settings: Settings, dataset_id: str, to: str | None) -> dict[str, Any]:
    """Point the dataset at `to` (default: its previous version) with the publisher's own flip."""
    async with open_aws(settings) as aws:
        records = Records(aws.dynamodb, settings)
        life = VersionLife(records)
        pointer = await records.get_dataset(dataset_id)
        target = to or pointer.previous_version
        if not target:
            raise NotFound(f"dataset {dataset_id} has no previous version to roll back to")
        if target == pointer.current_version:
            return {"dataset": dataset_id, "current_version": target, "changed": False}
        version = await records.get_version(dataset_id, target)
        if version.state not in ROLLBACK_TARGETS:
            raise NotFound(f"version {target} is {version.state.value}: only a replaced or overtaken (still present) version can become current")
        hbase = HBase(settings, size=1)
        tables = set(await asyncio.to_thread(hbase.list_tables))
        missing = [v for v in version.views if view_table(settings, dataset_id, target, v) not in tables]
        if missing:
            raise NotFound(f"version {target} lost its tables {missing}; it cannot be restored")
        await life.make_current(version, pointer)
        return {"dataset": dataset_id, "current_version": target, "previous_version": pointer.current_version, "changed": True}


async def collect_garbage(settings: Settings, grace: timedelta, *, dry_run: bool) -> list[dict[str, Any]]:
    """Drop tables and staging files of versions that are not current, previous or building, older than `grace`."""
    cutoff = (datetime.now(timezone.utc) - grace).isoformat(timespec="milliseconds")
    removed = []
    async with open_aws(settings) as aws:
        records = Records(aws.dynamodb, settings)
        pointers = {d.dataset_id: d for d in await records.list_datasets()}
        hbase = HBase(settings, size=1)
        s3 = s3_client(settings)
        tables = await asyncio.to_thread(hbase.list_tables)
        for version in await records.list_versions():
            pointer = pointers.get(version.dataset_id)
            in_use = pointer is not None and version.version_id in (pointer.current_version, pointer.previous_version)
            if in_use or version.state in BUILDING or version.state == State.DELETED or version.updated_at > cutoff:
                continue
            prefix = version_table_prefix(settings, version.dataset_id, version.version_id) if len(version.version_id) == 32 and version.dataset_id.islower() else None
            doomed = [t for t in tables if prefix and t.startswith(prefix)]
            entry = {"dataset": version.dataset_id, "version": version.version_id, "state": version.state.value, "tables": doomed}
            if not dry_run:
                for table in doomed:
                    await asyncio.to_thread(hbase.drop_table, table)
                entry["staging_objects"] = await asyncio.to_thread(
                    delete_prefix, s3, settings.staging_bucket, version_prefix(version.dataset_id, version.version_id)
                )
                await VersionLife(records).delete(version)
            removed.append(entry)
    return removed


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews rollback`: make the previous (or a given) version current again."""
    try:
        result = asyncio.run(rollback(settings, args.dataset, args.to))
    except (NotFound, ConditionFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews gc`: remove versions no reader can use."""
    removed = asyncio.run(collect_garbage(settings, timedelta(hours=args.grace_hours), dry_run=args.dry_run))
    print(json.dumps({"dry_run": args.dry_run, "removed": removed}, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `wideviews rollback` and `wideviews gc`."""
    rb = subparsers.add_parser("rollback", help="point a dataset back at its previous (or a given) version")
    rb.add_argument("dataset")
    rb.add_argument("--to", help="version id to make current (default: the previous version)")
    rb.set_defaults(run=cmd_rollback)
    gc = subparsers.add_parser("gc", help="drop tables and staging files of versions no reader can use")
    gc.add_argument("--grace-hours", type=float, default=24.0, help="keep versions changed within this many hours")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    gc.set_defaults(run=cmd_gc)
