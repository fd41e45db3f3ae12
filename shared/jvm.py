"""Bridge to the JVM tools of `jvm/`: the cell file format, and the `java` runs of WriteHFiles and BulkLoad.

Python never writes HFiles itself: it writes *cell files*, and `org.wideviews.hfile.WriteHFiles` turns
them into HFiles that `org.wideviews.hfile.BulkLoad` loads into HBase. Build the jar first with
`mvn -q -B -f jvm/pom.xml package` (writes `jvm/target/wideviews-jvm.jar` and
`jvm/target/runtime-classpath.txt`).

Cell file format (the contract with `org.wideviews.hfile.CellFile`)
------------------------------------------------------------------
A sequence of records, nothing else (no header, no trailer). One record per cell::

    uint32 row_len | row bytes | uint32 qualifier_len | qualifier bytes | uint32 value_len | value bytes

- Lengths are unsigned 32-bit big-endian. `row_len` is 1..32767; a qualifier or value may be empty.
- Records are sorted by (row, qualifier) in unsigned byte order (HBase's order, and Python's `bytes`
  order), with no repeated (row, qualifier). Several files given to one `write_hfiles` call are read
  as one stream, in order, and that whole stream must be sorted.
- The column family is not in the file: it is an argument, one family per file. Every cell of one
  `write_hfiles` call gets the same timestamp.

Exit codes of the tools map onto the error kinds: 2 (input breaks the contract, table missing) raises
`Permanent`; anything else (HBase unreachable, JVM crash, timeout) raises `Transient`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import Permanent, Transient

WRITE_HFILES_MAIN = "org.wideviews.hfile.WriteHFiles"
BULK_LOAD_MAIN = "org.wideviews.hfile.BulkLoad"
TOOL_SERVER_MAIN = "org.wideviews.hfile.ToolServer"
CREATE_TABLE_MAIN = "org.wideviews.hfile.CreateTable"

# What HBase 2.6 needs opened on JDK 17 (reflection into NIO buffers, Unsafe, netty's direct memory).
ADD_OPENS: tuple[str, ...] = (
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED",
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
)

# Inside the jar: warnings only, on stderr, so stdout holds just the tool's JSON line.
LOG4J_CONFIG = "-Dlog4j.configuration=wideviews-log4j.properties"

# C1 only and the serial collector: little JIT and GC work for a short-lived client.
QUICK_START: tuple[str, ...] = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

# Jar name prefixes of what HFileOutputFormat2 needs beyond Spark 3.5's own jars (see `spark_classpath`).
_SPARK_NEEDS = ("hbase-", "opentelemetry-")

# How long one bulk load waits out transient HBase states (table not yet available, region in
# transition, splitting or too busy, RegionServer restarting) before raising `Transient`.
BULK_LOAD_BUSY_WAIT_S = 120.0

_LENGTH = struct.Struct(">I")
_FLUSH_CELLS = 65_536
_FLUSH_BYTES = 8 << 20
_STDERR_TAIL_LINES = 20


def java_command(settings: Settings, main_class: str, args: Sequence[str], *, heap_mb: int = 1024, quick_start: bool = False) -> list[str]:
    """The `java` command line running `main_class` of the wideviews jar with `args`.

    The classpath is the jar, then the runtime classpath Maven wrote beside it; raises
    `FileNotFoundError` (a deployment fault, not a data one) when either is missing. `quick_start`
    suits a JVM that mostly waits (BulkLoad): it starts in about half the time on a busy machine,
    but runs hot loops slower, so WriteHFiles goes without it.
    """
    needed = [settings.jvm_jar] + ([] if settings.jvm_dependency_classpath else [settings.jvm_classpath_file])
    for built in needed:
        if not built.is_file():
            raise FileNotFoundError(f"{built} is missing: build it with `mvn -q -B -f jvm/pom.xml package`")
    dependencies = settings.jvm_dependency_classpath or settings.jvm_classpath_file.read_text().strip()
    classpath = os.pathsep.join([str(settings.jvm_jar), dependencies])
    tuning = QUICK_START if quick_start else ()
    return ["java", f"-Xmx{heap_mb}m", *tuning, *ADD_OPENS, LOG4J_CONFIG, "-cp", classpath, main_class, *args]


def spark_classpath(settings: Settings) -> list[str]:
    """Jars to add to a PySpark driver and its executors for HFileOutputFormat2 and the converters.

    The wideviews jar, HBase's own jars (its shaded protobuf, netty and friends included) and the
    OpenTelemetry API HBase 2.6 traces with; nothing Spark already ships, so HBase's Hadoop 2.10
    client never shadows Spark's Hadoop 3.3. Use it as `spark.driver.extraClassPath` and
    `spark.executor.extraClassPath` (joined with `os.pathsep`), with the key converter
    `org.wideviews.hfile.ImmutableBytesWritableConverter` and the value converter
    `org.wideviews.hfile.KeyValueConverter`; jvm/README.md has the whole call.
    """
    java_command(settings, WRITE_HFILES_MAIN, [])  # the same missing-build check
    dependencies = settings.jvm_classpath_file.read_text().strip().split(os.pathsep)
    return [str(settings.jvm_jar), *(jar for jar in dependencies if Path(jar).name.startswith(_SPARK_NEEDS))]


def spark_s3_classpath(settings: Settings) -> list[str]:
    """hadoop-aws and its AWS SDK bundle for Spark's `s3a://` (pyspark ships Hadoop 3.3.4 without them)."""
    path = settings.spark_s3_classpath_file
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run `make setup` (it resolves jvm/spark-runtime)")
    return path.read_text().strip().split(os.pathsep)


