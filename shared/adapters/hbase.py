"""HBase through its Thrift server (happybase): table names, a connection pool, error translation.

Table names are built here and only here, from validated ids: `<namespace>:<dataset>_<version hex>_<view>`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import happybase
from Hbase_thrift import AlreadyExists as ThriftAlreadyExists  # the module happybase loads its IDL as
from Hbase_thrift import IOError as ThriftIOError
from thriftpy2.thrift import TType
from thriftpy2.transport import TTransportException

from shared import layout
from shared.config import Settings
from shared.errors import NotFound, Permanent, Transient
from shared.messages import DATASET_ID_PATTERN, VERSION_ID_PATTERN, VIEW_PATTERN

T = TypeVar("T")

# HBase 2's Thrift1 `IOError` carries a second field, `canRetry`: HBase's own verdict, false only for its
# DoNotRetryIOException family (a missing table or family, a bad argument). happybase's IDL predates
# the field and thriftpy2 skips fields it was not told of, so it is declared here for `hbase_errors`.
ThriftIOError.thrift_spec.setdefault(2, (TType.BOOL, "canRetry", False))


def view_table(settings: Settings, dataset_id: str, version_id: str, view: str) -> str:
    """HBase table of one view of a version; raises `Permanent` for ids that could escape the name."""
    if not re.fullmatch(DATASET_ID_PATTERN, dataset_id):
        raise Permanent(f"invalid dataset id {dataset_id!r}: must match {DATASET_ID_PATTERN}")
    if not re.fullmatch(VERSION_ID_PATTERN, version_id):
        raise Permanent(f"invalid version id {version_id!r}")
    if not re.fullmatch(VIEW_PATTERN, view):
        raise Permanent(f"invalid view name {view!r}")
    return f"{settings.hbase_namespace}:{dataset_id}_{version_id}_{view}"


def version_table_prefix(settings: Settings, dataset_id: str, version_id: str) -> str:
    """Common prefix of every table of a version (for listing and garbage collection)."""
    return f"{settings.hbase_namespace}:{dataset_id}_{version_id}_"


def entry_checksum(row: bytes, qualifier: bytes, value: bytes) -> int:
    """64-bit hash of one entry (an HBase cell); a view's checksum is the sum of its entries' mod 2**64 (order-free)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(len(row).to_bytes(4, "big"))
    digest.update(row)
    digest.update(len(qualifier).to_bytes(4, "big"))
    digest.update(qualifier)
    digest.update(value)
    return int.from_bytes(digest.digest(), "big")


def combine_checksums(values: Iterable[int]) -> int:
    """The checksum of a set of cells from theirs: the sum mod 2**64 (order-free)."""
    return sum(values) % (1 << 64)


# HBase's Java exceptions (and the one message) of the states a RegionServer or master leaves by
# itself; the same list as BulkLoad's.
_TRANSIENT_HBASE_STATES = (
    "is not currently available",
    "RegionTooBusy",
    "NotServingRegion",
    "RegionOfflineException",
    "RegionMovedException",
    "RegionOpeningException",
    "TableNotEnabledException",
    "ServerNotRunningYet",
    "PleaseHoldException",
    "MasterNotRunningException",
    "RegionServerStoppedException",
    "RegionServerAbortedException",
    "NoServerForRegionException",
    "RetriesExhausted",
    "ConnectionClosing",
    "ConnectionClosed",
    "CallQueueTooBig",
    "CallTimeoutException",
    "CallDroppedException",
    # ZooKeeper did not answer in time (HBase's quorum down or restarting).
    "Zookeeper GET could not be completed",
)


@contextlib.contextmanager
def hbase_errors(action: str) -> Iterator[None]:
    """The one translation of Thrift errors: transport and socket failures, HBase's transient states
    and every error HBase marks `canRetry` are `Transient`, a missing table `NotFound`; anything else
    (HBase's DoNotRetryIOException family) passes unchanged.

    Thrift1 hands HBase's Java exception over as an `IOError` whose message is the Java stack
    trace: there the Java class name is the only type there is, so that is what is matched.
    """
    try:
        yield
    except (TTransportException, OSError, EOFError) as exc:
        raise Transient(f"{action}: HBase Thrift unreachable ({type(exc).__name__}: {exc})") from exc
    except ThriftIOError as exc:
        message = exc.message or b""  # thriftpy2 hands the Thrift string over undecoded
        text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
        # Checked first: HBase reports a table whose regions are not all online as "TableNotFoundException:
        # Table ... is not currently available." (just created, being enabled, disabled), which passes.
        if any(state in text for state in _TRANSIENT_HBASE_STATES):
            raise Transient(f"{action}: HBase busy ({text[:200]})") from exc
        if "TableNotFoundException" in text:
            raise NotFound(f"{action}: table not found") from exc
        if getattr(exc, "canRetry", False):
            # Any other failure HBase itself calls retryable: ZooKeeper lost, a call timed out, a RegionServer restarting.
            first_line = text.split("\n", 1)[0]
            raise Transient(f"{action}: HBase unavailable ({first_line[:200]})") from exc
        raise


