"""Create a version's tables (pre-split where large) and bulk-load one (chunk, view)'s HFiles into them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from shared import jvm
from shared.adapters.aws import parse_s3_uri
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import download_prefix
from shared.config import Settings
from shared.errors import Permanent
from shared.layout import CATALOG_FAMILY, CELLS_FAMILY, FEATURES_FAMILY, STATS_FAMILY
from shared.staging import VersionPlan, read_cells, read_plan

_FAMILIES = {"features": FEATURES_FAMILY, "cells": CELLS_FAMILY, "catalog": CATALOG_FAMILY}


def view_family(view: str) -> bytes:
    return _FAMILIES.get(view, STATS_FAMILY)


def split_keys(plan: VersionPlan, view: str, cell_ids: list[str] | None, rows_per_region: int) -> list[bytes]:
    """Row keys to pre-split a view's table at, so no region starts with more than `rows_per_region` rows.

    Stats and transpose rows are features (the transpose's `<feature>\\0<part>` rows sort right after
    their feature, so a feature's parts stay in one region); the cells view splits on cell ids.
    """
    if view == "catalog":
        return []
    names = sorted(cell_ids or []) if view == "cells" else sorted(plan.features, key=str.encode)
    keys = [name.encode() for name in names[rows_per_region::rows_per_region]]
    return sorted(set(keys))


def ensure_view_table(s3: Any, hbase: HBase, settings: Settings, dataset_id: str, version_id: str, view: str, workdir: Path) -> str:
    """The view's table, created pre-split if missing (racing loaders: one creates, the others find it)."""
    table = view_table(settings, dataset_id, version_id, view)
    if hbase.table_exists(table):
        return table
    plan = read_plan(s3, settings, dataset_id, version_id)
    cell_ids = None
    if view == "cells" and plan.n_cells > settings.rows_per_region:
        cell_ids = read_cells(s3, settings, plan).column("cell_id").to_pylist()
    jvm.create_table(settings, table, view_family(view).decode(), split_keys(plan, view, cell_ids, settings.rows_per_region), workdir)
    return table


def bulk_load_view_chunk(s3: Any, hbase: HBase, settings: Settings, dataset_id: str, version_id: str, view: str, hfiles_uri: str) -> str:
    """Bulk-load the HFiles under `hfiles_uri` into the view's table (created if missing); returns the table.

    Loading the same HFiles twice writes the same keys with the same timestamp: reads see one cell.
    """
    bucket, prefix = parse_s3_uri(hfiles_uri)
    with tempfile.TemporaryDirectory(prefix="wideviews-load-") as tmp:
        table = ensure_view_table(s3, hbase, settings, dataset_id, version_id, view, Path(tmp))
        hfiles = Path(tmp) / "hfiles"
        files = download_prefix(s3, bucket, prefix, hfiles)
        if not files:
            raise Permanent(f"no HFiles under {hfiles_uri}")
        jvm.bulk_load(settings, table, hfiles)
    return table
