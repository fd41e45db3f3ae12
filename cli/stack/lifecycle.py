"""The stack's life: which components exist and their command lines, `up`, `down`, `status`, and
stopping or restarting one component."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from cli.stack.hbase import ensure_namespace, hbase_options, java_cmd, publish_class_data, write_hbase_conf
from cli.stack.ports import child_env, moto_port, resolve_ports, stack_settings
from cli.stack.probes import component_health, probe_component, probe_moto, probe_thrift, wait_until
from cli.stack.processes import Mode, ProcessRecord, StackError, StackState, is_ours, locked, signal_group, spawn
from cli.stack.resources import ensure_aws_resources
from shared.config import Settings

log = logging.getLogger("wideviews.stack")


INFRA: tuple[str, ...] = ("moto", "hbase-master", "hbase-thrift")
# Service component -> the module `python -m` runs; started only once its file exists.
SERVICE_MODULES: dict[str, str] = {
    "ingest": "services.ingest.main",
    "compute": "services.compute.main",
    "loader": "services.loader.main",
    "publisher": "services.publisher.main",
    "query": "services.query.server",
}
# SIGTERM first, SIGKILL after this long. HMaster closes its regions and WALs (tens of seconds when
# busy); a worker gets its loop's 20 s stop grace plus the release of in-flight messages.
STOP_TIMEOUT_S: dict[str, float] = {"moto": 10.0, "hbase-master": 60.0, "hbase-thrift": 20.0}
GRACEFUL_STOP_TIMEOUT_S = 45.0
SERVICE_STOP_TIMEOUT_S = 30.0
# A worker counts as started only after surviving this long (an import error kills it sooner).
WORKER_SETTLE_S = 1.5
# Settings each infrastructure process was started with; the services read all of them.
COMPONENT_SETTINGS: dict[str, tuple[str, ...]] = {
    "moto": ("aws_endpoint_url",),
    "hbase-master": ("hbase_zk_host", "hbase_zk_port", "hbase_master_port", "hbase_regionserver_port", "hbase_heap_mb"),
    "hbase-thrift": ("hbase_thrift_host", "hbase_thrift_port", "hbase_zk_host", "hbase_zk_port", "hbase_heap_mb"),
}


def component_cmd(settings: Settings, name: str) -> list[str]:
    """The command line of component `name`."""
    if name == "moto":
        return [sys.executable, "-m", "cli.stack.moto_server", "-H", "127.0.0.1", "-p", str(moto_port(settings))]
    if name == "hbase-master":
        main = ["org.apache.hadoop.hbase.master.HMaster", *hbase_options(settings), "start"]
        return java_cmd(settings, name, main, heap_mb=settings.hbase_heap_mb)
    if name == "hbase-thrift":
        main = ["org.apache.hadoop.hbase.thrift.ThriftServer", "-b", "127.0.0.1"]
        main += ["-p", str(settings.hbase_thrift_port), "--infoport", "-1", "start"]
        return java_cmd(settings, name, main, heap_mb=max(256, settings.hbase_heap_mb // 2), conf_on_classpath=True)
    if name in SERVICE_MODULES:
        return [sys.executable, "-m", SERVICE_MODULES[name]]
    raise StackError(f"unknown component {name!r}; known: {', '.join(all_components(settings))}")


def service_available(settings: Settings, name: str) -> bool:
    """True once the service's module file exists (services land one by one)."""
    return (settings.project_root / (SERVICE_MODULES[name].replace(".", "/") + ".py")).exists()


def all_components(settings: Settings) -> list[str]:
    """The infrastructure and every service whose module exists, in start order."""
    return [*INFRA, *(name for name in SERVICE_MODULES if service_available(settings, name))]


def expected_components(settings: Settings, mode: Mode) -> list[str]:
    """The components a stack in `mode` runs (`infra`: moto and HBase only)."""
    return list(INFRA) if mode == "infra" else all_components(settings)


