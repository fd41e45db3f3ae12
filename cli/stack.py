"""`wideviews stack`: the local stack, as background processes tracked by pid.

`up` starts a moto server (S3, SQS, DynamoDB, EMR API), a standalone HBase (HMaster with its embedded
ZooKeeper and RegionServer, rootdir on local disk) and the HBase Thrift server; creates the buckets,
queues with their dead-letter queues, DynamoDB tables, the HBase namespace and the upload
notification; then starts the four workers and the query server (each only once its module exists).
`down` stops exactly the processes `up` started. Everything lives under one state directory,
`Settings.home`:

```
stack.json            {"settings": {...}, "mode": "full"|"infra", "components": {name: {pid, cmd, log, started_at, start_ticks}}}
stack.lock            held while up/down/restart change processes
logs/<name>.log       stdout and stderr of each component
run/<name>.pid        the pid of each running component
hbase/conf/           hbase-site.xml and log4j.properties (Settings.hbase_conf_dir), for HBase clients
hbase/args/           the java argfiles holding each JVM's classpath
hbase/data/           hbase.rootdir; hbase/zookeeper/ and hbase/tmp/ beside it
```

`down` stops the services first, then HBase (a cluster shutdown through the Admin API, ~10 s,
instead of SIGTERM, which can take 30-40 s) and moto. moto keeps S3, SQS and DynamoDB in memory:
after `down` (or a moto restart) they are empty, while HBase keeps its tables. Class-data archives
of the HBase JVMs are cached beside the classpath file (jvm/hbase-runtime/target/cds/) and make
every start after the first on a machine cheaper.

A process is ours only while `/proc/<pid>/cmdline` equals the recorded command and its start time
(in clock ticks since boot) equals the recorded one, so a reused pid is never signalled. Ports not
set by a flag or a `WIDEVIEWS_*` variable are free ports chosen at the first `up` and kept in
stack.json, so a warm `up` finds its HBase data under the same addresses.

Why a Java step for the namespace: happybase speaks HBase's Thrift1 API, which has no namespace
calls. `jvm/src/main/java/org/wideviews/admin/CreateNamespace.java` calls `Admin.createNamespace`;
the stack runs it from the jvm/ jar when that is built, else straight from the source file with the
JDK's single-file launcher: once per HBase root directory, and after every HMaster start, because it
returns only once the master has finished initializing (Thrift lists tables well before DDL works).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from xml.sax.saxutils import escape

import boto3
import happybase
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.config import QUEUE_ROLES, Settings
from shared.jvm import ADD_OPENS, s3a_properties

log = logging.getLogger("wideviews.stack")

Mode = Literal["full", "infra"]
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
# Settings a child process needs from stack.json, besides any field set explicitly at `up`.
STACK_FIELDS: tuple[str, ...] = (
    "region",
    "aws_endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "name_prefix",
    "hbase_thrift_host",
    "hbase_thrift_port",
    "hbase_zk_host",
    "hbase_zk_port",
    "hbase_master_port",
    "hbase_regionserver_port",
    "hbase_namespace",
    "hbase_heap_mb",
    "query_host",
    "query_port",
    "visibility_timeout_s",
    "max_receive_count",
)
# Port settings `up` chooses (free ports) unless set; "moto_port" lives inside aws_endpoint_url.
PORT_FIELDS: tuple[str, ...] = (
    "moto_port",
    "hbase_thrift_port",
    "hbase_zk_port",
    "hbase_master_port",
    "hbase_regionserver_port",
    "query_port",
)
# Settings each infrastructure process was started with; the services read all of them.
COMPONENT_SETTINGS: dict[str, tuple[str, ...]] = {
    "moto": ("aws_endpoint_url",),
    "hbase-master": ("hbase_zk_host", "hbase_zk_port", "hbase_master_port", "hbase_regionserver_port", "hbase_heap_mb"),
    "hbase-thrift": ("hbase_thrift_host", "hbase_thrift_port", "hbase_zk_host", "hbase_zk_port", "hbase_heap_mb"),
}
# The component that listens on each port: its port may be kept while it runs.
PORT_OWNERS: dict[str, str] = {
    "moto_port": "moto",
    "hbase_thrift_port": "hbase-thrift",
    "hbase_zk_port": "hbase-master",
    "hbase_master_port": "hbase-master",
    "hbase_regionserver_port": "hbase-master",
    "query_port": "query",
}
NAMESPACE_CLASS = "org.wideviews.admin.CreateNamespace"
DLQ_RETENTION_S = 14 * 24 * 3600  # the SQS maximum: a dead letter waits for an operator
UPLOAD_NOTIFICATION_ID = "wideviews-uploads-to-ingest"

# Popen objects of children started by this Python process, so their exit is reaped (no zombies
# counted as alive) when up/down run in-process, as in the test fixture.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be brought to the requested state; the message says which log to read."""


