"""The ingest worker process: `python -m services.ingest.main`."""

from services.ingest.handler import handle_upload, make_deps
from shared.worker import run_service

if __name__ == "__main__":
    run_service("ingest", handle_upload, make_deps)
