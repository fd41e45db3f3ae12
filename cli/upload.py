"""`wideviews upload` and `wideviews status`: put a ZIP where the pipeline picks it up, and follow it."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from shared.adapters.aws import open_aws
from shared.config import Settings
from shared.errors import NotFound
from shared.messages import DATASET_ID_PATTERN, upload_version_id
from shared.lifecycle import BUILDING, State
from shared.records import DatasetRecord, Records, VersionRecord


def upload_key(dataset_id: str, file: Path) -> str:
    """The key that triggers ingest: `uploads/<dataset_id>/<file name>`."""
    return f"uploads/{dataset_id}/{file.name}"


def upload_file(settings: Settings, file: Path, dataset_id: str) -> tuple[str, str]:
    """Put the ZIP in the uploads bucket (multipart for large files); returns the key and the id of
    the version the upload creates (derived from the object, as ingest derives it)."""
    if not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
        raise SystemExit(f"error: dataset id {dataset_id!r} must match {DATASET_ID_PATTERN}")
    if file.suffix.lower() not in (".zip", ".h5ad", ".h5"):
        raise SystemExit(f"error: {file} is not a .zip, .h5ad or 10x .h5 file")
    if not file.is_file():
        raise SystemExit(f"error: {file} does not exist")
    key = upload_key(dataset_id, file)
    s3 = boto3.session.Session().client("s3", **settings.aws_client_kwargs())
    s3.upload_file(str(file), settings.uploads_bucket, key)
    head = s3.head_object(Bucket=settings.uploads_bucket, Key=key)
    object_version = head.get("VersionId") if head.get("VersionId") not in (None, "null") else None
    version_id = upload_version_id(
        settings.uploads_bucket, key, object_version=object_version, etag=str(head["ETag"]), size_bytes=int(head["ContentLength"])
    )
    return key, version_id


async def _versions(settings: Settings, dataset_id: str | None) -> list[VersionRecord]:
    async with open_aws(settings) as aws:
        return await Records(aws.dynamodb, settings).list_versions(dataset_id)


async def _datasets(settings: Settings) -> list[DatasetRecord]:
    async with open_aws(settings) as aws:
        return await Records(aws.dynamodb, settings).list_datasets()


# How often `--wait` reads the version's record.
WAIT_POLL_S = 1.0


def progress_line(version: VersionRecord) -> str:
    """One line: the state and how far the version got within it."""
    if version.state == State.INGESTING:
        detail = "reading the upload"
        if version.ingest_bytes_read:
            of = f" of {version.ingest_bytes_total / 1e9:.2f}" if version.ingest_bytes_total else ""
            detail += f": {version.ingest_bytes_read / 1e9:.2f}{of} GB, {version.ingest_rows:,} rows"
    elif version.state == State.COMPUTING:
        detail = f"{len(version.computed)}/{version.n_chunks or '?'} chunks computed, {len(version.finished & version.expected)}/{len(version.expected)} views loaded"
    elif version.state in (State.LOADING, State.VALIDATING):
        detail = f"{len(version.finished & version.expected)}/{len(version.expected) or '?'} (chunk, view) loaded"
    else:
        detail = version.error or ""
    return f"{version.version_id[:12]} {version.state.value:<11} {detail}".rstrip()


def wait_for_version(settings: Settings, dataset_id: str, version_id: str, timeout_s: float, *, out: Any = sys.stderr) -> VersionRecord:
    """Follow one version until PUBLISHED or FAILED (or timeout), printing its progress: on a terminal
    as one line rewritten in place, otherwise a line per change."""
    return asyncio.run(_follow(settings, dataset_id, version_id, timeout_s, out))


async def _follow(settings: Settings, dataset_id: str, version_id: str, timeout_s: float, out: Any) -> VersionRecord:
    # One client for the whole wait: a client made per poll cost the waiting CLI more CPU than
    # some of the services it waits on (0.1-0.2 s each, twice a second).
    deadline = time.monotonic() + timeout_s
    last = ""
    live = bool(getattr(out, "isatty", lambda: False)())
    try:
        async with open_aws(settings) as aws:
            records = Records(aws.dynamodb, settings)
            while time.monotonic() < deadline:
                try:
                    version: VersionRecord | None = await records.get_version(dataset_id, version_id)
                except NotFound:
                    version = None
                if version is not None:
                    line = progress_line(version)
                    if line != last:
                        print(f"\r\x1b[2K{line}" if live else line, end="" if live else "\n", file=out, flush=True)
                        last = line
                    if version.state not in BUILDING:
                        return version
                await asyncio.sleep(WAIT_POLL_S)
    finally:
        if live and last:
            print(file=out)
    raise TimeoutError(f"version {version_id} of {dataset_id} was neither PUBLISHED nor FAILED within {timeout_s:.0f} s")

def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews upload`: put a file under uploads/ and optionally follow its version to the end."""
    file = Path(args.file)
    key, version_id = upload_file(settings, file, args.dataset)
    print(f"uploaded {file} to s3://{settings.uploads_bucket}/{key}: version {version_id}", file=sys.stderr)
    if not args.wait:
        return 0
    try:
        version = wait_for_version(settings, args.dataset, version_id, args.timeout)
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(version.summary()))
    if version.state == State.FAILED:
        print(f"FAILED: {version.error}", file=sys.stderr)
        return 2
    print(f"{version.state.value}: dataset {args.dataset} version {version.version_id}", file=sys.stderr)
    return 0 if version.state == State.PUBLISHED else 2


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews status`: datasets, their pointers and every version's state."""
    datasets = {d.dataset_id: d for d in asyncio.run(_datasets(settings))}
    versions = asyncio.run(_versions(settings, args.dataset))
    if args.dataset and args.dataset not in datasets and not versions:
        print(f"error: {NotFound(f'dataset {args.dataset} not found')}", file=sys.stderr)
        return 1
    ids = [args.dataset] if args.dataset else sorted(set(datasets) | {v.dataset_id for v in versions})
    report = []
    for dataset_id in ids:
        pointer = datasets.get(dataset_id)
        report.append(
            {
                "dataset": dataset_id,
                "current_version": pointer.current_version if pointer else None,
                "previous_version": pointer.previous_version if pointer else None,
                "published_at": pointer.published_at if pointer else None,
                "generation": pointer.generation if pointer else 0,
                "versions": [v.summary() for v in versions if v.dataset_id == dataset_id],
            }
        )
    if args.json:
        print(json.dumps({"datasets": report}, indent=2))
        return 0
    for entry in report:
        current = entry["current_version"] or "-"
        print(f"{entry['dataset']}  current={current}  generation={entry['generation']}")
        for v in entry["versions"]:
            mark = "*" if v["version_id"] == entry["current_version"] else " "
            detail = f"  error: {v['error']}" if v["error"] else ""
            ingest = v.get("ingest") or {}
            if v["state"] == "INGESTING" and ingest.get("bytes_read"):
                of = f"/{ingest['bytes_total'] / 1e9:.2f}" if ingest.get("bytes_total") else ""
                detail += f"  ingest: {ingest['bytes_read'] / 1e9:.2f}{of} GB, {ingest['rows']:,} rows"
            print(
                f"  {mark} {v['version_id']}  {v['state']:<11} {v['done']}/{v['expected']} loaded  "
                f"{v['n_cells']} cells x {v['n_features']} features  {v['created_at']}{detail}"
            )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `wideviews upload` and `wideviews status`."""
    upload = subparsers.add_parser("upload", help="upload a ZIP (matrix and optional metadata.csv, manifest.json), an .h5ad or a 10x .h5 as a new version of a dataset")
    upload.add_argument("file", help="the .zip, .h5ad or .h5 file")
    upload.add_argument("--dataset", required=True, help="dataset id: lowercase letters, digits, '-' (max 63)")
    upload.add_argument("--wait", action="store_true", help="follow the new version to PUBLISHED (exit 0) or FAILED (exit 2)")
    upload.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait with --wait (exit 3 on timeout)")
    upload.add_argument("--json", action="store_true", help="with --wait, print the final version record as JSON")
    upload.set_defaults(run=cmd_upload)
    status = subparsers.add_parser("status", help="datasets, their current version and every version's state")
    status.add_argument("dataset", nargs="?", help="only this dataset")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)