# --------------------------------------------------------------------------------------------
# State: stack.json, pid files, lock


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
def _locked(home: Path) -> Iterator[None]:
    """Hold the stack's lock: one up/down/restart at a time per state directory."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "stack.lock", "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Processes: identity by /proc, start, stop


def _proc_stat(pid: int) -> tuple[str, int] | None:
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
    stat = _proc_stat(record.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    if record.start_ticks is not None and stat[1] != record.start_ticks:
        return False
    return _proc_cmdline(record.pid) == record.cmd


def _spawn(settings: Settings, name: str, cmd: list[str], env: dict[str, str]) -> ProcessRecord:
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
    stat = _proc_stat(child.pid)
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


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    """Signal the process group a component leads, only while its leader is provably ours.

    Once the leader has exited, its group id cannot be handed to a new process while members of the
    group are alive, so leftover members are signalled as long as no other process holds the pid.
    """
    if is_ours(record):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, sig)
    elif _proc_stat(record.pid) is None:
        for pid in _group_members(record.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _start_graceful_stop(settings: Settings, name: str, record: ProcessRecord) -> subprocess.Popen[bytes] | None:
    """Ask a component to stop through its own protocol; None when SIGTERM is the way.

    HMaster's SIGTERM hooks stop the master and its in-process RegionServer in no fixed order: when the
    master goes first the RegionServer waits ~30 s for it before closing its regions. A cluster
    shutdown through the Admin API closes the regions first and exits in ~10 s.
    """
    if name != "hbase-master":
        return None
    try:
        main = ["org.apache.hadoop.hbase.master.HMaster", *_hbase_options(settings), "stop", "--shutDownCluster"]
        cmd = _java_cmd(settings, "hbase-stop", main, heap_mb=256, short_lived=True)
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
            _publish_class_data(record.cmd)
            continue
        log.info("stopping %s (pid %d)", name, record.pid)
        timeout_s = STOP_TIMEOUT_S.get(name, SERVICE_STOP_TIMEOUT_S)
        helper = _start_graceful_stop(settings, name, record)
        if helper is not None:
            helpers.append(helper)
            pending[name] = (now + GRACEFUL_STOP_TIMEOUT_S, "term")
        else:
            _signal_group(record, signal.SIGTERM)
            pending[name] = (now + timeout_s, "kill")
    while pending:
        time.sleep(0.1)
        for name in list(pending):
            record = records[name]
            deadline, escalation = pending[name]
            if not is_ours(record):
                _signal_group(record, signal.SIGKILL)  # members left behind by a leader that exited
                if escalation != "kill-again":
                    _publish_class_data(record.cmd)
                del pending[name]
            elif time.monotonic() > deadline:
                if escalation == "term":
                    log.warning("%s (pid %d) still runs after the shutdown request: sending SIGTERM", name, record.pid)
                    _signal_group(record, signal.SIGTERM)
                    pending[name] = (time.monotonic() + STOP_TIMEOUT_S.get(name, SERVICE_STOP_TIMEOUT_S), "kill")
                elif escalation == "kill":
                    log.warning("%s (pid %d) ignored SIGTERM: sending SIGKILL", name, record.pid)
                    _signal_group(record, signal.SIGKILL)
                    pending[name] = (time.monotonic() + 10.0, "kill-again")
                else:
                    log.error("%s (pid %d) survives SIGKILL (uninterruptible?): giving up on it", name, record.pid)
                    del pending[name]
    for helper in helpers:
        if helper.poll() is None:
            helper.kill()
        elif helper.returncode == 0:
            _publish_class_data(helper.args)  # type: ignore[arg-type]
        helper.wait()


# --------------------------------------------------------------------------------------------
# Ports


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def _moto_port(settings: Settings) -> int | None:
    if not settings.aws_endpoint_url:
        return None
    return urlparse(settings.aws_endpoint_url).port


def _port_values(settings: Settings) -> dict[str, int | None]:
    values: dict[str, int | None] = {f: getattr(settings, f) for f in PORT_FIELDS if f != "moto_port"}
    values["moto_port"] = _moto_port(settings)
    return values


def resolve_ports(settings: Settings, state: StackState, requested: dict[str, int] | None = None) -> Settings:
    """Settings with every stack port decided.

    A port given in `requested` (command-line flags) or set through a `WIDEVIEWS_*` variable is used
    as is. A port remembered in stack.json is kept while its component runs or the port is free;
    anything else gets a free port on 127.0.0.1.
    """
    requested = {k: v for k, v in (requested or {}).items() if v is not None}
    remembered = state.settings
    remembered_url = remembered.get("aws_endpoint_url")
    remembered_moto = urlparse(remembered_url).port if remembered_url else None
    values = _port_values(settings)
    decided: dict[str, int] = {}
    for name in PORT_FIELDS:
        value = values[name]
        settings_key = "aws_endpoint_url" if name == "moto_port" else name
        remembered_value = remembered_moto if name == "moto_port" else remembered.get(name)
        from_stack_file = settings_key in remembered and value == remembered_value
        explicit = settings_key in settings.model_fields_set and not from_stack_file
        owner = state.components.get(PORT_OWNERS[name])
        if name in requested:
            decided[name] = requested[name]
        elif explicit and value is not None:
            decided[name] = value
        elif from_stack_file and value is not None and ((owner and is_ours(owner)) or _port_is_free(value)):
            decided[name] = value
    taken = set(decided.values())
    for name in PORT_FIELDS:
        if name not in decided:
            decided[name] = _free_port(taken)
            taken.add(decided[name])
    if len(taken) != len(PORT_FIELDS):
        raise StackError(f"two stack components would share a port: {decided}")
    updates: dict[str, Any] = {k: v for k, v in decided.items() if k != "moto_port"}
    updates["aws_endpoint_url"] = f"http://127.0.0.1:{decided['moto_port']}"
    return settings.model_copy(update=updates)


def stack_settings(settings: Settings) -> dict[str, Any]:
    """The `settings` object of stack.json: what a child's `Settings.load()` must see."""
    keys = set(STACK_FIELDS) | (set(settings.model_fields_set) - {"home", "project_root"})
    return settings.model_dump(mode="json", include=keys)


