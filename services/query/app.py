"""The read API: one FastAPI app behind the local server (uvicorn) and the Lambda handler (Mangum).

Each request resolves the version it reads once, before reading anything: the dataset's current
version (the DynamoDB pointer, cached for `pointer_cache_s`), or the version it pins with
`?version=` or a page cursor, which must have reached PUBLISHED and still be present
(`pointers.Pointers.require_readable`). Every row of the answer comes from that version's tables,
and the answer names it. The version and the request make the strong ETag, so a conditional request
(`If-None-Match`) is answered 304 without touching HBase; version-pinned answers never change and
are cacheable for a year (`immutable`), unpinned ones for `pointer_cache_s`.

Routes, parameters and response models are declared here; /openapi.json and /docs are generated
from them. Errors are `{"error", "message"}` with 400 (bad parameter), 404 (unknown dataset, version,
grouping, group, feature, cell or route), 503 with `Retry-After` (DynamoDB or HBase unreachable) and
500 (anything unexpected, logged with the request id).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.query.conventions import EXPOSED_HEADERS, GZIP_SUFFIX, Conventions
from services.query.memory_only import answer
from services.query.encode import as_int_list, decode_cursor, encode_arrow, encode_csv, encode_cursor, encode_json, fit_page
from services.query.metrics import PROMETHEUS_CONTENT_TYPE, EmbeddedMetrics, PrometheusMetrics, RequestMetrics
from services.query.models import (
    ARROW_STREAM,
    CSV,
    Aggregates,
    Cell,
    CellsPage,
    DatasetInfo,
    DatasetList,
    ErrorBody,
    FeatureList,
    FeatureValues,
    Health,
    VersionList,
)
from services.query.pointers import READABLE_STATES, Pointers
from services.query.reads import Catalog, Lru, VersionReader
from services.query.views_api import ByQuery, crossed_groupings, group_pairs, resolve_grouping
from services.query.views_api import router as views_router
from shared.config import Settings
from shared.errors import BadRequest, NotFound, Transient
from shared.messages import DATASET_ID_PATTERN, VERSION_ID_PATTERN
from shared.stats import STATS

MAX_FEATURE_NAME_BYTES = 1024
# Lambda's response limit is 6 MB, and API Gateway base64-encodes binary bodies (4/3): no body of the
# API exceeds this, on any path; longer answers page.
MAX_RESPONSE_BYTES = 4_200_000
IMMUTABLE = "public, max-age=31536000, immutable"
_INT_STATS = frozenset({"count", "nnz"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What ingest accepts as a feature name or cell id (the byte limit is checked in code).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,1024}$"
_ERROR_KINDS = {400: "bad request", 404: "not found", 405: "method not allowed", 503: "unavailable"}

DatasetIdPath = Annotated[str, Path(pattern=DATASET_ID_PATTERN, description="dataset id")]
VersionQuery = Annotated[
    str | None,
    Query(pattern=VERSION_ID_PATTERN, description="read this published version (32 hex digits) instead of the current one"),
]
CursorQuery = Annotated[str | None, Query(max_length=4096, description="the next_cursor of the previous page")]
FormatQuery = Annotated[
    Literal["json", "arrow"] | None,
    Query(description=f"`arrow` for an Arrow IPC stream (same as `Accept: {ARROW_STREAM}`)"),
]


class NotModified(Exception):
    """The client's cached copy is current (If-None-Match matched): answered 304."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("not modified")
        self.headers = headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = _ERROR_KINDS.get(status, "internal")
    return Response(
        encode_json({"error": kind, "message": message}),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


_ANSWERED_EXCEPTIONS = (BadRequest, NotFound, Transient, NotModified)


def _exception_response(exc: Exception) -> Response:
    """The answer to one of `_ANSWERED_EXCEPTIONS`."""
    if isinstance(exc, BadRequest):
        return _error(400, str(exc))
    if isinstance(exc, NotFound):
        return _error(404, str(exc))
    if isinstance(exc, Transient):
        return _error(503, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after_s or 1)))})
    if isinstance(exc, NotModified):
        return Response(status_code=304, headers=exc.headers)
    raise TypeError(f"no answer for {type(exc).__name__}")


HotHandler = Callable[..., Awaitable[Response]]
_HOT_PATHS = {
    "aggregates": re.compile(r"/v1/datasets/([^/]+)/aggregates"),
    "list_features": re.compile(r"/v1/datasets/([^/]+)/features"),
    "feature_values": re.compile(r"/v1/datasets/([^/]+)/features/(.+)/values"),
}


