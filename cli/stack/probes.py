"""Health probes of the stack's components, and waiting on them."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import happybase
from botocore.exceptions import BotoCoreError, ClientError

from cli.stack.processes import StackError, StackState, is_ours
from cli.stack.resources import aws_client
from shared.config import Settings

log = logging.getLogger("wideviews.stack")


def probe_moto(settings: Settings) -> bool:
    """A real S3 call answers."""
    try:
        aws_client(settings, "s3", timeout_s=2.0).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def probe_thrift(settings: Settings, timeout_ms: int = 3000) -> bool:
    """A Thrift call that lists tables succeeds (it goes through to the HMaster)."""
    try:
        connection = happybase.Connection(settings.hbase_thrift_host, settings.hbase_thrift_port, timeout=timeout_ms)
        try:
            connection.tables()
        finally:
            connection.close()
    except Exception:  # noqa: BLE001 - thriftpy2 raises transport errors, IOError, socket timeouts
        return False
    return True


def port_open(host: str, port: int) -> bool:
    """Whether a TCP connection to (host, port) succeeds within a second."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def probe_query(settings: Settings) -> bool:
    """`GET /healthz` answers 200."""
    url = f"http://{settings.query_host}:{settings.query_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def probe_component(settings: Settings, name: str) -> bool:
    """Health of one component's service, its process aside (see `component_health`)."""
    if name == "moto":
        return probe_moto(settings)
    if name == "hbase-thrift":
        return probe_thrift(settings)
    if name == "hbase-master":
        # Its ZooKeeper and master RPC ports; the Thrift probe is the end-to-end check.
        return port_open("127.0.0.1", settings.hbase_zk_port) and port_open("127.0.0.1", settings.hbase_master_port)
    if name == "query":
        return probe_query(settings)
    return True  # a worker: healthy while its process is ours and alive


def component_health(settings: Settings, state: StackState, name: str) -> dict[str, Any]:
    """Status of one component: pid, running (process ours and alive), healthy (running and answering)."""
    record = state.components.get(name)
    running = record is not None and is_ours(record)
    healthy = running and probe_component(settings, name)
    info: dict[str, Any] = {"running": running, "healthy": healthy}
    if record is not None:
        info.update(pid=record.pid, log=record.log, started_at=record.started_at)
    else:
        info.update(pid=None, log=str(settings.home / "logs" / f"{name}.log"), started_at=None)
    return info


def log_tail(path: str | Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(
    settings: Settings,
    state: StackState,
    names: Sequence[str],
    check: Callable[[str], bool],
    deadline: float,
    what: str,
) -> None:
    """Poll `check` for each name until all pass; fail fast when one of their processes dies."""
    pending = list(names)
    while pending:
        for name in list(pending):
            record = state.components[name]
            if not is_ours(record):
                raise StackError(f"{name} (pid {record.pid}) exited while starting; {record.log}:\n{log_tail(record.log)}")
            if check(name):
                log.info("%s is %s", name, what)
                pending.remove(name)
        if pending:
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {state.components[n].log}:\n{log_tail(state.components[n].log)}" for n in pending)
                raise StackError(f"timed out waiting for {', '.join(pending)} to be {what}\n{tails}")
            time.sleep(0.25)
