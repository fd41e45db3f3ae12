"""A Python client of the wideviews read API, for notebooks and scripts.

    from wideviews.client import Client
    wv = Client("http://127.0.0.1:8080")
    wv.datasets()                                           # DataFrame, one row per published dataset
    wv.features("demo", "GENE0001")                         # feature names by prefix
    wv.aggregates("demo", ["GENE00002", "GENE00026"], "cell_type", ["mean", "frac_expressing"])
    wv.values("demo", "GENE00002")                          # numpy array over the cells, in matrix order
    wv.embedding("demo")                                    # DataFrame: cells with their groups and coordinates
    wv.distributions("demo", "GENE00002", "cell_type")      # violin/box data per group
    wv.markers("demo", "cell_type", "Astrocyte")            # the group's marker genes, best first
    wv.to_anndata("demo", genes, "cell_type")               # AnnData: groups x features, stats as layers

It uses only the public HTTP API (the one the explorer page uses) and imports none of the server's
packages: the standard library's urllib, numpy, pandas and pyarrow (Arrow pages); scipy for sparse
answers and anndata for `to_anndata`, each only when asked. A 503 (or 429) is retried after its
`Retry-After`; any other error answer raises `ApiError` with the server's message. Paged answers
(feature values, cells, feature lists) are followed to the end, pinned to the version of the first
page, so one call never mixes two versions; aggregates of many features are asked in batches that
fit the server's limits.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc

ARROW_STREAM = "application/vnd.apache.arrow.stream"
INTEGER_STATS = ("count", "nnz")
# The server refuses more features per aggregates request than this (max_features_per_request), and
# any answer over about 4.2 MB: batches stay under both with room for the JSON's text.
MAX_FEATURES_PER_REQUEST = 1000
MAX_ANSWER_VALUES = 150_000
ALL_STATS = ("count", "nnz", "sum", "mean", "var", "min", "max", "median", "q1", "q3", "frac_expressing", "mean_expressing")


class ApiError(Exception):
    """An error answer of the read API: HTTP status, error kind and the server's message."""

    def __init__(self, status: int, kind: str, message: str, url: str) -> None:
        super().__init__(f"{status} {kind}: {message} ({url})")
        self.status = status
        self.kind = kind
        self.message = message
        self.url = url


