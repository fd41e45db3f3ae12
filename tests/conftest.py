"""Fixtures shared by every test directory.

`stack`: the real local stack (moto server, standalone HBase + Thrift, the resources, the services),
started once per test session by the project's own stack code in a fresh state directory, and
stopped at the end, on failure too. It yields the stack's `Settings`, and sets `WIDEVIEWS_HOME` for
the session so `Settings.load()` and CLI subprocesses find the same stack.

Developers can keep a stack running between test runs:

    WIDEVIEWS_HOME=/tmp/devstack wideviews stack up
    WIDEVIEWS_TEST_HOME=/tmp/devstack make test

With `WIDEVIEWS_TEST_HOME` set, the fixture reuses that stack (starting only what is missing) and
leaves it running. Tests that use the fixture get the `stack` marker: `pytest -m "not stack"` skips them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from shared.config import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)


# The test stack's tuning, inherited by its worker processes: several chunks even for small test
# matrices, and a short visibility timeout so a killed worker's message comes back within seconds.
TEST_STACK_ENV = {
    "WIDEVIEWS_CHUNK_FEATURES": "40",
    # Units of about two chunks for the e2e datasets (~10% dense): several units, several chunks each.
    "WIDEVIEWS_UNIT_MEMORY_BUDGET_BYTES": "60000",
    "WIDEVIEWS_VISIBILITY_TIMEOUT_S": "12",
    "WIDEVIEWS_RETRY_MAX_S": "20",
    # Fewer markers per group than features per unit, and a sample smaller than the e2e datasets:
    # the publisher's merge and the sampler both have to choose.
    "WIDEVIEWS_MARKERS_TOP_N": "10",
    "WIDEVIEWS_EMBEDDING_SAMPLE_SIZE": "250",
}


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # pytest tears fixtures down on KeyboardInterrupt: a CI runner's SIGTERM then stops the stack too.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running local stack with every service that exists."""
    from cli import stack as local_stack

    reused = os.environ.get("WIDEVIEWS_TEST_HOME")
    with pytest.MonkeyPatch.context() as env:
        for key, value in TEST_STACK_ENV.items():
            env.setenv(key, value)
        if reused:
            home = Path(reused).resolve()
            env.setenv("WIDEVIEWS_HOME", str(home))
            yield local_stack.up(Settings.load(home=home))
            return
        home = tmp_path_factory.mktemp("wideviews-home")
        env.setenv("WIDEVIEWS_HOME", str(home))
        previous_handler = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
        try:
            yield local_stack.up(Settings.load(home=home))
        finally:
            try:
                local_stack.down(Settings.load(home=home))
            finally:
                signal.signal(signal.SIGTERM, previous_handler)
