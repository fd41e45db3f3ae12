"""The local HTTP server of the read API: `python -m services.query.server` (uvicorn; host and port from Settings).

`wideviews stack up` starts it as the `query` component. SIGTERM and SIGINT stop it gracefully
(uvicorn finishes the requests in flight).
"""

from __future__ import annotations

import logging

import uvicorn

from services.query.app import create_app
from shared.config import Settings
from shared.logs import configure_logging

log = logging.getLogger("wideviews.query")


def main() -> None:
    settings = Settings.load()
    settings = settings if settings.service else settings.model_copy(update={"service": "query"})
    configure_logging(settings)
    app = create_app(settings)
    log.info("query server on http://%s:%s", settings.query_host, settings.query_port)
    # One process: the pointer cache and the per-version catalogs live in it. No access log (the
    # metrics count every request; errors are logged with their request id).
    uvicorn.run(
        app,
        host=settings.query_host,
        port=settings.query_port,
        access_log=False,
        log_config=None,  # uvicorn's records go to the JSON lines of configure_logging
        timeout_keep_alive=30,
        server_header=False,
    )


if __name__ == "__main__":
    main()
