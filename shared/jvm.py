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

import json
import os
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.errors import Permanent, Transient

WRITE_HFILES_MAIN = "org.wideviews.hfile.WriteHFiles"
BULK_LOAD_MAIN = "org.wideviews.hfile.BulkLoad"

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

_LENGTH = struct.Struct(">I")
_FLUSH_CELLS = 65_536
_STDERR_TAIL_LINES = 20


def java_command(settings: Settings, main_class: str, args: Sequence[str], *, heap_mb: int = 1024, quick_start: bool = False) -> list[str]:
    """The `java` command line running `main_class` of the wideviews jar with `args`.

    The classpath is the jar, then the runtime classpath Maven wrote beside it; raises
    `FileNotFoundError` (a deployment fault, not a data one) when either is missing. `quick_start`
    suits a JVM that mostly waits (BulkLoad): it starts in about half the time on a busy machine,
    but runs hot loops slower, so WriteHFiles goes without it.
    """
    for built in (settings.jvm_jar, settings.jvm_classpath_file):
        if not built.is_file():
            raise FileNotFoundError(f"{built} is missing: build it with `mvn -q -B -f jvm/pom.xml package`")
    dependencies = settings.jvm_classpath_file.read_text().strip()
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


def write_cell_file(path: Path, rows: Sequence[bytes], qualifiers: Sequence[bytes], values: Sequence[bytes]) -> int:
    """Write cells in the cell file format; returns the file's size in bytes.

    The cells must already be sorted by (row, qualifier) without repeats; the order is not checked
    here but by `write_hfiles`, which raises `Permanent` naming the first row out of place.
    Raises `ValueError` when the three sequences differ in length, `TypeError` for a non-bytes item.
    """
    if not len(rows) == len(qualifiers) == len(values):
        raise ValueError(f"{len(rows)} rows, {len(qualifiers)} qualifiers and {len(values)} values: one each per cell")
    pack = _LENGTH.pack
    size_bytes = 0
    with open(path, "wb") as out:
        parts: list[bytes] = []
        for i, (row, qualifier, value) in enumerate(zip(rows, qualifiers, values)):
            parts += (pack(len(row)), row, pack(len(qualifier)), qualifier, pack(len(value)), value)
            if (i + 1) % _FLUSH_CELLS == 0:
                size_bytes += out.write(b"".join(parts))
                parts.clear()
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


def bulk_load(settings: Settings, table: str, hfile_dir: Path | str, *, heap_mb: int = 512, timeout_s: float = 3600.0) -> dict[str, Any]:
    """Bulk-load `hfile_dir/<family>/<hfile>` into the existing HBase `table` (`namespace:name`).

    Returns BulkLoad's summary `{"table": ..., "loaded_families": [...], "files": n}`. `hfile_dir` is
    a local path (or `file://` URI) on the region servers' machine, or a URI they can read. HBase moves
    the HFiles only out of its own HDFS; from local disk it copies them, so the directory is left as
    it was. Raises `Permanent` when the table or the directory is missing or a family directory
    names a family the table lacks, `Transient` for any other failure (HBase unreachable, region
    busy, timeout). Blocks: run it in a thread from async code.
    """
    args = [
        "--zk-quorum", settings.hbase_zk_host,
        "--zk-port", str(settings.hbase_zk_port),
        "--table", table,
        "--dir", str(hfile_dir),
    ]  # fmt: skip
    return _run_tool(settings, BULK_LOAD_MAIN, args, heap_mb=heap_mb, timeout_s=timeout_s, quick_start=True)


def _run_tool(settings: Settings, main_class: str, args: Sequence[str], *, heap_mb: int, timeout_s: float, quick_start: bool = False) -> dict[str, Any]:
    """Run one tool; its last stdout line is its JSON summary, exit code 2 means bad input."""
    tool = main_class.rsplit(".", 1)[-1]
    command = java_command(settings, main_class, args, heap_mb=heap_mb, quick_start=quick_start)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise Transient(f"{tool} ran past {timeout_s:.0f} s: {_tail(exc.stderr)}") from exc
    if done.returncode == 2:
        # The tool's last stderr line is its one-line verdict, written for a person to read.
        raise Permanent(_last_line(done.stderr) or f"{tool} rejected its input")
    if done.returncode != 0:
        raise Transient(f"{tool} exited with {done.returncode}: {_tail(done.stderr)}")
    summary_line = _last_line(done.stdout)
    try:
        summary: dict[str, Any] = json.loads(summary_line)
    except json.JSONDecodeError as exc:
        raise Transient(f"{tool} printed no JSON summary (stdout ends {summary_line!r}): {_tail(done.stderr)}") from exc
    return summary


def _last_line(text: str | bytes | None) -> str:
    lines = _lines(text)
    return lines[-1] if lines else ""


def _tail(text: str | bytes | None) -> str:
    return "\n".join(_lines(text)[-_STDERR_TAIL_LINES:])


def _lines(text: str | bytes | None) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [line for line in (text or "").splitlines() if line.strip()]
