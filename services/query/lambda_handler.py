"""The read API as an API Gateway proxy Lambda: `services.query.lambda_handler.handler`.

Mangum turns REST API (v1: `httpMethod`, `path`, `multiValueQueryStringParameters`) and HTTP API
(v2: `requestContext.http`, `rawQueryString`) proxy events into ASGI requests for the same app the
local server runs, and its responses back into proxy results; binary bodies (Arrow, gzip) are
base64-encoded with `isBase64Encoded`. Metrics are CloudWatch embedded-metric-format lines on
stdout. The app (its HBase pool, pointer cache and catalogs) lives as long as the Lambda container.

Paths: a REST API delivers the path percent-encoded and Mangum decodes it; an HTTP API delivers it
decoded already, so it is re-encoded here first (a feature named `a%2Fb` must not decode twice).
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from mangum import Mangum

from services.query.app import lambda_app
from shared.config import Settings
from shared.logs import configure_logging

_adapter: Mangum | None = None


def adapter_for(settings: Settings) -> Mangum:
    """A Mangum adapter around the Lambda flavour of the app (lifespan off: nothing to start)."""
    configure_logging(settings if settings.service else settings.model_copy(update={"service": "query"}))
    return Mangum(lambda_app(settings), lifespan="off")


def _encode_http_api_path(event: dict[str, Any]) -> dict[str, Any]:
    http = (event.get("requestContext") or {}).get("http")
    if event.get("version") != "2.0" or not isinstance(http, dict) or "path" not in http:
        return event
    out = copy.copy(event)
    out["requestContext"] = {**event["requestContext"], "http": {**http, "path": quote(http["path"], safe="/")}}
    return out


def handler(event: dict[str, Any], context: Any, adapter: Mangum | None = None) -> dict[str, Any]:
    """API Gateway proxy integration (v1 or v2 event): one request in, one proxy result out."""
    global _adapter
    if adapter is None:
        if _adapter is None:
            _adapter = adapter_for(Settings.load())
        adapter = _adapter
    return adapter(_encode_http_api_path(event), context)


__all__ = ["adapter_for", "handler"]
