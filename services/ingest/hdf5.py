"""h5ad (AnnData) and 10x Genomics `.h5` matrices, read with h5py in bounded memory.

The matrix is never loaded whole: a CSR matrix (cells as rows) is read in row blocks of at most
`block_nnz` non-zeros, a CSC one in feature blocks, a dense one in row blocks of about `block_nnz`
values; each block's non-zeros go to `ChunkParts` like a CSV's. Memory is one block plus the index
pointer array (8 bytes a cell or feature).

h5ad: `X` (or `raw/X` when the manifest says `"matrix": "raw.X"`, or when there is no `X`), CSR,
CSC or dense, float or integer; `var`'s index as the features, and a text `var` column as their
display symbols (the manifest's `feature_symbols`, else the first of `SYMBOL_COLUMNS`); `obs` (categorical, string, numeric,
boolean and nullable columns) as the cell metadata, and `obsm` `X_umap`, `X_tsne` and the first two
columns of `X_pca` as `umap_1, umap_2`, … numeric columns (embeddings).

10x: Cell Ranger 3+ `matrix/` (features × barcodes CSC, that is CSR over cells) and Cell Ranger 2's
one group per genome. When the file holds several feature types, only "Gene Expression" is kept.
Features are the gene symbols (`name`) when those are unique, else the feature ids.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.ingest.matrix import CONTROL, GENE_EXPRESSION, MatrixSummary, Progress, check_feature_count, check_ids, check_names, check_row_count, chunk_ranges, chunk_width, gene_expression_features  # noqa: E501
from services.ingest.parts import ChunkParts
from shared.config import Settings
from shared.errors import BadUpload

# var columns taken as the features' display symbols when the manifest names none (CELLxGENE's
# schema calls it feature_name; scanpy's examples gene_symbols), the first one present.
SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_symbol", "gene_name", "symbol")
_UNSET: Any = object()
EMBEDDINGS = {"X_umap": "umap", "X_tsne": "tsne", "X_pca": "pca"}


def _h5py() -> Any:
    import h5py

    return h5py


def _open(path: Path, name: str) -> Any:
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise BadUpload(f"{name} is not a readable HDF5 file ({str(exc).splitlines()[0]}); truncated or not HDF5?") from exc


def _strings(dataset: Any) -> list[str]:
    """A dataset of strings (variable or fixed length, bytes or str) as Python strings."""
    values = dataset[()] if dataset.shape == () else dataset[:]
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


def _encoding(node: Any) -> str:
    value = node.attrs.get("encoding-type", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_finite(values: np.ndarray, name: str, where: Any) -> None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise BadUpload(f"{name}: non-finite value {values[i]} at {where(i)}")


class _Reader:
    """Streams a sparse or dense matrix (cells x features after `transposed`) into chunk parts."""

    def __init__(self, name: str, parts: ChunkParts, n_cells: int, n_features: int, block_nnz: int, progress: Progress | None) -> None:
        self.name, self.parts, self.n_cells, self.n_features = name, parts, n_cells, n_features
        self.block_nnz = block_nnz
        self.progress = progress

    def _blocks(self, indptr: np.ndarray, indices: Any, data: Any, *, by_cell: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(major index, minor index, values) of each run of rows (`by_cell`) or columns whose
        non-zeros fit in one block, at least one row (or column) a run; reports progress after each."""
        n_major = self.n_cells if by_cell else self.n_features
        start = 0
        while start < n_major:
            end = int(np.searchsorted(indptr, indptr[start] + self.block_nnz, side="right")) - 1
            end = min(n_major, max(start + 1, end))
            lo, hi = int(indptr[start]), int(indptr[end])
            minor = np.asarray(indices[lo:hi], dtype=np.int64)
            vals = np.asarray(data[lo:hi])
            yield np.repeat(np.arange(start, end, dtype=np.int64), np.diff(indptr[start : end + 1])), minor, vals
            if self.progress is not None:
                entry_bytes = vals.itemsize + minor.itemsize
                self.progress(hi * entry_bytes, int(indptr[-1]) * entry_bytes, end if by_cell else self.n_cells)
            start = end

    def rows_of(self, group: Any, keep: np.ndarray | None = None) -> None:
        """CSR over cells: `indptr` has n_cells + 1 entries, `indices` are features (`keep` maps
        stored feature -> kept feature, -1 to drop)."""
        indptr, indices, data = self._sparse(group, self.n_cells, self.n_features if keep is None else keep.size)
        for cells, features, vals in self._blocks(indptr, indices, data, by_cell=True):
            self._stage(cells, features, vals, keep)

    def columns_of(self, group: Any) -> None:
        """CSC over features: `indptr` has n_features + 1 entries, `indices` are cells."""
        indptr, indices, data = self._sparse(group, self.n_features, self.n_cells)
        for features, cells, vals in self._blocks(indptr, indices, data, by_cell=False):
            self._stage(cells, features, vals, None)

    def dense(self, dataset: Any) -> None:
        if dataset.ndim != 2 or dataset.shape != (self.n_cells, self.n_features):
            raise BadUpload(f"{self.name}: X has shape {dataset.shape}, but obs and var give {self.n_cells} x {self.n_features}")
        step = max(1, self.block_nnz // max(1, self.n_features))
        for start in range(0, self.n_cells, step):
            block = np.asarray(dataset[start : start + step])
            rows, cols = np.nonzero(block)
            vals = block[rows, cols]
            if block.dtype.kind == "f" and not np.isfinite(block).all():
                r, c = (int(x[0]) for x in np.nonzero(~np.isfinite(block)))
                raise BadUpload(f"{self.name}: non-finite value {block[r, c]} at cell {start + r + 1}, feature {c + 1}")
            self._stage(rows.astype(np.int64) + start, cols.astype(np.int64), vals, None)
            if self.progress is not None:
                done = min(self.n_cells, start + step)
                self.progress(done * self.n_features * block.itemsize, self.n_cells * self.n_features * block.itemsize, done)

    def _sparse(self, group: Any, n_major: int, n_minor: int) -> tuple[np.ndarray, Any, Any]:
        for key in ("data", "indices", "indptr"):
            if key not in group:
                raise BadUpload(f"{self.name}: sparse matrix {group.name} has no {key!r}")
        indptr = np.asarray(group["indptr"][:], dtype=np.int64)
        data, indices = group["data"], group["indices"]
        if indptr.size != n_major + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != data.shape[0] or indices.shape[0] != data.shape[0]:
            raise BadUpload(
                f"{self.name}: sparse matrix {group.name} is inconsistent (indptr of {indptr.size} entries for {n_major} rows, "
                f"ending at {indptr[-1] if indptr.size else '?'}; {data.shape[0]} values, {indices.shape[0]} indices)"
            )
        if data.dtype.kind not in "iuf" and data.dtype != np.bool_:
            raise BadUpload(f"{self.name}: matrix values must be numbers, not {data.dtype}")
        self._n_minor = n_minor
        return indptr, indices, data

    def _stage(self, cells: np.ndarray, features: np.ndarray, values: np.ndarray, keep: np.ndarray | None) -> None:
        n_minor = self.n_features if keep is None else keep.size
        bad = (features < 0) | (features >= n_minor) if features is not None else None
        if bad is not None and bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BadUpload(f"{self.name}: feature index {features[i]} outside the {n_minor} features (cell {cells[i] + 1})")
        if (cells < 0).any() or (cells >= self.n_cells).any():
            i = int(np.flatnonzero((cells < 0) | (cells >= self.n_cells))[0])
            raise BadUpload(f"{self.name}: cell index {cells[i]} outside the {self.n_cells} cells")
        values = values.astype(np.float64, copy=False)
        _check_finite(values, self.name, lambda i: f"cell {cells[i] + 1}, feature {features[i] + 1}")
        if keep is not None:
            features = keep[features]
            mask = features >= 0
            cells, features, values = cells[mask], features[mask], values[mask]
        nonzero = values != 0
        if not nonzero.all():
            cells, features, values = cells[nonzero], features[nonzero], values[nonzero]
        self.parts.add(features, cells, values)


def _dataframe_index(group: Any, name: str, what: str) -> list[str]:
    if "_index" in group.attrs:
        key = group.attrs["_index"]
        key = key.decode() if isinstance(key, bytes) else str(key)
    elif "_index" in group:
        key = "_index"
    else:
        raise BadUpload(f"{name}: {what} has no index (no _index attribute)")
    if key not in group:
        raise BadUpload(f"{name}: {what} index {key!r} is missing")
    return _strings(group[key])


def _obs_column(node: Any, name: str, column: str) -> pa.Array:
    """One obs column as Arrow: categoricals and strings as strings (nulls where missing), numbers
    and booleans as such (nullable ones with nulls)."""
    h5py = _h5py()
    kind = _encoding(node)
    if isinstance(node, h5py.Group):
        if kind == "categorical" or ("codes" in node and "categories" in node):
            codes = np.asarray(node["codes"][:], dtype=np.int64)
            categories = node["categories"]
            if categories.dtype.kind in "iuf":
                values = pa.array(np.asarray(categories[:]))
            else:
                values = pa.array(_strings(categories), pa.string())
            if (codes >= len(values)).any():
                raise BadUpload(f"{name}: obs column {column!r} has a category code past its {len(values)} categories")
            return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0, type=pa.int32()), values).cast(values.type)
        if kind.startswith("nullable") or ("values" in node and "mask" in node):
            mask = np.asarray(node["mask"][:], dtype=bool)
            if kind == "nullable-string-array":
                return pa.array(_strings(node["values"]), pa.string(), mask=mask)
            return pa.array(np.asarray(node["values"][:]), mask=mask)
        raise BadUpload(f"{name}: obs column {column!r} has an unsupported encoding {kind!r}")
    if node.dtype.kind in "SOU" or kind == "string-array":
        return pa.array(_strings(node), pa.string())
    return pa.array(np.asarray(node[:]))


