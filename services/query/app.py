"""The read API: one app behind both the local HTTP server and the API Gateway Lambda handler.

Each request resolves the dataset's current version once (from DynamoDB, cached for
`pointer_cache_s`) and reads every row from that version's tables, so a response never mixes two
versions, and names the version it was read from.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3
import numpy as np
from boto3.dynamodb.types import TypeDeserializer

from shared import layout
from shared.adapters.hbase import HBase, view_table
from shared.config import Settings
from shared.errors import BadRequest, NotFound, Transient, WideviewsError
from shared.messages import DATASET_ID_PATTERN, VERSION_ID_PATTERN
from shared.stats import STATS

_INT_STATS = {"count", "nnz"}
_de = TypeDeserializer()
MAX_FEATURE_NAME_BYTES = 1024


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


def _clean(values: np.ndarray, as_int: bool) -> list[Any]:
    """JSON-safe list: NaN -> null, counts as integers."""
    out: list[Any] = []
    for v in values.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(int(v) if as_int else v)
    return out


class PointerCache:
    """Dataset -> (current version, published_at), re-read from DynamoDB after `ttl_s`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._db = boto3.session.Session().client("dynamodb", **settings.aws_client_kwargs())
        self._ttl = settings.pointer_cache_s
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def get(self, dataset_id: str) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(dataset_id)
        if hit is None or now - hit[0] > self._ttl:
            try:
                resp = self._db.get_item(TableName=self._settings.datasets_table, Key={"dataset_id": {"S": dataset_id}})
            except Exception as exc:
                raise Transient(f"pointer lookup failed: {type(exc).__name__}") from exc
            item = {k: _de.deserialize(v) for k, v in resp["Item"].items()} if "Item" in resp else None
            hit = (now, item)
            with self._lock:
                self._cache[dataset_id] = hit
        if hit[1] is None or not hit[1].get("current_version"):
            raise NotFound(f"dataset {dataset_id!r} not found")
        return hit[1]

    def list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self._settings.datasets_table}
        while True:
            resp = self._db.scan(**kwargs)
            items += [{k: _de.deserialize(v) for k, v in i.items()} for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return sorted(items, key=lambda i: i["dataset_id"])
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


class QueryApp:
    """Routes and reads; `handle` is what both the HTTP server and the Lambda handler call."""

    def __init__(self, settings: Settings, hbase: HBase | None = None) -> None:
        self.settings = settings
        self.hbase = hbase or HBase(settings)
        self.pointers = PointerCache(settings)
        self._meta: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._meta_lock = threading.Lock()

    # --- plumbing --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]]) -> Response:
        """Dispatch one request; errors become JSON with a message and the right status."""
        try:
            if method not in ("GET", "HEAD"):
                return Response(405, {"error": "method not allowed", "message": f"{method} is not supported"})
            return self._route(unquote(path) if "%" in path else path, query)
        except BadRequest as exc:
            return Response(400, {"error": "bad request", "message": str(exc)})
        except NotFound as exc:
            return Response(404, {"error": "not found", "message": str(exc)})
        except Transient as exc:
            return Response(503, {"error": "unavailable", "message": str(exc)}, {"Retry-After": "1"})
        except WideviewsError as exc:
            return Response(500, {"error": "internal", "message": str(exc)})

    def _route(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [p for p in path.split("/") if p]
        if parts == ["healthz"]:
            return Response(200, {"status": "ok"})
        if parts[:2] != ["v1", "datasets"]:
            raise NotFound(f"no route for {path}")
        if len(parts) == 2:
            return Response(200, self.list_datasets())
        dataset_id = parts[2]
        if not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
            raise BadRequest(f"invalid dataset id {dataset_id[:80]!r}: must match {DATASET_ID_PATTERN}")
        if len(parts) == 3:
            return Response(200, self.describe(dataset_id, query))
        if len(parts) == 4 and parts[3] == "aggregates":
            return Response(200, self.aggregates(dataset_id, query))
        if len(parts) == 6 and parts[3] == "features" and parts[5] == "values":
            return Response(200, self.feature_values(dataset_id, parts[4], query))
        if len(parts) == 5 and parts[3] == "cells":
            return Response(200, self.cell(dataset_id, parts[4], query))
        raise NotFound(f"no route for {path}")

    def _version(self, dataset_id: str, query: dict[str, list[str]]) -> str:
        """The version a request reads: the current one, or `?version=` if given (still present)."""
        pinned = _one(query, "version")
        pointer = self.pointers.get(dataset_id)
        if pinned is None:
            return str(pointer["current_version"])
        if not re.fullmatch(VERSION_ID_PATTERN, pinned):
            raise BadRequest("version must be 32 hex digits")
        return pinned

    def _meta_of(self, dataset_id: str, version_id: str) -> dict[str, Any]:
        """The version's catalog `meta` document (immutable per version: cached, LRU of 256)."""
        key = (dataset_id, version_id)
        with self._meta_lock:
            if key in self._meta:
                self._meta.move_to_end(key)
                return self._meta[key]
        table = view_table(self.settings, dataset_id, version_id, "catalog")
        if table not in self.hbase.list_tables():
            raise NotFound(f"version {version_id} of dataset {dataset_id!r} is not available")
        row = self.hbase.row(table, b"meta")
        if not row:
            raise NotFound(f"version {version_id} of dataset {dataset_id!r} has no catalog")
        meta = layout.decode_json(row[b"m:doc"])
        with self._meta_lock:
            self._meta[key] = meta
            while len(self._meta) > 256:
                self._meta.popitem(last=False)
        return meta

    # --- endpoints -------------------------------------------------------------------------------

    def list_datasets(self) -> dict[str, Any]:
        out = []
        for item in self.pointers.list():
            version = item.get("current_version")
            if not version:
                continue
            entry: dict[str, Any] = {
                "dataset": item["dataset_id"],
                "version": version,
                "published_at": item.get("published_at"),
                "previous_version": item.get("previous_version"),
            }
            try:
                meta = self._meta_of(item["dataset_id"], version)
                entry.update(n_cells=meta["n_cells"], n_features=meta["n_features"], title=meta.get("title", ""))
            except NotFound:
                entry.update(n_cells=None, n_features=None)
            out.append(entry)
        return {"datasets": out}

    def describe(self, dataset_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        version = self._version(dataset_id, query)
        meta = self._meta_of(dataset_id, version)
        return {
            "dataset": dataset_id,
            "version": version,
            "title": meta.get("title", ""),
            "description": meta.get("description", ""),
            "n_cells": meta["n_cells"],
            "n_features": meta["n_features"],
            "groupings": {
                g["name"]: [{"name": n, "count": c} for n, c in zip(g["groups"], g["counts"])] for g in meta["groupings"]
            },
            "embedding": meta.get("embedding"),
            "stats": list(STATS),
        }

    def aggregates(self, dataset_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        version = self._version(dataset_id, query)
        meta = self._meta_of(dataset_id, version)
        grouping_name = _one(query, "grouping")
        groupings = {g["name"]: g for g in meta["groupings"]}
        if grouping_name is None:
            if len(groupings) != 1:
                raise BadRequest(f"grouping is required (one of {sorted(groupings)})")
            grouping_name = next(iter(groupings))
        if grouping_name not in groupings:
            raise NotFound(f"grouping {grouping_name!r} not in dataset {dataset_id!r} (groupings: {sorted(groupings)})")
        grouping = groupings[grouping_name]
        features = _list_param(query, "features")
        if not features:
            raise BadRequest("features is required: a comma-separated list of feature names")
        if len(features) > self.settings.max_features_per_request:
            raise BadRequest(f"at most {self.settings.max_features_per_request} features per request, got {len(features)}")
        for f in features:
            if len(f.encode()) > MAX_FEATURE_NAME_BYTES or re.search(r"[\x00-\x1f\x7f]", f):
                raise BadRequest(f"invalid feature name {f[:80]!r}")
        stats = _list_param(query, "stats") or list(STATS)
        unknown = [s for s in stats if s not in STATS]
        if unknown:
            raise BadRequest(f"unknown stats {unknown}; known: {list(STATS)}")
        table = view_table(self.settings, dataset_id, version, grouping["view"])
        unique = list(dict.fromkeys(features))
        rows = self.hbase.rows(table, [f.encode() for f in unique], columns=[b"s:" + s.encode() for s in stats])
        missing = [f for f in unique if f.encode() not in rows]
        if missing:
            raise NotFound(f"features not in dataset {dataset_id!r}: {missing[:20]}")
        out = {
            s: [_clean(layout.decode_stats_vector(rows[f.encode()][b"s:" + s.encode()]), s in _INT_STATS) for f in features]
            for s in stats
        }
        return {
            "dataset": dataset_id,
            "version": version,
            "grouping": grouping_name,
            "groups": grouping["groups"],
            "features": features,
            "stats": out,
        }

    def feature_values(self, dataset_id: str, feature: str, query: dict[str, list[str]]) -> dict[str, Any]:
        version = self._version(dataset_id, query)
        meta = self._meta_of(dataset_id, version)
        if len(feature.encode()) > MAX_FEATURE_NAME_BYTES or re.search(r"[\x00-\x1f\x7f]", feature):
            raise BadRequest(f"invalid feature name {feature[:80]!r}")
        table = view_table(self.settings, dataset_id, version, "features")
        prefix = feature.encode() + layout.PART_SEPARATOR
        parts = self.hbase.scan(table, row_start=prefix, row_stop=feature.encode() + b"\x01")
        if not parts:
            raise NotFound(f"feature {feature!r} not in dataset {dataset_id!r}")
        indices: list[int] = []
        values: list[float] = []
        for _, data in parts:
            idx, vals = layout.decode_feature_part(data[b"f:v"])
            indices += idx.tolist()
            values += vals.astype(np.float64).tolist()
        return {"dataset": dataset_id, "version": version, "feature": feature, "n_cells": meta["n_cells"], "indices": indices, "values": values}

    def cell(self, dataset_id: str, cell_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        version = self._version(dataset_id, query)
        table = view_table(self.settings, dataset_id, version, "cells")
        row = self.hbase.row(table, cell_id.encode())
        if not row:
            raise NotFound(f"cell {cell_id!r} not in dataset {dataset_id!r}")
        out: dict[str, Any] = {"dataset": dataset_id, "version": version, "cell": cell_id, "metadata": {}, "embedding": {}, "numeric": {}}
        for column, value in row.items():
            qualifier = column.partition(b":")[2].decode()
            kind, _, name = qualifier.partition(":")
            if qualifier == "pos":
                out["position"] = layout.decode_int(value)
            elif kind == "g":
                out["metadata"][name] = layout.decode_text(value)
            elif kind == "e":
                out["embedding"][name] = layout.decode_vector(value).tolist()
            elif kind == "n":
                out["numeric"][name] = float(layout.decode_vector(value)[0])
        return out


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _list_param(query: dict[str, list[str]], name: str) -> list[str]:
    """A list parameter: comma-separated and/or repeated (`features=a,b&features=c`)."""
    out: list[str] = []
    for value in query.get(name, []):
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def parse_query(raw: str) -> dict[str, list[str]]:
    return parse_qs(raw, keep_blank_values=False)