class HotRoutes:
    """Answers the hottest GET routes (aggregates: a dot plot; the feature search; a feature's values) straight from the ASGI scope, past FastAPI's
    router, dependency solving and exception middleware (a third of a cached dot plot's CPU). It calls
    the very handler the FastAPI route calls, which keeps the OpenAPI schema and answers whatever does
    not match here (an invalid dataset id, for one). Sits inside `Conventions`: same headers, gzip,
    request id and metrics as every other answer."""

    def __init__(self, app: ASGIApp, handlers: dict[str, HotHandler]) -> None:
        self.app = app
        self.handlers = handlers
        self._routes: dict[str, Any] = {}

    def _route(self, name: str, scope: Scope) -> Any:
        # The FastAPI route of the same path, for the metrics' route template.
        if name not in self._routes:
            app = scope.get("app")
            self._routes[name] = next((r for r in getattr(app, "routes", []) if getattr(r, "name", "") == name), None)
        return self._routes[name]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            for name, pattern in _HOT_PATHS.items():
                match = pattern.fullmatch(scope["path"])
                if match and name in self.handlers and re.fullmatch(DATASET_ID_PATTERN, match.group(1)):
                    route = self._route(name, scope)
                    if route is not None:
                        scope["route"] = route
                    try:
                        response = await self.handlers[name](Request(scope, receive), *match.groups())
                    except _ANSWERED_EXCEPTIONS as exc:
                        response = _exception_response(exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {400: "bad parameter", 404: "unknown dataset, version, grouping, feature or cell", 503: "DynamoDB or HBase unreachable (Retry-After)"}
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody, "description": descriptions[s]} for s in statuses}
    out[500] = {"model": ErrorBody, "description": "unexpected error (logged with the request id)"}
    out[304] = {"description": "not modified (If-None-Match matched the ETag)"}
    return out


def _json_or_arrow(model: type, arrow_description: str) -> dict[str, Any]:
    """Route options of an answer as JSON (`model`) or as an Arrow stream (`format=arrow`)."""
    arrow = {"model": model, "content": {ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}}, "description": arrow_description}
    return {"response_model": model, "responses": {200: arrow}}


def _check_name(name: str, what: str = "feature name") -> str:
    """A feature name or cell id as ingest accepts them; `BadRequest` otherwise."""
    try:
        size = len(name.encode())
    except UnicodeEncodeError as exc:
        raise BadRequest(f"invalid {what} {name[:80]!r}: not UTF-8") from exc
    if not name or size > MAX_FEATURE_NAME_BYTES or _CONTROL.search(name):
        raise BadRequest(f"invalid {what} {name[:80]!r}: 1 to {MAX_FEATURE_NAME_BYTES} bytes of UTF-8 without control characters")
    return name


def _split(values: list[str]) -> list[str]:
    """The comma form of a list parameter: `a,b&x=c` -> [a, b, c] (blanks dropped)."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _names_in_order(request: Request, comma_form: str, verbatim: str) -> list[str]:
    """A list given as `comma_form=a,b` and/or `verbatim=c` (commas kept), in the query string's order."""
    out: list[str] = []
    for key, value in request.query_params.multi_items():
        if key == comma_form:
            out += _split([value])
        elif key == verbatim and value:
            out.append(value)
    return out


def _choice(query: Any, name: str, allowed: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of `allowed` (None when absent); `BadRequest` otherwise."""
    value = query.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name}: must be one of {list(allowed)}, not {value[:80]!r}")
    return value


def _int_param(query: Any, name: str, low: int, high: int) -> int | None:
    """An integer query parameter within [low, high] (None when absent); `BadRequest` otherwise."""
    value = query.get(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name}: not an integer: {value[:80]!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name}: must be from {low} to {high}, not {number}")
    return number


def _version_param(query: Any) -> str | None:
    """`?version=`: a published version's id (32 hex digits), or None."""
    version = query.get("version")
    if version is not None and not re.fullmatch(VERSION_ID_PATTERN, version):
        raise BadRequest("version must be 32 hex digits (a published version id)")
    return version


def features_query(
    prefix: Annotated[str | None, Query(max_length=MAX_FEATURE_NAME_BYTES, description="case-insensitive prefix of a name or display symbol; exact matches first")] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description="features per page (default 20 with a prefix, 1000 without)")] = None,
    cursor: CursorQuery = None,
    version: VersionQuery = None,
) -> None:
    """The feature listing's query parameters as its OpenAPI schema shows them (the route parses them itself)."""


