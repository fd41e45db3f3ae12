"""The read API on the live local server, as a frontend uses it: every endpoint's values against pandas
on the uploaded CSV, only published versions readable, paging that loses nothing, the HTTP
conventions (ETag/304, Cache-Control, gzip, CORS, HEAD), percent-encoded odd names, JSON errors
with the right status, /metrics, and schemathesis over the generated OpenAPI schema."""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import io
import json
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import happybase
import httpx
import hypothesis
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cli.sample import sample_frames, write_upload_zip
from cli.stack.hbase import write_hbase_conf
from cli.stack.lifecycle import component_cmd
from cli.stack.probes import port_open
from services.query.app import create_app
from services.query.lambda_handler import adapter_for, handler
from services.query.metrics import EMF_NAMESPACE
from services.query.reads import VersionReader
from shared import layout
from shared.adapters.aws import open_aws
from shared.adapters.hbase import view_table
from shared.config import Settings
from shared.lifecycle import State, VersionLife
from shared.records import Records, VersionRecord
from tests.e2e.reference import Reference, assert_aggregates_match, cli, http_json, query_url

pytestmark = pytest.mark.stack

# Feature names and a cell id that need percent-encoding (or survive it only if decoded exactly once).
ODD_FEATURES = ["HLA-A,B", "CD3/CD28", "gene with spaces", "Ünïcødé-β", "50%", "a%2Fb"]
ODD_CELL = "cell, two/β"
ARROW = "application/vnd.apache.arrow.stream"


@dataclass
class Published:
    dataset_id: str
    version: str
    ref: Reference


