"""`wideviews synth`: stream a synthetic upload of any size in bounded memory.

The data is single-cell-like: cells fall into `groups` uneven cell types (a Zipf-like spread) and a
few donors, each feature has its own density modulated per cell type (marker-like), values are
log-normalised counts rounded to 4 decimals (`--values lognorm`) or the raw counts (`--values
counts`), and each cell type sits around its own centre of a 2-D UMAP-like embedding.

Everything derives from the seed and the position of a row block, so a block can be regenerated on
its own and every format (`--format csv|h5ad|10x-h5`) holds exactly the same numbers: the CSV's
text is the reference (a value is the float64 its text parses to).

Memory is bounded by one row block (about `block_entries` matrix entries), whatever the size.
`matrix.csv` is rendered as bytes by a numba loop over the block's value codes and deflated into the
ZIP member by a second thread while the next block is generated.
"""

from __future__ import annotations

import argparse
import io
import json
import queue
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from shared.config import Settings

DONORS = 8
LIBRARY_LEVELS = 64
MAX_COUNT = 30


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; equal specs generate equal data."""

    n_cells: int
    n_features: int
    density: float = 0.1
    n_groups: int = 30
    seed: int = 0
    values: str = "lognorm"  # or "counts"
    block_entries: int = 4_000_000

    @property
    def block_rows(self) -> int:
        """Rows per generated block: about `block_entries` values."""
        return max(1, min(self.n_cells, self.block_entries // max(1, self.n_features)))

    def feature_names(self) -> list[str]:
        """The feature names (`GENE00000`, ...)."""
        return [f"GENE{i:05d}" for i in range(self.n_features)]

    def cell_id(self, i: int) -> str:
        """The id of cell `i`."""
        return f"cell-{i:08d}"


class SynthData:
    """The parameters drawn once from the seed (groups, densities, value levels) and the row blocks."""

    def __init__(self, spec: SynthSpec) -> None:
        if spec.n_cells < 1 or spec.n_features < 1 or spec.n_groups < 1:
            raise ValueError("cells, features and groups must be at least 1")
        if not 0 < spec.density <= 1:
            raise ValueError("density must be in (0, 1]")
        if spec.values not in ("lognorm", "counts"):
            raise ValueError("values must be lognorm or counts")
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        weights = 1.0 / np.arange(1, spec.n_groups + 1) ** 0.9
        self.group_weights = weights / weights.sum()
        width = len(str(spec.n_groups - 1))
        self.group_names = [f"type-{g:0{width}d}" for g in range(spec.n_groups)]
        self.donor_names = [f"donor-{d + 1}" for d in range(DONORS)]
        concentration = 2.0
        p_feature = rng.beta(spec.density * concentration + 1e-3, max(1e-3, (1 - spec.density) * concentration), size=spec.n_features)
        p_feature *= spec.density / max(p_feature.mean(), 1e-12)
        factor = rng.lognormal(0.0, 0.5, size=(spec.n_groups, spec.n_features))
        self.p_group = np.clip(p_feature[None, :] * factor, 0.0, 0.98).astype(np.float32)
        self.centres = rng.normal(0.0, 6.0, size=(spec.n_groups, 2))
        # Value code 0 is zero; code 1 + (count - 1) * LIBRARY_LEVELS + level otherwise.
        counts = np.repeat(np.arange(1, MAX_COUNT + 1), LIBRARY_LEVELS)
        library = np.tile(np.linspace(2000.0, 12000.0, LIBRARY_LEVELS), MAX_COUNT)
        if spec.values == "counts":
            texts = [str(int(c)) for c in counts]
        else:
            texts = [_short_float(v) for v in np.round(np.log1p(counts * 1e4 / library), 4)]
        self.value_texts = ["0"] + texts
        # The reference value of each code is what its text parses to.
        self.value_of_code = np.array([float(t) for t in self.value_texts], dtype=np.float64)
        self._tokens = _TokenTable(self.value_texts)

    def blocks(self) -> Iterator[tuple[int, int]]:
        """(first row, number of rows) of every row block."""
        step = self.spec.block_rows
        for start in range(0, self.spec.n_cells, step):
            yield start, min(step, self.spec.n_cells - start)

    def cell_columns(self, start: int, n: int) -> dict[str, np.ndarray]:
        """The metadata of cells [start, start + n): group and donor codes, embedding."""
        rng = np.random.default_rng([self.spec.seed, 1, start])
        group = rng.choice(self.spec.n_groups, size=n, p=self.group_weights).astype(np.int32)
        donor = rng.integers(0, DONORS, size=n, dtype=np.int32)
        level = rng.integers(0, LIBRARY_LEVELS, size=n, dtype=np.int32)
        umap = self.centres[group] + rng.normal(0.0, 1.0, size=(n, 2))
        return {"group": group, "donor": donor, "level": level, "umap": np.round(umap, 4)}

    def block_codes(self, start: int, n: int) -> np.ndarray:
        """Value codes (n × features, uint16) of the rows [start, start + n)."""
        cells = self.cell_columns(start, n)
        rng = np.random.default_rng([self.spec.seed, 2, start])
        uniform = rng.random((n, self.spec.n_features), dtype=np.float32)
        return _value_codes(uniform, self.p_group, cells["group"], cells["level"])

    def block_values(self, start: int, n: int) -> np.ndarray:
        """The float64 values (n × features) of rows [start, start + n): the reference."""
        return self.value_of_code[self.block_codes(start, n)]

    def matrix_csv_block(self, start: int, n: int) -> bytes:
        """The rows [start, start + n) of matrix.csv as bytes."""
        ids = [self.spec.cell_id(i) for i in range(start, start + n)]
        return self._tokens.render(ids, self.block_codes(start, n))

    def matrix_csv_header(self) -> bytes:
        """The matrix CSV's header line."""
        return (",".join(["cell_id", *self.spec.feature_names()]) + "\n").encode()

    def metadata_block(self, start: int, n: int) -> pa.Table:
        """The metadata of cells [start, start + n) as an Arrow table."""
        cells = self.cell_columns(start, n)
        return pa.table(
            {
                "cell_id": [self.spec.cell_id(i) for i in range(start, start + n)],
                "cell_type": pa.DictionaryArray.from_arrays(cells["group"], self.group_names).cast(pa.string()),
                "donor": pa.DictionaryArray.from_arrays(cells["donor"], self.donor_names).cast(pa.string()),
                "umap_1": cells["umap"][:, 0],
                "umap_2": cells["umap"][:, 1],
            }
        )

    def manifest(self) -> dict[str, object]:
        """The upload's manifest.json document."""
        s = self.spec
        return {
            "groupings": ["cell_type", "donor"],
            "embedding": "umap",
            "title": f"Synthetic {s.n_cells} cells x {s.n_features} features",
            "description": f"wideviews synth: density {s.density}, {s.n_groups} cell types, seed {s.seed}, {s.values} values",
        }


