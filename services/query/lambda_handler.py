"""The read API as an API Gateway proxy Lambda: `services.query.lambda_handler.handler`.

Accepts REST API (v1: httpMethod, path, multiValueQueryStringParameters) and HTTP API (v2:
requestContext.http.method, rawPath, rawQueryString) proxy events. The app (and its HBase
connection pool and pointer cache) lives for the life of the Lambda container.
"""

from __future__ import annotations

from typing import Any

from services.query.app import QueryApp, parse_query
from services.query.server import encode_body
from shared.config import Settings

_app: QueryApp | None = None


def _get_app() -> QueryApp:
    global _app
    if _app is None:
        _app = QueryApp(Settings.load())
    return _app


def request_of(event: dict[str, Any]) -> tuple[str, str, dict[str, list[str]]]:
    """(method, path, query) of an API Gateway proxy event, v1 or v2."""
    if "requestContext" in event and "http" in event.get("requestContext", {}):
        http = event["requestContext"]["http"]
        return http.get("method", "GET"), event.get("rawPath", http.get("path", "/")), parse_query(event.get("rawQueryString", ""))
    query: dict[str, list[str]] = {}
    if event.get("multiValueQueryStringParameters"):
        query = {k: list(v) for k, v in event["multiValueQueryStringParameters"].items()}
    elif event.get("queryStringParameters"):
        query = {k: [v] for k, v in event["queryStringParameters"].items()}
    return event.get("httpMethod", "GET"), event.get("path", "/"), query


def handler(event: dict[str, Any], context: Any, app: QueryApp | None = None) -> dict[str, Any]:
    """API Gateway proxy integration: one request in, one JSON response out."""
    method, path, query = request_of(event)
    response = (app or _get_app()).handle(method, path, query)
    body = encode_body(response)
    return {
        "statusCode": response.status,
        "headers": {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*", **(response.headers or {})},
        "body": body.decode(),
        "isBase64Encoded": False,
    }


__all__ = ["handler", "request_of"]
