"""A killed ingest worker's local work directory is removed by its successor, a live one's is kept."""

from __future__ import annotations

import os
from pathlib import Path

from services.ingest.split import WORKDIR_PREFIX, remove_stale_workdirs


def test_work_directories_of_dead_processes_are_removed(tmp_path: Path) -> None:
    alive = tmp_path / f"{WORKDIR_PREFIX}{os.getpid()}-abc"
    dead = tmp_path / f"{WORKDIR_PREFIX}999999999-def"
    other = tmp_path / "something-else"
    for d in (alive, dead, other):
        (d / "spool").mkdir(parents=True)
    assert remove_stale_workdirs(str(tmp_path)) == [str(dead)]
    assert alive.exists() and other.exists() and not dead.exists()