def _start_graceful_stop(settings: Settings, name: str, record: ProcessRecord) -> subprocess.Popen[bytes] | None:
    """Ask a component to stop through its own protocol; None when SIGTERM is the way.

    HMaster's SIGTERM hooks stop the master and its in-process RegionServer in no fixed order: when the
    master goes first the RegionServer waits ~30 s for it before closing its regions. A cluster
    shutdown through the Admin API closes the regions first and exits in ~10 s.
    """
    if name != "hbase-master":
        return None
    try:
        main = ["org.apache.hadoop.hbase.master.HMaster", *hbase_options(settings), "stop", "--shutDownCluster"]
        cmd = java_cmd(settings, "hbase-stop", main, heap_mb=256, short_lived=True)
    except StackError:
        return None
    with open(record.log, "ab") as log_file:
        log_file.write(f"\n===== wideviews stack asks for a cluster shutdown: {' '.join(cmd)}\n".encode())
        log_file.flush()
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=settings.project_root
        )


def _stop_processes(settings: Settings, records: dict[str, ProcessRecord]) -> None:
    """Stop each of `records` at once: graceful request or SIGTERM, then SIGTERM, then SIGKILL on timeouts."""
    # name -> (deadline, next escalation: "term", "kill" or "kill-again")
    pending: dict[str, tuple[float, str]] = {}
    helpers: list[subprocess.Popen[bytes]] = []
    now = time.monotonic()
    for name, record in records.items():
        if not is_ours(record):
            log.info("%s (pid %d) is no longer running: dropping its record", name, record.pid)
            publish_class_data(record.cmd)
            continue
        log.info("stopping %s (pid %d)", name, record.pid)
        timeout_s = STOP_TIMEOUT_S.get(name, SERVICE_STOP_TIMEOUT_S)
        helper = _start_graceful_stop(settings, name, record)
        if helper is not None:
            helpers.append(helper)
            pending[name] = (now + GRACEFUL_STOP_TIMEOUT_S, "term")
        else:
            signal_group(record, signal.SIGTERM)
            pending[name] = (now + timeout_s, "kill")
    while pending:
        time.sleep(0.1)
        for name in list(pending):
            record = records[name]
            deadline, escalation = pending[name]
            if not is_ours(record):
                signal_group(record, signal.SIGKILL)  # members left behind by a leader that exited
                if escalation != "kill-again":
                    publish_class_data(record.cmd)
                del pending[name]
            elif time.monotonic() > deadline:
                if escalation == "term":
                    log.warning("%s (pid %d) still runs after the shutdown request: sending SIGTERM", name, record.pid)
                    signal_group(record, signal.SIGTERM)
                    pending[name] = (time.monotonic() + STOP_TIMEOUT_S.get(name, SERVICE_STOP_TIMEOUT_S), "kill")
                elif escalation == "kill":
                    log.warning("%s (pid %d) ignored SIGTERM: sending SIGKILL", name, record.pid)
                    signal_group(record, signal.SIGKILL)
                    pending[name] = (time.monotonic() + 10.0, "kill-again")
                else:
                    log.error("%s (pid %d) survives SIGKILL (uninterruptible?): giving up on it", name, record.pid)
                    del pending[name]
    for helper in helpers:
        if helper.poll() is None:
            helper.kill()
        elif helper.returncode == 0:
            publish_class_data(helper.args)  # type: ignore[arg-type]
        helper.wait()


def _prepare_home(settings: Settings) -> None:
    hbase_dir = settings.home / "hbase"
    for sub in ("logs", "run"):
        (settings.home / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "zookeeper"):
        (hbase_dir / sub).mkdir(parents=True, exist_ok=True)
    if not (hbase_dir / "data").exists():
        # A new root directory has no namespace yet, whatever an older marker says.
        (hbase_dir / "namespaces-created").unlink(missing_ok=True)
    write_hbase_conf(settings)


def _start_missing(settings: Settings, state: StackState, names: Sequence[str]) -> list[str]:
    """Start each of `names` not running as ours; return those started."""
    started = []
    for name in names:
        record = state.components.get(name)
        if record is not None and is_ours(record):
            continue
        if record is not None:
            log.info("%s (pid %d) is gone: starting it again", name, record.pid)
            publish_class_data(record.cmd)
        env = child_env(settings)
        state.components[name] = spawn(settings, name, component_cmd(settings, name), env)
        state.write(settings.home)
        started.append(name)
    return started


def _available_services(settings: Settings) -> list[str]:
    return [name for name in SERVICE_MODULES if service_available(settings, name)]