def child_env(settings: Settings) -> dict[str, str]:
    """Environment of a stack child: `WIDEVIEWS_HOME`, plus stack values over any stale `WIDEVIEWS_*` copy."""
    env = settings.child_env()
    for key, value in stack_settings(settings).items():
        env_key = f"WIDEVIEWS_{key.upper()}"
        if env_key in env and value is not None:
            env[env_key] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------------
# Component commands


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("java not found on PATH: the local HBase needs a JDK 17")
    return java


def hbase_site(settings: Settings) -> dict[str, str]:
    """The configuration of the local standalone HBase (hbase-site.xml properties)."""
    hbase_dir = settings.home / "hbase"
    return {
        "hbase.cluster.distributed": "false",
        "hbase.rootdir": (hbase_dir / "data").as_uri(),
        "hbase.tmp.dir": str(hbase_dir / "tmp"),
        "hbase.zookeeper.property.dataDir": str(hbase_dir / "zookeeper"),
        "hbase.zookeeper.quorum": settings.hbase_zk_host,
        "hbase.zookeeper.property.clientPort": str(settings.hbase_zk_port),
        "hbase.master.port": str(settings.hbase_master_port),
        "hbase.regionserver.port": str(settings.hbase_regionserver_port),
        "hbase.master.ipc.address": "127.0.0.1",
        "hbase.regionserver.ipc.address": "127.0.0.1",
        "hbase.master.info.port": "-1",
        "hbase.regionserver.info.port": "-1",
        # The local filesystem has no hflush/hsync capability; standalone HBase accepts that only when told.
        "hbase.unsafe.stream.capability.enforce": "false",
        # Standalone start-up speed: the master stops waiting as soon as its one RegionServer reports,
        # and the RegionServer retries its first report every second instead of every three.
        "hbase.master.wait.on.regionservers.mintostart": "1",
        "hbase.master.wait.on.regionservers.maxtostart": "1",
        "hbase.regionserver.msginterval": "1000",
        # s3a:// through hadoop-aws (jvm/hbase-runtime/pom.xml) against the moto server, so the
        # RegionServer bulk-loads HFiles straight from the staging bucket, as one on another host would.
        **s3a_properties(settings),
    }