def _short_float(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


@numba.njit(cache=True, nogil=True)
def _value_codes(uniform: np.ndarray, p_group: np.ndarray, group: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Present where u < p (the cell type's density of the feature); then u / p is uniform again and
    gives a geometric count (success 0.55), capped at MAX_COUNT."""
    n, width = uniform.shape
    codes = np.zeros((n, width), dtype=np.uint16)
    log_q = np.log(0.45)
    for i in range(n):
        p_row = p_group[group[i]]
        for j in range(width):
            u = uniform[i, j]
            p = p_row[j]
            if u < p:
                count = 1 + int(np.log(max(u / p, 1e-30)) / log_q)
                count = min(count, MAX_COUNT)
                codes[i, j] = 1 + (count - 1) * LIBRARY_LEVELS + level[i]
    return codes


@numba.njit(cache=True, nogil=True)
def _render_rows(ids: np.ndarray, id_lengths: np.ndarray, codes: np.ndarray, token_bytes: np.ndarray, token_start: np.ndarray, token_length: np.ndarray, out: np.ndarray) -> int:
    """CSV rows into `out`: id, then each value's text, comma separated; returns the bytes written."""
    n, width = codes.shape
    at = 0
    for i in range(n):
        for b in range(id_lengths[i]):
            out[at] = ids[i, b]
            at += 1
        for j in range(width):
            out[at] = 44  # ','
            at += 1
            code = codes[i, j]
            s = token_start[code]
            for b in range(token_length[code]):
                out[at] = token_bytes[s + b]
                at += 1
        out[at] = 10  # '\n'
        at += 1
    return at


class _TokenTable:
    """The text of every value code, concatenated, with each code's start and length."""

    def __init__(self, texts: list[str]) -> None:
        raw = [t.encode() for t in texts]
        self.length = np.array([len(r) for r in raw], dtype=np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]]).astype(np.int64)
        self.bytes = np.frombuffer(b"".join(raw), dtype=np.uint8)
        self.longest = int(self.length.max())

    def render(self, ids: list[str], codes: np.ndarray) -> bytes:
        n, width = codes.shape
        encoded = [c.encode() for c in ids]
        longest = max(len(e) for e in encoded)
        id_array = np.zeros((n, longest), dtype=np.uint8)
        for i, e in enumerate(encoded):
            id_array[i, : len(e)] = np.frombuffer(e, np.uint8)
        id_lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        out = np.empty(n * (longest + 1 + width * (self.longest + 1)), dtype=np.uint8)
        size = _render_rows(id_array, id_lengths, codes, self.bytes, self.start, self.length, out)
        return out[:size].tobytes()


def _write_member_threaded(archive: zipfile.ZipFile, name: str, pieces: Iterator[bytes], compresslevel: int) -> int:
    """Write a member from a stream of byte pieces; deflating runs in a second thread. Returns its size."""
    info = zipfile.ZipInfo(name, date_time=time.localtime(time.time())[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = compresslevel  # type: ignore[attr-defined]  # ZipFile.open(mode="w") reads it
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    size = 0

    def drain() -> None:
        with archive.open(info, "w", force_zip64=True) as member:
            while (piece := pending.get()) is not None:
                member.write(piece)

    def run() -> None:
        try:
            drain()
        except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
            errors.append(exc)
            while pending.get() is not None:
                pass

    writer = threading.Thread(target=run, name=f"deflate-{name}")
    writer.start()
    try:
        for piece in pieces:
            size += len(piece)
            pending.put(piece)
            if errors:
                break
    finally:
        pending.put(None)
        writer.join()
    if errors:
        raise errors[0]
    return size


def write_synth_zip(data: SynthData, out: Path, *, compresslevel: int = 1, progress: bool = False) -> Path:
    """The upload ZIP (matrix.csv, metadata.csv, manifest.json), streamed block by block."""
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        archive.writestr("manifest.json", json.dumps(data.manifest(), indent=1))

        def matrix_pieces() -> Iterator[bytes]:
            yield data.matrix_csv_header()
            written = 0
            for start, n in data.blocks():
                piece = data.matrix_csv_block(start, n)
                written += len(piece)
                if progress:
                    done = start + n
                    print(f"\rmatrix.csv: {done}/{data.spec.n_cells} rows, {written / 1e9:.2f} GB, {time.monotonic() - started:.0f} s", end="", file=sys.stderr, flush=True)
                yield piece
            if progress:
                print(file=sys.stderr)

        _write_member_threaded(archive, "matrix.csv", matrix_pieces(), compresslevel)

        def metadata_pieces() -> Iterator[bytes]:
            # Rows in another order than the matrix: metadata is matched by cell id, not position.
            header = True
            for start, n in reversed(list(data.blocks())):
                buf = io.BytesIO()
                pacsv.write_csv(data.metadata_block(start, n), buf, write_options=pacsv.WriteOptions(include_header=header, quoting_style="needed"))
                header = False
                yield buf.getvalue()

        _write_member_threaded(archive, "metadata.csv", metadata_pieces(), compresslevel)
    return out


def _block_csr(data: SynthData, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row lengths, feature indices, values) of the rows [start, start + n): CSR pieces."""
    codes = data.block_codes(start, n)
    rows, cols = np.nonzero(codes)
    return np.bincount(rows, minlength=n), cols, data.value_of_code[codes[rows, cols]]


class _Appender:
    """A 1-D HDF5 dataset grown block by block."""

    def __init__(self, group: Any, name: str, dtype: Any) -> None:
        self.ds = group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 18,), compression="gzip", compression_opts=1)
        self.dtype = np.dtype(dtype)

    def append(self, values: np.ndarray | list[Any]) -> None:
        """Add `values` (cast to the dataset's type) at the end."""
        n = self.ds.shape[0]
        self.ds.resize((n + len(values),))
        self.ds[n:] = np.asarray(values).astype(self.dtype, copy=False)


def _append_blocks(data: SynthData, values: _Appender, indices: _Appender, *, each_block: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Append every block's non-zeros (by cell, as CSR/CSC pieces) to `values` and `indices`; returns
    the index pointer. `each_block(start, n)` runs after each block."""
    indptr = [np.zeros(1, dtype=np.int64)]
    total = 0
    for start, n in data.blocks():
        lengths, cols, vals = _block_csr(data, start, n)
        values.append(vals)
        indices.append(cols)
        indptr.append(total + np.cumsum(lengths))
        total += int(lengths.sum())
        if each_block is not None:
            each_block(start, n)
    return np.concatenate(indptr)


def _h5_strings(group: Any, name: str, values: list[str], attrs: dict[str, str] | None = None) -> Any:
    import h5py

    ds = group.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
    for k, v in (attrs or {}).items():
        ds.attrs[k] = v
    return ds


def _h5_attrs(node: Any, encoding: str, version: str, **more: Any) -> None:
    node.attrs["encoding-type"] = encoding
    node.attrs["encoding-version"] = version
    import h5py

    for k, v in more.items():
        if isinstance(v, list):
            # String arrays need an explicit string type; an empty one is written as anndata does (float).
            node.attrs.create(k, data=v, dtype=h5py.string_dtype()) if v else node.attrs.create(k, data=np.empty(0, dtype=np.float64))
        else:
            node.attrs[k] = v


def write_synth_h5ad(data: SynthData, out: Path) -> Path:
    """The same data as an AnnData file: CSR X (float64, or float32 for counts), obs with categorical
    cell_type and donor, obsm X_umap, var names; written in row blocks (bounded memory)."""
    import h5py

    s = data.spec
    value_dtype = np.float32 if s.values == "counts" else np.float64
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w") as f:
        _h5_attrs(f, "anndata", "0.1.0")
        x = f.create_group("X")
        _h5_attrs(x, "csr_matrix", "0.1.0", shape=np.array([s.n_cells, s.n_features], dtype=np.int64))
        groups, donors, umap = [], [], []

        def keep_metadata(start: int, n: int) -> None:
            cells = data.cell_columns(start, n)
            groups.append(cells["group"])
            donors.append(cells["donor"])
            umap.append(cells["umap"])

        indptr = _append_blocks(data, _Appender(x, "data", value_dtype), _Appender(x, "indices", np.int32), each_block=keep_metadata)
        x.create_dataset("indptr", data=indptr)
        obs = f.create_group("obs")
        _h5_attrs(obs, "dataframe", "0.2.0", _index="cell_id", **{"column-order": ["cell_type", "donor"]})
        _h5_strings(obs, "cell_id", [s.cell_id(i) for i in range(s.n_cells)], {"encoding-type": "string-array", "encoding-version": "0.2.0"})
        for column, codes, names in (("cell_type", groups, data.group_names), ("donor", donors, data.donor_names)):
            cat = obs.create_group(column)
            _h5_attrs(cat, "categorical", "0.2.0", ordered=False)
            cat.create_dataset("codes", data=np.concatenate(codes).astype(np.int16))
            _h5_strings(cat, "categories", names, {"encoding-type": "string-array", "encoding-version": "0.2.0"})
        var = f.create_group("var")
        _h5_attrs(var, "dataframe", "0.2.0", _index="_index", **{"column-order": []})
        _h5_strings(var, "_index", s.feature_names(), {"encoding-type": "string-array", "encoding-version": "0.2.0"})
        obsm = f.create_group("obsm")
        _h5_attrs(obsm, "dict", "0.1.0")
        emb = obsm.create_dataset("X_umap", data=np.concatenate(umap))
        _h5_attrs(emb, "array", "0.2.0")
        for name in ("layers", "obsp", "uns", "varm", "varp"):
            _h5_attrs(f.create_group(name), "dict", "0.1.0")
    return out


def write_synth_10x_h5(data: SynthData, out: Path) -> Path:
    """The same data as a Cell Ranger 3 feature-barcode matrix (features x barcodes CSC): integer
    counts as int32, other values as float64. Written in barcode blocks (bounded memory)."""
    import h5py

    s = data.spec
    value_dtype = np.int32 if s.values == "counts" else np.float64
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w") as f:
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array([s.cell_id(i).encode() for i in range(s.n_cells)]))
        indptr = _append_blocks(data, _Appender(m, "data", value_dtype), _Appender(m, "indices", np.int64))
        m.create_dataset("indptr", data=indptr)
        m.create_dataset("shape", data=np.array([s.n_features, s.n_cells], dtype=np.int32))
        features = m.create_group("features")
        names = s.feature_names()
        features.create_dataset("id", data=np.array([f"ENSSYN{i:011d}".encode() for i in range(s.n_features)]))
        features.create_dataset("name", data=np.array([n.encode() for n in names]))
        features.create_dataset("feature_type", data=np.array([b"Gene Expression"] * s.n_features))
        features.create_dataset("genome", data=np.array([b"synthetic"] * s.n_features))
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    return out


def write_synth_metadata_csv(data: SynthData) -> bytes:
    """The whole metadata.csv of the synthetic dataset."""
    buf = io.BytesIO()
    header = True
    for start, n in data.blocks():
        pacsv.write_csv(data.metadata_block(start, n), buf, write_options=pacsv.WriteOptions(include_header=header, quoting_style="needed"))
        header = False
    return buf.getvalue()


def write_synth_upload(data: SynthData, out: Path, fmt: str, *, progress: bool = False) -> Path:
    """`fmt` csv: the upload ZIP; h5ad: an .h5ad (an upload by itself, or zipped with the manifest
    when `out` ends in .zip); 10x-h5: the .h5, zipped with metadata.csv and the manifest when `out`
    ends in .zip."""
    if fmt == "csv":
        return write_synth_zip(data, out, progress=progress)
    if not out.name.lower().endswith(".zip"):
        return write_synth_h5ad(data, out) if fmt == "h5ad" else write_synth_10x_h5(data, out)
    inner = out.with_name(out.stem + (".h5ad" if fmt == "h5ad" else ".filtered_feature_bc_matrix.h5"))
    (write_synth_h5ad if fmt == "h5ad" else write_synth_10x_h5)(data, inner)
    try:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1, allowZip64=True) as archive:
            archive.write(inner, "filtered_feature_bc_matrix.h5" if fmt == "10x-h5" else "data.h5ad")
            if fmt == "10x-h5":
                archive.writestr("metadata.csv", write_synth_metadata_csv(data))
            archive.writestr("manifest.json", json.dumps(data.manifest(), indent=1))
    finally:
        inner.unlink(missing_ok=True)
    return out


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    """`wideviews synth`: write a large synthetic upload without holding it in memory."""
    spec = SynthSpec(args.cells, args.features, args.density, args.groups, args.seed, args.values)
    data = SynthData(spec)
    out = Path(args.out)
    started = time.monotonic()
    write_synth_upload(data, out, args.format, progress=sys.stderr.isatty())
    elapsed = time.monotonic() - started
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {elapsed:.1f} s: {spec.n_cells} cells x {spec.n_features} features, density {spec.density}, {spec.n_groups} groups, {args.format}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `wideviews synth`."""
    synth = subparsers.add_parser("synth", help="stream a synthetic upload of any size in bounded memory")
    synth.add_argument("--cells", type=int, required=True)
    synth.add_argument("--features", type=int, required=True)
    synth.add_argument("--density", type=float, default=0.1, help="mean fraction of non-zero values (default 0.1)")
    synth.add_argument("--groups", type=int, default=30, help="cell types, uneven in size (default 30)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--values", choices=("lognorm", "counts"), default="lognorm", help="log-normalised counts with 4 decimals, or integer counts")
    synth.add_argument(
        "--format", choices=("csv", "h5ad", "10x-h5"), default="csv",
        help="csv: a ZIP of matrix.csv, metadata.csv, manifest.json; h5ad: an .h5ad (zipped with the manifest if --out ends in .zip); "
        "10x-h5: a Cell Ranger .h5 (zipped with metadata.csv and the manifest if --out ends in .zip). Same numbers in each.",
    )
    synth.add_argument("--out", required=True, help="the file to write (.zip for csv, .h5ad, .h5)")
    synth.set_defaults(run=cmd_synth)