def odd_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sample dataset with odd feature names and one odd cell id, each feature with non-zeros."""
    matrix, metadata = sample_frames(250, 80, seed=21)
    matrix = matrix.rename(columns=dict(zip(matrix.columns[: len(ODD_FEATURES)], ODD_FEATURES)))
    rows = np.arange(len(matrix))
    for i, name in enumerate(ODD_FEATURES):
        # Four cells in five expressing, so that a page of their values is large enough to be gzipped.
        matrix[name] = np.where(rows % 5 != i % 5, np.round(1.5 + i + rows / 1000, 4), 0.0)
    matrix = matrix.rename(index={matrix.index[2]: ODD_CELL})
    metadata = metadata.rename(index={metadata.index[2]: ODD_CELL})
    return matrix, metadata


@pytest.fixture(scope="module")
def published(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Published:
    matrix, metadata = odd_frames()
    manifest = {"groupings": ["cell_type", "donor"], "embedding": "umap", "title": "odd names"}
    path = write_upload_zip(tmp_path_factory.mktemp("api") / "api.zip", matrix, metadata, manifest)
    dataset_id = f"api-{uuid.uuid4().hex[:8]}"
    done = cli(stack, "upload", str(path), "--dataset", dataset_id, "--wait", "--timeout", "600")
    assert done.returncode == 0, done.stderr
    status, body = http_json(query_url(stack, f"/v1/datasets/{dataset_id}"))
    assert status == 200, body
    return Published(dataset_id, body["version"], Reference.from_zip(path))


@pytest.fixture(scope="module")
def client(stack: Settings) -> httpx.Client:
    with httpx.Client(base_url=f"http://{stack.query_host}:{stack.query_port}", timeout=30) as c:
        yield c


def _copy_tables(stack: Settings, dataset_id: str, source: str, target: str, views: list[str], skip_prefix: bytes | None = None) -> None:
    """Copy a version's tables under another version id (what a half-loaded version would have),
    without the rows starting with `skip_prefix`."""
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    try:
        for view in views:
            src, dst = view_table(stack, dataset_id, source, view), view_table(stack, dataset_id, target, view)
            families = {f.decode() if isinstance(f, bytes) else f: {} for f in conn.table(src).families()}
            conn.create_table(dst, families)
            with conn.table(dst).batch() as batch:
                for key, data in conn.table(src).scan():
                    if skip_prefix is None or not key.startswith(skip_prefix):
                        batch.put(key, data)
    finally:
        conn.close()


def _fabricate_version(stack: Settings, dataset_id: str, version_id: str, state: State) -> None:
    """A version record walked through the real state machine to `state`."""

    async def go() -> None:
        async with open_aws(stack) as aws:
            records = Records(aws.dynamodb, stack)
            await records.create_version(VersionRecord(dataset_id, version_id, State.INGESTING, upload_key=f"uploads/{dataset_id}/x.zip", upload_order="0"))
            await VersionLife(records).record_plan(dataset_id, version_id, n_chunks=1, n_cells=1, n_features=1, views=["catalog"], expected={"0:catalog"})
            if state == State.FAILED:
                await records.transition(dataset_id, version_id, State.FAILED, error="verification failed: checksum mismatch")
            else:
                await records.transition(dataset_id, version_id, State.LOADING)
            if state == State.PUBLISHED:
                await records.transition(dataset_id, version_id, State.VALIDATING)
                await records.transition(dataset_id, version_id, State.PUBLISHED)

    asyncio.run(go())


# --- only published data ------------------------------------------------------------------------


def test_loading_and_failed_versions_are_404_even_with_their_tables(stack: Settings, published: Published, client: httpx.Client) -> None:
    ds = published.dataset_id
    views = ["catalog", "stats_cell_type", "features", "cells"]
    for state in (State.LOADING, State.FAILED):
        version = uuid.uuid4().hex
        _fabricate_version(stack, ds, version, state)
        # Every table a reader would touch exists with real rows: only the state keeps readers out.
        _copy_tables(stack, ds, published.version, version, views)
        for path, params in [
            (f"/v1/datasets/{ds}", {}),
            (f"/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00010"}),
            (f"/v1/datasets/{ds}/features/GENE00010/values", {}),
            (f"/v1/datasets/{ds}/features", {"prefix": "gene"}),
            (f"/v1/datasets/{ds}/cells", {}),
        ]:
            r = client.get(path, params={**params, "version": version})
            assert r.status_code == 404, (state, path, r.text)
            assert r.json() == {"error": "not found", "message": r.json()["message"]}
            assert state.value in r.json()["message"] and "only published versions are readable" in r.json()["message"]
        listed = client.get(f"/v1/datasets/{ds}/versions").json()
        assert version not in [v["version"] for v in listed["versions"]]
    # The published version itself, pinned: readable and immutable.
    r = client.get(f"/v1/datasets/{ds}", params={"version": published.version})
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_versions_lists_the_published_ones_with_counts(published: Published, client: httpx.Client) -> None:
    body = client.get(f"/v1/datasets/{published.dataset_id}/versions").json()
    assert body["current_version"] == published.version
    current = [v for v in body["versions"] if v["current"]]
    assert len(current) == 1 and current[0]["version"] == published.version and current[0]["state"] == "PUBLISHED"
    assert (current[0]["n_cells"], current[0]["n_features"]) == published.ref.matrix.shape
    assert current[0]["published_at"] >= current[0]["created_at"]


# --- features -------------------------------------------------------------------------------------


def _all_pages(client: httpx.Client, path: str, params: dict[str, Any], key: str) -> tuple[list[Any], list[dict[str, Any]]]:
    items: list[Any] = []
    bodies = []
    cursor = None
    for _ in range(1000):
        r = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        bodies.append(r.json())
        items += r.json()[key]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items, bodies
    raise AssertionError("paging never ended")


def test_feature_search_is_case_insensitive_exact_first_and_pages(published: Published, client: httpx.Client) -> None:
    ds, names = published.dataset_id, list(published.ref.matrix.columns)
    path = f"/v1/datasets/{ds}/features"
    body = client.get(path, params={"prefix": "gene0001"}).json()
    expected = sorted((n for n in names if n.casefold().startswith("gene0001")), key=lambda n: (n.casefold(), n))
    assert body["features"] == expected[:20] and body["total"] == len(expected)
    # An exact (case-insensitive) match comes first even where it is not alphabetically first.
    assert client.get(path, params={"prefix": "cd3/cd28"}).json()["features"][0] == "CD3/CD28"
    assert client.get(path, params={"prefix": "ünïcødé"}).json()["features"] == ["Ünïcødé-β"]
    # A prefix search paged 3 at a time, and the full list 13 at a time (matrix order).
    found, _ = _all_pages(client, path, {"prefix": "g", "limit": 3}, "features")
    assert found == sorted((n for n in names if n.casefold().startswith("g")), key=lambda n: (n.casefold(), n))
    listed, pages = _all_pages(client, path, {"limit": 13}, "features")
    assert listed == names and all(p["total"] == len(names) and p["version"] == published.version for p in pages)
    assert client.get(path, params={"prefix": "nothing-like-this"}).json() == {
        "dataset": ds, "version": published.version, "prefix": "nothing-like-this", "total": 0, "features": [], "symbols": None, "next_cursor": None
    }
    bad = client.get(path, params={"cursor": "bm90IGEgY3Vyc29y"})
    assert bad.status_code == 400 and "invalid cursor" in bad.json()["message"]


# --- aggregates -----------------------------------------------------------------------------------


def test_aggregates_take_repeated_and_comma_features_with_counts(published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    params = [("grouping", "cell_type"), ("feature", "HLA-A,B"), ("feature", "CD3/CD28"), ("features", "GENE00010,GENE00011"), ("stats", "mean,var,median,nnz")]
    body = client.get(f"/v1/datasets/{ds}/aggregates", params=params).json()
    assert body["features"] == ["HLA-A,B", "CD3/CD28", "GENE00010", "GENE00011"]  # as asked, across both forms
    assert_aggregates_match(body, ref, "cell_type")
    counts = ref.metadata["cell_type"].value_counts()
    assert body["group_counts"] == [int(counts[g]) for g in body["groups"]]


def test_aggregates_group_filter_and_ordering_by_a_stat(published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    groups, expected = ref.group_stats("cell_type")
    features = list(ref.matrix.columns[:25])
    chosen = [groups[3], groups[0]]
    params = [("grouping", "cell_type"), ("features", ",".join(f for f in features if "," not in f)), ("feature", "HLA-A,B"), ("group", chosen[0]), ("groups", chosen[1])]
    params += [("stats", "mean,frac_expressing"), ("order_by", "mean")]
    body = client.get(f"/v1/datasets/{ds}/aggregates", params=params).json()
    assert body["groups"] == chosen and body["order_by"] == "mean"
    mean = expected["mean"].loc[chosen, features]
    # Descending by the largest mean over the groups returned; stable for ties (asked order).
    asked = [f for f in features if "," not in f] + ["HLA-A,B"]
    want = sorted(asked, key=lambda f: -mean[f].max())
    assert body["features"] == want
    got = np.array(body["stats"]["mean"], dtype=np.float64)
    np.testing.assert_allclose(got, mean[want].to_numpy().T, rtol=1e-12)
    # Ascending by one group's frac_expressing.
    params2 = [p for p in params if p[0] != "order_by"] + [("order_by", "frac_expressing"), ("order_group", chosen[1]), ("order", "asc")]
    body2 = client.get(f"/v1/datasets/{ds}/aggregates", params=params2).json()
    frac = expected["frac_expressing"].loc[chosen[1], asked]
    assert body2["features"] == sorted(asked, key=lambda f: frac[f])
    unknown = client.get(f"/v1/datasets/{ds}/aggregates", params=[("grouping", "cell_type"), ("feature", "GENE00010"), ("group", "Nope")])
    assert unknown.status_code == 404 and "Nope" in unknown.json()["message"]


def test_aggregates_as_csv(published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    groups, expected = ref.group_stats("donor")
    r = client.get(f"/v1/datasets/{ds}/aggregates", params=[("grouping", "donor"), ("feature", "HLA-A,B"), ("feature", "GENE00012"), ("stats", "mean,count,q3"), ("format", "csv")])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["feature"], row["group"]) for row in rows] == [(f, g) for f in ["HLA-A,B", "GENE00012"] for g in groups]
    sizes = ref.metadata["donor"].value_counts()
    for row in rows:
        assert int(row["cells"]) == int(row["count"]) == sizes[row["group"]]
        assert float(row["mean"]) == pytest.approx(expected["mean"].loc[row["group"], row["feature"]], rel=1e-12)
        assert float(row["q3"]) == pytest.approx(expected["q3"].loc[row["group"], row["feature"]], rel=1e-12)


# --- a feature's values, cells ----------------------------------------------------------------------


def test_feature_values_page_as_json_and_arrow(published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    for name in ["GENE00020", *ODD_FEATURES]:
        column = ref.matrix[name].to_numpy()
        path = f"/v1/datasets/{ds}/features/{quote(name, safe='')}/values"
        whole = client.get(path).json()
        assert whole["feature"] == name and whole["next_cursor"] is None and whole["n_cells"] == column.size
        assert whole["indices"] == np.flatnonzero(column).tolist(), name
        np.testing.assert_array_equal(np.array(whole["values"]), column[column != 0])
        pages, bodies = _all_pages(client, path, {"limit": 7}, "indices")
        assert pages == whole["indices"] and all(len(b["indices"]) <= 7 for b in bodies)
        assert sum((b["values"] for b in bodies), []) == whole["values"]
        r = client.get(path, headers={"Accept": ARROW})
        assert r.headers["content-type"] == ARROW
        table = pa.ipc.open_stream(r.content).read_all()
        assert table.column("index").to_pylist() == whole["indices"]
        np.testing.assert_array_equal(table.column("value").to_numpy().astype(np.float64), whole["values"])
        assert table.schema.metadata[b"version"].decode() == published.version
    other = client.get(f"/v1/datasets/{ds}/features/GENE00020/values", params={"limit": 1}).json()["next_cursor"]
    assert client.get(f"/v1/datasets/{ds}/features/GENE00021/values", params={"cursor": other}).status_code == 400


def test_a_feature_in_several_parts_pages_across_them(stack: Settings, published: Published, client: httpx.Client) -> None:
    """A feature over `features_row_max_nnz` non-zeros is stored in parts (rows `<name>\\0<part>`); pages
    may start and end inside a part or on its edge and still lose nothing."""
    from shared import layout

    ds = published.dataset_id
    version = uuid.uuid4().hex
    _fabricate_version(stack, ds, version, State.PUBLISHED)
    _copy_tables(stack, ds, published.version, version, ["catalog"])
    rng = np.random.default_rng(5)
    indices = np.sort(rng.choice(10_000, size=10, replace=False)).astype(np.int32)
    values = rng.normal(size=10)
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    try:
        table = view_table(stack, ds, version, "features")
        conn.create_table(table, {"f": {}})
        for part, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 10)]):
            conn.table(table).put(layout.feature_part_row("SPLIT", part), {b"f:v": layout.encode_feature_part(indices[lo:hi], values[lo:hi])})
    finally:
        conn.close()
    path = f"/v1/datasets/{ds}/features/SPLIT/values"
    for limit in (1, 3, 4, 5, 8, 10, 100):
        got, bodies = _all_pages(client, path, {"limit": limit, "version": version}, "indices")
        assert got == indices.tolist(), limit
        np.testing.assert_array_equal(sum((b["values"] for b in bodies), []), values)
        assert all(len(b["indices"]) <= limit for b in bodies)


def test_cells_in_bulk_page_as_json_and_arrow(published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    meta = ref.metadata
    ids, bodies = _all_pages(client, f"/v1/datasets/{ds}/cells", {"limit": 60}, "cells")
    assert sorted(ids) == sorted(meta.index) and ids == sorted(ids, key=lambda c: c.encode())
    positions = sum((b["positions"] for b in bodies), [])
    assert positions == [ref.matrix.index.get_loc(c) for c in ids]
    for g in ("cell_type", "donor"):
        assert sum((b["metadata"][g] for b in bodies), []) == meta.loc[ids, g].astype(str).tolist()
    coords = np.array(sum((b["embedding"]["coordinates"] for b in bodies), []))
    np.testing.assert_array_equal(coords, meta.loc[ids, ["umap_1", "umap_2"]].to_numpy())
    r = client.get(f"/v1/datasets/{ds}/cells", params={"include": "metadata,embedding", "format": "arrow"})
    table = pa.ipc.open_stream(r.content).read_all()
    assert r.headers.get("x-next-cursor") is None and table.num_rows == len(meta)
    assert table.column("cell_id").to_pylist() == ids and table.column("position").to_pylist() == positions
    assert table.column("cell_type").to_pylist() == meta.loc[ids, "cell_type"].astype(str).tolist()
    np.testing.assert_array_equal(table.column("umap_2").to_numpy(), meta.loc[ids, "umap_2"].to_numpy())
    # The embedding alone (the server answers it from the page just read with metadata too): only its columns.
    r = client.get(f"/v1/datasets/{ds}/cells", params={"include": "embedding", "format": "arrow"})
    alone = pa.ipc.open_stream(r.content).read_all()
    assert alone.column_names == ["cell_id", "position", "umap_1", "umap_2"]
    assert alone.column("cell_id").to_pylist() == ids and alone.column("position").to_pylist() == positions
    np.testing.assert_array_equal(alone.column("umap_1").to_numpy(), meta.loc[ids, "umap_1"].to_numpy())
    one = client.get(f"/v1/datasets/{ds}/cells/{quote(ODD_CELL, safe='')}").json()
    assert one["cell"] == ODD_CELL and one["position"] == ref.matrix.index.get_loc(ODD_CELL)
    assert one["metadata"]["cell_type"] == meta.loc[ODD_CELL, "cell_type"]


def _arrow_embedding(client: httpx.Client, ds: str, version: str) -> pa.Table:
    """All cells' embedding as Arrow, by a request no earlier page answers (its own limit)."""
    r = client.get(f"/v1/datasets/{ds}/cells", params={"include": "embedding", "limit": 99_999, "version": version}, headers={"Accept": ARROW})
    assert r.status_code == 200, r.text
    assert r.headers.get("x-next-cursor") is None
    return pa.ipc.open_stream(r.content).read_all()