def write_hbase_conf(settings: Settings) -> Path:
    """Write hbase-site.xml and log4j.properties of the local HBase into `settings.hbase_conf_dir`.

    The HMaster gets the same properties as `-D` options (a non-empty directory on its classpath
    would disable class data sharing); the Thrift server and other HBase clients, such as the
    bulk-load tool, read them from this directory first on their classpath.
    """
    conf_dir = settings.hbase_conf_dir
    conf_dir.mkdir(parents=True, exist_ok=True)
    body = "\n".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>" for k, v in hbase_site(settings).items()
    )
    site = f'<?xml version="1.0"?>\n<!-- Written by `wideviews stack up`; rewritten at every start. -->\n<configuration>\n{body}\n</configuration>\n'
    (conf_dir / "hbase-site.xml").write_text(site)
    (conf_dir / "log4j.properties").write_text(
        "log4j.rootLogger=INFO,console\n"
        "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.console.target=System.out\n"
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{2}: %m%n\n"
        "log4j.logger.org.apache.zookeeper=WARN\n"
        "log4j.logger.org.apache.hadoop.hbase.zookeeper=WARN\n"
        "log4j.logger.org.apache.hadoop.metrics2=WARN\n"
        "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
    )
    return conf_dir


def hbase_classpath(settings: Settings) -> str:
    """The Maven-resolved HBase runtime classpath (jars only)."""
    classpath_file = settings.hbase_classpath_file
    if not classpath_file.exists():
        raise StackError(f"{classpath_file} is missing: run `make setup` (it resolves the HBase jars with Maven)")
    return classpath_file.read_text().strip()


def _hbase_options(settings: Settings) -> list[str]:
    """`-D key=value` arguments carrying hbase-site.xml, for HBase's own command lines."""
    return [token for key, value in hbase_site(settings).items() for token in ("-D", f"{key}={value}")]


CDS_DUMP_FLAG = "-XX:ArchiveClassesAtExit="


def _class_data_sharing(settings: Settings, name: str, java: str, classpath: str) -> list[str]:
    """JVM flags that map a class-data archive of an earlier run of `name`, or write one at exit.

    The archive maps the ~10,000 classes HBase loads instead of parsing them from ~150 jars: a
    start spends markedly less CPU. Archives are a build cache beside the classpath file, shared by
    every stack on the machine and keyed by the classpath and the JDK, so a new pom or JDK makes a
    new one. A JVM writes to a private pending file, published by `_publish_class_data` after a clean
    exit, so two stacks never write the same file. The JVM ignores a mismatched archive (its CDS
    warnings are silenced).
    """
    java_path = Path(java).resolve()
    # The JVM rejects an archive when any jar's size or mtime differs: those are part of the key.
    stamps = []
    for entry in [str(java_path), *classpath.split(":")]:
        with contextlib.suppress(OSError):
            stat = os.stat(entry)
            stamps.append(f"{entry}:{stat.st_size}:{stat.st_mtime_ns}")
    key_source = "|".join(stamps)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:12]
    cache = settings.hbase_classpath_file.parent / "cds"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{name}-{key}.jsa"
    quiet = ["-Xlog:cds=off", "-Xlog:cds+dynamic=off"]
    if archive.exists() and archive.stat().st_size > 0:
        return [f"-XX:SharedArchiveFile={archive}", *quiet]
    for stale in cache.glob("*.pending"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
    pending = cache / f"{name}-{key}.{uuid.uuid4().hex[:8]}.pending"
    return [f"{CDS_DUMP_FLAG}{pending}", *quiet]


def _publish_class_data(cmd: Sequence[str]) -> None:
    """After a JVM of `cmd` exited cleanly: make the archive it wrote at exit the shared one."""
    for arg in cmd:
        if not arg.startswith(CDS_DUMP_FLAG):
            continue
        pending = Path(arg[len(CDS_DUMP_FLAG) :])
        final = pending.with_name(pending.name.split(".", 1)[0] + ".jsa")
        with contextlib.suppress(OSError):
            if pending.exists() and pending.stat().st_size > 0 and not final.exists():
                os.replace(pending, final)
                # Archives of older classpaths or JDKs of the same JVM are dead weight (~60 MB each).
                name = final.stem.rsplit("-", 1)[0]
                for old in final.parent.glob(f"{name}-*.jsa"):
                    if old != final and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{12}}\.jsa", old.name):
                        old.unlink(missing_ok=True)
            pending.unlink(missing_ok=True)


