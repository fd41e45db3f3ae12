"""The local HTTP server of the read API: `python -m services.query.server` (uvicorn; host, port and
worker processes from Settings).

`wideviews stack up` starts it as the `query` component. SIGTERM and SIGINT stop it gracefully
(uvicorn finishes the requests in flight). With `query_workers` > 1 uvicorn's supervisor forks that
many processes that share the listening socket: each answers requests on its own core with its own
caches (pointer, catalogs, stats rows) and its own /metrics counters.
"""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from services.query.app import create_app
from shared.config import Settings
from shared.logs import configure_logging

log = logging.getLogger("wideviews.query")


def _settings() -> Settings:
    settings = Settings.load()
    return settings if settings.service else settings.model_copy(update={"service": "query"})


def server_app() -> FastAPI:
    """The app of one server process (uvicorn calls this in each worker)."""
    settings = _settings()
    configure_logging(settings)
    return create_app(settings)


def main() -> None:
    """Serve the read API with uvicorn on `query_host:query_port` until stopped."""
    settings = _settings()
    configure_logging(settings)
    workers = max(1, settings.query_workers)
    log.info("query server on http://%s:%s (%d worker process%s)", settings.query_host, settings.query_port, workers, "es" if workers > 1 else "")
    # No access log (the metrics count every request; errors are logged with their request id).
    uvicorn.run(
        "services.query.server:server_app",
        factory=True,
        workers=workers if workers > 1 else None,
        host=settings.query_host,
        port=settings.query_port,
        access_log=False,
        log_config=None,  # uvicorn's records go to the JSON lines of configure_logging
        timeout_keep_alive=30,
        server_header=False,
    )


if __name__ == "__main__":
    main()
