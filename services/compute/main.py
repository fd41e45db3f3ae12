"""The compute worker process: `python -m services.compute.main`."""

from services.compute.handler import handle_compute_chunk
from shared.worker import run_service

if __name__ == "__main__":
    run_service("compute", handle_compute_chunk)