def read_h5ad_obs(file: Any, name: str, cell_ids: list[str]) -> pa.Table:
    """obs columns and obsm embeddings as one table (first column the cell id), matrix order."""
    obs = file["obs"]
    h5py = _h5py()
    if not isinstance(obs, h5py.Group):
        raise BadUpload(f"{name}: obs is a compound dataset (written by anndata before 0.7); rewrite it with a current anndata")
    order = obs.attrs.get("column-order", [])
    order = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(order)]
    index_key = obs.attrs.get("_index", "_index")
    index_key = index_key.decode() if isinstance(index_key, bytes) else str(index_key)
    columns: dict[str, pa.Array] = {"cell_id": pa.array(cell_ids, pa.string())}
    for column in order or [k for k in obs.keys() if k != index_key and k != "__categories"]:
        if column not in obs:
            raise BadUpload(f"{name}: obs column {column!r} is listed but missing")
        values = _obs_column(obs[column], name, column)
        if len(values) != len(cell_ids):
            raise BadUpload(f"{name}: obs column {column!r} has {len(values)} values for {len(cell_ids)} cells")
        columns[column] = values
    if "obsm" in file:
        for key, prefix in EMBEDDINGS.items():
            if key in file["obsm"] and isinstance(file["obsm"][key], h5py.Dataset):
                coords = np.asarray(file["obsm"][key][:, :2], dtype=np.float64)
                if coords.shape[0] != len(cell_ids) or coords.shape[1] < 2:
                    raise BadUpload(f"{name}: obsm[{key!r}] has shape {file['obsm'][key].shape}, not ({len(cell_ids)}, >=2)")
                for d in range(2):
                    label = f"{prefix}_{d + 1}"
                    if label not in columns:
                        columns[label] = pa.array(coords[:, d])
    return pa.table(columns)


