"""Verify every view of a version against what compute recorded, before anyone may read it."""

from __future__ import annotations

import random
from typing import Any

from shared import layout
from shared.adapters.hbase import HBase, view_table
from shared.adapters.s3 import get_json, list_keys
from shared.config import Settings
from shared.errors import Permanent
from shared.staging import VersionPlan, check_key, version_prefix
from shared.stats import STATS


def expected_checks(s3: Any, settings: Settings, plan: VersionPlan) -> dict[str, tuple[int, int]]:
    """Per view: (rows, checksum) summed over its chunks, from the checks compute wrote."""
    present = set(list_keys(s3, settings.staging_bucket, version_prefix(plan.dataset_id, plan.version_id) + "checks/"))
    totals: dict[str, tuple[int, int]] = {}
    for chunk in range(plan.n_chunks):
        for view in plan.chunk_views(chunk):
            key = check_key(plan.dataset_id, plan.version_id, view, chunk)
            if key not in present:
                raise Permanent(f"view {view}: compute recorded no check for chunk {chunk}")
            check = get_json(s3, settings.staging_bucket, key)
            rows, total = totals.get(view, (0, 0))
            totals[view] = (rows + int(check["rows"]), (total + int(check["checksum"], 16)) % (1 << 64))
    return totals


def verify_version(s3: Any, hbase: HBase, settings: Settings, plan: VersionPlan, *, samples: int = 16) -> dict[str, dict[str, int]]:
    """Check every view's table: it exists, its rows and checksum match, sampled values decode sanely.

    Raises `Permanent` naming the first view that is missing, short or off. Returns per-view counts.
    """
    expected = expected_checks(s3, settings, plan)
    tables = set(hbase.list_tables())
    report: dict[str, dict[str, int]] = {}
    for view in plan.views:
        table = view_table(settings, plan.dataset_id, plan.version_id, view)
        if table not in tables:
            raise Permanent(f"view {view}: table {table} is missing")
        rows, checksum = hbase.count_and_checksum(table)
        want_rows, want_checksum = expected[view]
        if rows != want_rows:
            raise Permanent(f"view {view}: table has {rows} rows, compute wrote {want_rows}")
        if checksum != want_checksum:
            raise Permanent(f"view {view}: checksum {checksum:016x} differs from compute's {want_checksum:016x}")
        report[view] = {"rows": rows}
    _sample_stats(hbase, settings, plan, samples)
    return report


def _sample_stats(hbase: HBase, settings: Settings, plan: VersionPlan, samples: int) -> None:
    """Read back a few stats rows through the same path as the query service and check invariants."""
    rng = random.Random(plan.version_id)
    features = rng.sample(plan.features, min(samples, len(plan.features)))
    for grouping in plan.groupings:
        table = view_table(settings, plan.dataset_id, plan.version_id, grouping.view)
        rows = hbase.rows(table, [f.encode() for f in features])
        if len(rows) != len(features):
            raise Permanent(f"view {grouping.view}: {len(features) - len(rows)} sampled features missing")
        for feature, data in rows.items():
            decoded = {s: layout.decode_stats_vector(data[b"s:" + s.encode()]) for s in STATS}
            if list(decoded["count"]) != [float(c) for c in grouping.counts]:
                raise Permanent(f"view {grouping.view}: feature {feature.decode()!r} counts differ from the grouping's sizes")
