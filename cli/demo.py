"""`wideviews demo`: make a sample dataset, upload it, follow it to PUBLISHED, print a dot plot from the API."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.sample import sample_frames, write_upload_zip
from cli.upload import upload_file, wait_for_version
from shared.config import Settings
from shared.lifecycle import State
from shared.records import VersionRecord


def _get(base: str, path: str, **params: str) -> Any:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def stage_times(version: VersionRecord) -> list[tuple[str, float]]:
    """Seconds spent in each state, from the version's history."""
    points = []
    for entry in version.history:
        stamp, _, rest = entry.partition(" ")
        points.append((rest.split(":")[0], datetime.fromisoformat(stamp)))
    return [(state, (points[i + 1][1] - at).total_seconds()) for i, (state, at) in enumerate(points[:-1])]


def dot_plot(base: str, dataset_id: str, grouping: str, n_genes: int) -> str:
    """A text dot plot: mean expression and % expressing of the most specific genes per group."""
    info = _get(base, f"/v1/datasets/{dataset_id}")
    candidates = [f"GENE{i:05d}" for i in range(min(200, info["n_features"]))]
    body = _get(base, f"/v1/datasets/{dataset_id}/aggregates", grouping=grouping, features=",".join(candidates), stats="mean,frac_expressing")
    means = body["stats"]["mean"]
    # Most specific: the largest gap between the best group and the mean of the rest.
    def specificity(row: list[float | None]) -> float:
        values = [v or 0.0 for v in row]
        top = max(values)
        return top - (sum(values) - top) / max(1, len(values) - 1)

    chosen = sorted(range(len(candidates)), key=lambda i: -specificity(means[i]))[:n_genes]
    chosen.sort()
    genes = [candidates[i] for i in chosen]
    plot = _get(base, f"/v1/datasets/{dataset_id}/aggregates", grouping=grouping, features=",".join(genes), stats="mean,frac_expressing")
    width = max(len(g) for g in plot["groups"]) + 2
    lines = [f"{grouping:<{width}}" + "".join(f"{g:>15}" for g in genes)]
    for j, group in enumerate(plot["groups"]):
        cells = []
        for i in range(len(genes)):
            mean = plot["stats"]["mean"][i][j]
            frac = plot["stats"]["frac_expressing"][i][j]
            cells.append(f"{mean:6.2f} ({100 * frac:3.0f}%)" if mean is not None else "   -")
        lines.append(f"{group:<{width}}" + "".join(f"{c:>15}" for c in cells))
    lines.append(f"(mean of log-normalised expression, % of cells expressing; version {plot['version'][:12]})")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews demo`: upload a sample dataset, wait for it, print a dot plot."""
    base = f"http://{settings.query_host}:{settings.query_port}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        matrix, metadata = sample_frames(args.cells, args.genes, seed=args.seed)
        manifest = {"groupings": ["cell_type", "donor", "region"], "embedding": "umap", "title": "wideviews demo"}
        path = write_upload_zip(Path(tmp) / "demo.zip", matrix, metadata, manifest)
        made = time.monotonic()
        print(f"sample: {args.cells} cells x {args.genes} genes, {path.stat().st_size / 1e6:.1f} MB zipped ({made - started:.1f} s)", file=sys.stderr)
        _, version_id = upload_file(settings, path, args.dataset)
    version = wait_for_version(settings, args.dataset, version_id, args.timeout)
    done = time.monotonic()
    if version.state != State.PUBLISHED:
        print(f"FAILED: {version.error}", file=sys.stderr)
        return 2
    print(f"\npublished version {version.version_id} in {done - made:.1f} s (upload to PUBLISHED); per stage:")
    for state, seconds in stage_times(version):
        print(f"  {state:<11} {seconds:6.1f} s")
    print()
    print(dot_plot(base, args.dataset, "cell_type", args.show_genes))
    print(f"\ntry:  curl '{base}/v1/datasets/{args.dataset}'")
    print(f"      curl '{base}/v1/datasets/{args.dataset}/aggregates?grouping=cell_type&features=GENE00001,GENE00002&stats=mean,median,frac_expressing'")
    print(f"      curl '{base}/v1/datasets/{args.dataset}/features/GENE00001/values'")
    print(f"demo wall time {time.monotonic() - started:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `wideviews demo`."""
    demo = subparsers.add_parser("demo", help="upload a sample dataset through the whole pipeline and print a dot plot from the API")
    demo.add_argument("--dataset", default="demo")
    demo.add_argument("--cells", type=int, default=5000)
    demo.add_argument("--genes", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--show-genes", type=int, default=6)
    demo.add_argument("--timeout", type=float, default=1200.0)
    demo.set_defaults(run=cmd_demo)
