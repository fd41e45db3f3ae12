"""Bulk-load one (chunk, view)'s HFiles from staging into the version's HBase table."""

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

_FAMILIES = {"features": FEATURES_FAMILY, "cells": CELLS_FAMILY, "catalog": CATALOG_FAMILY}


def bulk_load_view_chunk(s3: Any, hbase: HBase, settings: Settings, dataset_id: str, version_id: str, view: str, hfiles_uri: str) -> str:
    """Create the view's table if missing and bulk-load the HFiles under `hfiles_uri`; returns the table.

    Loading the same HFiles twice writes the same keys with the same timestamp: reads see one cell.
    """
    table = view_table(settings, dataset_id, version_id, view)
    hbase.ensure_table(table, _FAMILIES.get(view, STATS_FAMILY))
    bucket, prefix = parse_s3_uri(hfiles_uri)
    with tempfile.TemporaryDirectory(prefix="wideviews-load-") as tmp:
        files = download_prefix(s3, bucket, prefix, Path(tmp))
        if not files:
            raise Permanent(f"no HFiles under {hfiles_uri}")
        jvm.bulk_load(settings, table, Path(tmp))
    return table