def read_var_symbols(var: Any, name: str, features: list[str], column: str | None = _UNSET) -> list[str]:
    """The features' display symbols from the text `var` column `column` ("" where missing); [] when
    there are none, or when they equal the features themselves.

    `column` unset: the first of `SYMBOL_COLUMNS` that `var` has as text; None: no symbols. A named
    column that is absent, not text, or holds control characters or over 1024 bytes is `BadUpload`.
    """
    if column is None:
        return []
    named = column is not _UNSET
    candidates = [column] if named else [c for c in SYMBOL_COLUMNS if c in var]
    for candidate in candidates:
        if candidate not in var:
            present = [k for k in var.keys() if k not in ("_index", "__categories")]
            raise BadUpload(f"{name}: manifest feature_symbols {candidate!r} is not a var column (var columns: {present[:20]})")
        values = _obs_column(var[candidate], name, candidate)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        if not pa.types.is_string(values.type):
            if named:
                raise BadUpload(f"{name}: var column {candidate!r} (feature_symbols) is not text but {values.type}")
            continue
        if len(values) != len(features):
            raise BadUpload(f"{name}: var column {candidate!r} has {len(values)} values for {len(features)} features")
        symbols = pc.fill_null(values, "").to_pylist()
        for i, symbol in enumerate(symbols):
            if CONTROL.search(symbol) or len(symbol.encode()) > 1024:
                raise BadUpload(f"{name}: var column {candidate!r}: the symbol of feature {features[i]!r} has control characters or is over 1024 bytes")
        return [] if symbols == features else symbols
    return []