def _java_cmd(
    settings: Settings,
    name: str,
    main: Sequence[str],
    *,
    heap_mb: int,
    extra_classpath: str = "",
    short_lived: bool = False,
    conf_on_classpath: bool = False,
    class_data_sharing: bool = True,
) -> list[str]:
    """A `java` command line for one of the stack's JVMs (`name` keys its argfile and class-data archive).

    `conf_on_classpath` is for programs that ignore `-D` options (the Thrift server copies its
    configuration before parsing them): the conf dir goes first on the classpath, and class data
    sharing is off (it refuses non-empty directories on the classpath).
    """
    java = _java()
    classpath = (extra_classpath + ":" if extra_classpath else "") + hbase_classpath(settings)
    if conf_on_classpath:
        classpath = f"{settings.hbase_conf_dir}:{classpath}"
    sharing = _class_data_sharing(settings, name, java, classpath) if class_data_sharing and not conf_on_classpath else []
    # The ~150-jar classpath goes into an argfile: `ps` stays readable and /proc/cmdline short.
    argfile = settings.home / "hbase" / "args" / f"{name}.classpath"
    argfile.parent.mkdir(parents=True, exist_ok=True)
    argfile.write_text(f"-cp {classpath}\n")
    # A one-shot admin call spends its life starting up: C1 only and the serial collector.
    quick_start = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"] if short_lived else []
    return [
        java,
        f"@{argfile}",
        f"-Xmx{heap_mb}m",
        *quick_start,
        *sharing,
        "-Djava.net.preferIPv4Stack=true",
        f"-Djava.io.tmpdir={settings.home / 'hbase' / 'tmp'}",
        f"-Dlog4j.configuration={(settings.hbase_conf_dir / 'log4j.properties').as_uri()}",
        *ADD_OPENS,
        *main,
    ]


def component_cmd(settings: Settings, name: str) -> list[str]:
    """The command line of component `name`."""
    if name == "moto":
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(_moto_port(settings))]
    if name == "hbase-master":
        main = ["org.apache.hadoop.hbase.master.HMaster", *_hbase_options(settings), "start"]
        return _java_cmd(settings, name, main, heap_mb=settings.hbase_heap_mb)
    if name == "hbase-thrift":
        main = ["org.apache.hadoop.hbase.thrift.ThriftServer", "-b", "127.0.0.1"]
        main += ["-p", str(settings.hbase_thrift_port), "--infoport", "-1", "start"]
        return _java_cmd(settings, name, main, heap_mb=max(256, settings.hbase_heap_mb // 2), conf_on_classpath=True)
    if name in SERVICE_MODULES:
        return [sys.executable, "-m", SERVICE_MODULES[name]]
    raise StackError(f"unknown component {name!r}; known: {', '.join(all_components(settings))}")


def service_available(settings: Settings, name: str) -> bool:
    """True once the service's module file exists (services land one by one)."""
    return (settings.project_root / (SERVICE_MODULES[name].replace(".", "/") + ".py")).exists()


def all_components(settings: Settings) -> list[str]:
    return [*INFRA, *(name for name in SERVICE_MODULES if service_available(settings, name))]


def expected_components(settings: Settings, mode: Mode) -> list[str]:
    return list(INFRA) if mode == "infra" else all_components(settings)


# --------------------------------------------------------------------------------------------
# Health


def _aws_client(settings: Settings, service: str, *, timeout_s: float = 5.0) -> Any:
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2})
    return boto3.session.Session().client(service, config=config, **settings.aws_client_kwargs())


