"""The `markers` view: every compute unit's marker candidates merged once all units are loaded.

Each unit keeps, per grouping and group, its best `markers_top_n` features by one-vs-rest Welch t
(`staging/.../markers/<unit>.parquet`, see `shared.staging`); the best `markers_top_n` of their union
are the version's. The publisher merges them before it verifies the version, writes one row per
(grouping, group) into the version's `markers` table (a few thousand small rows: puts through
Thrift, with the version's timestamp, so a repeated merge rewrites identical cells) and records the
view's check like compute does for every other view.
"""

from __future__ import annotations

import bisect
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared import layout
from shared.adapters.hbase import HBase, entry_checksum, combine_checksums, view_table
from shared.adapters.s3 import S3Client, get_bytes, list_keys, put_json
from shared.config import Settings
from shared.errors import Permanent
from shared.staging import MARKERS_VIEW, MERGED_UNIT, VersionPlan, check_key, marker_candidates_key, markers_prefix


def read_candidates(s3: S3Client, settings: Settings, plan: VersionPlan) -> pa.Table:
    """Every unit's candidates (`Permanent` if a unit recorded none)."""
    present = set(list_keys(s3, settings.staging_bucket, markers_prefix(plan.dataset_id, plan.version_id)))
    tables = []
    for first, _ in plan.units:
        key = marker_candidates_key(plan.dataset_id, plan.version_id, first)
        if key not in present:
            raise Permanent(f"view {MARKERS_VIEW}: compute recorded no marker candidates for chunk {first}")
        tables.append(pq.read_table(io.BytesIO(get_bytes(s3, settings.staging_bucket, key))))
    return pa.concat_tables(tables)


def rank_candidates(table: pa.Table, top_n: int) -> dict[tuple[str, int], pa.Table]:
    """Per (grouping, group): the best `top_n` candidates by score, ties by feature name."""
    ordered = table.sort_by([("grouping", "ascending"), ("group", "ascending"), ("score", "descending"), ("feature", "ascending")])
    keys = list(zip(ordered.column("grouping").to_pylist(), ordered.column("group").to_pylist()))
    out: dict[tuple[str, int], pa.Table] = {}
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out[keys[start]] = ordered.slice(start, min(i - start, top_n))
            start = i
    return out


def markers_entries(plan: VersionPlan, candidates: pa.Table) -> list[tuple[bytes, bytes, bytes]]:
    """The markers view's entries (row, qualifier, value), sorted: one row per group of every grouping."""
    ranked = rank_candidates(candidates, plan.markers_top_n) if candidates.num_rows else {}
    entries = []
    for grouping in plan.stats_groupings:
        for g, group in enumerate(grouping.groups):
            best = ranked.get((grouping.name, g))
            if best is None:
                continue
            fields = {k: best.column(k).to_numpy() for k in layout.MARKER_FIELDS}
            entries.append((layout.markers_row(grouping.name, group), layout.MARKERS_QUALIFIER, layout.encode_markers(best.column("feature").to_pylist(), fields)))
    entries.sort(key=lambda c: (c[0], c[1]))
    return entries


def markers_check(entries: list[tuple[bytes, bytes, bytes]]) -> dict[str, Any]:
    """The view's check in compute's format (one task): entries, rows, checksum, key range, a sampled row."""
    rows = [c[0] for c in entries]
    checksum = combine_checksums(entry_checksum(*c) for c in entries)
    task: dict[str, Any] = {"task": 0, "entries": len(entries), "rows": len(set(rows)), "checksum": f"{checksum:016x}"}
    if entries:
        sample = rows[len(rows) // 2]
        lo, hi = bisect.bisect_left(rows, sample), bisect.bisect_right(rows, sample)
        picked = combine_checksums(entry_checksum(*c) for c in entries[lo:hi])
        task.update(first_row=rows[0].hex(), last_row=rows[-1].hex(), sample_row=sample.hex(), sample_checksum=f"{picked:016x}")
    return {"rows": task["rows"], "entries": task["entries"], "checksum": task["checksum"], "hfiles": [task]}


def write_markers(s3: S3Client, hbase: HBase, settings: Settings, plan: VersionPlan) -> int:
    """Merge the units' candidates into the version's `markers` table and record its check; the rows."""
    entries = markers_entries(plan, read_candidates(s3, settings, plan))
    table = view_table(settings, plan.dataset_id, plan.version_id, MARKERS_VIEW)
    hbase.ensure_table(table, layout.MARKERS_FAMILY)
    column = layout.column(layout.MARKERS_FAMILY, layout.MARKERS_QUALIFIER)
    hbase.put_rows(table, [(row, {column: value}) for row, _, value in entries], timestamp_ms=plan.timestamp_ms)
    put_json(s3, settings.staging_bucket, check_key(plan.dataset_id, plan.version_id, MARKERS_VIEW, MERGED_UNIT), markers_check(entries))
    return len(entries)