def values_query(
    limit: Annotated[int | None, Query(ge=1, le=300_000, description="non-zeros per page (default 100,000 as JSON, 300,000 as Arrow; fewer if the page would pass the size limit)")] = None,
    cursor: CursorQuery = None,
    format: FormatQuery = None,  # noqa: A002
    version: VersionQuery = None,
) -> None:
    """A feature's values' query parameters as their OpenAPI schema shows them (the route parses them itself)."""


def aggregates_query(
    grouping: Annotated[str | None, Query(description="a grouping of the dataset (optional when it has only one)")] = None,
    features: Annotated[list[str], Query(description="comma-separated feature names (repeatable)")] = [],  # noqa: B006 - FastAPI's idiom
    feature: Annotated[list[str], Query(description="one feature name, taken verbatim (commas allowed); repeat for several")] = [],  # noqa: B006
    stats: Annotated[list[str], Query(description=f"comma-separated stats (default all): {', '.join(STATS)}")] = [],  # noqa: B006
    groups: Annotated[list[str], Query(description="only these groups, comma-separated (repeatable)")] = [],  # noqa: B006
    group: Annotated[list[str], Query(description="only this group, verbatim (repeatable)")] = [],  # noqa: B006
    order_by: Annotated[str | None, Query(description="order the features by this stat (descending unless order=asc)")] = None,
    order_group: Annotated[str | None, Query(description="the group whose value orders (default: the largest over the groups returned)")] = None,
    order: Annotated[Literal["desc", "asc"], Query()] = "desc",
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv: one row per (feature, group)")] = None,  # noqa: A002
    version: VersionQuery = None,
    by: ByQuery = None,
) -> None:
    """The aggregates route's query parameters as its OpenAPI schema shows them (the route parses them itself)."""


def _query_parameters(declared: Any) -> list[dict[str, Any]]:
    """The OpenAPI query parameters FastAPI derives from `declared`'s signature."""
    probe = FastAPI()
    probe.get("/probe")(declared)
    return [p for p in probe.openapi()["paths"]["/probe"]["get"]["parameters"] if p["in"] == "query"]


AGGREGATES_QUERY_PARAMETERS = _query_parameters(aggregates_query)
FEATURES_QUERY_PARAMETERS = _query_parameters(features_query)
VALUES_QUERY_PARAMETERS = _query_parameters(values_query)
# Dot plots of more features are answered in a worker thread even when cached: their encoding would
# hold up the event loop's other requests.
INLINE_MAX_FEATURES = 200


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    bare = etag.strip('"')
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag[2:] if tag.startswith("W/") else tag
        tag = tag.strip('"')
        if tag.endswith(GZIP_SUFFIX):
            tag = tag[: -len(GZIP_SUFFIX)]
        if tag == bare:
            return True
    return False


@dataclass(frozen=True)
class Target:
    """The version one request reads, and the validators of its answer."""

    dataset_id: str
    version_id: str
    pinned: bool
    etag: str
    cache_control: str

    def headers(self, **extra: str | None) -> dict[str, str]:
        """The response headers of an answer about this target (ETag, caching, the version read), plus `extra`."""
        out = {"ETag": self.etag, "Cache-Control": self.cache_control, "Vary": "Accept", "X-Wideviews-Version": self.version_id}
        out.update({k.replace("_", "-"): v for k, v in extra.items() if v is not None})
        return out