def _retry_after_s(value: str | None, attempt: int) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); else exponential backoff."""
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return min(2.0**attempt, 30.0)


def _features_list(features: str | Sequence[str]) -> list[str]:
    names = [features] if isinstance(features, str) else list(features)
    if not names:
        raise ValueError("features: give at least one feature name")
    return names


def _grouped_params(grouping: str | None, by: str | None, groups: Sequence[str] | None, version: str | None) -> list[tuple[str, str]]:
    """The query parameters choosing a grouping (crossed with `by`), some of its groups and a version."""
    params = [(k, v) for k, v in (("grouping", grouping), ("by", by), ("version", version)) if v is not None]
    return params + [("group", g) for g in groups or []]


def _feature_batches(names: list[str], size: int) -> Iterator[list[tuple[str, str]]]:
    """`feature=` parameters of at most `size` names a request."""
    for start in range(0, len(names), size):
        yield [("feature", n) for n in names[start : start + size]]


class Client:
    """A wideviews query server at `url` (e.g. `http://127.0.0.1:8080`)."""

    def __init__(self, url: str, *, timeout_s: float = 60.0, max_retries: int = 5, max_retry_wait_s: float = 60.0) -> None:
        """`max_retries` 503/429 answers are waited out (each after its Retry-After, capped at `max_retry_wait_s`)."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self._described: dict[tuple[str, str | None], dict[str, Any]] = {}

    # --- transport -----------------------------------------------------------------------------

    def _address(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        query = urllib.parse.urlencode([(k, v) for k, v in params if v is not None])
        return self.url + path + ("?" + query if query else "")

    def get(self, path: str, params: Sequence[tuple[str, str]] = (), *, accept: str = "application/json") -> tuple[bytes, dict[str, str]]:
        """GET `path` (already percent-encoded) with query `params`: the body and the headers; `ApiError` on an error answer."""
        address = self._address(path, params)
        request = urllib.request.Request(address, headers={"Accept": accept, "Accept-Encoding": "gzip", "User-Agent": "wideviews-client/1"})
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    body = answer.read()
                    headers = {k.lower(): v for k, v in answer.headers.items()}
            except urllib.error.HTTPError as exc:
                body = exc.read() or b""
                if (exc.headers.get("Content-Encoding") or "") == "gzip":
                    body = gzip.decompress(body)
                if exc.code in (429, 503) and attempt < self.max_retries:
                    time.sleep(min(_retry_after_s(exc.headers.get("Retry-After"), attempt), self.max_retry_wait_s))
                    attempt += 1
                    continue
                try:
                    error = json.loads(body)
                    kind, message = str(error.get("error", "")), str(error.get("message", ""))
                except (ValueError, AttributeError):
                    kind, message = "http error", body[:300].decode("utf-8", "replace")
                raise ApiError(exc.code, kind, message, address) from None
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            return body, headers

    def get_json(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """GET a JSON answer, decoded."""
        body, _ = self.get(path, params)
        return json.loads(body)

    def _arrow_pages(self, path: str, params: Sequence[tuple[str, str]]) -> Iterator[tuple[pa.Table, dict[str, str]]]:
        """Every page of an Arrow listing, following `next_cursor` (which pins the first page's version)."""
        cursor: str | None = None
        while True:
            body, _ = self.get(path, [*params, *([("cursor", cursor)] if cursor else [])], accept=ARROW_STREAM)
            table = pa.ipc.open_stream(body).read_all()
            metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            yield table, metadata
            cursor = metadata.get("next_cursor") or None
            if cursor is None:
                return

    @staticmethod
    def _path(*parts: str) -> str:
        return "/v1/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)

    # --- datasets and features -----------------------------------------------------------------

    def datasets(self) -> pd.DataFrame:
        """The published datasets: one row each (dataset, version, published_at, n_cells, n_features, title)."""
        listing = self.get_json("/v1/datasets")["datasets"]
        columns = ["dataset", "version", "published_at", "previous_version", "n_cells", "n_features", "title"]
        return pd.DataFrame(listing, columns=columns)

    def dataset(self, dataset: str, *, version: str | None = None) -> dict[str, Any]:
        """A dataset's description: groupings with their groups and sizes, embedding, counts, version."""
        key = (dataset, version)
        if version is None or key not in self._described:
            described = self.get_json(self._path("datasets", dataset), [("version", version)] if version else [])
            self._described[key] = described
        return self._described[key]

    def groupings(self, dataset: str, *, version: str | None = None) -> dict[str, pd.Series]:
        """Each grouping's groups (index) and their cell counts, in the server's order."""
        described = self.dataset(dataset, version=version)
        return {
            name: pd.Series([g["count"] for g in groups], index=[g["name"] for g in groups], name="cells", dtype=np.int64)
            for name, groups in described["groupings"].items()
        }

    def features(
        self, dataset: str, prefix: str | None = None, *, limit: int | None = None, with_symbols: bool = False, version: str | None = None
    ) -> Any:
        """Feature names whose name or display symbol starts with `prefix` (any case, exact match first),
        or all in matrix order; at most `limit`. `with_symbols=True`: a DataFrame (feature, symbol),
        the symbols of an h5ad's var column (None where a feature has none)."""
        names: list[str] = []
        symbols: list[str | None] = []
        cursor: str | None = None
        page = min(limit, 10_000) if limit else 10_000
        while True:
            params = [("prefix", prefix), ("limit", str(page)), ("version", version), ("cursor", cursor)]
            body = self.get_json(self._path("datasets", dataset, "features"), [(k, v) for k, v in params if v is not None])
            names += body["features"]
            symbols += body.get("symbols") or [None] * len(body["features"])
            cursor = body["next_cursor"]
            if cursor is None or (limit is not None and len(names) >= limit):
                break
        names, symbols = (names[:limit], symbols[:limit]) if limit is not None else (names, symbols)
        if with_symbols:
            return pd.DataFrame({"feature": names, "symbol": symbols})
        return names

    # --- per-group statistics ------------------------------------------------------------------

    def aggregates(
        self,
        dataset: str,
        features: str | Sequence[str],
        grouping: str | None = None,
        stats: str | Sequence[str] | None = None,
        *,
        groups: Sequence[str] | None = None,
        by: str | None = None,
        wide: bool = False,
        version: str | None = None,
    ) -> pd.DataFrame:
        """Per-group statistics of `features`: tidy (one row per feature and group: feature, group, cells, stats),
        or `wide=True` (index feature, columns (stat, group)). Undefined values are NaN. `by`: the crossed
        grouping (grouping x by) the manifest asked for; its groups are "<group> | <by group>", and the
        tidy table has the two parts as columns named after the groupings."""
        names = _features_list(features)
        wanted = [stats] if isinstance(stats, str) else list(stats or ALL_STATS)
        if version is None:
            # One version for every batch.
            version = self.dataset(dataset)["version"]
        described = self.dataset(dataset, version=version)
        if grouping is None and len(described["groupings"]) == 1:
            grouping = next(iter(described["groupings"]))
        n_groups = len(groups) if groups else max((len(g) for g in described["groupings"].values()), default=1)
        if by is not None and not groups:
            n_groups *= max(1, len(described["groupings"].get(by, [])))
        batch = max(1, min(MAX_FEATURES_PER_REQUEST, MAX_ANSWER_VALUES // max(1, len(wanted) * n_groups)))
        frames = []
        for features_params in _feature_batches(names, batch):
            params = features_params + [("stats", ",".join(wanted))] + _grouped_params(grouping, by, groups, version)
            frames.append(self._tidy_aggregates(self.get_json(self._path("datasets", dataset, "aggregates"), params)))
        tidy = pd.concat(frames, ignore_index=True)
        if not wide:
            return tidy
        table = tidy.pivot(index="feature", columns="group", values=list(wanted))
        group_order = list(dict.fromkeys(tidy["group"]))
        table = table.reindex(index=list(dict.fromkeys(tidy["feature"])), columns=pd.MultiIndex.from_product([wanted, group_order], names=["stat", "group"]))
        return table

    @staticmethod
    def _tidy_aggregates(body: dict[str, Any]) -> pd.DataFrame:
        features, group_names = body["features"], body["groups"]
        n_f, n_g = len(features), len(group_names)
        out: dict[str, Any] = {
            "feature": np.repeat(np.array(features, dtype=object), n_g),
            "group": np.tile(np.array(group_names, dtype=object), n_f),
            "cells": np.tile(np.array(body["group_counts"], dtype=np.int64), n_f),
        }
        for stat, rows in body["stats"].items():
            values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64).reshape(n_f * n_g)
            out[stat] = values.astype(np.int64) if stat in INTEGER_STATS else values
        frame = pd.DataFrame(out)
        if body.get("by") and body.get("group_pairs"):
            pairs = body["group_pairs"]
            frame.insert(2, body["grouping"], np.tile(np.array([p[0] for p in pairs], dtype=object), n_f))
            frame.insert(3, body["by"], np.tile(np.array([p[1] for p in pairs], dtype=object), n_f))
        frame.attrs.update(dataset=body["dataset"], version=body["version"], grouping=body["grouping"], by=body.get("by"))
        return frame

    def distributions(
        self, dataset: str, features: str | Sequence[str], grouping: str | None = None, *, groups: Sequence[str] | None = None, by: str | None = None, version: str | None = None
    ) -> pd.DataFrame:
        """Violin and box data per (feature, group), one row each: cells, zeros, the box (min, q1, median,
        q3, max, mean, whisker_low, whisker_high, outliers_low, outliers_high), `hist` (counts of the
        non-zero values in 32 bins) and `edges` (the feature's 33 bin edges, shared by its groups)."""
        names = _features_list(features)
        frames = []
        for features_params in _feature_batches(names, 200):  # the server's limit per request
            body = self.get_json(self._path("datasets", dataset, "distributions"), features_params + _grouped_params(grouping, by, groups, version))
            version = body["version"]
            per_group = ("zeros", "whisker_low", "whisker_high", "outliers_low", "outliers_high", "min", "q1", "median", "q3", "max", "mean")
            rows = []
            for entry in body["features"]:
                edges = np.array(entry["edges"], dtype=np.float64)
                for g, group in enumerate(body["groups"]):
                    row: dict[str, Any] = {"feature": entry["feature"], "group": group, "cells": body["group_counts"][g]}
                    row.update({k: np.nan if entry[k][g] is None else entry[k][g] for k in per_group})
                    row["hist"] = np.array(entry["hist"][g], dtype=np.int64)
                    row["edges"] = edges
                    rows.append(row)
            frames.append(pd.DataFrame(rows))
        table = pd.concat(frames, ignore_index=True)
        for column in ("zeros", "outliers_low", "outliers_high"):
            table[column] = table[column].astype(np.int64)
        return table

    def markers(
        self, dataset: str, grouping: str | None = None, group: str | Sequence[str] | None = None, *, n: int | None = None, by: str | None = None, version: str | None = None
    ) -> pd.DataFrame:
        """Each group's marker features, best first: group, rank, feature, score (one-vs-rest Welch t),
        log2fc, mean_in, mean_out, frac_in, frac_out. Every group without `group`; `n` per group (the
        server's default without it, at most the version's stored number)."""
        params = _grouped_params(grouping, by, [group] if isinstance(group, str) else group, version)
        if n is not None:
            params.append(("n", str(n)))
        body = self.get_json(self._path("datasets", dataset, "markers"), params)
        rows = [{"group": g["group"], "rank": rank, **m} for g in body["groups"] for rank, m in enumerate(g["markers"], start=1)]
        columns = ["group", "rank", "feature", "score", "log2fc", "mean_in", "mean_out", "frac_in", "frac_out"]
        return pd.DataFrame(rows, columns=columns)

    # --- cells and values ----------------------------------------------------------------------

    def values(
        self, dataset: str, features: str | Sequence[str], *, sparse: bool = False, version: str | None = None, page_size: int | None = None
    ) -> Any:
        """A feature's values over every cell, in matrix order (row positions of matrix.csv).

        One name: a 1-D numpy array of n_cells. A list: a 2-D array (cells x features). `sparse=True`:
        a scipy.sparse CSC matrix (cells x features) built from the stored non-zeros. The dtype is the
        stored one (float32 for count matrices, else float64). `page_size`: non-zeros per request
        (the server's default, 300,000, when not given)."""
        names = _features_list(features)
        columns: list[tuple[np.ndarray, np.ndarray]] = []
        n_cells = 0
        dtype: np.dtype = np.dtype(np.float32)
        for name in names:
            indices, values = [], []
            params = [("version", version)] if version else []
            params += [("limit", str(page_size))] if page_size else []
            for table, metadata in self._arrow_pages(self._path("datasets", dataset, "features", name, "values"), params):
                indices.append(table.column("index").to_numpy())
                values.append(table.column("value").to_numpy())
                n_cells = int(metadata["n_cells"])
                # Every other feature (and page) from the first one's version.
                version = metadata["version"]
            column_values = np.concatenate(values) if values else np.zeros(0)
            dtype = np.result_type(dtype, column_values.dtype)
            columns.append((np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64), column_values))
        if sparse:
            import scipy.sparse

            indptr = np.cumsum([0] + [len(i) for i, _ in columns])
            data = np.concatenate([v for _, v in columns]).astype(dtype)
            rows = np.concatenate([i for i, _ in columns])
            return scipy.sparse.csc_matrix((data, rows, indptr), shape=(n_cells, len(names)))
        dense = np.zeros((n_cells, len(names)), dtype=dtype)
        for j, (rows, column_values) in enumerate(columns):
            dense[rows, j] = column_values
        return dense[:, 0] if isinstance(features, str) else dense

    def cells(
        self, dataset: str, *, include: Sequence[str] = ("metadata", "embedding", "numeric"), version: str | None = None, page_size: int | None = None
    ) -> pd.DataFrame:
        """Every cell, in matrix order (column `position`), index cell id: groupings as categoricals, the
        embedding's coordinates and the numeric columns (nulls as NaN), as `include` asks; `page_size`
        cells per request (the server's default, 100,000, when not given)."""
        params = [("include", ",".join(include))] + ([("version", version)] if version else [])
        params += [("limit", str(page_size))] if page_size else []
        return self._cell_frame(self._path("datasets", dataset, "cells"), params)

    def _cell_frame(self, path: str, params: Sequence[tuple[str, str]]) -> pd.DataFrame:
        """Arrow pages of cells as one DataFrame indexed by cell id, in position order, groupings categorical."""
        frames, groupings = [], set()
        for table, _ in self._arrow_pages(path, params):
            # Each page encodes its groupings with a dictionary of its own (or as plain text): decode per page.
            groupings |= {f.name for f in table.schema if pa.types.is_dictionary(f.type) or (pa.types.is_string(f.type) and f.name != "cell_id")}
            frames.append(table.to_pandas())
        if not frames:
            return pd.DataFrame(columns=["position"])
        frame = pd.concat([f.astype({g: object for g in groupings if g in f}) for f in frames], ignore_index=True)
        for g in groupings:
            frame[g] = frame[g].astype("category")
        frame = frame.set_index("cell_id").sort_values("position")
        frame.index.name = "cell_id"
        return frame

    def embedding(self, dataset: str, *, sample: bool = False, version: str | None = None, page_size: int | None = None) -> pd.DataFrame:
        """The cells' embedding coordinates (e.g. umap_1, umap_2) and groupings, in matrix order; index cell id.
        `sample=True`: only the density-aware sample (at most 50,000 cells by default), with each point's
        `weight` (the cells it stands for)."""
        if not sample:
            return self.cells(dataset, include=("metadata", "embedding"), version=version, page_size=page_size)
        params = ([("version", version)] if version else []) + ([("limit", str(page_size))] if page_size else [])
        return self._cell_frame(self._path("datasets", dataset, "embedding", "sample"), params)

    # --- AnnData -------------------------------------------------------------------------------

    def to_anndata(
        self,
        dataset: str,
        features: str | Sequence[str],
        grouping: str | None = None,
        stats: Sequence[str] | None = None,
        *,
        groups: Sequence[str] | None = None,
        by: str | None = None,
        version: str | None = None,
    ) -> Any:
        """The aggregated table as AnnData: groups as obs (with `cells`), features as var, each stat a layer,
        X the mean (or the first stat asked). Needs the `anndata` package."""
        import anndata

        wanted = list(stats or ALL_STATS)
        tidy = self.aggregates(dataset, features, grouping, wanted, groups=groups, by=by, version=version)
        group_order = list(dict.fromkeys(tidy["group"]))
        feature_order = list(dict.fromkeys(tidy["feature"]))
        layers = {
            stat: tidy.pivot(index="group", columns="feature", values=stat).reindex(index=group_order, columns=feature_order).to_numpy(dtype=np.float64)
            for stat in wanted
        }
        obs = pd.DataFrame({"cells": tidy.drop_duplicates("group").set_index("group")["cells"].reindex(group_order).to_numpy()}, index=pd.Index(group_order, name="group"))
        var = pd.DataFrame(index=pd.Index(feature_order, name="feature"))
        x_stat = "mean" if "mean" in layers else wanted[0]
        adata = anndata.AnnData(X=layers[x_stat].copy(), obs=obs, var=var, layers=layers)
        adata.uns["wideviews"] = {"dataset": dataset, "version": tidy.attrs.get("version", ""), "grouping": tidy.attrs.get("grouping", ""), "X": x_stat}
        return adata
