"""Upload -> ingest -> compute -> loader -> publisher -> query on the real local stack, checked against pandas."""

from __future__ import annotations

import json
import threading
import uuid
import zipfile
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

from cli.sample import sample_frames, write_upload_zip
from shared.adapters.hbase import HBase
from shared.config import Settings
from tests.e2e.reference import Reference, assert_aggregates_match, assert_cells_match, cli, http_json, query_url, wait_for

pytestmark = pytest.mark.stack


def _dataset_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _edge_case_frames(n_cells: int, n_genes: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sample plus the cases that break naive kernels: all-zero, negative, constant and single-cell groups."""
    matrix, metadata = sample_frames(n_cells, n_genes, seed=seed)
    matrix["ZERO_GENE"] = 0.0
    rng = np.random.default_rng(seed)
    matrix["NEG_GENE"] = np.round(rng.normal(0, 2, n_cells) * (rng.random(n_cells) < 0.4), 3)
    matrix["BIG_GENE"] = 1e9 + np.round(rng.random(n_cells), 3)
    metadata = metadata.copy()
    metadata.loc[metadata.index[0], "region"] = "solo"  # a one-cell group: var is NaN
    return matrix, metadata


def _upload_and_wait(settings: Settings, path: Path, dataset_id: str) -> dict:
    done = cli(settings, "upload", str(path), "--dataset", dataset_id, "--wait", "--json", "--timeout", "600")
    assert done.returncode == 0, f"upload failed: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_upload_is_published_and_every_stat_matches_pandas(stack: Settings, tmp_path: Path) -> None:
    matrix, metadata = _edge_case_frames(400, 150, seed=11)
    path = write_upload_zip(tmp_path / "v1.zip", matrix, metadata, {"groupings": ["cell_type", "donor", "region"], "embedding": "umap", "title": "e2e"})
    dataset_id = _dataset_id("e2e")
    version = _upload_and_wait(stack, path, dataset_id)
    assert version["state"] == "PUBLISHED"
    assert version["n_chunks"] > 1, "the test stack must split this dataset into several chunks"
    ref = Reference.from_zip(path)

    status, info = http_json(query_url(stack, f"/v1/datasets/{dataset_id}"))
    assert status == 200
    assert info["version"] == version["version_id"]
    assert (info["n_cells"], info["n_features"]) == ref.matrix.shape
    for grouping in ("cell_type", "donor", "region"):
        counts = ref.metadata[grouping].value_counts()
        assert info["groupings"][grouping] == [{"name": g, "count": int(counts[g])} for g in sorted(counts.index)]

    features = list(ref.matrix.columns)
    for grouping in ("cell_type", "donor", "region"):
        for start in range(0, len(features), 200):
            batch = features[start : start + 200]
            status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping=grouping, features=",".join(batch)))
            assert status == 200, body
            assert body["version"] == version["version_id"]
            assert body["features"] == batch
            assert sorted(body["stats"]) == sorted(["count", "nnz", "sum", "mean", "var", "min", "max", "median", "q1", "q3", "frac_expressing", "mean_expressing"])
            assert_aggregates_match(body, ref, grouping)

    # The transpose: every feature's non-zeros, positions in matrix.csv order.
    for feature in features:
        status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/features/{feature}/values"))
        assert status == 200, body
        column = ref.matrix[feature].to_numpy()
        expected_idx = np.flatnonzero(column)
        assert body["indices"] == expected_idx.tolist(), feature
        np.testing.assert_array_equal(np.array(body["values"], dtype=np.float64), column[expected_idx])
        assert body["n_cells"] == len(column)

    # Every cell's position, metadata and embedding come back as uploaded (the cells view is written
    # in shares by the chunks' jobs: every share must be there, at the right position).
    assert_cells_match(stack, dataset_id, ref, ["cell_type", "donor", "region"])

    # Errors are JSON with a message and the right status.
    assert http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features="NOPE"))[0] == 404
    assert http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="nope", features=features[0]))[0] == 404
    assert http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features=features[0], stats="mode"))[0] == 400
    assert http_json(query_url(stack, "/v1/datasets/UPPER"))[0] == 400
    assert http_json(query_url(stack, "/v1/datasets/no-such-dataset"))[0] == 404


def test_second_upload_flips_pointer_and_readers_never_see_a_half_version(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset_id("bluegreen")
    m1, meta1 = sample_frames(300, 120, seed=1)
    m2, meta2 = sample_frames(300, 120, seed=2)
    p1 = write_upload_zip(tmp_path / "v1.zip", m1, meta1, {"groupings": ["cell_type"]})
    p2 = write_upload_zip(tmp_path / "v2.zip", m2, meta2, {"groupings": ["cell_type"]})
    v1 = _upload_and_wait(stack, p1, dataset_id)["version_id"]
    refs = {v1: Reference.from_zip(p1)}
    features = list(m1.columns[:40])

    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features=",".join(features), stats="mean,median"))
            if status != 200:
                errors.append(f"{status} {body}")
                continue
            seen.append(body["version"])
            ref = refs.get(body["version"])
            if ref is not None:
                try:
                    assert_aggregates_match(body, ref, "cell_type")
                except AssertionError as exc:
                    errors.append(str(exc)[:300])

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        v2_record = _upload_and_wait(stack, p2, dataset_id)
    finally:
        stop.set()
        thread.join(timeout=30)
    v2 = v2_record["version_id"]
    refs[v2] = Reference.from_zip(p2)
    assert not errors, errors[:3]
    assert seen and seen[0] == v1
    # Readers moved from v1 to v2 once and never back.
    switches = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
    assert all(seen[i] == v2 for i in switches) and len(switches) <= 1
    assert set(seen) <= {v1, v2}

    # The query service caches the pointer briefly (pointer_cache_s): the flip shows within that.
    url = query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features=",".join(features))
    status, body = wait_for(lambda: (r := http_json(url))[1].get("version") == v2 and r, stack.pointer_cache_s + 5, "the flip to v2")
    assert status == 200
    assert_aggregates_match(body, refs[v2], "cell_type")
    # The first version's tables stay readable until removed.
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features=",".join(features), version=v1))
    assert status == 200 and body["version"] == v1
    assert_aggregates_match(body, refs[v1], "cell_type")

    status_out = json.loads(cli(stack, "status", dataset_id, "--json").stdout)["datasets"][0]
    assert status_out["current_version"] == v2 and status_out["previous_version"] == v1
    states = {v["version_id"]: v["state"] for v in status_out["versions"]}
    assert states == {v1: "REPLACED", v2: "PUBLISHED"}


def test_broken_upload_fails_with_reason_and_leaves_published_version_alone(stack: Settings, tmp_path: Path) -> None:
    dataset_id = _dataset_id("broken")
    m1, meta1 = sample_frames(200, 60, seed=3)
    good = _upload_and_wait(stack, write_upload_zip(tmp_path / "good.zip", m1, meta1), dataset_id)["version_id"]
    before = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features="GENE00001"))

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("matrix.csv", "cell_id,A,B\nc1,1,2\nc2,3\n")  # a ragged row
    done = cli(stack, "upload", str(bad), "--dataset", dataset_id, "--wait", "--timeout", "300")
    assert done.returncode == 2, done.stderr
    assert "FAILED" in done.stderr and "matrix.csv" in done.stderr and "columns" in done.stderr

    after = http_json(query_url(stack, f"/v1/datasets/{dataset_id}/aggregates", grouping="cell_type", features="GENE00001"))
    assert after == before and after[1]["version"] == good
    status_out = json.loads(cli(stack, "status", dataset_id, "--json").stdout)["datasets"][0]
    assert status_out["current_version"] == good


@pytest.mark.parametrize("bad_id", ["Upper-Case", "a:b", "a_b", "-leading", "x" * 64, "nested/deeper"])
def test_dataset_ids_that_would_escape_a_table_name_fail_with_a_reason(stack: Settings, tmp_path: Path, bad_id: str) -> None:
    m, meta = sample_frames(50, 10, seed=5)
    path = write_upload_zip(tmp_path / "ok.zip", m, meta)
    key = f"uploads/{bad_id}/{uuid.uuid4().hex}.zip"
    boto3.client("s3", **stack.aws_client_kwargs()).upload_file(str(path), stack.uploads_bucket, key)

    def failed() -> dict | None:
        out = json.loads(cli(stack, "status", "--json").stdout)["datasets"]
        versions = [v for d in out for v in d["versions"] if v["upload_key"] == key]
        return versions[0] if versions and versions[0]["state"] == "FAILED" else None

    version = wait_for(failed, 120, f"the upload under {bad_id!r} to fail")
    assert "dataset_id matching" in version["error"] and key in version["error"]
    # No table was ever named after it.
    tables = HBase(stack, size=1).list_tables()
    prefixes = tuple(f"{stack.hbase_namespace}:{name}_" for name in {bad_id, bad_id.lower()})
    assert not [t for t in tables if t.startswith(prefixes)]
