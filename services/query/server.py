"""The local HTTP server of the read API: `python -m services.query.server` (port from Settings)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from services.query.app import QueryApp, Response, parse_query
from shared.config import Settings

log = logging.getLogger("wideviews.query")


def encode_body(response: Response) -> bytes:
    return json.dumps(response.body, separators=(",", ":"), allow_nan=False).encode()


def make_server(app: QueryApp, host: str, port: int) -> ThreadingHTTPServer:
    """A threaded HTTP server answering every request through `app.handle`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            started = time.monotonic()
            url = urlsplit(self.path)
            response = app.handle("GET", url.path, parse_query(url.query))
            body = encode_body(response)
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            for key, value in (response.headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            log.info("GET %s %s %.1f ms", url.path, response.status, 1000 * (time.monotonic() - started))

        def do_POST(self) -> None:  # noqa: N802
            response = app.handle("POST", self.path, {})
            body = encode_body(response)
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence default access log
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.load()
    server = make_server(QueryApp(settings), settings.query_host, settings.query_port)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("query server on http://%s:%s", settings.query_host, settings.query_port)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
