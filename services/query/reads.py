"""Reads of one version's views in HBase, decoded to numpy and plain Python (no HTTP here).

A version's tables never change once published, so what is read per version (its catalog document,
its feature list and search index, pages of cells) is cached in small LRUs, and its stats vectors
in a cache bounded in bytes (`query_stats_cache_bytes`); a feature's values are read per request
(one or two rows for a page of its non-zeros).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from services.query.memory_only import require_io
from shared import layout
from shared.adapters.hbase import HBase, view_table
from shared.config import Settings
from shared.errors import NotFound

K = TypeVar("K")
V = TypeVar("V")
# Beyond the Basic Multilingual Plane's last code point: every string with a prefix sorts below prefix + this.
_AFTER_ALL = "\U0010ffff"


class Lru(Generic[K, V]):
    """A small thread-safe LRU that loads each missing key once: concurrent askers of the same key
    wait for the first one's load instead of all reading HBase (a cold page of 100,000 cells is seconds)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._loading: dict[K, threading.Lock] = {}
        self._lock = threading.Lock()

    def _hit(self, key: K) -> tuple[bool, V | None]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return True, self._items[key]
            return False, None

    def peek(self, key: K) -> V | None:
        """The cached value of `key`, or None (never loads)."""
        return self._hit(key)[1]

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The cached value of `key`, else `load()` run once for all concurrent askers (cached; the least recently used key leaves beyond `size`)."""
        found, value = self._hit(key)
        if found:
            return value  # type: ignore[return-value]
        require_io("cache miss")
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            found, value = self._hit(key)
            if found:
                return value  # type: ignore[return-value]
            try:
                value = load()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._items[key] = value
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            return value


class ByteLru(Generic[K, V]):
    """A thread-safe LRU bounded by the bytes its values take (as the caller counts them); 0 keeps nothing."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, keys: list[K]) -> dict[K, V]:
        """The cached values of `keys` (absent keys left out), each marked recently used."""
        out: dict[K, V] = {}
        if not self.max_bytes:
            return out
        with self._lock:
            for key in keys:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    out[key] = item[0]
        return out

    def put_many(self, items: list[tuple[K, V, int]]) -> None:
        """Add (key, value, size in bytes) items, evicting the least recently used beyond the bound."""
        if not self.max_bytes:
            return
        with self._lock:
            for key, value, size in items:
                old = self._items.pop(key, None)
                if old is not None:
                    self._bytes -= old[1]
                self._items[key] = (value, size)
                self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (_, size) = self._items.popitem(last=False)
                self._bytes -= size


# Bytes a cached stats vector costs beyond its values: the numpy header, the key tuple, the dict slot.
_ENTRY_OVERHEAD_BYTES = 200


@dataclass(frozen=True)
class Grouping:
    name: str
    view: str
    groups: list[str]
    counts: list[int]
    # A crossed grouping: each group's index in the two groupings it crosses.
    pairs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def dist_view(self) -> str:
        """The grouping's distributions view."""
        return "dist_" + self.view.removeprefix("stats_")


@dataclass(frozen=True)
class Catalog:
    """A version's catalog `meta` document, typed."""

    dataset_id: str
    version_id: str
    n_cells: int
    n_features: int
    title: str
    description: str
    groupings: dict[str, Grouping]
    embedding_name: str | None
    embedding_columns: list[str]
    numeric_columns: list[str]
    # Crossed groupings by their two groupings' names (versions made before crossed groupings: none).
    crossed: dict[tuple[str, str], Grouping] = field(default_factory=dict)
    markers_top_n: int = 0

    @classmethod
    def from_meta(cls, dataset_id: str, version_id: str, meta: dict[str, Any]) -> "Catalog":
        """The document of the version (dataset_id, version_id), whose tables every read uses."""
        embedding = meta.get("embedding") or None
        return cls(
            dataset_id=dataset_id,
            version_id=version_id,
            n_cells=int(meta["n_cells"]),
            n_features=int(meta["n_features"]),
            title=meta.get("title") or "",
            description=meta.get("description") or "",
            groupings={g["name"]: Grouping(g["name"], g["view"], list(g["groups"]), [int(c) for c in g["counts"]]) for g in meta["groupings"]},
            embedding_name=embedding["name"] if embedding else None,
            embedding_columns=list(embedding["columns"]) if embedding else [],
            numeric_columns=list(meta.get("numeric_columns") or []),
            markers_top_n=int(meta.get("markers_top_n") or 0),
            crossed={
                (g["crossed"][0], g["crossed"][1]): Grouping(
                    g["name"], g["view"], list(g["groups"]), [int(c) for c in g["counts"]], [(int(a), int(b)) for a, b in g["pairs"]]
                )
                for g in meta.get("crossed") or []
            },
        )