def _bring_up(settings: Settings, state: StackState, deadline: float, services: Sequence[str]) -> list[str]:
    """Start what is missing of the infrastructure and `services`; wait until the infrastructure answers.

    The services start as soon as their queues, buckets and tables exist, while HBase is still
    starting: their Python start-up overlaps the JVMs'. (They reach HBase only to handle a message.)
    Returns the services started.
    """
    started_infra = _start_missing(settings, state, INFRA)
    started_services: list[str] = []

    def aws() -> None:
        wait_until(settings, state, ["moto"], lambda n: probe_moto(settings), deadline, "answering")
        ensure_aws_resources(settings)
        started_services.extend(_start_missing(settings, state, services))

    def hbase() -> None:
        wait_until(settings, state, ["hbase-master", "hbase-thrift"], lambda n: probe_thrift(settings), deadline, "answering")
        force = "hbase-master" in started_infra
        ensure_namespace(settings, timeout_s=max(30.0, deadline - time.monotonic()), force=force)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="stack-up") as pool:
        futures = [pool.submit(aws), pool.submit(hbase)]
        for future in futures:
            future.result()
    return started_services


def _wait_services(settings: Settings, state: StackState, deadline: float, names: Sequence[str], started: Sequence[str]) -> None:
    """Wait until `names` are healthy, and those just `started` have survived their first seconds."""
    wait_until(settings, state, names, lambda n: probe_component(settings, n), deadline, "healthy")
    if not started:
        return
    last_start = max(datetime.fromisoformat(state.components[n].started_at) for n in started)
    settle_s = WORKER_SETTLE_S - (datetime.now(timezone.utc) - last_start).total_seconds()
    if settle_s > 0:
        time.sleep(settle_s)
    wait_until(settings, state, started, lambda n: True, deadline, "running")


def up(
    settings: Settings,
    *,
    infra_only: bool = False,
    ports: dict[str, int] | None = None,
    timeout_s: float = 300.0,
) -> Settings:
    """Start what is missing or dead, create the resources, wait until all is healthy.

    Returns the settings of the running stack (ports decided). `ports` maps names of PORT_FIELDS to
    fixed ports. Raises StackError with the failing component's log tail; what was started keeps
    running so the log can be read, and `down` stops it.
    """
    deadline = time.monotonic() + timeout_s
    with locked(settings.home):
        state = StackState.read(settings.home)
        settings = resolve_ports(settings, state, ports)
        restarting = _stop_outdated(settings, state, state.settings)
        state.settings = stack_settings(settings)
        state.mode = "infra" if infra_only else "full"
        state.write(settings.home)
        _prepare_home(settings)
        # --infra-only starts no service, but restarts those it had to stop for new settings.
        services = [n for n in _available_services(settings) if not infra_only or n in restarting]
        started = _bring_up(settings, state, deadline, services)
        _wait_services(settings, state, deadline, services, started)
        state.write(settings.home)
    return Settings.load(home=settings.home)


def init_resources(settings: Settings, *, timeout_s: float = 300.0) -> None:
    """Wait for an S3/SQS/DynamoDB endpoint and an HBase Thrift server started elsewhere, then create the resources.

    For docker-compose, where containers run the processes: nothing is started or tracked here.
    """
    deadline = time.monotonic() + timeout_s
    for name, probe in (("S3 endpoint", probe_moto), ("HBase Thrift", probe_thrift)):
        while not probe(settings):
            if time.monotonic() > deadline:
                raise StackError(f"timed out waiting for the {name}")
            time.sleep(1.0)
    ensure_aws_resources(settings)
    ensure_namespace(settings, timeout_s=max(30.0, deadline - time.monotonic()), force=True)


def _stop_outdated(settings: Settings, state: StackState, previous: dict[str, Any]) -> list[str]:
    """Stop running components whose settings changed since they started (a new port, a new prefix).

    `up` then starts them again with the new settings; the others keep running. Returns those stopped.
    """
    current = stack_settings(settings)
    changed = {key for key in set(current) | set(previous) if current.get(key) != previous.get(key)}
    if not previous or not changed:
        return []
    outdated = {
        name: record
        for name, record in state.components.items()
        if is_ours(record) and (name not in COMPONENT_SETTINGS or changed & set(COMPONENT_SETTINGS[name]))
    }
    if outdated:
        log.info("settings changed (%s): restarting %s", ", ".join(sorted(changed)), ", ".join(outdated))
        for tier in _tiers(list(outdated)):
            _stop_processes(settings, {name: outdated[name] for name in tier})
        for name in outdated:
            del state.components[name]
    return list(outdated)


