"""The Python bridge to jvm/: cell files, WriteHFiles and BulkLoad, up to cells read back through Thrift.

The first tests need only Java and the built jar (`mvn -q -B -f jvm/pom.xml package`); the `stack` ones
bulk-load into the local stack's HBase and read back with happybase.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import happybase
import pytest

from shared.config import Settings
from shared import jvm
from shared.errors import Permanent, Transient
from shared.jvm import bulk_load, spark_classpath, write_entry_file, write_hfiles

TIMESTAMP_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def random_cells(seed: int, n_rows: int, max_qualifiers: int) -> list[tuple[bytes, bytes, bytes]]:
    """Sorted binary cells: rows and qualifiers with 0x00, 0x7f, 0x80 and 0xff bytes, values up to 3 KiB."""
    rng = random.Random(seed)
    alphabet = bytes([0x00, 0x01, 0x3A, 0x41, 0x7F, 0x80, 0xFE, 0xFF])
    rows = {bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(n_rows)}
    cells = []
    for row in rows:
        qualifiers = {bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, max_qualifiers))}
        cells += [(row, q, rng.randbytes(rng.choice([0, 1, 8, 3000]))) for q in qualifiers]
    return sorted(cells)


def write_cells(path: Path, cells: list[tuple[bytes, bytes, bytes]]) -> int:
    return write_entry_file(path, [c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells])


def test_cell_file_is_length_prefixed_big_endian_records(tmp_path: Path) -> None:
    size = write_entry_file(tmp_path / "cells", [b"r\x00", b"r\x00"], [b"", b"q"], [b"\xff" * 3, b""])

    expected = struct.pack(">I2sI0sI3s", 2, b"r\x00", 0, b"", 3, b"\xff\xff\xff") + struct.pack(">I2sI1sI0s", 2, b"r\x00", 1, b"q", 0, b"")
    assert (tmp_path / "cells").read_bytes() == expected
    assert size == len(expected)


def test_cell_file_refuses_mismatched_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 rows, 1 qualifiers and 2 values"):
        write_entry_file(tmp_path / "cells", [b"a", b"b"], [b"q"], [b"1", b"2"])


def test_write_hfiles_summary_counts_cells_rows_and_files(settings: Settings, tmp_path: Path) -> None:
    cells = random_cells(seed=1, n_rows=300, max_qualifiers=12)
    # Two files, split inside a row: the stream is what must be sorted, not each file's own rows.
    middle = len(cells) // 2
    while cells[middle][0] != cells[middle - 1][0]:
        middle += 1
    write_cells(tmp_path / "a.cells", cells[:middle])
    write_cells(tmp_path / "b.cells", cells[middle:])

    summary = write_hfiles(settings, [tmp_path / "a.cells", tmp_path / "b.cells"], tmp_path / "hfiles", "f", timestamp_ms=TIMESTAMP_MS, max_file_bytes=64 * 1024)

    assert summary["cells"] == len(cells)
    assert summary["rows"] == len({c[0] for c in cells})
    files = [Path(f) for f in summary["files"]]
    assert len(files) > 1
    assert sorted(files) == sorted((tmp_path / "hfiles" / "f").iterdir())
    assert summary["bytes"] == sum(f.stat().st_size for f in files)


def test_write_hfiles_replaces_an_earlier_attempt(settings: Settings, tmp_path: Path) -> None:
    write_cells(tmp_path / "c", random_cells(seed=2, n_rows=20, max_qualifiers=3))
    first = write_hfiles(settings, [tmp_path / "c"], tmp_path / "hfiles", "f")

    second = write_hfiles(settings, [tmp_path / "c"], tmp_path / "hfiles", "f")

    assert second["cells"] == first["cells"]
    assert sorted((tmp_path / "hfiles" / "f").iterdir()) == sorted(Path(f) for f in second["files"])
    assert not any(Path(f).exists() for f in first["files"])


def test_unsorted_cells_raise_permanent_naming_the_row(settings: Settings, tmp_path: Path) -> None:
    rows = [b"gene-a", b"gene-c", b"gene-b\xff", b"gene-d"]
    write_entry_file(tmp_path / "c", rows, [b"q"] * 4, [b"1"] * 4)

    with pytest.raises(Permanent) as raised:
        write_hfiles(settings, [tmp_path / "c"], tmp_path / "hfiles", "f")

    message = str(raised.value)
    assert "out of order" in message
    assert "row 'gene-b\\xFF'" in message
    assert f"record 2 of {tmp_path / 'c'}" in message
    assert list((tmp_path / "hfiles" / "f").iterdir()) == []


def test_repeated_cell_raises_permanent(settings: Settings, tmp_path: Path) -> None:
    write_entry_file(tmp_path / "c", [b"r", b"r"], [b"q", b"q"], [b"1", b"2"])

    with pytest.raises(Permanent, match="cell repeated: row 'r' qualifier 'q'"):
        write_hfiles(settings, [tmp_path / "c"], tmp_path / "hfiles", "f")


def test_concurrent_calls_each_get_their_own_answer(settings: Settings, tmp_path: Path) -> None:
    # Six callers at once on one tool JVM: their answers come back as runs finish, in any order.
    inputs = {}
    for i in range(6):
        if i % 3 == 2:
            write_entry_file(tmp_path / f"c{i}", [b"z", b"a"], [b"q", b"q"], [b"1", b"2"])  # unsorted: refused
        else:
            cells = random_cells(seed=10 + i, n_rows=50 * (i + 1), max_qualifiers=4)
            write_cells(tmp_path / f"c{i}", cells)
            inputs[i] = cells

    def run(i: int) -> object:
        try:
            return write_hfiles(settings, [tmp_path / f"c{i}"], tmp_path / f"hfiles{i}", "f")
        except Permanent as error:
            return error

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(run, range(6)))

    for i, answer in enumerate(answers):
        if i in inputs:
            assert isinstance(answer, dict), answer
            assert answer["cells"] == len(inputs[i])
            assert answer["rows"] == len({c[0] for c in inputs[i]})
            assert all(Path(f).parent == tmp_path / f"hfiles{i}" / "f" for f in answer["files"])
        else:
            assert isinstance(answer, Permanent)
            assert f"record 1 of {tmp_path / f'c{i}'}" in str(answer)


def test_a_killed_tool_jvm_fails_the_call_transient_and_the_next_call_starts_another(settings: Settings, tmp_path: Path) -> None:
    cells = random_cells(seed=3, n_rows=20, max_qualifiers=3)
    write_cells(tmp_path / "c", cells)
    write_hfiles(settings, [tmp_path / "c"], tmp_path / "first", "f")
    server = jvm._tool_server(settings)
    pid = server._proc.pid
    # A call in flight when the JVM dies: the write is slowed by a named pipe nobody feeds yet.
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(write_hfiles, settings, [fifo], tmp_path / "stuck", "f")
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(Transient, match="tool JVM exited"):
            pending.result(timeout=60)

    summary = write_hfiles(settings, [tmp_path / "c"], tmp_path / "second", "f")

    assert summary["cells"] == len(cells)
    assert server._proc.pid != pid


# --- against the local stack's HBase -------------------------------------------------------------


@pytest.fixture
def hbase(stack: Settings) -> Iterator[happybase.Connection]:
    connection = happybase.Connection(stack.hbase_thrift_host, stack.hbase_thrift_port, table_prefix=None)
    yield connection
    connection.close()


@pytest.fixture
def table(stack: Settings, hbase: happybase.Connection) -> Iterator[str]:
    name = f"{stack.hbase_namespace}:t_{uuid.uuid4().hex[:12]}"
    hbase.create_table(name, {"f": dict()})
    yield name
    reconnect(hbase).delete_table(name, disable=True)


def reconnect(hbase: happybase.Connection) -> happybase.Connection:
    """The same connection, reopened: the Thrift server drops a connection idle for a minute,
    which a Spark step or a bulk load on a loaded machine can outlast."""
    hbase.close()
    hbase.open()
    return hbase


def scan_cells(hbase: happybase.Connection, table: str) -> list[tuple[bytes, bytes, bytes]]:
    """Every cell of family f, in scan order, with its timestamp checked."""
    cells = []
    for row, columns in reconnect(hbase).table(table).scan(include_timestamp=True):
        for column, (value, timestamp) in sorted(columns.items()):
            assert column.startswith(b"f:")
            assert timestamp == TIMESTAMP_MS
            cells.append((row, column[2:], value))
    return cells


@pytest.mark.stack
def test_bulk_loaded_cells_read_back_byte_for_byte(stack: Settings, hbase: happybase.Connection, table: str, tmp_path: Path) -> None:
    cells = random_cells(seed=3, n_rows=400, max_qualifiers=20)
    write_cells(tmp_path / "c", cells)
    written = write_hfiles(stack, [tmp_path / "c"], tmp_path / "hfiles", "f", timestamp_ms=TIMESTAMP_MS, max_file_bytes=256 * 1024)
    assert len(written["files"]) > 1

    loaded = bulk_load(stack, table, tmp_path / "hfiles")

    assert loaded | {"waited_s": 0} == {"table": table, "loaded_families": ["f"], "files": len(written["files"]), "attempts": 1, "waited_s": 0}
    assert scan_cells(hbase, table) == cells


@pytest.mark.stack
def test_loading_the_same_hfiles_twice_leaves_the_same_cells(stack: Settings, hbase: happybase.Connection, table: str, tmp_path: Path) -> None:
    cells = random_cells(seed=4, n_rows=50, max_qualifiers=4)
    write_cells(tmp_path / "c", cells)
    write_hfiles(stack, [tmp_path / "c"], tmp_path / "hfiles", "f", timestamp_ms=TIMESTAMP_MS)

    bulk_load(stack, table, f"file://{tmp_path / 'hfiles'}")
    again = bulk_load(stack, table, tmp_path / "hfiles")

    assert again["files"] == 1  # a local directory is copied from, not moved out of
    assert scan_cells(hbase, table) == cells


@pytest.mark.stack
def test_bulk_load_into_a_missing_table_raises_permanent_and_creates_nothing(stack: Settings, hbase: happybase.Connection, tmp_path: Path) -> None:
    write_entry_file(tmp_path / "c", [b"r"], [b"q"], [b"v"])
    write_hfiles(stack, [tmp_path / "c"], tmp_path / "hfiles", "f")
    missing = f"{stack.hbase_namespace}:missing_{uuid.uuid4().hex[:12]}"

    with pytest.raises(Permanent, match=f"table {missing} does not exist"):
        bulk_load(stack, missing, tmp_path / "hfiles")

    assert missing.encode() not in hbase.tables()


@pytest.mark.stack
def test_bulk_load_of_a_family_the_table_lacks_raises_permanent(stack: Settings, hbase: happybase.Connection, table: str, tmp_path: Path) -> None:
    write_entry_file(tmp_path / "c", [b"r"], [b"q"], [b"v"])
    write_hfiles(stack, [tmp_path / "c"], tmp_path / "hfiles", "g")

    with pytest.raises(Permanent, match=r"holds families \[g\] that table .* lacks \(it has \[f\]\)"):
        bulk_load(stack, table, tmp_path / "hfiles")

    assert list(hbase.table(table).scan()) == []


# A child process: a SparkContext's classpath is fixed at its start, and other tests may own this one's.
SPARK_HFILE_WRITER = """
import pickle, sys
from pyspark import SparkConf, SparkContext
classpath, cells_file, out_dir, timestamp_ms = sys.argv[1:]
with open(cells_file, "rb") as f:
    cells = pickle.load(f)