class FeatureIndex:
    """A version's features in matrix order (with their display symbols, if the upload had any), and
    sorted by their case-folded names and symbols for prefix search."""

    def __init__(self, names: list[str], symbols: list[str] | None = None) -> None:
        self.names = names
        self.symbols = symbols or None
        keys = [(name.casefold(), name, i) for i, name in enumerate(names)]
        if self.symbols:
            keys += [(symbol.casefold(), symbol, i) for i, symbol in enumerate(self.symbols) if symbol]
        keys.sort()
        self._folded = [k[0] for k in keys]
        self._text = [k[1] for k in keys]
        self._feature = [k[2] for k in keys]

    def search(self, prefix: str) -> list[int]:
        """Positions of the features whose name or symbol starts with `prefix`, case-insensitively:
        exact matches first (same case first), then A-Z by the text matched; each feature once.

        O(log n + matches).
        """
        folded = prefix.casefold()
        lo = bisect.bisect_left(self._folded, folded)
        hi = bisect.bisect_left(self._folded, folded + _AFTER_ALL, lo)
        # Case-insensitive exact matches sort first already (a prefix sorts before its extensions).
        exact = [j for j in range(lo, min(hi, lo + 8)) if self._folded[j] == folded]
        same_case = [j for j in exact if self._text[j] == prefix]
        order = same_case + [j for j in range(lo, hi) if j not in same_case]
        return list(dict.fromkeys(self._feature[j] for j in order))


@dataclass(frozen=True)
class FeaturePage:
    """A slice of one feature's non-zeros: ascending cell positions and their values."""

    indices: np.ndarray  # int32
    values: np.ndarray  # float32 or float64, as stored
    next_part: int | None
    next_offset: int


@dataclass(frozen=True)
class CellsPage:
    """A page of the cells view, in cell id (row key) order."""

    cell_ids: list[str]
    positions: np.ndarray  # int64
    metadata: dict[str, list[str]]
    embedding: np.ndarray | None  # (n, dims) float64
    numeric: dict[str, np.ndarray]
    last_key: bytes | None  # the page's last row key when more rows may follow


def _vectors_or_nan(values: list[bytes | None], n: int) -> np.ndarray:
    """Vector cells of `n` numbers as a (len(values), n) float64 array; NaN rows where a cell is absent
    (a blank metadata value is written as no cell; ingest rejects NaN itself, so NaN means blank)."""
    present = [v for v in values if v is not None]
    if len(present) == len(values):
        return layout.decode_vectors(present, n)
    out = np.full((len(values), n), np.nan)
    mask = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    out[mask] = layout.decode_vectors(present, n)
    return out


# Column kinds of pages that answer pages of fewer kinds (the explorer reads metadata and embedding).
_SUPERSETS = (frozenset({"metadata", "embedding"}), frozenset({"metadata", "embedding", "numeric"}))


def _cells_subset(page: CellsPage, kinds: frozenset[str]) -> CellsPage:
    """The page with only the column kinds `kinds` (a page read with more)."""
    return CellsPage(
        page.cell_ids,
        page.positions,
        page.metadata if "metadata" in kinds else {},
        page.embedding if "embedding" in kinds else None,
        page.numeric if "numeric" in kinds else {},
        page.last_key,
    )