def _assert_embedding_matches_reference(table: pa.Table, ref: Reference) -> None:
    ids = sorted(ref.metadata.index, key=lambda c: c.encode())
    assert table.column_names == ["cell_id", "position", "umap_1", "umap_2"]
    assert table.column("cell_id").to_pylist() == ids
    assert table.column("position").to_pylist() == [ref.matrix.index.get_loc(c) for c in ids]
    for column in ("umap_1", "umap_2"):
        np.testing.assert_array_equal(table.column(column).to_numpy(), ref.metadata.loc[ids, column].to_numpy())


def test_all_cells_embedding_is_read_from_the_blocks_with_the_csv_values(stack: Settings, published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    reader = VersionReader(stack)
    catalog = reader.catalog(ds, published.version)
    # The cells view holds the embedding blocks: a few rows before every cell, covering every cell once.
    page = reader.embedding_blocks_page(catalog)
    assert page is not None and page.last_key is None
    ids = sorted(ref.metadata.index, key=lambda c: c.encode())
    assert page.cell_ids == ids and page.positions.tolist() == [ref.matrix.index.get_loc(c) for c in ids]
    np.testing.assert_array_equal(page.embedding, ref.metadata.loc[ids, ["umap_1", "umap_2"]].to_numpy())
    _assert_embedding_matches_reference(_arrow_embedding(client, ds, published.version), ref)


def test_a_version_without_embedding_blocks_still_serves_the_embedding(stack: Settings, published: Published, client: httpx.Client) -> None:
    ds, ref = published.dataset_id, published.ref
    version = uuid.uuid4().hex
    _fabricate_version(stack, ds, version, State.PUBLISHED)
    # What a version computed before the blocks holds: the same tables, its cells view without them.
    _copy_tables(stack, ds, published.version, version, ["catalog", "cells"], skip_prefix=layout.EMBEDDING_BLOCK_PREFIX)
    reader = VersionReader(stack)
    assert reader.embedding_blocks_page(reader.catalog(ds, version)) is None
    _assert_embedding_matches_reference(_arrow_embedding(client, ds, version), ref)


def test_no_page_passes_the_size_limit(stack: Settings, published: Published) -> None:
    """With a 1,500-byte limit (4.2 MB in production) every answer pages down to fit, losing nothing."""
    from fastapi.testclient import TestClient

    ds, ref = published.dataset_id, published.ref
    with TestClient(create_app(stack, max_response_bytes=1500)) as small:
        cells, bodies = _all_pages(small, f"/v1/datasets/{ds}/cells", {"limit": 100_000}, "cells")
        assert sorted(cells) == sorted(ref.metadata.index) and len(bodies) > 3
        name = max(ref.matrix.columns, key=lambda f: int((ref.matrix[f] != 0).sum()))
        indices, bodies = _all_pages(small, f"/v1/datasets/{ds}/features/{name}/values", {}, "indices")
        assert indices == np.flatnonzero(ref.matrix[name].to_numpy()).tolist() and len(bodies) > 1
        for path, params in [(f"/v1/datasets/{ds}/cells", {"limit": 100_000}), (f"/v1/datasets/{ds}/features/{name}/values", {}), (f"/v1/datasets/{ds}/features", {"limit": 10_000})]:
            assert len(small.get(path, params=params).content) <= 1500
        big = small.get(f"/v1/datasets/{ds}/aggregates", params={"grouping": "cell_type", "features": ",".join(ref.matrix.columns[6:60])})
        assert big.status_code == 400 and "fewer features" in big.json()["message"]


# --- HTTP conventions -----------------------------------------------------------------------------


def test_etag_304_cache_control_gzip_head_and_cors(published: Published, client: httpx.Client) -> None:
    ds = published.dataset_id
    path = f"/v1/datasets/{ds}/aggregates"
    params = {"grouping": "cell_type", "features": ",".join(published.ref.matrix.columns[6:40])}
    first = client.get(path, params=params, headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag) and first.headers["cache-control"] == "public, max-age=2"
    assert client.get(path, params=params, headers={"Accept-Encoding": "identity"}).headers["etag"] == etag
    assert client.get(path, params={**params, "stats": "mean"}).headers["etag"] != etag
    again = client.get(path, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    pinned = client.get(path, params={**params, "version": published.version})
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    # gzip: asked for and large -> compressed, a distinct strong tag; the same JSON once decoded.
    zipped = client.get(path, params=params, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["etag"] == etag[:-1] + '-gz"'
    assert zipped.json() == first.json() and int(zipped.headers["content-length"]) < len(first.content) / 2
    assert client.get(path, params=params, headers={"If-None-Match": zipped.headers["etag"]}).status_code == 304
    assert "content-encoding" not in client.get("/healthz", headers={"Accept-Encoding": "gzip"}).headers  # small: as is
    head = client.head(path, params=params, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(first.content))
    assert head.headers["etag"] == etag
    preflight = client.options(path, headers={"Origin": "https://frontend.example.org", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "if-none-match"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"] and "if-none-match" in preflight.headers["access-control-allow-headers"].lower()
    assert first.headers["access-control-allow-origin"] == "*" and "ETag" in first.headers["access-control-expose-headers"]
    mine = client.get(path, params=params, headers={"X-Request-Id": "frontend-42"})
    assert mine.headers["x-request-id"] == "frontend-42"
    assert client.post(path).status_code == 405


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/datasets/Bad:Id", {}, 400, "invalid dataset id"),
        ("/v1/datasets/a..b", {}, 400, "invalid dataset id"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type"}, 400, "features is required"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": ",".join(f"G{i}" for i in range(1001))}, 400, "at most 1000 features"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00010", "stats": "mean,mode"}, 400, "unknown stats"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE\x01"}, 400, "invalid feature name"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "X" * 2000}, 400, "invalid feature name"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00010", "order_by": "mode"}, 400, "order_by"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "nope", "features": "GENE00010"}, 404, "grouping 'nope'"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00010,NOPE"}, 404, "NOPE"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00010", "version": "zz"}, 400, "32 hex"),
        ("/v1/datasets/{ds}/aggregates", {"grouping": "cell_type", "features": "GENE00010", "version": "0" * 32}, 404, "not available"),
        ("/v1/datasets/{ds}/features/NOPE/values", {}, 404, "NOPE"),
        ("/v1/datasets/{ds}/features/GENE00010/values", {"limit": "0"}, 400, "limit"),
        ("/v1/datasets/{ds}/cells", {"include": "everything"}, 400, "include"),
        ("/v1/datasets/{ds}/cells/nobody", {}, 404, "nobody"),
        ("/v1/datasets/{ds}/nothing", {}, 404, "no route"),
        ("/v1/datasets/no-such-dataset-here", {}, 404, "not found"),
    ],
)
def test_malformed_requests_get_json_errors(stack: Settings, published: Published, path: str, params: dict[str, str], status: int, message: str) -> None:
    got, body = http_json(query_url(stack, path.replace("{ds}", published.dataset_id), **params))
    assert got == status, body
    assert set(body) == {"error", "message"} and message in body["message"]


