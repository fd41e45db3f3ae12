"""Processes of the local stack: `stack.json`, its lock, and pids that are provably ours.

A process is ours only while `/proc/<pid>/cmdline` equals the recorded command and its start time
(in clock ticks since boot) equals the recorded one, so a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from shared.config import Settings

log = logging.getLogger("wideviews.stack")

Mode = Literal["full", "infra"]
# Popen objects of children started by this Python process, so their exit is reaped (no zombies
# counted as alive) when up/down run in-process, as in the test fixture.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be brought to the requested state; the message says which log to read."""


@dataclass
class ProcessRecord:
    """One process started by the stack."""

    pid: int
    cmd: list[str]
    log: str
    started_at: str
    start_ticks: int | None = None


@dataclass
class StackState:
    """The contents of `stack.json`."""

    settings: dict[str, Any] = field(default_factory=dict)
    mode: Mode = "full"
    components: dict[str, ProcessRecord] = field(default_factory=dict)

    @classmethod
    def read(cls, home: Path) -> "StackState":
        """The state of the stack in `home`; empty when it never ran."""
        path = home / "stack.json"
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        components = {name: ProcessRecord(**record) for name, record in raw.get("components", {}).items()}
        return cls(settings=raw.get("settings", {}), mode=raw.get("mode", "full"), components=components)

    def write(self, home: Path) -> None:
        """Write stack.json atomically (readers never see half a file) and the pid files."""
        home.mkdir(parents=True, exist_ok=True)
        body = {
            "settings": self.settings,
            "mode": self.mode,
            "components": {name: asdict(record) for name, record in sorted(self.components.items())},
        }
        tmp = home / f".stack.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        os.replace(tmp, home / "stack.json")
        run_dir = home / "run"
        run_dir.mkdir(exist_ok=True)
        for pid_file in run_dir.glob("*.pid"):
            if pid_file.stem not in self.components:
                pid_file.unlink(missing_ok=True)
        for name, record in self.components.items():
            (run_dir / f"{name}.pid").write_text(f"{record.pid}\n")


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold the stack's lock: one up/down/restart at a time per state directory."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "stack.lock", "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)


def is_ours(record: ProcessRecord) -> bool:
    """True while the recorded process runs: same pid, same command line, same start time, not a zombie."""
    _reap(record.pid)
    stat = proc_stat(record.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    if record.start_ticks is not None and stat[1] != record.start_ticks:
        return False
    return _proc_cmdline(record.pid) == record.cmd


def spawn(settings: Settings, name: str, cmd: list[str], env: dict[str, str]) -> ProcessRecord:
    """Start `cmd` in its own session, output appended to logs/<name>.log."""
    log_path = settings.home / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n===== {started_at} wideviews stack starts {name}: {' '.join(cmd)}\n".encode())
        log_file.flush()
        # Own session: a Ctrl-C in the shell that ran `up` does not reach the stack, and the
        # process group holds the children a component starts (a Spark JVM, a bulk-load tool).
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=settings.project_root,
            env=env,
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    stat = proc_stat(child.pid)
    log.info("started %s (pid %d), log %s", name, child.pid, log_path)
    return ProcessRecord(
        pid=child.pid, cmd=cmd, log=str(log_path), started_at=started_at, start_ticks=stat[1] if stat else None
    )


def _group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid` (empty once all have exited)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        rest = raw[raw.rindex(")") + 2 :].split()
        if rest[0] not in ("Z", "X") and int(rest[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal the process group a component leads, only while its leader is provably ours.

    Once the leader has exited, its group id cannot be handed to a new process while members of the
    group are alive, so leftover members are signalled as long as no other process holds the pid.
    """
    if is_ours(record):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, sig)
    elif proc_stat(record.pid) is None:
        for pid in _group_members(record.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