class QueryService:
    """The request-independent half of the app: version resolution, reads, encodings."""

    def __init__(
        self,
        settings: Settings,
        *,
        reader: VersionReader | None = None,
        pointers: Pointers | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.settings = settings
        self.max_response_bytes = max_response_bytes
        self.reader = reader or VersionReader(settings)
        self.pointers = pointers or Pointers(settings)
        self.short_cache = f"public, max-age={max(1, math.ceil(settings.pointer_cache_s))}"
        # Encoded pages of cells by ETag: at most 8 of at most `max_response_bytes`.
        self.cell_pages: Lru[str, tuple[bytes, str | None]] = Lru(8)

    def target(self, request: Request, dataset_id: str, version: str | None, representation: str, cursor_version: str | None = None) -> Target:
        """Resolve the version to read and the answer's ETag; `NotModified` if the client has it."""
        if cursor_version is not None and not re.fullmatch(VERSION_ID_PATTERN, cursor_version):
            raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
        if version is not None and cursor_version is not None and version != cursor_version:
            raise BadRequest("the cursor belongs to another version than ?version=")
        pinned = version or cursor_version
        if pinned is None:
            version_id = self.pointers.current(dataset_id).current_version
        else:
            self.pointers.require_readable(dataset_id, pinned)
            version_id = pinned
        # The raw query keeps the order of repeated parameters (it matters: features are answered in order).
        identity = f"{version_id}\n{request.url.path}\n{request.url.query}\n{representation}"
        etag = '"' + hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest() + '"'
        found = Target(dataset_id, version_id, pinned is not None, etag, IMMUTABLE if pinned else self.short_cache)
        if _etag_matches(request.headers.get("if-none-match"), etag):
            raise NotModified(found.headers())
        return found

    def catalog(self, target: Target) -> Catalog:
        """The catalog of the version the request reads."""
        return self.reader.catalog(target.dataset_id, target.version_id)


def _wants_arrow(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "arrow"
    return ARROW_STREAM in request.headers.get("accept", "")


def _content_hash_response(request: Request, body: bytes, cache_control: str) -> Response:
    """A JSON answer not tied to one version (listings): its ETag is a hash of the body."""
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def create_app(
    settings: Settings,
    *,
    reader: VersionReader | None = None,
    pointers: Pointers | None = None,
    metrics: RequestMetrics | None = None,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> FastAPI:
    """The read API. `metrics`: Prometheus (served at /metrics) by default; pass EmbeddedMetrics on Lambda."""
    service = QueryService(settings, reader=reader, pointers=pointers, max_response_bytes=max_response_bytes)
    observer = metrics or PrometheusMetrics()
    app = FastAPI(
        title="wideviews read API",
        version="1",
        description="Precomputed views of very wide feature matrices: per-group statistics, a feature's values, cells.",
        responses=_error_responses(400, 404, 503),
    )
    app.state.service = service
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=[h.strip() for h in EXPOSED_HEADERS.split(",")],
        max_age=86400,
    )
    hot: dict[str, HotHandler] = {}
    app.add_middleware(HotRoutes, handlers=hot)
    app.add_middleware(Conventions, metrics=observer)

    for kind in _ANSWERED_EXCEPTIONS:

        @app.exception_handler(kind)
        async def answered(request: Request, exc: Exception) -> Response:
            return _exception_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ())[1:]) or "request"
            if where == "dataset_id":
                problems.append(f"invalid dataset id {str(error.get('input'))[:80]!r}: must match {DATASET_ID_PATTERN}")
            elif where == "version":
                problems.append("version must be 32 hex digits (a published version id)")
            else:
                problems.append(f"{where}: {error.get('msg')}")
        return _error(400, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no route for {request.url.path[:200]}")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not supported here", {"Allow": "GET, HEAD, OPTIONS"})
        return _error(exc.status_code, str(exc.detail))

    # --- routes ----------------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Response:
        return Response(encode_json({"status": "ok"}), media_type="application/json", headers={"Cache-Control": "no-store"})

    if isinstance(observer, PrometheusMetrics):

        @app.get("/metrics", include_in_schema=False)
        def metrics_text() -> Response:
            return Response(observer.exposition(), media_type=PROMETHEUS_CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    @app.get("/v1/datasets", response_model=DatasetList, tags=["datasets"], summary="Published datasets")
    def list_datasets(request: Request) -> Response:
        out = []
        for pointer in service.pointers.all_current():
            entry: dict[str, Any] = {
                "dataset": pointer.dataset_id,
                "version": pointer.current_version,
                "published_at": pointer.published_at,
                "previous_version": pointer.previous_version,
                "n_cells": None,
                "n_features": None,
                "title": None,
            }
            try:
                catalog = service.reader.catalog(pointer.dataset_id, pointer.current_version)
                entry.update(n_cells=catalog.n_cells, n_features=catalog.n_features, title=catalog.title)
            except NotFound:
                pass
            out.append(entry)
        return _content_hash_response(request, encode_json({"datasets": out}), service.short_cache)

    @app.get("/v1/datasets/{dataset_id}", response_model=DatasetInfo, tags=["datasets"], summary="A dataset's groupings, embedding and counts")
    def describe(request: Request, dataset_id: DatasetIdPath, version: VersionQuery = None) -> Response:
        target = service.target(request, dataset_id, version, "json")
        catalog = service.catalog(target)
        body = {
            "dataset": dataset_id,
            "version": target.version_id,
            "title": catalog.title,
            "description": catalog.description,
            "n_cells": catalog.n_cells,
            "n_features": catalog.n_features,
            "groupings": {g.name: [{"name": n, "count": c} for n, c in zip(g.groups, g.counts)] for g in catalog.groupings.values()},
            "embedding": {"name": catalog.embedding_name, "columns": catalog.embedding_columns} if catalog.embedding_name else None,
            "numeric_columns": catalog.numeric_columns,
            "crossed": crossed_groupings(catalog),
            "stats": list(STATS),
        }
        return Response(encode_json(body), media_type="application/json", headers=target.headers())

    @app.get("/v1/datasets/{dataset_id}/versions", response_model=VersionList, tags=["datasets"], summary="Published versions still present")
    def list_versions(request: Request, dataset_id: DatasetIdPath) -> Response:
        pointer = service.pointers.current(dataset_id)
        tables = set(service.reader.hbase.list_tables())
        out = []
        for record in reversed(service.pointers.versions(dataset_id)):
            readable = record.version_id in (pointer.current_version, pointer.previous_version) or record.state in READABLE_STATES
            catalog_table = f"{settings.hbase_namespace}:{dataset_id}_{record.version_id}_catalog"
            if not readable or catalog_table not in tables:
                continue
            out.append(
                {
                    "version": record.version_id,
                    "state": "PUBLISHED" if record.version_id == pointer.current_version else record.state,
                    "current": record.version_id == pointer.current_version,
                    "previous": record.version_id == pointer.previous_version,
                    "created_at": record.created_at,
                    "published_at": record.published_at or (pointer.published_at if record.version_id == pointer.current_version else None),
                    "n_cells": record.n_cells,
                    "n_features": record.n_features,
                }
            )
        body = {"dataset": dataset_id, "current_version": pointer.current_version, "versions": out}
        return _content_hash_response(request, encode_json(body), service.short_cache)

    def hot_dataset_route(name: str, path: str, **route: Any) -> Callable[[HotHandler], HotHandler]:
        """Serve a `(request, dataset_id)` answer as route `name`: through `HotRoutes`, and through FastAPI
        at `path` (the schema, and whatever `HotRoutes` does not match)."""

        def register(answer_route: HotHandler) -> HotHandler:
            async def routed(request: Request, dataset_id: DatasetIdPath) -> Response:
                return await answer_route(request, dataset_id)

            app.get(path, name=name, **route)(routed)
            hot[name] = answer_route
            return answer_route

        return register

    @hot_dataset_route(
        "list_features",
        "/v1/datasets/{dataset_id}/features",
        response_model=FeatureList,
        tags=["features"],
        summary="Search or list features",
        openapi_extra={"parameters": FEATURES_QUERY_PARAMETERS},
    )
    async def list_features_answer(request: Request, dataset_id: str) -> Response:
        # Parsed here as `features_query` declares (a search is the API's most frequent request).
        query = request.query_params
        prefix = query.get("prefix")
        if prefix is not None and len(prefix) > MAX_FEATURE_NAME_BYTES:
            raise BadRequest(f"prefix: at most {MAX_FEATURE_NAME_BYTES} characters")
        limit = _int_param(query, "limit", 1, 10_000)
        cursor = query.get("cursor")
        if cursor is not None and len(cursor) > 4096:
            raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
        version = _version_param(query)
        return await answer(lambda: _list_features(request, dataset_id, prefix, limit, cursor, version))

    def _list_features(request: Request, dataset_id: str, prefix: str | None, limit: int | None, cursor: str | None, version: str | None) -> Response:
        position = 0
        cursor_version = None
        if cursor is not None:
            fields = decode_cursor(cursor, {"v": str, "o": int, "p": (str, type(None))})
            cursor_version, position = fields["v"], fields["o"]
            if fields.get("p") != prefix or position < 0:
                raise BadRequest("invalid cursor: it belongs to another listing")
        target = service.target(request, dataset_id, version, "json", cursor_version)
        index = service.reader.features(service.catalog(target))
        found = index.search(prefix) if prefix else None
        total = len(found) if found is not None else len(index.names)
        size = limit or (20 if prefix else 1000)

        def build(n: int) -> bytes:
            end = position + n
            page = found[position:end] if found is not None else range(position, min(end, total))
            nxt = encode_cursor({"v": target.version_id, "o": end, "p": prefix}) if end < total else None
            body = {
                "dataset": dataset_id,
                "version": target.version_id,
                "prefix": prefix,
                "total": total,
                "features": [index.names[i] for i in page],
                "symbols": [index.symbols[i] or None for i in page] if index.symbols else None,
                "next_cursor": nxt,
            }
            return encode_json(body)

        body, _ = fit_page(build, size, service.max_response_bytes)
        return Response(body, media_type="application/json", headers=target.headers())

    @hot_dataset_route(
        "aggregates",
        "/v1/datasets/{dataset_id}/aggregates",
        response_model=Aggregates,
        tags=["features"],
        summary="Per-group statistics of several features (a dot plot)",
        responses={200: {"model": Aggregates, "content": {CSV: {"schema": {"type": "string"}}}, "description": "JSON, or CSV with format=csv"}},
        openapi_extra={"parameters": AGGREGATES_QUERY_PARAMETERS},
    )
    async def aggregates_answer(request: Request, dataset_id: str) -> Response:
        # The hot route parses its own query (declared for the schema by `aggregates_query`): FastAPI's
        # per-parameter validation of 50 repeated `feature=` cost half the request's CPU.
        query = request.query_params
        grouping = query.get("grouping")
        stats = query.getlist("stats")
        order_by = query.get("order_by")
        order_group = query.get("order_group")
        order = _choice(query, "order", ("desc", "asc")) or "desc"
        format = _choice(query, "format", ("json", "csv"))  # noqa: A002
        version = _version_param(query)
        by = query.get("by")
        # features/feature and groups/group are read in the query string's order, to keep the order in
        # which the two forms were mixed.
        names = _names_in_order(request, "features", "feature")
        if not names:
            raise BadRequest("features is required: feature=NAME (repeatable, verbatim) or features=A,B,C")
        if len(names) > settings.max_features_per_request:
            raise BadRequest(f"at most {settings.max_features_per_request} features per request, got {len(names)}")
        for name in names:
            _check_name(name)
        wanted = _split(stats) or list(STATS)
        unknown = [s for s in wanted if s not in STATS]
        if unknown:
            raise BadRequest(f"unknown stats {unknown[:10]}; known: {list(STATS)}")
        if order_by is not None and order_by not in STATS:
            raise BadRequest(f"order_by: unknown stat {order_by!r}; known: {list(STATS)}")

        def build() -> Response:
            target = service.target(request, dataset_id, version, format or "json")
            catalog = service.catalog(target)
            chosen = resolve_grouping(catalog, grouping, by)  # with by=: the crossed grouping
            chosen_name = grouping or chosen.name
            group_names = _names_in_order(request, "groups", "group")
            if group_names:
                position_of = {g: i for i, g in enumerate(chosen.groups)}
                absent = [g for g in group_names if g not in position_of]
                if absent:
                    raise NotFound(f"groups not in grouping {chosen_name!r}: {absent[:20]}")
                columns = np.array([position_of[g] for g in dict.fromkeys(group_names)], dtype=np.int64)
            else:
                columns = np.arange(len(chosen.groups))
            if order_group is not None and order_group not in [chosen.groups[c] for c in columns]:
                raise NotFound(f"order_group {order_group!r} is not one of the groups returned")
            # An answer over the size limit is refused before reading: ask fewer features, stats or groups.
            estimate = len(names) * len(wanted) * len(columns) * 8
            if estimate > service.max_response_bytes:
                raise BadRequest(
                    f"the answer would be about {estimate:,} bytes, over the {service.max_response_bytes:,}-byte limit "
                    "of one response: ask for fewer features, stats or groups"
                )
            read_stats = list(dict.fromkeys(wanted + ([order_by] if order_by else [])))
            rows = service.reader.stats(catalog, chosen, names, read_stats)
            ordered = list(names)
            if order_by is not None:
                key_column = [chosen.groups[c] for c in columns].index(order_group) if order_group is not None else None

                def key(name: str) -> float:
                    values = rows[name][order_by][columns]
                    value = values[key_column] if key_column is not None else (np.nanmax(values) if np.isfinite(values).any() else np.nan)
                    return -math.inf if math.isnan(value) else float(value)

                # NaN (undefined) last either way; stable, so ties keep the asked order.
                ordered = sorted(names, key=key, reverse=order == "desc")
                if order == "asc":
                    ordered = [n for n in ordered if key(n) != -math.inf] + [n for n in ordered if key(n) == -math.inf]
            group_list = [chosen.groups[c] for c in columns]
            counts = [chosen.counts[c] for c in columns]
            if format == "csv":
                header = ["feature", "group", "cells", *wanted]
                table_rows = []
                for name in ordered:
                    vectors = {s: rows[name][s][columns] for s in wanted}
                    for j, g in enumerate(group_list):
                        table_rows.append([name, g, counts[j]] + [int(vectors[s][j]) if s in _INT_STATS else float(vectors[s][j]) for s in wanted])
                return Response(encode_csv(header, table_rows), media_type=f"{CSV}; charset=utf-8", headers=target.headers())
            body = {
                "dataset": dataset_id,
                "version": target.version_id,
                "grouping": chosen_name,
                "groups": group_list,
                "group_counts": counts,
                "features": ordered,
                "stats": {
                    s: [as_int_list(rows[n][s][columns]) if s in _INT_STATS else rows[n][s][columns] for n in ordered] for s in wanted
                },
                "order_by": order_by,
                "by": by,
                "group_pairs": [group_pairs(catalog, chosen, chosen_name, by)[c] for c in columns] if by else None,  # type: ignore[index]
            }
            return Response(encode_json(body), media_type="application/json", headers=target.headers())

        if len(names) > INLINE_MAX_FEATURES:
            return await run_in_threadpool(build)
        return await answer(build)

    @app.get(
        "/v1/datasets/{dataset_id}/features/{feature:path}/values",
        tags=["features"],
        summary="A feature's non-zero values, paged (JSON or Arrow)",
        **_json_or_arrow(FeatureValues, "JSON, or an Arrow stream of (index int32, value) with the page's fields as schema metadata"),
        openapi_extra={"parameters": VALUES_QUERY_PARAMETERS},
    )
    async def feature_values(
        request: Request, dataset_id: DatasetIdPath, feature: Annotated[str, Path(pattern=NAME_PATTERN, description="the feature name, percent-encoded")]
    ) -> Response:
        return await feature_values_answer(request, dataset_id, feature)

    async def feature_values_answer(request: Request, dataset_id: str, feature: str) -> Response:
        # Parsed here as `values_query` declares; the read from HBase is in a worker thread.
        query = request.query_params
        limit = _int_param(query, "limit", 1, 300_000)
        cursor = query.get("cursor")
        if cursor is not None and len(cursor) > 4096:
            raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
        format = _choice(query, "format", ("json", "arrow"))  # noqa: A002
        version = _version_param(query)
        return await run_in_threadpool(_feature_values, request, dataset_id, feature, limit, cursor, format, version)

    hot["feature_values"] = feature_values_answer

    def _feature_values(
        request: Request, dataset_id: str, feature: str, limit: int | None, cursor: str | None, format: str | None, version: str | None  # noqa: A002
    ) -> Response:
        _check_name(feature)
        arrow = _wants_arrow(request, format)
        part, offset, cursor_version = 0, 0, None
        if cursor is not None:
            fields = decode_cursor(cursor, {"v": str, "p": int, "o": int, "f": str})
            if fields["f"] != feature:
                raise BadRequest("invalid cursor: it belongs to another feature")
            cursor_version, part, offset = fields["v"], fields["p"], fields["o"]
            if part < 0 or offset < 0 or part > 65535:
                raise BadRequest("invalid cursor: pass the next_cursor of a previous page unchanged")
        target = service.target(request, dataset_id, version, "arrow" if arrow else "json", cursor_version)
        catalog = service.catalog(target)
        pages: dict[int, tuple[bytes, str | None]] = {}

        def build(n: int) -> bytes:
            # A page over the size limit (long names, float64 text) is read again, shorter: rare.
            page = service.reader.feature_page(catalog, feature, part, offset, n)
            nxt = (
                encode_cursor({"v": target.version_id, "f": feature, "p": page.next_part, "o": page.next_offset})
                if page.next_part is not None
                else None
            )
            if arrow:
                metadata = {"dataset": dataset_id, "version": target.version_id, "feature": feature, "n_cells": str(catalog.n_cells), "next_cursor": nxt or ""}
                body = encode_arrow({"index": page.indices, "value": page.values}, metadata)
            else:
                body = encode_json(
                    {
                        "dataset": dataset_id,
                        "version": target.version_id,
                        "feature": feature,
                        "n_cells": catalog.n_cells,
                        "indices": page.indices,
                        # float64 for JSON: a float32's shortest float32 text would parse back to another float64.
                        "values": page.values.astype(np.float64),
                        "next_cursor": nxt,
                    }
                )
            pages[n] = (body, nxt)
            return body

        body, n = fit_page(build, limit or (300_000 if arrow else 100_000), service.max_response_bytes)
        nxt = pages[n][1]
        return Response(body, media_type=ARROW_STREAM if arrow else "application/json", headers=target.headers(X_Next_Cursor=nxt))

    @app.get(
        "/v1/datasets/{dataset_id}/cells",
        tags=["cells"],
        summary="All cells' metadata and embedding, paged (JSON or Arrow)",
        **_json_or_arrow(CellsPage, "JSON, or an Arrow stream: cell_id, position, one column per grouping, embedding and numeric column"),
    )
    def cells(
        request: Request,
        dataset_id: DatasetIdPath,
        include: Annotated[list[str], Query(description="comma-separated: metadata, embedding, numeric (default all)")] = [],  # noqa: B006
        limit: Annotated[int | None, Query(ge=1, le=100_000, description="cells per page (default 10,000 as JSON, 100,000 as Arrow)")] = None,
        cursor: CursorQuery = None,
        format: FormatQuery = None,  # noqa: A002
        version: VersionQuery = None,
    ) -> Response:
        kinds = set(_split(include)) or {"metadata", "embedding", "numeric"}
        unknown = kinds - {"metadata", "embedding", "numeric"}
        if unknown:
            raise BadRequest(f"include: unknown {sorted(unknown)}; known: metadata, embedding, numeric")
        arrow = _wants_arrow(request, format)
        after, cursor_version = None, None
        if cursor is not None:
            fields = decode_cursor(cursor, {"v": str, "k": str})
            cursor_version, after = fields["v"], fields["k"].encode("utf-8", "surrogatepass")
        target = service.target(request, dataset_id, version, "arrow" if arrow else "json", cursor_version)
        # A page of cells is megabytes to encode (100,000 ids and coordinates): its body is kept, by its
        # ETag (the version and the request), for the next client plotting the same embedding.
        body, nxt = service.cell_pages.get_or_load(target.etag, lambda: _cells_body(target, after, limit, kinds, arrow))
        return Response(body, media_type=ARROW_STREAM if arrow else "application/json", headers=target.headers(X_Next_Cursor=nxt))

    def _cells_body(target: Target, after: bytes | None, limit: int | None, kinds: set[str], arrow: bool) -> tuple[bytes, str | None]:
        dataset_id = target.dataset_id
        catalog = service.catalog(target)
        page = service.reader.cells_page(catalog, after, limit or (100_000 if arrow else 10_000), kinds)
        total = len(page.cell_ids)

        def build(n: int) -> bytes:
            more = n < total or page.last_key is not None
            nxt = encode_cursor({"v": target.version_id, "k": page.cell_ids[n - 1]}) if more and n else None
            if arrow:
                columns: dict[str, Any] = {"cell_id": page.cell_ids[:n], "position": page.positions[:n].astype(np.int32)}
                for g, values in page.metadata.items():
                    columns[g] = values[:n]
                if page.embedding is not None:
                    for d, column in enumerate(catalog.embedding_columns):
                        columns[column] = page.embedding[:n, d]
                for c, values in page.numeric.items():
                    columns[c] = values[:n]
                metadata = {"dataset": dataset_id, "version": target.version_id, "n_cells": str(catalog.n_cells), "next_cursor": nxt or ""}
                return encode_arrow(columns, metadata)
            body = {
                "dataset": dataset_id,
                "version": target.version_id,
                "n_cells": catalog.n_cells,
                "cells": page.cell_ids[:n],
                "positions": page.positions[:n],
                "metadata": {g: v[:n] for g, v in page.metadata.items()},
                "embedding": (
                    {"name": catalog.embedding_name, "columns": catalog.embedding_columns, "coordinates": page.embedding[:n]}
                    if page.embedding is not None
                    else None
                ),
                "numeric": {c: v[:n] for c, v in page.numeric.items()},
                "next_cursor": nxt,
            }
            return encode_json(body)

        body, n = fit_page(build, total, service.max_response_bytes)
        more = n < total or page.last_key is not None
        nxt = encode_cursor({"v": target.version_id, "k": page.cell_ids[n - 1]}) if more and n else None
        return body, nxt

    @app.get("/v1/datasets/{dataset_id}/cells/{cell_id:path}", response_model=Cell, tags=["cells"], summary="One cell")
    def cell(request: Request, dataset_id: DatasetIdPath, cell_id: Annotated[str, Path(pattern=NAME_PATTERN, description="the cell id, percent-encoded")], version: VersionQuery = None) -> Response:
        _check_name(cell_id, "cell id")
        target = service.target(request, dataset_id, version, "json")
        catalog = service.catalog(target)
        row = service.reader.cell(catalog, cell_id)
        body = {"dataset": dataset_id, "version": target.version_id, "cell": cell_id, **row}
        return Response(encode_json(body), media_type="application/json", headers=target.headers())

    app.include_router(views_router)  # distributions, markers, embedding sample

    # The explorer page (explorer/, built into explorer/dist by `make explorer`) at /, after every route above.
    explorer_dist = settings.project_root / "explorer" / "dist"
    if explorer_dist.is_dir():
        app.mount("/", StaticFiles(directory=explorer_dist, html=True), name="explorer")

    return app


def lambda_app(settings: Settings) -> FastAPI:
    """The app as the Lambda handler runs it: CloudWatch EMF lines instead of /metrics."""
    return create_app(settings, metrics=EmbeddedMetrics())
