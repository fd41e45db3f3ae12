"""The ingest worker process: `python -m services.ingest.main`."""

from services.ingest.handler import handle_upload
from services.ingest.split import remove_stale_workdirs
from shared.worker import run_service

if __name__ == "__main__":
    run_service("ingest", handle_upload, prepare=remove_stale_workdirs)  # spools of a killed predecessor