def probe_moto(settings: Settings) -> bool:
    """A real S3 call answers."""
    try:
        _aws_client(settings, "s3", timeout_s=2.0).list_buckets()
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


def _port_open(host: str, port: int) -> bool:
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
        return _port_open("127.0.0.1", settings.hbase_zk_port) and _port_open("127.0.0.1", settings.hbase_master_port)
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


def _log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _wait_until(
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
                raise StackError(f"{name} (pid {record.pid}) exited while starting; {record.log}:\n{_log_tail(record.log)}")
            if check(name):
                log.info("%s is %s", name, what)
                pending.remove(name)
        if pending:
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {state.components[n].log}:\n{_log_tail(state.components[n].log)}" for n in pending)
                raise StackError(f"timed out waiting for {', '.join(pending)} to be {what}\n{tails}")
            time.sleep(0.25)


# --------------------------------------------------------------------------------------------
# Resources


def ensure_aws_resources(settings: Settings) -> None:
    """Create, if missing, the buckets, queues (with DLQ and redrive), tables and upload notification.

    Safe to repeat: existing resources are kept, their attributes set again; the notification is
    written only when it differs, because S3 (and moto) send an `s3:TestEvent` each time it is set.
    """
    s3 = _aws_client(settings, "s3")
    sqs = _aws_client(settings, "sqs")
    dynamodb = _aws_client(settings, "dynamodb")
    for bucket in (settings.uploads_bucket, settings.staging_bucket):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            # Outside us-east-1, S3 wants the region spelled out.
            location = {} if settings.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": settings.region}}
            s3.create_bucket(Bucket=bucket, **location)
    # Versioned uploads: every PUT is its own object version, so two uploads of the same bytes are two
    # versions of the dataset, and any number of events for one object are one (shared.messages).
    s3.put_bucket_versioning(Bucket=settings.uploads_bucket, VersioningConfiguration={"Status": "Enabled"})
    queue_arns: dict[str, str] = {}
    for role in QUEUE_ROLES:
        dlq_url = sqs.create_queue(QueueName=settings.queue_name(role, dead_letter=True))["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)})
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(QueueName=settings.queue_name(role))["QueueUrl"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
        attributes = {"VisibilityTimeout": str(settings.visibility_timeout_s), "RedrivePolicy": json.dumps(redrive)}
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        if role == "ingest":
            attributes["Policy"] = json.dumps(_ingest_queue_policy(arn, f"arn:aws:s3:::{settings.uploads_bucket}"))
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        queue_arns[role] = arn
    existing_tables = set(dynamodb.list_tables()["TableNames"])
    tables = {
        settings.datasets_table: [("dataset_id", "HASH")],
        settings.versions_table: [("dataset_id", "HASH"), ("version_id", "RANGE")],
    }
    for table, keys in tables.items():
        if table in existing_tables:
            continue
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )
    for table in tables:
        dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    _ensure_upload_notification(s3, settings, queue_arns["ingest"])


def _ingest_queue_policy(queue_arn: str, bucket_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "uploads-bucket-sends-object-created",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn}},
            }
        ],
    }


def upload_notification(queue_arn: str) -> dict[str, Any]:
    """The uploads bucket's notification: every object created under `uploads/` goes to the ingest queue.

    No suffix rule: S3 matches suffixes case-sensitively, so `X.ZIP` would never arrive. Ingest
    checks the suffix (.zip, .h5ad, .h5 in any case) and fails any other key visibly.
    """
    return {
        "QueueConfigurations": [
            {
                "Id": UPLOAD_NOTIFICATION_ID,
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {
                    "Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}
                },
            }
        ]
    }


def _ensure_upload_notification(s3: Any, settings: Settings, queue_arn: str) -> None:
    wanted = upload_notification(queue_arn)
    current = s3.get_bucket_notification_configuration(Bucket=settings.uploads_bucket)
    current_queues = current.get("QueueConfigurations", [])

    def normal(configs: list[dict[str, Any]]) -> list[Any]:
        return sorted(
            (
                c.get("Id"),
                c["QueueArn"],
                sorted(c["Events"]),
                sorted((r["Name"].lower(), r["Value"]) for r in c.get("Filter", {}).get("Key", {}).get("FilterRules", [])),
            )
            for c in configs
        )

    if normal(current_queues) != normal(wanted["QueueConfigurations"]):
        s3.put_bucket_notification_configuration(Bucket=settings.uploads_bucket, NotificationConfiguration=wanted)