def write_entry_file(path: Path, rows: Sequence[bytes], qualifiers: Sequence[bytes], values: Sequence[bytes]) -> int:
    """Write entries (HBase cells: row, qualifier, value) in the entry file format the jvm/ writer reads; returns its size in bytes.

    The entries must already be sorted by (row, qualifier) without repeats; the order is not checked
    here but by `write_hfiles`, which raises `Permanent` naming the first row out of place.
    Raises `ValueError` when the three sequences differ in length, `TypeError` for a non-bytes item.
    """
    if not len(rows) == len(qualifiers) == len(values):
        raise ValueError(f"{len(rows)} rows, {len(qualifiers)} qualifiers and {len(values)} values: one each per cell")
    pack = _LENGTH.pack
    size_bytes = pending = 0
    with open(path, "wb") as out:
        parts: list[bytes] = []
        for i, (row, qualifier, value) in enumerate(zip(rows, qualifiers, values)):
            parts += (pack(len(row)), row, pack(len(qualifier)), qualifier, pack(len(value)), value)
            pending += len(value)
            # Joined and written every _FLUSH_CELLS cells or _FLUSH_BYTES of values, whichever comes
            # first: the join copies, and a transpose unit's values are hundreds of MB.
            if (i + 1) % _FLUSH_CELLS == 0 or pending >= _FLUSH_BYTES:
                size_bytes += out.write(b"".join(parts))
                parts.clear()
                pending = 0
        size_bytes += out.write(b"".join(parts))
    return size_bytes