def _tiers(names: Sequence[str]) -> list[list[str]]:
    # Services first (they release in-flight messages through SQS), then the infrastructure together.
    services = [n for n in names if n not in INFRA]
    infra = [n for n in names if n in INFRA]
    return [tier for tier in (services, infra) if tier]


def down(settings: Settings) -> list[str]:
    """Stop every process this stack started (never another), also after a crash; return their names.

    The state directory stays (HBase data, logs, chosen ports) for a warm `up`. moto keeps its S3,
    SQS and DynamoDB contents in memory only: they are gone after `down`.
    """
    with locked(settings.home):
        state = StackState.read(settings.home)
        stopped = list(state.components)
        for tier in _tiers(stopped):
            _stop_processes(settings, {name: state.components[name] for name in tier})
        state.components.clear()
        state.write(settings.home)
    return stopped


def stop_component(settings: Settings, name: str) -> None:
    """Stop one component (SIGTERM, then SIGKILL after its timeout) and forget it: a fault for tests."""
    with locked(settings.home):
        state = StackState.read(settings.home)
        record = state.components.pop(name, None)
        if record is not None:
            _stop_processes(settings, {name: record})
        state.write(settings.home)


def restart_component(settings: Settings, name: str, *, timeout_s: float = 300.0) -> None:
    """Stop one component if it runs, start it again and wait until it is healthy.

    A restarted moto starts empty, so the AWS resources are created again; HBase keeps its data.
    """
    deadline = time.monotonic() + timeout_s
    with locked(settings.home):
        state = StackState.read(settings.home)
        settings = Settings.load(home=settings.home)
        component_cmd(settings, name)  # unknown names fail before anything is stopped
        record = state.components.pop(name, None)
        if record is not None:
            _stop_processes(settings, {name: record})
        if name in INFRA:
            write_hbase_conf(settings)
        _start_missing(settings, state, [name])
        if name == "moto":
            wait_until(settings, state, [name], lambda n: probe_moto(settings), deadline, "answering")
            ensure_aws_resources(settings)
        elif name == "hbase-master":
            # Not through Thrift, which may be down too: ZooKeeper and RPC ports, then an Admin call
            # that returns once the master has finished initializing.
            wait_until(settings, state, [name], lambda n: probe_component(settings, n), deadline, "listening")
            ensure_namespace(settings, timeout_s=max(30.0, deadline - time.monotonic()), force=True)
        elif name == "hbase-thrift":
            wait_until(settings, state, [name], lambda n: probe_thrift(settings), deadline, "answering")
        else:
            _wait_services(settings, state, deadline, [name], [name])
        state.write(settings.home)


def status(settings: Settings) -> dict[str, Any]:
    """Endpoints and the health of every component (those expected by the last `up`, and any recorded)."""
    state = StackState.read(settings.home)
    if state.settings:
        settings = Settings.load(home=settings.home)
    names = list(dict.fromkeys([*expected_components(settings, state.mode), *state.components]))
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="stack-status") as pool:
        healths = dict(zip(names, pool.map(lambda n: component_health(settings, state, n), names)))
    return {
        "home": str(settings.home),
        "mode": state.mode,
        "healthy": bool(state.components) and all(h["healthy"] for h in healths.values()),
        "query_url": f"http://{settings.query_host}:{settings.query_port}",
        "s3_endpoint": settings.aws_endpoint_url,
        "aws_endpoint_url": settings.aws_endpoint_url,
        "hbase_thrift": f"{settings.hbase_thrift_host}:{settings.hbase_thrift_port}",
        "hbase_zookeeper": f"{settings.hbase_zk_host}:{settings.hbase_zk_port}",
        "hbase_namespace": settings.hbase_namespace,
        "logs": str(settings.home / "logs"),
        "components": healths,
    }
