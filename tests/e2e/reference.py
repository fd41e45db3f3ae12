"""Independent reference for the end-to-end tests: pandas over the very CSV files inside the upload ZIP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pandas as pd

from shared.config import Settings

STAT_NAMES = ["count", "nnz", "sum", "mean", "var", "min", "max", "median", "q1", "q3", "frac_expressing", "mean_expressing"]


@dataclass
class Reference:
    matrix: pd.DataFrame  # cells x features, matrix.csv order
    metadata: pd.DataFrame | None  # aligned to matrix order

    @classmethod
    def from_zip(cls, path: Path) -> "Reference":
        with zipfile.ZipFile(path) as archive:
            matrix = pd.read_csv(archive.open("matrix.csv"), index_col=0)
            metadata = None
            if "metadata.csv" in archive.namelist():
                metadata = pd.read_csv(archive.open("metadata.csv"), index_col=0, keep_default_na=False).loc[matrix.index]
        return cls(matrix.astype(np.float64), metadata)

    def group_stats(self, grouping: str) -> tuple[list[str], dict[str, pd.DataFrame]]:
        """Per stat a groups x features frame, groups sorted as strings."""
        labels = self.metadata[grouping].astype(str)
        groups = sorted(labels.unique())
        g = self.matrix.groupby(labels)
        nonzero = (self.matrix != 0).groupby(labels).sum()
        out = {
            "count": g.size().to_frame().reindex(columns=[0]).rename(columns={0: "n"}),
            "nnz": nonzero,
            "sum": g.sum(),
            "mean": g.mean(),
            # Two-pass variance per group: pandas' grouped var loses ~7 digits on large means (a 1e9 +
            # noise column), which the kernel must not, and numpy's two-pass does not.
            "var": g.agg(lambda s: np.var(s.to_numpy(), ddof=1) if len(s) > 1 else np.nan),
            "min": g.min(),
            "max": g.max(),
            "median": g.median(),
            "q1": g.quantile(0.25),
            "q3": g.quantile(0.75),
        }
        out["frac_expressing"] = out["nnz"] / g.size().to_numpy()[:, None]
        out["mean_expressing"] = (out["sum"] / out["nnz"].replace(0, np.nan))
        out = {k: v.reindex(groups) for k, v in out.items()}
        return groups, out


def assert_aggregates_match(body: dict[str, Any], ref: Reference, grouping: str) -> None:
    """Every requested stat of every (feature, group) equals pandas' value."""
    groups, expected = ref.group_stats(grouping)
    assert body["groups"] == groups
    features = body["features"]
    for stat, per_feature in body["stats"].items():
        got = np.array([[np.nan if v is None else v for v in row] for row in per_feature], dtype=np.float64)
        if stat == "count":
            want = np.tile(expected["count"]["n"].to_numpy(dtype=np.float64), (len(features), 1))
        else:
            want = expected[stat][features].to_numpy(dtype=np.float64).T
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"{grouping}/{stat}")


def http_json(url: str, *, timeout_s: float = 30) -> tuple[int, Any]:
    """GET a JSON URL; returns (status, body) also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def query_url(settings: Settings, path: str, **params: str) -> str:
    base = f"http://{settings.query_host}:{settings.query_port}"
    return base + path + ("?" + urllib.parse.urlencode(params) if params else "")


def cli(settings: Settings, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the `wideviews` command against the test stack."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "--home", str(settings.home), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=settings.child_env(),
        cwd=str(settings.project_root),
    )


def publish_sample(settings: Settings, directory: Path, prefix: str, shape: tuple[int, int, int], manifest: dict[str, Any]) -> tuple[str, Reference]:
    """Upload the sample dataset of `shape` (cells, genes, seed) with `manifest` as a new dataset
    `<prefix>-<8 hex>` and wait until it is published; (its id, its reference)."""
    from cli.sample import sample_frames, write_upload_zip

    n_cells, n_genes, seed = shape
    matrix, metadata = sample_frames(n_cells, n_genes, seed=seed)
    path = write_upload_zip(directory / f"{prefix}.zip", matrix, metadata, manifest)
    dataset_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    done = cli(settings, "upload", str(path), "--dataset", dataset_id, "--wait", "--timeout", "600")
    assert done.returncode == 0, done.stderr
    return dataset_id, Reference.from_zip(path)


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def assert_version_matches(settings: Settings, dataset_id: str, version_id: str, ref: Reference, groupings: list[str]) -> None:
    """Every stat of every grouping and every feature's transpose of one version equal pandas' values."""
    features = list(ref.matrix.columns)
    for grouping in groupings:
        for start in range(0, len(features), 200):
            batch = features[start : start + 200]
            status, body = http_json(query_url(settings, f"/v1/datasets/{dataset_id}/aggregates", grouping=grouping, features=",".join(batch), version=version_id))
            assert status == 200, body
            assert body["version"] == version_id
            assert_aggregates_match(body, ref, grouping)
    for feature in features:
        status, body = http_json(query_url(settings, f"/v1/datasets/{dataset_id}/features/{feature}/values", version=version_id))
        assert status == 200, body
        column = ref.matrix[feature].to_numpy()
        assert body["indices"] == np.flatnonzero(column).tolist(), feature
        np.testing.assert_array_equal(np.array(body["values"], dtype=np.float64), column[column != 0])


def assert_cells_match(settings: Settings, dataset_id: str, ref: Reference, groupings: list[str]) -> None:
    """Every cell's position, metadata and umap embedding come back as uploaded."""
    for position, cell_id in enumerate(ref.matrix.index):
        status, body = http_json(query_url(settings, f"/v1/datasets/{dataset_id}/cells/{cell_id}"))
        assert status == 200, (cell_id, body)
        assert body["position"] == position
        for grouping in groupings:
            assert body["metadata"][grouping] == ref.metadata.loc[cell_id, grouping]
        assert body["embedding"]["umap"] == pytest.approx([ref.metadata.loc[cell_id, "umap_1"], ref.metadata.loc[cell_id, "umap_2"]])