def namespace_cmd(settings: Settings) -> list[str]:
    """The command that creates `settings.hbase_namespace` through HBase's Admin API."""
    args = [settings.hbase_zk_host, str(settings.hbase_zk_port), settings.hbase_namespace]
    jar = settings.jvm_jar
    if jar.exists():
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(jar) as archive:
            if NAMESPACE_CLASS.replace(".", "/") + ".class" in archive.namelist():
                main = [NAMESPACE_CLASS, *args]
                return _java_cmd(settings, "namespace", main, heap_mb=256, extra_classpath=str(jar), short_lived=True)
    source = settings.project_root / "jvm" / "src" / "main" / "java" / (NAMESPACE_CLASS.replace(".", "/") + ".java")
    # The single-file source launcher compiles it in memory against the HBase classpath.
    # Classes compiled in memory cannot be archived: no class data sharing here.
    main = [str(source), *args]
    return _java_cmd(settings, "namespace-source", main, heap_mb=256, short_lived=True, class_data_sharing=False)


def ensure_namespace(settings: Settings, *, timeout_s: float = 180.0, force: bool = False) -> None:
    """Create the HBase namespace unless this root directory already has it (a marker file remembers).

    With `force`, run the Admin call even so: it returns only once the HMaster has finished
    initializing (Thrift lists tables well before DDL is accepted), so it is the readiness barrier
    after the HMaster (re)starts.
    """
    marker = settings.home / "hbase" / "namespaces-created"
    if not force and marker.exists() and settings.hbase_namespace in marker.read_text().split():
        return
    cmd = namespace_cmd(settings)
    log.info("creating HBase namespace %s", settings.hbase_namespace)
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, cwd=settings.project_root, env=child_env(settings)
    )
    _publish_class_data(cmd)
    if result.returncode != 0:
        raise StackError(f"creating HBase namespace {settings.hbase_namespace} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a") as out:
        out.write(settings.hbase_namespace + "\n")


# --------------------------------------------------------------------------------------------
# up / down / status / restart


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
            _publish_class_data(record.cmd)
        env = child_env(settings)
        state.components[name] = _spawn(settings, name, component_cmd(settings, name), env)
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
        _wait_until(settings, state, ["moto"], lambda n: probe_moto(settings), deadline, "answering")
        ensure_aws_resources(settings)
        started_services.extend(_start_missing(settings, state, services))

    def hbase() -> None:
        _wait_until(settings, state, ["hbase-master", "hbase-thrift"], lambda n: probe_thrift(settings), deadline, "answering")
        force = "hbase-master" in started_infra
        ensure_namespace(settings, timeout_s=max(30.0, deadline - time.monotonic()), force=force)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="stack-up") as pool:
        futures = [pool.submit(aws), pool.submit(hbase)]
        for future in futures:
            future.result()
    return started_services


def _wait_services(settings: Settings, state: StackState, deadline: float, names: Sequence[str], started: Sequence[str]) -> None:
    """Wait until `names` are healthy, and those just `started` have survived their first seconds."""
    _wait_until(settings, state, names, lambda n: probe_component(settings, n), deadline, "healthy")
    if not started:
        return
    last_start = max(datetime.fromisoformat(state.components[n].started_at) for n in started)
    settle_s = WORKER_SETTLE_S - (datetime.now(timezone.utc) - last_start).total_seconds()
    if settle_s > 0:
        time.sleep(settle_s)
    _wait_until(settings, state, started, lambda n: True, deadline, "running")


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
    with _locked(settings.home):
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
    with _locked(settings.home):
        state = StackState.read(settings.home)
        stopped = list(state.components)
        for tier in _tiers(stopped):
            _stop_processes(settings, {name: state.components[name] for name in tier})
        state.components.clear()
        state.write(settings.home)
    return stopped


