"""The compute worker process: `python -m services.compute.main`."""

from services.compute.handler import handle_compute_chunk
from shared.config import Settings
from shared.memory import keep_freed_memory_small
from shared.worker import run_service


def concurrency(settings: Settings) -> int:
    """Units run at once: `compute_concurrency`, but one at a time in the one local Spark session."""
    return 1 if settings.executor == "spark" else settings.compute_concurrency


if __name__ == "__main__":
    run_service("compute", handle_compute_chunk, concurrency=concurrency, prepare=keep_freed_memory_small)