conf = (
    SparkConf().setMaster("local[2]").setAppName("wideviews-converter-test").set("spark.ui.enabled", "false")
    .set("spark.driver.extraClassPath", classpath).set("spark.executor.extraClassPath", classpath)
)
sc = SparkContext(conf=conf)
try:
    # The family as str, the rest as bytes: both kinds go through the converter. Without the
    # timestamp each task would stamp its cells with its own start time.
    rdd = sc.parallelize([(row, (row, "f", qualifier, value, int(timestamp_ms))) for row, qualifier, value in cells], 2)
    rdd.saveAsNewAPIHadoopFile(
        out_dir,
        "org.apache.hadoop.hbase.mapreduce.HFileOutputFormat2",
        keyClass="org.apache.hadoop.hbase.io.ImmutableBytesWritable",
        valueClass="org.apache.hadoop.hbase.KeyValue",
        keyConverter="org.wideviews.hfile.ImmutableBytesWritableConverter",
        valueConverter="org.wideviews.hfile.KeyValueConverter",
        conf={
            "hbase.mapreduce.hfileoutputformat.table.name": "wideviews:any",
            "hbase.bulkload.locality.sensitive.enabled": "false",
        },
    )
finally:
    sc.stop()
"""


@pytest.mark.stack
def test_pyspark_hfileoutputformat2_with_the_converters_keeps_binary_cells(stack: Settings, hbase: happybase.Connection, table: str, tmp_path: Path) -> None:
    cells = random_cells(seed=5, n_rows=60, max_qualifiers=5)
    (tmp_path / "cells.pickle").write_bytes(pickle.dumps(cells))
    classpath = os.pathsep.join(spark_classpath(stack))

    done = subprocess.run(
        [sys.executable, "-c", SPARK_HFILE_WRITER, classpath, str(tmp_path / "cells.pickle"), str(tmp_path / "hfiles"), str(TIMESTAMP_MS)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-4000:]
    loaded = bulk_load(stack, table, tmp_path / "hfiles")
    assert loaded["loaded_families"] == ["f"]
    assert scan_cells(hbase, table) == cells
