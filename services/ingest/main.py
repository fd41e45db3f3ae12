"""The ingest worker process: `python -m services.ingest.main`."""

from services.ingest.handler import handle_upload
from services.ingest.split import remove_stale_workdirs
from shared.memory import keep_freed_memory_small
from shared.worker import run_service


def prepare() -> None:
    """Before the first upload: the allocators (`shared.memory`), and the spools a killed predecessor left."""
    keep_freed_memory_small()
    remove_stale_workdirs()


if __name__ == "__main__":
    run_service("ingest", handle_upload, prepare=prepare)
