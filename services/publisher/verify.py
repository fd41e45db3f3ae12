"""Verify every view of a version against what compute recorded, before anyone may read it.

The cost grows with the rows and the number of HFiles, never with the bytes stored: the publisher
does not read the values back. Per view it checks

- the table exists;
- its rows, counted per region by key-only scans (`HBase.region_row_counts`), equal the rows compute
  recorded: in total, and per region wherever a task's HFile lies within one region (the spark
  executor cuts its partitions at the region boundaries, so there every region is checked; the cells
  view's embedding blocks, recorded apart by compute, are counted in the region they sort into);
- sampled rows (one recorded per HFile, at most `samples` per view, chosen by the version id) read
  back equal, cell for cell, the checksum compute recorded for them;
- for the stats views, the sampled rows' `count` vectors equal the grouping's sizes; for the
  distributions views, the sampled rows' histograms and zeros add up to them;
- the `markers` view, merged here from the units' candidates (`services.publisher.markers`) just
  before, is checked like the others against the check the merge recorded.

What it does not see: a value altered after the load in a row that is not sampled. HFiles are
checksummed by HBase itself, and the loader confirms the files HBase took.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared import layout
from shared.adapters.hbase import HBase, entry_checksum, combine_checksums, view_table
from shared.adapters.s3 import S3Client, get_json, list_keys
from shared.config import Settings
from shared.errors import Permanent
from shared.staging import MARKERS_VIEW, MERGED_UNIT, VersionPlan, check_key, version_prefix

# Views verified at once: each is a few key-only scans the region servers run, one pooled Thrift
# connection per region (`HBase.region_row_counts`).
VIEWS_AT_ONCE = 4


def expected_checks(s3: S3Client, settings: Settings, plan: VersionPlan, views: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per view (`views`, default all the plan's): the checks of its HFiles (`ViewEntries.check`) over all compute units."""
    present = set(list_keys(s3, settings.staging_bucket, version_prefix(plan.dataset_id, plan.version_id) + "checks/"))
    tasks: dict[str, list[dict[str, Any]]] = {view: [] for view in (plan.views if views is None else views)}
    for first, end in plan.units:
        for view in plan.unit_views(first, end):
            if view not in tasks:
                continue
            key = check_key(plan.dataset_id, plan.version_id, view, first)
            if key not in present:
                raise Permanent(f"view {view}: compute recorded no check for chunk {first}")
            tasks[view].extend(get_json(s3, settings.staging_bucket, key)["hfiles"])
    if MARKERS_VIEW in tasks:
        # Merged once every unit is in (services.publisher.markers), under one unit's name.
        key = check_key(plan.dataset_id, plan.version_id, MARKERS_VIEW, MERGED_UNIT)
        if key not in present:
            raise Permanent(f"view {MARKERS_VIEW}: no check recorded (the units' candidates were never merged)")
        tasks[MARKERS_VIEW] = get_json(s3, settings.staging_bucket, key)["hfiles"]
    return tasks


def _region_of(regions: list[tuple[bytes, bytes, int]], first: bytes, last: bytes) -> int | None:
    """The region holding both keys, if one does."""
    for i, (start, end, _) in enumerate(regions):
        if start <= first and (not end or last < end):
            return i
    return None


def verify_view(hbase: HBase, table: str, view: str, tasks: list[dict[str, Any]]) -> int:
    """Rows of one view's table against its HFiles' checks, in total and per region; returns the rows."""
    regions = hbase.region_row_counts(table)
    rows = sum(count for _, _, count in regions)
    want = sum(int(t["rows"]) for t in tasks)
    if rows != want:
        raise Permanent(f"view {view}: table has {rows} rows, compute wrote {want}")
    per_region: dict[int, int] = {}
    for task in tasks:
        if not task["rows"]:
            continue
        task_rows = int(task["rows"])
        if task.get("block_rows"):
            # The cells view's embedding blocks (shared.layout) sort before every cell: their own region.
            key = bytes.fromhex(task["block_row"])
            block_region = _region_of(regions, key, key)
            if block_region is None:
                return rows
            per_region[block_region] = per_region.get(block_region, 0) + int(task["block_rows"])
            task_rows -= int(task["block_rows"])
        region = _region_of(regions, bytes.fromhex(task["first_row"]), bytes.fromhex(task["last_row"]))
        if region is None:
            return rows  # this HFile spans regions: the total above is the check
        per_region[region] = per_region.get(region, 0) + task_rows
    for i, (start, _, count) in enumerate(regions):
        if count != per_region.get(i, 0):
            raise Permanent(f"view {view}: region starting at {start!r} has {count} rows, compute wrote {per_region.get(i, 0)}")
    return rows