def split_h5ad(
    path: Path,
    settings: Settings,
    new_parts: Any,
    *,
    matrix: str = "X",
    symbols: str | None = _UNSET,
    progress: Progress | None = None,
    block_nnz: int = 4 << 20,
) -> tuple[MatrixSummary, pa.Table]:
    """Stage an h5ad's matrix; returns the summary (with the features' symbols, see
    `read_var_symbols`: `symbols` is the manifest's feature_symbols) and its obs/obsm metadata table."""
    name = path.name
    with _open(path, name) as file:
        if "obs" not in file or "var" not in file:
            raise BadUpload(f"{name}: not an AnnData file (no obs or var)")
        if matrix == "X" and "X" not in file and "raw" in file and "X" in file["raw"]:
            matrix = "raw.X"
        if matrix == "raw.X":
            if "raw" not in file or "X" not in file["raw"]:
                raise BadUpload(f"{name}: the manifest asks for raw.X but the file has no raw/X")
            x, var = file["raw"]["X"], file["raw"]["var"]
        else:
            if "X" not in file:
                raise BadUpload(f"{name}: h5ad has no X (nor raw/X): no matrix to read")
            x, var = file["X"], file["var"]
        cell_ids = _dataframe_index(file["obs"], name, "obs")
        features = _dataframe_index(var, name, "var")
        check_row_count(len(cell_ids), name)
        check_ids(pa.array(cell_ids, pa.string()), name)
        check_names(features, "feature", name)
        check_feature_count(len(features), settings, name)
        # Before the matrix: a bad feature_symbols fails the upload without staging anything.
        feature_symbols = read_var_symbols(var, name, features, symbols)
        width = chunk_width(len(cell_ids), settings)
        with new_parts(width) as parts:
            reader = _Reader(name, parts, len(cell_ids), len(features), block_nnz, progress)
            h5py = _h5py()
            kind = _encoding(x)
            if isinstance(x, h5py.Dataset):
                reader.dense(x)
            elif kind == "csr_matrix" or (not kind and x.attrs.get("h5sparse_format", b"") in (b"csr", "csr")):
                _check_shape(x, name, len(cell_ids), len(features))
                reader.rows_of(x)
            elif kind == "csc_matrix" or (not kind and x.attrs.get("h5sparse_format", b"") in (b"csc", "csc")):
                _check_shape(x, name, len(cell_ids), len(features))
                reader.columns_of(x)
            else:
                raise BadUpload(f"{name}: X has an unsupported encoding {kind!r} (expected csr_matrix, csc_matrix or a dense array)")
            chunks = chunk_ranges(len(features), width)
            n_parts = parts.finish(len(chunks))
            nnz = parts.nnz
        metadata = read_h5ad_obs(file, name, cell_ids)
    summary = MatrixSummary(pa.array(cell_ids, pa.string()), features, "cell_id", chunks, n_parts, nnz, feature_symbols)
    return summary, metadata


def _check_shape(group: Any, name: str, n_cells: int, n_features: int) -> None:
    shape = tuple(int(s) for s in group.attrs.get("shape", (n_cells, n_features)))
    if shape != (n_cells, n_features):
        raise BadUpload(f"{name}: X has shape {shape}, but obs and var give {n_cells} x {n_features}")


def split_10x_h5(path: Path, settings: Settings, new_parts: Any, *, progress: Progress | None = None, block_nnz: int = 4 << 20) -> MatrixSummary:
    """Stage a 10x Genomics feature-barcode matrix (.h5); Gene Expression features only."""
    name = path.name
    with _open(path, name) as file:
        if "matrix" in file:
            group = file["matrix"]
            if "features" not in group:
                raise BadUpload(f"{name}: matrix/ has no features group (not a Cell Ranger 3+ file?)")
            ids = _strings(group["features"]["id"])
            symbols = _strings(group["features"]["name"]) if "name" in group["features"] else ids
            types = _strings(group["features"]["feature_type"]) if "feature_type" in group["features"] else [GENE_EXPRESSION] * len(ids)
        else:
            genomes = [k for k in file.keys() if "genes" in file[k] and "barcodes" in file[k]]
            if len(genomes) != 1:
                raise BadUpload(f"{name}: not a 10x feature-barcode matrix (no matrix/ group, and {len(genomes)} Cell Ranger 2 genome groups)")
            group = file[genomes[0]]
            ids = _strings(group["genes"])
            symbols = _strings(group["gene_names"]) if "gene_names" in group else ids
            types = [GENE_EXPRESSION] * len(ids)
        if "barcodes" not in group or "shape" not in group:
            raise BadUpload(f"{name}: the 10x matrix has no barcodes or shape")
        barcodes = _strings(group["barcodes"])
        shape = tuple(int(s) for s in group["shape"][:])
        if shape != (len(ids), len(barcodes)):
            raise BadUpload(f"{name}: mismatched barcodes: shape {shape} but {len(ids)} features and {len(barcodes)} barcodes")
        features, keep = gene_expression_features(ids, symbols, types, name)
        check_row_count(len(barcodes), name)
        check_ids(pa.array(barcodes, pa.string()), name, "barcode")
        check_names(features, "feature", name)
        check_feature_count(len(features), settings, name)
        width = chunk_width(len(barcodes), settings)
        with new_parts(width) as parts:
            reader = _Reader(name, parts, len(barcodes), len(features), block_nnz, progress)
            # Stored features x barcodes CSC: the same arrays are CSR over barcodes (cells).
            reader.rows_of(group, keep=keep)
            chunks = chunk_ranges(len(features), width)
            n_parts = parts.finish(len(chunks))
            nnz = parts.nnz
    return MatrixSummary(pa.array(barcodes, pa.string()), features, "barcode", chunks, n_parts, nnz)
