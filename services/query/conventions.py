"""HTTP conventions every response of the read API follows, as one ASGI middleware around the routes:

- a request id (the client's `X-Request-Id` if sane, API Gateway's on Lambda, else a new one), echoed
  in `X-Request-Id` and in every log line of the request (`request_id` of `shared.logs`' JSON lines);
- an unexpected exception becomes a JSON 500 `{"error", "message"}` naming the request id, and is
  logged with its traceback and the request id (the client never sees a traceback);
- HEAD is answered as GET without the body (same headers, same Content-Length);
- gzip when the client accepts it and the body is over `GZIP_MIN_BYTES`; the strong ETag of the
  gzip representation gets a `-gz` suffix (a different representation, a different strong tag);
- `Access-Control-Allow-Origin: *` and the exposed headers on every response (preflight is
  Starlette's CORSMiddleware, outside this one);
- one metrics observation per request (Prometheus or CloudWatch EMF).
"""

from __future__ import annotations

import gzip
import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.query.metrics import RequestMetrics
from shared.logs import log_context

log = logging.getLogger("wideviews.query")
GZIP_MIN_BYTES = 1024
GZIP_SUFFIX = "-gz"
_COMPRESSIBLE = ("application/json", "text/", "application/vnd.apache.arrow.stream")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
EXPOSED_HEADERS = "ETag, X-Request-Id, X-Wideviews-Version, X-Next-Cursor, Content-Length, Retry-After"


def request_id_of(scope: Scope) -> str:
    """The request's id: a sane client `X-Request-Id`, API Gateway's request id on Lambda, or a new one."""
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    event = scope.get("aws.event")
    if isinstance(event, dict):
        rid = (event.get("requestContext") or {}).get("requestId")
        if isinstance(rid, str) and _REQUEST_ID.match(rid):
            return rid
    return uuid.uuid4().hex


def _accepts_gzip(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"accept-encoding":
            for part in value.decode("latin-1").lower().split(","):
                coding, _, params = part.strip().partition(";")
                if coding.strip() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
                    return True
    return False


class Conventions:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = rid
        method = scope["method"]
        head = method == "HEAD"
        if head:
            # A copy: the server reads the original scope's method to know no body follows a HEAD answer.
            scope = {**scope, "method": "GET"}
        gzip_ok = _accepts_gzip(scope)
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        sent = {"status": 0, "bytes": 0}

        async def buffer(message: Message) -> None:
            # Responses here are whole bodies (no streaming): keep them to set length and encoding once.
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._finish(start, b"".join(chunks), send, rid, head, gzip_ok, sent)

        # The request id is on every log line of the request, the error line below included.
        with log_context(request_id=rid):
            await self._answer(scope, receive, send, buffer, start, sent, rid, method, head, started)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        buffer: Send,
        start: dict[str, Any],
        sent: dict[str, int],
        rid: str,
        method: str,
        head: bool,
        started: float,
    ) -> None:
        try:
            await self.app(scope, receive, buffer)
        except Exception:
            log.exception("unexpected error answering %s %s (request id %s)", method, scope.get("path"), rid)
            if start.get("_sent"):
                raise
            body = orjson.dumps({"error": "internal", "message": f"internal error; request id {rid}"})
            start.clear()
            start.update(
                type="http.response.start",
                status=500,
                headers=[(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
            )
            await self._finish(start, body, send, rid, head, False, sent)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(template, method, sent["status"], time.perf_counter() - started, sent["bytes"], rid)

    @staticmethod
    async def _finish(start: dict[str, Any], body: bytes, send: Send, rid: str, head: bool, gzip_ok: bool, sent: dict[str, int]) -> None:
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",)]
        names = {k.lower() for k, _ in headers}
        content_type = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), "")
        if (
            gzip_ok
            and len(body) >= GZIP_MIN_BYTES
            and b"content-encoding" not in names
            and content_type.startswith(_COMPRESSIBLE)
        ):
            # Level 6 for answers of a few KB, 1 from 16 KB on (a 50-feature dot plot, pages): ~6x faster, a few % larger.
            body = gzip.compress(body, compresslevel=6 if len(body) < 16 * 1024 else 1, mtime=0)
            headers.append((b"content-encoding", b"gzip"))
            headers = [
                (k, v[:-1] + GZIP_SUFFIX.encode() + b'"' if k.lower() == b"etag" and v.endswith(b'"') else v) for k, v in headers
            ]
        if start.get("status") not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode()))
        vary = [v for k, v in headers if k.lower() == b"vary"]
        if b"accept-encoding" not in b",".join(vary).lower():
            headers = [(k, v) for k, v in headers if k.lower() != b"vary"] + [
                (b"vary", b", ".join([*vary, b"Accept-Encoding"]) if vary else b"Accept-Encoding")
            ]
        headers.append((b"x-request-id", rid.encode()))
        if b"access-control-allow-origin" not in names:
            headers.append((b"access-control-allow-origin", b"*"))
        if b"access-control-expose-headers" not in names and b"access-control-allow-methods" not in names:
            headers.append((b"access-control-expose-headers", EXPOSED_HEADERS.encode()))
        start["_sent"] = True
        sent["status"] = int(start.get("status", 500))
        sent["bytes"] = 0 if head else len(body)
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})
