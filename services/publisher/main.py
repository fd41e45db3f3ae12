"""The publisher worker process: `python -m services.publisher.main`."""

from services.publisher.handler import handle_publish_version
from shared.worker import run_service

if __name__ == "__main__":
    run_service("publish", handle_publish_version)