def test_dataset_listing_names_sizes_and_version(stack: Settings, published: Published) -> None:
    status, body = http_json(query_url(stack, "/v1/datasets"))
    assert status == 200
    entry = next(d for d in body["datasets"] if d["dataset"] == published.dataset_id)
    assert (entry["n_cells"], entry["n_features"]) == published.ref.matrix.shape
    assert entry["version"] == published.version and entry["title"] == "odd names"


# --- failures: 503 and 500 ------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hbase_or_dynamodb_is_503_with_retry_after(stack: Settings, published: Published) -> None:
    from fastapi.testclient import TestClient

    ds = published.dataset_id
    no_hbase = stack.model_copy(update={"hbase_thrift_port": _closed_port()})
    no_dynamo = stack.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    for settings, what in [(no_hbase, "HBase"), (no_dynamo, "DynamoDB")]:
        with TestClient(create_app(settings)) as app:
            r = app.get(f"/v1/datasets/{ds}/aggregates", params={"grouping": "cell_type", "features": "GENE00010"})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1" and r.json()["error"] == "unavailable" and what in r.json()["message"]


@pytest.fixture
def thrift_without_zookeeper(stack: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The stack's settings with the Thrift port of a second, real HBase Thrift server whose
    ZooKeeper does not answer (as when HBase's quorum is lost): it accepts Thrift calls and answers
    each with HBase's IOError after a 3 s call timeout, instead of the test waiting out HBase's
    minutes of retries."""
    settings = stack.model_copy(update={"home": tmp_path, "hbase_thrift_port": _closed_port(), "hbase_zk_port": _closed_port(), "hbase_heap_mb": 512})
    site = write_hbase_conf(settings) / "hbase-site.xml"
    short = {"zookeeper.recovery.retry": "0", "zookeeper.session.timeout": "2000", "hbase.client.operation.timeout": "3000"}
    properties = "".join(f"<property><name>{k}</name><value>{v}</value></property>" for k, v in short.items())
    site.write_text(site.read_text().replace("</configuration>", properties + "</configuration>"))
    with open(tmp_path / "thrift.log", "wb") as log:
        server = subprocess.Popen(component_cmd(settings, "hbase-thrift"), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not port_open(settings.hbase_thrift_host, settings.hbase_thrift_port):
            assert server.poll() is None, (tmp_path / "thrift.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the Thrift server did not listen within 120 s"
            time.sleep(0.2)
        yield settings
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_hbase_unavailable_behind_a_live_thrift_server_is_503_with_retry_after(thrift_without_zookeeper: Settings, published: Published) -> None:
    from fastapi.testclient import TestClient

    # The Thrift server answers with HBase's IOError ("java.net.SocketTimeoutException: callTimeout=...
    # KeeperException$ConnectionLossException"): a 503, not a 500.
    with TestClient(create_app(thrift_without_zookeeper)) as app:
        r = app.get(f"/v1/datasets/{published.dataset_id}/aggregates", params={"grouping": "cell_type", "features": "GENE00010"})
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1" and r.json()["error"] == "unavailable"
    assert "SocketTimeoutException" in r.json()["message"] and "ConnectionLoss" in r.json()["message"]


def test_an_unexpected_error_is_a_json_500_logged_with_the_request_id(stack: Settings, published: Published, client: httpx.Client) -> None:
    ds = published.dataset_id
    version = uuid.uuid4().hex
    _fabricate_version(stack, ds, version, State.PUBLISHED)
    conn = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port)
    try:
        table = view_table(stack, ds, version, "catalog")
        conn.create_table(table, {"m": {}})
        conn.table(table).put(b"meta", {b"m:doc": b"not a layout value"})  # a corrupt stored value
    finally:
        conn.close()
    r = client.get(f"/v1/datasets/{ds}", params={"version": version}, headers={"X-Request-Id": f"corrupt-{version[:8]}"})
    assert r.status_code == 500 and r.json() == {"error": "internal", "message": f"internal error; request id corrupt-{version[:8]}"}
    # One JSON line: the request id as a field and in the message, the traceback naming the bad value.
    lines = [json.loads(line) for line in Path(stack.home / "logs" / "query.log").read_text().splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("request_id") == f"corrupt-{version[:8]}"]
    assert len(logged) == 1 and logged[0]["level"] == "ERROR" and logged[0]["service"] == "query"
    assert f"request id corrupt-{version[:8]}" in logged[0]["message"] and "is not a layout-1 J value" in logged[0]["exception"]


# --- metrics ---------------------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_in_prometheus_text(published: Published, client: httpx.Client) -> None:
    route = "/v1/datasets/{dataset_id}"
    before = client.get("/metrics").text
    for _ in range(3):
        assert client.get(f"/v1/datasets/{published.dataset_id}").status_code == 200
    client.get("/v1/datasets/no-such-dataset-here")
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert _metric(text, "wideviews_query_requests_total", route=route, status="200") - _metric(before, "wideviews_query_requests_total", route=route, status="200") == 3
    assert _metric(text, "wideviews_query_requests_total", route=route, status="404") - _metric(before, "wideviews_query_requests_total", route=route, status="404") == 1
    assert _metric(text, "wideviews_query_request_seconds_count", route=route) >= 4


def test_hot_routes_are_counted_under_their_route_templates(published: Published, client: httpx.Client) -> None:
    """The dot plot, the search and a feature's values bypass FastAPI's router: still one count per
    request, under the same route template as any other route, errors included."""
    ds, feature = published.dataset_id, published.ref.matrix.columns[10]
    requests = {
        "/v1/datasets/{dataset_id}/aggregates": [(f"/v1/datasets/{ds}/aggregates", {"feature": feature, "grouping": "cell_type"}, 200),
                                                 (f"/v1/datasets/{ds}/aggregates", {"feature": "no-such-feature", "grouping": "cell_type"}, 404)],
        "/v1/datasets/{dataset_id}/features": [(f"/v1/datasets/{ds}/features", {"prefix": feature[:4]}, 200), (f"/v1/datasets/{ds}/features", {"limit": "0"}, 400)],
        "/v1/datasets/{dataset_id}/features/{feature:path}/values": [(f"/v1/datasets/{ds}/features/{quote(feature, safe='')}/values", {}, 200)],
    }
    before = client.get("/metrics").text
    for calls in requests.values():
        for path, params, status in calls:
            assert client.get(path, params=params).status_code == status, (path, params)
    after = client.get("/metrics").text
    for route, calls in requests.items():
        for status in {c[2] for c in calls}:
            expected = sum(1 for c in calls if c[2] == status)
            counted = _metric(after, "wideviews_query_requests_total", route=route, status=str(status)) - _metric(before, "wideviews_query_requests_total", route=route, status=str(status))
            assert counted == expected, (route, status)


# --- the Lambda handler, driven by API Gateway events ----------------------------------------------

EVENTS = Path(__file__).resolve().parent.parent / "events"


def _event(name: str, dataset_id: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text().replace("__DATASET__", dataset_id))


@pytest.fixture(scope="module")
def lambda_adapter(stack: Settings) -> Any:
    return adapter_for(stack)


def _invoke(adapter: Any, event: dict[str, Any]) -> dict[str, Any]:
    # Lambda's runtime is the one part that cannot run here: a context object with its request id.
    context = SimpleNamespace(aws_request_id="8f5b8c1e-0000-4000-8000-000000000001", function_name="wideviews-query")
    return handler(event, context, adapter=adapter)


def _body(result: dict[str, Any]) -> bytes:
    raw = base64.b64decode(result["body"]) if result["isBase64Encoded"] else result["body"].encode()
    return gzip.decompress(raw) if result["headers"].get("content-encoding") == "gzip" else raw


@pytest.mark.parametrize("name", ["rest_v1_aggregates_repeated_feature.json", "http_v2_aggregates_repeated_feature.json"])
def test_lambda_aggregates_from_rest_and_http_api_events(name: str, published: Published, client: httpx.Client, lambda_adapter: Any) -> None:
    result = _invoke(lambda_adapter, _event(name, published.dataset_id))
    assert result["statusCode"] == 200 and result["isBase64Encoded"] is False
    assert result["headers"]["content-type"] == "application/json"
    body = json.loads(result["body"])
    assert body["features"] == ["HLA-A,B", "CD3/CD28", "gene with spaces"]
    assert_aggregates_match(body, published.ref, "cell_type")
    params = [("grouping", "cell_type"), ("feature", "HLA-A,B"), ("feature", "CD3/CD28"), ("feature", "gene with spaces"), ("stats", "mean,frac_expressing,count")]
    assert client.get(f"/v1/datasets/{published.dataset_id}/aggregates", params=params).json() == body


@pytest.mark.parametrize(
    ("name", "feature", "encoding"),
    [
        ("rest_v1_values_arrow.json", "CD3/CD28", "arrow"),
        ("http_v2_values_unicode_gzip.json", "Ünïcødé-β", "gzip"),
        ("http_v2_values_literal_percent.json", "a%2Fb", "json"),
    ],
)
def test_lambda_feature_values_binary_and_encoded_names(name: str, feature: str, encoding: str, published: Published, lambda_adapter: Any) -> None:
    result = _invoke(lambda_adapter, _event(name, published.dataset_id))
    assert result["statusCode"] == 200, result["body"][:300]
    column = published.ref.matrix[feature].to_numpy()
    if encoding == "arrow":
        assert result["isBase64Encoded"] is True and result["headers"]["content-type"] == ARROW
        table = pa.ipc.open_stream(_body(result)).read_all()
        indices, values = table.column("index").to_pylist(), table.column("value").to_numpy().astype(np.float64)
    else:
        assert result["isBase64Encoded"] is (encoding == "gzip")
        assert result["headers"].get("content-encoding") == ("gzip" if encoding == "gzip" else None)
        body = json.loads(_body(result))
        assert body["feature"] == feature
        indices, values = body["indices"], np.array(body["values"])
    assert indices == np.flatnonzero(column).tolist()
    np.testing.assert_array_equal(values, column[column != 0])


def test_lambda_cells_as_arrow_and_one_cell_percent_encoded(published: Published, lambda_adapter: Any) -> None:
    meta = published.ref.metadata
    result = _invoke(lambda_adapter, _event("http_v2_cells_arrow.json", published.dataset_id))
    assert result["statusCode"] == 200 and result["isBase64Encoded"] is True
    table = pa.ipc.open_stream(_body(result)).read_all()
    ids = table.column("cell_id").to_pylist()
    assert sorted(ids) == sorted(meta.index) and "numeric" not in table.column_names
    np.testing.assert_array_equal(table.column("umap_1").to_numpy(), meta.loc[ids, "umap_1"].to_numpy())
    assert table.column("donor").to_pylist() == meta.loc[ids, "donor"].tolist()
    one = _invoke(lambda_adapter, _event("rest_v1_cell_percent_encoded.json", published.dataset_id))
    assert one["statusCode"] == 200 and json.loads(one["body"])["cell"] == ODD_CELL


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("rest_v1_post_base64_body.json", 405, "method not allowed"),
        ("http_v2_post_base64_body.json", 405, "method not allowed"),
        ("rest_v1_unknown_version.json", 404, "not found"),
    ],
)
def test_lambda_errors_are_json(name: str, status: int, error: str, published: Published, lambda_adapter: Any) -> None:
    result = _invoke(lambda_adapter, _event(name, published.dataset_id))
    assert result["statusCode"] == status and result["headers"]["content-type"] == "application/json"
    assert json.loads(result["body"])["error"] == error


def test_lambda_preflight_and_metrics_as_embedded_metric_lines(published: Published, lambda_adapter: Any, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    event = _event("http_v2_preflight.json", published.dataset_id)
    result = _invoke(lambda_adapter, event)
    assert result["statusCode"] == 200 and result["headers"]["access-control-allow-origin"] == "*"
    assert "GET" in result["headers"]["access-control-allow-methods"]
    agg = _event("rest_v1_aggregates_repeated_feature.json", published.dataset_id)
    assert _invoke(lambda_adapter, agg)["statusCode"] == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    for line, ev, status in [(lines[0], event, 200), (lines[1], agg, 200)]:
        spec = line["_aws"]["CloudWatchMetrics"][0]
        assert spec["Namespace"] == EMF_NAMESPACE and isinstance(line["_aws"]["Timestamp"], int)
        # EMF: every dimension and metric named in the directive is a top-level member of the line.
        assert all(k in line for dims in spec["Dimensions"] for k in dims)
        assert all(isinstance(line[m["Name"]], (int, float)) for m in spec["Metrics"])
        assert line["status"] == status and line["request_id"] == ev["requestContext"]["requestId"]
    assert lines[1]["route"] == "/v1/datasets/{dataset_id}/aggregates" and lines[1]["response_bytes"] > 0


# --- schemathesis over the generated OpenAPI schema -------------------------------------------------


def test_generated_requests_get_no_500_and_answers_that_fit_the_schema(stack: Settings, published: Published) -> None:
    """Every operation of /openapi.json, 25 generated requests each, on the live server.

    (schemathesis' own pytest loader needs a pytest internal that pytest 9 removed: the operations
    are driven here through their hypothesis strategies instead.)
    """
    schema = schemathesis.openapi.from_url(f"http://{stack.query_host}:{stack.query_port}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def answers_conform(case: Any) -> None:
            if case.path_parameters and "dataset_id" in case.path_parameters:
                case.path_parameters["dataset_id"] = published.dataset_id  # the published dataset: real answers, not only 404s
            case.call_and_validate(checks=checks)

        answers_conform()