class HBase:
    """A pool of Thrift connections with the few operations the services need (all blocking)."""

    def __init__(self, settings: Settings, *, size: int | None = None, timeout_ms: int = 60_000) -> None:
        self.settings = settings
        self._size = size or settings.hbase_pool_size
        self._timeout_ms = timeout_ms
        # Made on first use: happybase's pool connects once when it is built, and a service may start
        # (and must stay up) while HBase is still starting or down.
        self._pool: happybase.ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def _connections(self) -> happybase.ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = happybase.ConnectionPool(
                    self._size,
                    host=self.settings.hbase_thrift_host,
                    port=self.settings.hbase_thrift_port,
                    timeout=self._timeout_ms,
                    autoconnect=False,
                )
            return self._pool

    def _call(self, action: str, fn: Callable[[happybase.Connection], T]) -> T:
        """Run `fn` on a pooled connection; once more on a fresh one if the first was dead.

        The Thrift server drops connections idle for a minute, so a pooled connection may be closed
        under us: happybase replaces a connection that raised, and the retry gets the new one.
        """
        for attempt in (0, 1):
            try:
                with hbase_errors(action), self._connections().connection() as conn:
                    return fn(conn)
            except Transient:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def list_tables(self) -> list[str]:
        """Every table's name (with its namespace)."""
        return self._call("list tables", lambda conn: [t.decode() for t in conn.tables()])

    def table_exists(self, name: str) -> bool:
        """Whether the table exists (enabled or not)."""
        return name in self.list_tables()

    def ensure_table(self, name: str, family: bytes) -> bool:
        """Create the table with one family (1 version, row bloom filter) unless it exists; True if created."""

        def create(conn: happybase.Connection) -> bool:
            if name.encode() in conn.tables():
                return False
            try:
                conn.create_table(name, {family.decode(): dict(max_versions=1, bloom_filter_type="ROW", block_cache_enabled=True)})
            except ThriftAlreadyExists:  # another loader created it first
                return False
            return True

        return self._call("create table", create)

    def drop_table(self, name: str) -> bool:
        """Disable and delete a table; False if it did not exist."""

        def drop(conn: happybase.Connection) -> bool:
            if name.encode() not in conn.tables():
                return False
            conn.delete_table(name, disable=True)
            return True

        return self._call("drop table", drop)

    def put_rows(self, table: str, rows: list[tuple[bytes, dict[bytes, bytes]]], *, timestamp_ms: int) -> None:
        """Write rows (column `family:qualifier` -> value) with one timestamp, in one batch: writing the
        same rows again leaves the same cells."""

        def put(conn: happybase.Connection) -> None:
            with conn.table(table).batch(timestamp=timestamp_ms, batch_size=500) as batch:
                for key, data in rows:
                    batch.put(key, data)

        self._call("put rows", put)

    def rows(self, table: str, keys: list[bytes], columns: list[bytes] | None = None) -> dict[bytes, dict[bytes, bytes]]:
        """Multi-get of rows (missing rows are absent from the result)."""
        return self._call("get rows", lambda conn: dict(conn.table(table).rows(keys, columns=columns)))

    def row(self, table: str, key: bytes, columns: list[bytes] | None = None) -> dict[bytes, bytes]:
        """One row's cells ({} when the row is absent)."""
        return self._call("get row", lambda conn: conn.table(table).row(key, columns=columns))

    def scan(self, table: str, **kwargs: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """A whole scan, materialised (use for bounded ranges only)."""
        return self._call("scan", lambda conn: list(conn.table(table).scan(**kwargs)))

    def count_and_checksum(self, table: str, *, batch_size: int = 1000) -> tuple[int, int]:
        """(rows, checksum) of a whole table by a full scan; the checksum matches `entry_checksum` sums."""

        def verify(conn: happybase.Connection) -> tuple[int, int]:
            rows = 0
            total = 0
            for key, data in conn.table(table).scan(batch_size=batch_size):
                rows += 1
                for column, value in data.items():
                    total += entry_checksum(key, layout.qualifier_of(column), value)
            return rows, total % (1 << 64)

        return self._call("verify scan", verify)

    def region_row_counts(self, table: str, *, batch_size: int = 10_000) -> list[tuple[bytes, bytes, int]]:
        """(start key, end key, rows) of every region of the table, counted by key-only scans: the
        region servers send one bare key per row (`FirstKeyOnlyFilter`, `KeyOnlyFilter`), never a
        value, so the cost grows with the rows, not with the bytes stored. Regions are counted
        concurrently, one pooled connection each (a table's regions may be on several servers)."""
        regions = self._call("list regions", lambda conn: sorted(((r["start_key"], r["end_key"]) for r in conn.table(table).regions())))

        def count(region: tuple[bytes, bytes]) -> tuple[bytes, bytes, int]:
            start, end = region

            def scan(conn: happybase.Connection) -> int:
                rows = conn.table(table).scan(
                    row_start=start or None, row_stop=end or None, filter=b"FirstKeyOnlyFilter() AND KeyOnlyFilter()", batch_size=batch_size
                )
                return sum(1 for _ in rows)

            return start, end, self._call("count rows", scan)

        with ThreadPoolExecutor(max_workers=max(1, min(len(regions), self._size))) as pool:
            return list(pool.map(count, regions))