def write_hfiles(
    settings: Settings,
    cell_files: Sequence[Path],
    out_dir: Path,
    family: str,
    *,
    timestamp_ms: int | None = None,
    max_file_bytes: int | None = None,
    heap_mb: int = 1024,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Turn sorted cell files into bulk-loadable HFiles under `out_dir/<family>/`.

    Returns WriteHFiles' summary `{"cells": n, "rows": n, "files": [paths], "bytes": n}`.
    `timestamp_ms` is every cell's timestamp (default: now); give the version's own so a rewritten
    chunk yields identical cells. A new HFile starts at the first row boundary past `max_file_bytes`
    (default 1 GiB). An existing `out_dir/<family>` is replaced, so a retry starts clean.
    Raises `Permanent` for cells out of order, repeated or malformed (the message names the file,
    record and row), `Transient` for any other failure of the JVM. Blocks: run it in a thread from
    async code.
    """
    family_dir = out_dir / family
    if family_dir.exists():
        shutil.rmtree(family_dir)
    args = ["--output", str(out_dir), "--family", family]
    for cell_file in cell_files:
        args += ["--input", str(cell_file)]
    if timestamp_ms is not None:
        args += ["--timestamp", str(timestamp_ms)]
    if max_file_bytes is not None:
        args += ["--max-file-bytes", str(max_file_bytes)]
    return _run_tool(settings, WRITE_HFILES_MAIN, args, heap_mb=heap_mb, timeout_s=timeout_s)


def s3a_properties(settings: Settings) -> dict[str, str]:
    """Hadoop `fs.s3a.*` properties through which HBase and the jvm/ tools read `s3a://` of this deployment.

    Against a local endpoint (the moto server): that endpoint over plain HTTP, path-style addressing
    (moto serves no per-bucket host names) and its test credentials. Against real AWS (no endpoint
    set): none of those, so s3a's default credential chain (the instance's role) and endpoint apply.
    Both ways writes are buffered in memory, never in `fs.s3a.buffer.dir` on local disk (Hadoop
    2.10's default otherwise): BulkLoad writes to S3 only to split an HFile spanning a region boundary.

    Each option is also given per bucket (`fs.s3a.bucket.<staging bucket>.<option>`) because that
    form alone reaches the RegionServer's reads: a store validates a bulk-loaded HFile through its
    store configuration (HBase's CompoundConfiguration), and S3AFileSystem copies that with
    `new Configuration(conf)`, which keeps only the default resources and the per-bucket options
    that S3AUtils.propagateBucketOptions re-applies.
    """
    options = {"fast.upload": "true", "fast.upload.buffer": "bytebuffer"}
    if settings.aws_endpoint_url:
        options |= {
            "endpoint": settings.aws_endpoint_url,
            "path.style.access": "true",
            "connection.ssl.enabled": str(settings.aws_endpoint_url.startswith("https:")).lower(),
            "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
            "access.key": settings.aws_access_key_id,
            "secret.key": settings.aws_secret_access_key,
        }
    properties = {"fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    if settings.spark_s3_scheme == "s3":
        # On EMR HBase reads s3:// through EMRFS; a JVM outside the cluster (the loader's BulkLoad,
        # listing the prefix and reading trailers) reads the same URIs through s3a.
        properties["fs.s3.impl"] = "org.apache.hadoop.fs.s3a.S3AFileSystem"
    properties |= {f"fs.s3a.{key}": value for key, value in options.items()}
    properties |= {f"fs.s3a.bucket.{settings.staging_bucket}.{key}": value for key, value in options.items()}
    return properties


def hbase_hfiles_uri(settings: Settings, hfiles_uri: str) -> str:
    """`s3://bucket/prefix` as the URI HBase reads it by: the deployment's Hadoop S3 scheme (`settings.spark_s3_scheme`).

    `s3a` (hadoop-aws) on the local stack; `s3` (EMRFS) on EMR, whose HBase reads staging through the
    same EMRFS its Spark steps write it with.
    """
    if not hfiles_uri.startswith("s3://"):
        raise Permanent(f"HFiles must be in S3, not at {hfiles_uri!r}")
    return f"{settings.spark_s3_scheme}://{hfiles_uri[len('s3://'):]}"


def bulk_load(
    settings: Settings,
    table: str,
    hfile_dirs: Path | str | Sequence[Path | str],
    *,
    heap_mb: int = 512,
    timeout_s: float = 3600.0,
    busy_wait_s: float = BULK_LOAD_BUSY_WAIT_S,
) -> dict[str, Any]:
    """Bulk-load `<dir>/<family>/<hfile>` of each directory into the existing HBase `table` (`namespace:name`), in one load.

    A directory is an `s3a://bucket/prefix` (the region servers read it straight from S3; nothing
    passes through this machine's disk), a local path or a `file://` URI on the region servers'
    machine. HBase copies HFiles from any file system other than its own HDFS, so the directories
    are left as they were and loading them again writes the same cells again.

    Returns BulkLoad's summary `{"table", "loaded_families", "files", "attempts", "waited_s"}`.
    Transient HBase states (the table not yet available or disabled, a region moving, splitting or
    too busy, a RegionServer restarting) are waited out inside BulkLoad, with backoff, for up to
    `busy_wait_s` (default `BULK_LOAD_BUSY_WAIT_S`, 120 s); past that they raise `Transient`.
    Raises `Permanent` when the table or a directory is missing, a directory holds no HFile, a file
    that is not an HFile, or a family directory the table lacks; `Transient` for any other failure.
    Blocks: run it in a thread from async code.
    """
    dirs = [hfile_dirs] if isinstance(hfile_dirs, (str, Path)) else list(hfile_dirs)
    if not dirs:
        raise ValueError("bulk_load needs at least one HFile directory")
    args = [
        "--zk-quorum", settings.hbase_zk_host,
        "--zk-port", str(settings.hbase_zk_port),
        "--table", table,
        "--busy-wait-ms", str(int(busy_wait_s * 1000)),
    ]  # fmt: skip
    for hfile_dir in dirs:
        args += ["--dir", str(hfile_dir)]
    for key, value in s3a_properties(settings).items():
        args += ["--conf", f"{key}={value}"]
    return _run_tool(settings, BULK_LOAD_MAIN, args, heap_mb=heap_mb, timeout_s=timeout_s, quick_start=True)


def create_table(settings: Settings, table: str, family: str, region_boundaries: Sequence[bytes], *, timeout_s: float = 600.0) -> dict[str, Any]:
    """Create `table` with one family, pre-split at `region_boundaries` (sorted, unique), unless it exists.

    Returns `{"table", "created", "regions"}`. Thrift1 (happybase) cannot pre-split, hence the JVM.
    The keys travel hex-encoded on the command line (no file): 5,000 keys of 20 bytes are ~200 KB.
    """
    args = ["--zk-quorum", settings.hbase_zk_host, "--zk-port", str(settings.hbase_zk_port), "--table", table, "--family", family]
    if region_boundaries:
        args += ["--splits-hex", ",".join(key.hex() for key in region_boundaries)]
    return _run_tool(settings, CREATE_TABLE_MAIN, args, heap_mb=256, timeout_s=timeout_s, quick_start=True)


def _run_tool(settings: Settings, main_class: str, args: Sequence[str], *, heap_mb: int, timeout_s: float, quick_start: bool = False) -> dict[str, Any]:
    """Run one tool; its last stdout line is its JSON summary, exit code 2 means bad input.

    Runs in this process's long-lived `ToolServer` JVM when `settings.jvm_tool_server` (the default
    for workers: a JVM start costs seconds per call on a busy machine), else in a JVM of its own.
    """
    tool = main_class.rsplit(".", 1)[-1]
    if settings.jvm_tool_server:
        exit_code, stdout, stderr = _tool_server(settings).call(tool, args, timeout_s=timeout_s)
    else:
        command = java_command(settings, main_class, args, heap_mb=heap_mb, quick_start=quick_start)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise Transient(f"{tool} ran past {timeout_s:.0f} s: {_tail(exc.stderr)}") from exc
        exit_code, stdout, stderr = done.returncode, done.stdout, done.stderr
    if exit_code == 2:
        # The tool's last stderr line is its one-line verdict, written for a person to read.
        raise Permanent(_last_line(stderr) or f"{tool} rejected its input")
    if exit_code != 0:
        raise Transient(f"{tool} exited with {exit_code}: {_tail(stderr)}")
    summary_line = _last_line(stdout)
    try:
        summary: dict[str, Any] = json.loads(summary_line)
    except json.JSONDecodeError as exc:
        raise Transient(f"{tool} printed no JSON summary (stdout ends {summary_line!r}): {_tail(stderr)}") from exc
    return summary


class ToolServer:
    """One `org.wideviews.hfile.ToolServer` JVM serving WriteHFiles, BulkLoad and CreateTable runs over a pipe.

    Protocol: a request line `ID\tTOOL\tARG...`, a response line `{"id", "exit", "stdout", "stderr"}`.
    The JVM runs up to `threads` requests at once and answers each as it finishes, so callers on
    several threads (the loader's concurrent messages, compute's views) overlap their HBase and S3
    waits. A reader thread hands each response to its caller. A dead or hung JVM is killed and every
    call waiting on it raises `Transient` (the next call starts a fresh one).
    """

    def __init__(self, settings: Settings, *, heap_mb: int, threads: int = 4) -> None:
        self._command = java_command(settings, TOOL_SERVER_MAIN, [str(threads)], heap_mb=heap_mb)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        # Per request id: the JVM it was sent to, the event its caller waits on, the reply once in.
        self._waiting: dict[str, tuple[subprocess.Popen[bytes], threading.Event, list[dict[str, Any]]]] = {}
        self._ids = itertools.count()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            proc = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self._proc = proc
            threading.Thread(target=self._read_replies, args=(proc,), name="jvm-tool-replies", daemon=True).start()
        return self._proc

    def _read_replies(self, proc: subprocess.Popen[bytes]) -> None:
        """Hand each response line of `proc` to the call waiting on its id; on EOF wake its callers
        (a JVM started after this one died keeps its own)."""
        assert proc.stdout is not None
        for line in proc.stdout:
            reply = json.loads(line)
            with self._lock:
                waiter = self._waiting.pop(str(reply["id"]), None)
            if waiter is not None:
                waiter[2].append(reply)
                waiter[1].set()
        with self._lock:
            if self._proc is proc:
                self._proc = None
            for request_id in [r for r, (sent_to, _, _) in self._waiting.items() if sent_to is proc]:
                self._waiting.pop(request_id)[1].set()

    def call(self, tool: str, args: Sequence[str], *, timeout_s: float) -> tuple[int, str, str]:
        """Run one tool call in the long-lived JVM; (exit code, stdout, stderr)."""
        if any("\t" in a or "\n" in a for a in args):
            raise Permanent(f"{tool}: an argument contains a tab or newline")
        done, replies = threading.Event(), []
        broken: OSError | None = None
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None
            request_id = str(next(self._ids))
            self._waiting[request_id] = (proc, done, replies)
            try:
                proc.stdin.write(("\t".join([request_id, tool, *args]) + "\n").encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                self._waiting.pop(request_id, None)
                broken = exc
        if broken is not None:
            self._kill(proc)
            raise Transient(f"{tool}: the tool JVM died ({broken})") from broken
        if not done.wait(timeout_s):
            with self._lock:
                self._waiting.pop(request_id, None)
            # A hung JVM holds every other call too: replace it (they fail Transient and retry).
            self._kill(proc)
            raise Transient(f"{tool}: the tool JVM ran past {timeout_s:.0f} s")
        if not replies:
            raise Transient(f"{tool}: the tool JVM exited")
        reply = replies[0]
        return int(reply["exit"]), str(reply["stdout"]), str(reply["stderr"])

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._proc is proc:
                self._proc = None
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the JVM (EOF on its stdin; killed if it lingers)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_servers: dict[tuple[str, int], ToolServer] = {}
_servers_lock = threading.Lock()


def _tool_server(settings: Settings, heap_mb: int = 1536) -> ToolServer:
    """This process's tool JVM for these settings (started on first use, closed at exit)."""
    key = (str(settings.jvm_jar), heap_mb)
    with _servers_lock:
        if key not in _servers:
            _servers[key] = ToolServer(settings, heap_mb=heap_mb)
        return _servers[key]


@atexit.register
def _close_servers() -> None:
    for server in list(_servers.values()):
        server.close()


def _last_line(text: str | bytes | None) -> str:
    lines = _lines(text)
    return lines[-1] if lines else ""


def _tail(text: str | bytes | None) -> str:
    return "\n".join(_lines(text)[-_STDERR_TAIL_LINES:])


def _lines(text: str | bytes | None) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [line for line in (text or "").splitlines() if line.strip()]