def stop_component(settings: Settings, name: str) -> None:
    """Stop one component (SIGTERM, then SIGKILL after its timeout) and forget it: a fault for tests."""
    with _locked(settings.home):
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
    with _locked(settings.home):
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
            _wait_until(settings, state, [name], lambda n: probe_moto(settings), deadline, "answering")
            ensure_aws_resources(settings)
        elif name == "hbase-master":
            # Not through Thrift, which may be down too: ZooKeeper and RPC ports, then an Admin call
            # that returns once the master has finished initializing.
            _wait_until(settings, state, [name], lambda n: probe_component(settings, n), deadline, "listening")
            ensure_namespace(settings, timeout_s=max(30.0, deadline - time.monotonic()), force=True)
        elif name == "hbase-thrift":
            _wait_until(settings, state, [name], lambda n: probe_thrift(settings), deadline, "answering")
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


# --------------------------------------------------------------------------------------------
# CLI


def _print_endpoints(report: dict[str, Any]) -> None:
    print(f"wideviews stack in {report['home']} ({'healthy' if report['healthy'] else 'NOT healthy'})")
    print(f"  S3/SQS/DynamoDB/EMR  {report['s3_endpoint']}")
    print(f"  HBase Thrift         {report['hbase_thrift']}  (ZooKeeper {report['hbase_zookeeper']})")
    print(f"  query                {report['query_url']}")
    print(f"  logs                 {report['logs']}")
    for name, health in report["components"].items():
        state = "healthy" if health["healthy"] else ("running, not answering" if health["running"] else "stopped")
        pid = health["pid"] if health["pid"] is not None else "-"
        print(f"  {name:<20} {state:<24} pid {pid}")


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    ports = {
        "moto_port": args.moto_port,
        "hbase_thrift_port": args.thrift_port,
        "hbase_zk_port": args.zk_port,
        "query_port": args.query_port,
    }
    try:
        settings = up(settings, infra_only=args.infra_only, ports=ports, timeout_s=args.timeout)
    except StackError as exc:
        print(f"wideviews stack up failed: {exc}", file=sys.stderr)
        print("`wideviews stack down` stops what was started.", file=sys.stderr)
        return 1
    _print_endpoints(status(settings))
    return 0


def _cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = down(settings)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    report = status(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_endpoints(report)
    return 0 if report["healthy"] else 1


def _cmd_restart(args: argparse.Namespace, settings: Settings) -> int:
    try:
        restart_component(settings, args.component)
    except StackError as exc:
        print(f"restarting {args.component} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    try:
        init_resources(settings, timeout_s=args.timeout)
    except StackError as exc:
        print(f"wideviews stack init failed: {exc}", file=sys.stderr)
        return 1
    print("resources ready")
    return 0


def register(subparsers: Any) -> None:
    """Add `wideviews stack up|down|status|restart|init`."""
    stack = subparsers.add_parser("stack", help="the local stack: moto, HBase + Thrift, the services")
    commands = stack.add_subparsers(dest="stack_command", required=True)

    up_parser = commands.add_parser("up", help="start what is missing, create resources, wait until healthy")
    up_parser.add_argument("--infra-only", action="store_true", help="moto, HBase, Thrift and resources; no services")
    up_parser.add_argument("--moto-port", type=int, help="port of the moto server (default: a free port)")
    up_parser.add_argument("--thrift-port", type=int, help="port of the HBase Thrift server (default: a free port)")
    up_parser.add_argument("--zk-port", type=int, help="port of HBase's ZooKeeper (default: a free port)")
    up_parser.add_argument("--query-port", type=int, help="port of the query HTTP server (default: a free port)")
    up_parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health")
    up_parser.set_defaults(run=_cmd_up)

    down_parser = commands.add_parser("down", help="stop the processes this stack started")
    down_parser.set_defaults(run=_cmd_down)

    status_parser = commands.add_parser("status", help="endpoints and health; exit 1 unless all healthy")
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    status_parser.set_defaults(run=_cmd_status)

    restart_parser = commands.add_parser("restart", help="restart one component and wait until healthy")
    restart_parser.add_argument("component", choices=[*INFRA, *SERVICE_MODULES])
    restart_parser.set_defaults(run=_cmd_restart)

    init_parser = commands.add_parser("init", help="create the resources on endpoints started elsewhere (containers)")
    init_parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the endpoints")
    init_parser.set_defaults(run=_cmd_init)
