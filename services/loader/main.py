"""The loader worker process: `python -m services.loader.main`."""

from services.loader.handler import handle_load_chunk
from shared.worker import run_service

if __name__ == "__main__":
    run_service("load", handle_load_chunk, concurrency=lambda settings: settings.load_concurrency)
