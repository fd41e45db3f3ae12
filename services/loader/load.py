"""Create a version's tables (pre-split where large) and bulk-load HFiles staged in S3 into them.

Nothing passes through the loader's disk: HBase is handed the HFiles' S3 location (`s3a://`, or
`s3://` through EMRFS on EMR) and its RegionServers read them from there, so the loader and the
RegionServers may run on different hosts. Transient HBase states met on the way (a table not yet
available, a region in transition, splitting or too busy, a RegionServer restarting) are waited out
by BulkLoad and, past its wait, raised as `Transient` so the message comes back later; only a bad
HFile, or a table missing once it should exist, is `Permanent`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared import jvm
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import S3Client, list_keys
from shared.config import Settings
from shared.layout import view_family
from shared.staging import read_cells, read_plan

log = logging.getLogger(__name__)

def ensure_view_table(s3: S3Client, hbase: HBase, settings: Settings, dataset_id: str, version_id: str, view: str) -> str:
    """The view's table, created pre-split if missing (racing loaders: one creates, the others find it).

    A table another loader is still creating may be listed before its regions are online; BulkLoad
    waits for them.
    """
    table = view_table(settings, dataset_id, version_id, view)
    if hbase.table_exists(table):
        return table
    plan = read_plan(s3, settings, dataset_id, version_id)
    cell_ids = None
    if view == "cells" and plan.n_cells > settings.rows_per_region:
        cell_ids = read_cells(s3, settings, plan).column("cell_id").to_pylist()
    keys = plan.region_boundaries(view, settings.rows_per_region, settings.region_bytes, cell_ids)
    jvm.create_table(settings, table, view_family(view).decode(), keys)
    return table


def bulk_load_view_chunk(
    s3: S3Client, hbase: HBase, settings: Settings, dataset_id: str, version_id: str, view: str, hfiles_uri: str | Sequence[str]
) -> str:
    """Bulk-load the HFiles under `hfiles_uri` (`s3://bucket/prefix/`, holding `<family>/<hfile>`) into the view's table.

    The table is created if missing; returns its name. `hfiles_uri` may also be several such
    prefixes (chunks of one view), loaded in one bulk load. HBase reads the HFiles from S3 itself.
    Loading the same HFiles twice writes the same keys with the same timestamp: reads see one cell.
    Raises `Permanent` for a prefix without HFiles, a file that is not an HFile or a family the table
    lacks; `Transient` when HBase stays busy past `jvm.BULK_LOAD_BUSY_WAIT_S` or is unreachable.
    """
    uris = [hfiles_uri] if isinstance(hfiles_uri, str) else list(hfiles_uri)
    dirs = [jvm.hbase_hfiles_uri(settings, uri) for uri in uris]
    table = ensure_view_table(s3, hbase, settings, dataset_id, version_id, view)
    summary = jvm.bulk_load(settings, table, dirs)
    if summary.get("attempts", 1) > 1:
        log.info("bulk load of %s into %s waited %.1f s over %d attempts for HBase", uris, table, summary["waited_s"], summary["attempts"])
    return table


def hfiles_present(s3: S3Client, hfiles_uri: str | Sequence[str]) -> bool:
    """Whether an HFile is left under a load message's HFiles prefix (`s3://bucket/prefix/`): an
    object `<family>/<name>` as the bulk load reads them. What a load leaves behind is not one: the
    halves HBase split from an HFile spanning regions (`<family>/.tmp/…`), s3a's directory markers."""
    uris = [hfiles_uri] if isinstance(hfiles_uri, str) else list(hfiles_uri)
    for uri in uris:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        base = prefix.rstrip("/") + "/"
        for key in list_keys(s3, bucket, base):
            family, _, name = key[len(base) :].partition("/")
            if family and name and "/" not in name and not name.startswith((".", "_")):
                return True
    return False
