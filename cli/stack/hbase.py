"""The local HBase: its configuration (hbase-site.xml), the JVM command lines, class-data archives,
and the namespace.

Why a Java step for the namespace: happybase speaks HBase's Thrift1 API, which has no namespace
calls. `jvm/src/main/java/org/wideviews/admin/CreateNamespace.java` calls `Admin.createNamespace`;
the stack runs it from the jvm/ jar when that is built, else straight from the source file with the
JDK's single-file launcher: once per HBase root directory, and after every HMaster start, because it
returns only once the master has finished initializing (Thrift lists tables well before DDL works).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from cli.stack.ports import child_env
from cli.stack.processes import StackError
from shared.config import Settings
from shared.jvm import ADD_OPENS, s3a_properties

log = logging.getLogger("wideviews.stack")


NAMESPACE_CLASS = "org.wideviews.admin.CreateNamespace"


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


def hbase_options(settings: Settings) -> list[str]:
    """`-D key=value` arguments carrying hbase-site.xml, for HBase's own command lines."""
    return [token for key, value in hbase_site(settings).items() for token in ("-D", f"{key}={value}")]


CDS_DUMP_FLAG = "-XX:ArchiveClassesAtExit="


def _class_data_sharing(settings: Settings, name: str, java: str, classpath: str) -> list[str]:
    """JVM flags that map a class-data archive of an earlier run of `name`, or write one at exit.

    The archive maps the ~10,000 classes HBase loads instead of parsing them from ~150 jars: a
    start spends markedly less CPU. Archives are a build cache beside the classpath file, shared by
    every stack on the machine and keyed by the classpath and the JDK, so a new pom or JDK makes a
    new one. A JVM writes to a private pending file, published by `publish_class_data` after a clean
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


def publish_class_data(cmd: Sequence[str]) -> None:
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


def java_cmd(
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


def namespace_cmd(settings: Settings) -> list[str]:
    """The command that creates `settings.hbase_namespace` through HBase's Admin API."""
    args = [settings.hbase_zk_host, str(settings.hbase_zk_port), settings.hbase_namespace]
    jar = settings.jvm_jar
    if jar.exists():
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(jar) as archive:
            if NAMESPACE_CLASS.replace(".", "/") + ".class" in archive.namelist():
                main = [NAMESPACE_CLASS, *args]
                return java_cmd(settings, "namespace", main, heap_mb=256, extra_classpath=str(jar), short_lived=True)
    source = settings.project_root / "jvm" / "src" / "main" / "java" / (NAMESPACE_CLASS.replace(".", "/") + ".java")
    # The single-file source launcher compiles it in memory against the HBase classpath.
    # Classes compiled in memory cannot be archived: no class data sharing here.
    main = [str(source), *args]
    return java_cmd(settings, "namespace-source", main, heap_mb=256, short_lived=True, class_data_sharing=False)


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
    publish_class_data(cmd)
    if result.returncode != 0:
        raise StackError(f"creating HBase namespace {settings.hbase_namespace} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a") as out:
        out.write(settings.hbase_namespace + "\n")