class VersionReader:
    """Reads of the views of published versions (thread-safe; one HBase connection pool)."""

    def __init__(self, settings: Settings, hbase: HBase | None = None) -> None:
        self.settings = settings
        # A reader fails fast: a Thrift call that hangs for 10 s is reported as HBase unavailable.
        # One pooled Thrift connection per concurrent request, up to 16 (the server's thread pool is larger).
        self.hbase = hbase or HBase(settings, size=max(16, settings.hbase_pool_size), timeout_ms=10_000)
        self._catalogs: Lru[tuple[str, str], Catalog] = Lru(256)
        self._features: Lru[tuple[str, str], FeatureIndex] = Lru(8)
        # Pages of cells (a version's cells never change): a plot's reload or a second user is a memory read.
        # At most 8 pages of at most 100,000 cells each.
        self._cells: Lru[tuple[str, str, bytes | None, int, frozenset[str]], CellsPage] = Lru(8)
        # Stats vectors by (table, feature, stat): a version's tables never change, so an entry is never
        # stale (the table name holds the version). A dot plot of cached features reads nothing from HBase.
        self._stats: ByteLru[tuple[str, str, str], np.ndarray] = ByteLru(settings.query_stats_cache_bytes)

    def _table(self, catalog: Catalog, view: str) -> str:
        return view_table(self.settings, catalog.dataset_id, catalog.version_id, view)

    def catalog(self, dataset_id: str, version_id: str) -> Catalog:
        """The version's catalog document; `NotFound` if its catalog table is gone (gc)."""

        def load() -> Catalog:
            table = view_table(self.settings, dataset_id, version_id, "catalog")
            if table not in self.hbase.list_tables():
                raise NotFound(f"version {version_id} of dataset {dataset_id!r} is not available (its tables are gone)")
            row = self.hbase.row(table, layout.CATALOG_META_ROW)
            if not row:
                raise NotFound(f"version {version_id} of dataset {dataset_id!r} is not available (no catalog)")
            return Catalog.from_meta(dataset_id, version_id, layout.decode_json(row[layout.column(layout.CATALOG_FAMILY, layout.CATALOG_DOC_QUALIFIER)]))

        return self._catalogs.get_or_load((dataset_id, version_id), load)

    def features(self, catalog: Catalog) -> FeatureIndex:
        """The version's feature list and symbols (the catalog's `features:<chunk>` and `symbols:<chunk>` rows, in chunk order)."""

        def load() -> FeatureIndex:
            table = self._table(catalog, "catalog")
            lists = layout.column(layout.CATALOG_FAMILY, layout.CATALOG_LIST_QUALIFIER)
            names: list[str] = []
            for _, data in self.hbase.scan(table, row_prefix=layout.FEATURE_LIST_PREFIX):
                names += layout.decode_json(data[lists])
            symbols: list[str] = []
            for _, data in self.hbase.scan(table, row_prefix=layout.SYMBOL_LIST_PREFIX):
                symbols += layout.decode_json(data[lists])
            return FeatureIndex(names, symbols)

        return self._features.get_or_load((catalog.dataset_id, catalog.version_id), load)

    def stats(self, catalog: Catalog, grouping: Grouping, features: list[str], stats: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """feature -> stat -> float64 vector over the grouping's groups: from the stats cache, and one
        multi-get of the features not all of whose stats are cached.

        `NotFound` names the features the version does not have.
        """
        unique = list(dict.fromkeys(features))
        table = self._table(catalog, grouping.view)
        cached = self._stats.get_many([(table, f, s) for f in unique for s in stats])
        out: dict[str, dict[str, np.ndarray]] = {f: {} for f in unique}
        for (_, f, s), vector in cached.items():
            out[f][s] = vector
        to_read = [f for f in unique if len(out[f]) < len(stats)]
        if to_read:
            require_io("stats rows")
            columns = [layout.stats_column(s) for s in stats]
            rows = self.hbase.rows(table, [layout.feature_row(f) for f in to_read], columns=columns)
            missing = [f for f in to_read if layout.feature_row(f) not in rows]
            if missing:
                raise NotFound(f"features not in dataset {catalog.dataset_id!r}: {missing[:20]}")
            fresh = []
            for f in to_read:
                row = rows[layout.feature_row(f)]
                for s, c in zip(stats, columns):
                    vector = layout.decode_stats_vector(row[c])
                    out[f][s] = vector
                    fresh.append(((table, f, s), vector, vector.nbytes + _ENTRY_OVERHEAD_BYTES))
            self._stats.put_many(fresh)
        return out

    def feature_page(self, catalog: Catalog, feature: str, part: int, offset: int, limit: int) -> FeaturePage:
        """Up to `limit` non-zeros of `feature` from (part, offset) on; `NotFound` if the feature is absent.

        Reads parts `part` and `part + 1` in one multi-get (a feature is one part below
        `features_row_max_nnz` non-zeros, so this is one round trip that also tells whether more follow),
        and further parts only when the page needs them.
        """
        require_io("feature values")
        table = self._table(catalog, "features")
        qualifier = layout.column(layout.FEATURES_FAMILY, layout.FEATURES_QUALIFIER)
        keys = [layout.feature_part_row(feature, part), layout.feature_part_row(feature, part + 1)]
        rows = self.hbase.rows(table, keys, columns=[qualifier])
        if keys[0] not in rows:
            if part == 0:
                raise NotFound(f"feature {feature!r} not in dataset {catalog.dataset_id!r}")
            return FeaturePage(np.empty(0, np.int32), np.empty(0, np.float32), None, 0)
        chunks_idx: list[np.ndarray] = []
        chunks_val: list[np.ndarray] = []
        taken = 0
        while True:
            idx, vals = layout.decode_feature_part(rows[layout.feature_part_row(feature, part)][qualifier])
            take = max(0, min(limit - taken, idx.size - offset))
            chunks_idx.append(idx[offset : offset + take])
            chunks_val.append(vals[offset : offset + take])
            taken += take
            has_next = layout.feature_part_row(feature, part + 1) in rows
            if offset + take < idx.size:
                next_part, next_offset = part, offset + take
                break
            if not has_next:
                next_part, next_offset = None, 0
                break
            part, offset = part + 1, 0
            if taken >= limit:
                next_part, next_offset = part, 0
                break
            nxt = layout.feature_part_row(feature, part + 1)
            rows.update(self.hbase.rows(table, [nxt], columns=[qualifier]))
        dtype = np.result_type(*[v.dtype for v in chunks_val])
        return FeaturePage(np.concatenate(chunks_idx), np.concatenate(chunks_val).astype(dtype, copy=False), next_part, next_offset)

    def cells_page(self, catalog: Catalog, after: bytes | None, limit: int, include: set[str]) -> CellsPage:
        """Up to `limit` cells in row key order after the key `after`, with the asked column kinds.

        `include` holds any of "metadata", "embedding", "numeric"; the position always comes. Pages
        are cached per version (see `_cells`).
        """
        wanted = frozenset(include)
        for kinds in _SUPERSETS:
            # A page read with more column kinds (the explorer's metadata and embedding) answers this one too.
            if wanted < kinds:
                found = self._cells.peek((catalog.dataset_id, catalog.version_id, after, limit, kinds))
                if found is not None:
                    return _cells_subset(found, wanted)
        return self._load_cells_page(catalog, after, limit, wanted)

    def _load_cells_page(self, catalog: Catalog, after: bytes | None, limit: int, kinds: frozenset[str]) -> CellsPage:
        key = (catalog.dataset_id, catalog.version_id, after, limit, kinds)
        return self._cells.get_or_load(key, lambda: self._read_cells_page(catalog, after, limit, set(kinds)))

    def _read_cells_page(self, catalog: Catalog, after: bytes | None, limit: int, include: set[str]) -> CellsPage:
        if include == {"embedding"} and after is None and limit >= catalog.n_cells:
            # Every cell's embedding: the cells view's embedding blocks (k rows), when the version has them.
            page = self.embedding_blocks_page(catalog)
            if page is not None:
                return page

        def cell_column(kind: str, name: str) -> bytes:
            return layout.column(layout.CELLS_FAMILY, layout.cell_qualifier(kind, name))

        position = layout.column(layout.CELLS_FAMILY, layout.CELL_POSITION_QUALIFIER)
        columns = [position]
        if "metadata" in include:
            columns += [cell_column("grouping", g) for g in catalog.groupings]
        if "embedding" in include and catalog.embedding_name:
            columns.append(cell_column("embedding", catalog.embedding_name))
        if "numeric" in include:
            columns += [cell_column("numeric", c) for c in catalog.numeric_columns]
        start = layout.row_after(after) if after is not None else b""
        rows = self.hbase.scan(
            self._table(catalog, "cells"), row_start=start or None, columns=columns, limit=limit, batch_size=min(limit, 5000)
        )
        ids = [layout.name_of_row(key) for key, _ in rows]
        positions = layout.decode_ints([data[position] for _, data in rows])
        metadata: dict[str, list[str]] = {}
        if "metadata" in include:
            for g in catalog.groupings:
                col = cell_column("grouping", g)
                metadata[g] = [layout.decode_text(data[col]) for _, data in rows]
        embedding = None
        if "embedding" in include and catalog.embedding_name:
            col = cell_column("embedding", catalog.embedding_name)
            embedding = _vectors_or_nan([data.get(col) for _, data in rows], len(catalog.embedding_columns))
        numeric: dict[str, np.ndarray] = {}
        if "numeric" in include:
            for c in catalog.numeric_columns:
                numeric[c] = _vectors_or_nan([data.get(cell_column("numeric", c)) for _, data in rows], 1)[:, 0]
        last = rows[-1][0] if len(rows) == limit else None
        return CellsPage(ids, positions, metadata, embedding, numeric, last)

    def embedding_blocks_page(self, catalog: Catalog) -> CellsPage | None:
        """Every cell's id, position and embedding from the cells view's embedding blocks (one row per
        share of cells, `shared.layout`), in row key order as a scan of the cells would give them.

        None if the version has no embedding or was written without the blocks (they do not cover
        every cell): the caller scans the cells instead.
        """
        if not catalog.embedding_name:
            return None
        require_io("embedding blocks")
        column = layout.column(layout.CELLS_FAMILY, layout.embedding_block_qualifier(catalog.embedding_name))
        rows = self.hbase.scan(self._table(catalog, "cells"), row_prefix=layout.EMBEDDING_BLOCK_PREFIX, columns=[column], batch_size=4)
        blocks = [layout.decode_embedding_block(data[column]) for _, data in rows if column in data]
        if sum(len(ids) for _, _, ids in blocks) != catalog.n_cells:
            return None
        dims = len(catalog.embedding_columns)
        positions = np.concatenate([p for p, _, _ in blocks]).astype(np.int64)
        coordinates = np.concatenate([c for _, c, _ in blocks]).reshape(-1, dims)
        keys = [key for _, _, ids in blocks for key in ids]
        # Fixed-width bytes compare as unsigned bytes (ids hold no NUL): HBase's row key order.
        order = np.argsort(np.array(keys, dtype=bytes), kind="stable")
        ids = [keys[i].decode() for i in order.tolist()]
        return CellsPage(ids, positions[order], {}, coordinates[order], {}, None)

    def cell(self, catalog: Catalog, cell_id: str) -> dict[str, Any]:
        """One cell's row: position, metadata, embedding and numeric columns; `NotFound` if absent."""
        require_io("cell row")
        row = self.hbase.row(self._table(catalog, "cells"), layout.cell_row(cell_id))
        if not row:
            raise NotFound(f"cell {cell_id!r} not in dataset {catalog.dataset_id!r}")
        # A blank value has no cell in the view: served as null (an embedding with a blank coordinate, all null).
        out: dict[str, Any] = {
            "position": None,
            "metadata": {},
            "embedding": {catalog.embedding_name: [None] * len(catalog.embedding_columns)} if catalog.embedding_name else {},
            "numeric": dict.fromkeys(catalog.numeric_columns),
        }
        for column, value in row.items():
            kind, name = layout.parse_cell_qualifier(layout.qualifier_of(column))
            if kind == "position":
                out["position"] = layout.decode_int(value)
            elif kind == "grouping":
                out["metadata"][name] = layout.decode_text(value)
            elif kind == "embedding":
                out["embedding"][name] = layout.decode_vector(value).tolist()
            elif kind == "numeric":
                out["numeric"][name] = float(layout.decode_vector(value)[0])
        return out