def verify_samples(hbase: HBase, table: str, view: str, tasks: list[dict[str, Any]], samples: int, seed: str) -> list[bytes]:
    """Read the sampled rows back and compare each with the checksum compute recorded; returns their keys."""
    recorded = [t for t in tasks if t.get("sample_row")]
    picked = random.Random(f"{seed}/{view}").sample(recorded, min(samples, len(recorded)))
    keys = [bytes.fromhex(t["sample_row"]) for t in picked]
    found = hbase.rows(table, keys)
    for task, key in zip(picked, keys):
        data = found.get(key)
        if data is None:
            raise Permanent(f"view {view}: sampled row {key!r} is missing")
        checksum = combine_checksums(entry_checksum(key, layout.qualifier_of(column), value) for column, value in data.items())
        if f"{checksum:016x}" != task["sample_checksum"]:
            raise Permanent(f"view {view}: sampled row {key!r} differs from what compute wrote (checksum {checksum:016x}, not {task['sample_checksum']})")
    return keys


def verify_version(
    s3: S3Client, hbase: HBase, settings: Settings, plan: VersionPlan, *, samples: int = 16, views: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Check every view's table (see the module docstring), or those of `views`. Raises `Permanent`
    naming the first view that is missing, short or off. Returns per view its rows, sampled rows and
    seconds taken."""
    selected = list(plan.views if views is None else views)
    expected = expected_checks(s3, settings, plan, selected)
    tables = set(hbase.list_tables())
    groupings = {g.view: g for g in plan.stats_groupings}
    dist_groupings = {g.dist_view: g for g in plan.stats_groupings}
    names = {view: view_table(settings, plan.dataset_id, plan.version_id, view) for view in selected}
    for view, table in names.items():
        if table not in tables:
            raise Permanent(f"view {view}: table {table} is missing")

    def check(view: str) -> dict[str, Any]:
        table = names[view]
        started = time.monotonic()
        rows = verify_view(hbase, table, view, expected[view])
        keys = verify_samples(hbase, table, view, expected[view], samples, plan.version_id)
        if view in groupings:
            _check_counts(hbase, table, groupings[view].counts, view, keys)
        if view in dist_groupings:
            _check_histograms(hbase, table, dist_groupings[view].counts, view, keys)
        return {"rows": rows, "sampled": len(keys), "seconds": round(time.monotonic() - started, 3)}

    # The views are checked concurrently (the region servers' scans are the cost); the first view in
    # the plan's order that fails is the one reported.
    with ThreadPoolExecutor(max_workers=VIEWS_AT_ONCE) as pool:
        return dict(zip(selected, pool.map(check, selected)))


def _check_counts(hbase: HBase, table: str, counts: list[int], view: str, keys: list[bytes]) -> None:
    """The sampled stats rows count every cell of every group, as the grouping's sizes say."""
    column = layout.stats_column("count")
    for key, data in hbase.rows(table, keys, columns=[column]).items():
        if list(layout.decode_stats_vector(data[column])) != [float(c) for c in counts]:
            raise Permanent(f"view {view}: feature {key.decode(errors='replace')!r} counts differ from the grouping's sizes")


def _check_histograms(hbase: HBase, table: str, counts: list[int], view: str, keys: list[bytes]) -> None:
    """The sampled distribution rows hold every cell of every group: bins plus zeros = group size."""
    hist_column = layout.column(layout.DIST_FAMILY, layout.HIST_QUALIFIER)
    zeros_column = layout.column(layout.DIST_FAMILY, layout.dist_qualifier("zeros"))
    for key, data in hbase.rows(table, keys, columns=[hist_column, zeros_column]).items():
        _, bins = layout.decode_histograms(data[hist_column])
        total = bins.sum(axis=1) + layout.decode_stats_vector(data[zeros_column])
        if list(total) != [float(c) for c in counts]:
            raise Permanent(f"view {view}: feature {key.decode(errors='replace')!r} distributions do not add up to the grouping's sizes")
