"""The 12 per-group statistics and the transpose of one column chunk: numpy, scipy and numba, no I/O.

A chunk is cells x features. The kernel walks it one feature column at a time (CSC order; a dense chunk
is gathered into CSC a block of columns at a time, so no full sparse copy is made) and never
materialises a zero:

1. Pass A over the column's non-zeros: per group nnz, negatives, float64 sum, min and max of the
   non-zeros; each non-zero's group code is kept in a small buffer.
2. From count, nnz and the number of negatives per group, the rank of every quantile (numpy's
   `linear` method: position (n - 1) * q) is known. The sorted group is [negatives, zeros,
   positives], so a rank that falls among the zeros has value 0 with no work at all. Only groups
   with a quantile rank on a non-zero need their values: they are flagged.
3. Pass B over the non-zeros: the second pass of a two-pass variance (deviations from the group's
   float64 mean, corrected by their sum; the implicit zeros are added in closed form), and the
   flagged groups' values are scattered into one segment per group, negatives to the front and
   positives to the back.
4. Per flagged segment, a multi-rank quickselect (Hoare partition, ties safe) places only the needed
   ranks, then numpy's interpolation formula gives median, q1 and q3.

Cost: two sequential passes over the non-zeros plus O(segment) selection where a quantile lands on a
non-zero; no sort. Memory: the chunk, the 12 output arrays and scratch of one column (or one dense
block). Single threaded by design: the job runs one chunk per core. Results are deterministic (fixed
summation order, no fastmath), bit for bit across runs and processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from shared.errors import Permanent
from shared.stats import STATS, Stat

_COUNT = STATS.index("count")
_NNZ = STATS.index("nnz")
_SUM = STATS.index("sum")
_MEAN = STATS.index("mean")
_VAR = STATS.index("var")
_MIN = STATS.index("min")
_MAX = STATS.index("max")
_MEDIAN = STATS.index("median")
_Q1 = STATS.index("q1")
_Q3 = STATS.index("q3")
_FRAC = STATS.index("frac_expressing")
_MEAN_EXPR = STATS.index("mean_expressing")

# Kernel status codes (the kernel cannot raise a typed error from nopython mode).
_OK = -1
_UNSORTED = -2  # rows not strictly increasing in a column: duplicates possible, canonicalise and rerun

# Ranges this short are insertion sorted instead of partitioned.
_SMALL_RANGE = 24
# Dense chunks are gathered into CSC this many cells x columns at a time (values + int32 rows).
_DENSE_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class GroupStats:
    """Per (feature, group) statistics of one chunk; `values[stat]` is float64 (n_features, n_groups)."""

    n_groups: int
    values: dict[Stat, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:
        # stats.mean reads like the domain; only stat names resolve here.
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)


@dataclass(frozen=True)
class _Columns:
    """A chunk ready for the kernel: CSC arrays (start/end per column) or a dense array."""

    n_cells: int
    n_features: int
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    rows: np.ndarray | None = None
    vals: np.ndarray | None = None
    dense: np.ndarray | None = None


def compute_group_stats(
    chunk: np.ndarray | sp.spmatrix | sp.sparray, group_codes: np.ndarray, n_groups: int
) -> GroupStats:
    """Compute the 12 `STATS` for every (feature, group) of one cells x features chunk.

    `chunk` is dense or sparse (CSC used as is; CSR, COO and others converted to CSC once), float32,
    float64 or integer (integers and float16 are computed as float64). Sums and variances are float64;
    median, q1 and q3 interpolate linearly as numpy.quantile, zeros included (a sparse chunk's
    implicit and explicit zeros are zeros). An empty group has count 0, nnz 0, sum 0 and NaN elsewhere;
    var is NaN below two cells (ddof=1). Raises `Permanent` on a NaN or infinite value, a group code
    outside [0, n_groups), or a length mismatch. Time O(nnz + n_features * n_groups) plus selection
    where a quantile lands on a non-zero; memory beyond the chunk is one column's scratch.
    """
    columns = _prepare_columns(chunk)
    return _compute_prepared(columns, group_codes, n_groups)


def compute_grouping_stats(
    chunk: np.ndarray | sp.spmatrix | sp.sparray, groupings: Mapping[str, tuple[np.ndarray, int]]
) -> dict[str, GroupStats]:
    """`compute_group_stats` for several groupings (name -> (group codes, n_groups)), converting once."""
    columns = _prepare_columns(chunk)
    return {name: _compute_prepared(columns, codes, n) for name, (codes, n) in groupings.items()}


def sparse_columns(chunk: np.ndarray | sp.spmatrix | sp.sparray) -> sp.csc_array:
    """The chunk as a canonical CSC array for the transpose view: one column per feature.

    Zeros (explicit ones too) are dropped, duplicates summed, row indices int32 and sorted within each
    column; float32 and float64 are kept, other dtypes become float64. Raises `Permanent` on NaN/inf.
    """
    if sp.issparse(chunk):
        csc = sp.csc_array(chunk, dtype=_float_dtype(chunk.dtype), copy=True)
        csc.sum_duplicates()
        csc.eliminate_zeros()
        _reject_non_finite(csc.data)
        if csc.indices.dtype != np.int32 or csc.indptr.dtype != np.int32:
            if csc.nnz >= np.iinfo(np.int32).max:
                raise Permanent(f"chunk has {csc.nnz} non-zeros, more than an int32 index can address")
            csc = sp.csc_array(
                (csc.data, csc.indices.astype(np.int32), csc.indptr.astype(np.int32)), shape=csc.shape
            )
        return csc
    dense = _as_dense(chunk)
    if dense.shape[0] >= np.iinfo(np.int32).max:
        raise Permanent(f"chunk has {dense.shape[0]} cells, more than an int32 index can address")
    nnz_per_column = _count_dense_nonzeros(dense, dense.flags.f_contiguous)
    total = int(nnz_per_column.sum())
    if total >= np.iinfo(np.int32).max:
        raise Permanent(f"chunk has {total} non-zeros, more than an int32 index can address")
    indptr = np.zeros(dense.shape[1] + 1, dtype=np.int32)
    np.cumsum(nnz_per_column, out=indptr[1:])
    indices = np.empty(total, dtype=np.int32)
    data = np.empty(total, dtype=dense.dtype)
    _fill_dense_csc(dense, dense.flags.f_contiguous, indptr, indices, data)
    _reject_non_finite(data)
    return sp.csc_array((data, indices, indptr), shape=dense.shape)


# --- preparation and validation (Python) ------------------------------------------------------------


def _float_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.float32 or dtype == np.float64:
        return np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_:
        return np.dtype(np.float64)
    raise Permanent(f"chunk values must be numeric (integer or float), got dtype {dtype}")


def _as_dense(chunk: Any) -> np.ndarray:
    dense = np.asarray(chunk)
    if dense.ndim != 2:
        raise Permanent(f"chunk must be 2-D (cells x features), got shape {dense.shape}")
    dtype = _float_dtype(dense.dtype)
    if dense.dtype != dtype:
        dense = dense.astype(dtype)
    if not (dense.flags.c_contiguous or dense.flags.f_contiguous):
        dense = np.ascontiguousarray(dense)
    return dense


def _prepare_columns(chunk: Any) -> _Columns:
    if not sp.issparse(chunk):
        dense = _as_dense(chunk)
        return _Columns(n_cells=dense.shape[0], n_features=dense.shape[1], dense=dense)
    if chunk.ndim != 2:
        raise Permanent(f"chunk must be 2-D (cells x features), got shape {chunk.shape}")
    csc = chunk if chunk.format == "csc" else chunk.tocsc()
    return _csc_columns(csc)


def _csc_columns(csc: Any) -> _Columns:
    dtype = _float_dtype(csc.data.dtype)
    vals = csc.data if csc.data.dtype == dtype else csc.data.astype(dtype)
    return _Columns(
        n_cells=csc.shape[0],
        n_features=csc.shape[1],
        starts=csc.indptr[:-1],
        ends=csc.indptr[1:],
        rows=csc.indices,
        vals=vals,
    )


def _reject_non_finite(values: np.ndarray) -> None:
    if values.size and not np.isfinite(values).all():
        raise Permanent("chunk holds NaN or infinite values; every value must be a finite number")


def _validated_codes(group_codes: np.ndarray, n_groups: int, n_cells: int) -> np.ndarray:
    codes = np.asarray(group_codes)
    if n_groups < 0:
        raise Permanent(f"n_groups must be >= 0, got {n_groups}")
    if codes.ndim != 1 or codes.shape[0] != n_cells:
        raise Permanent(f"group codes have shape {codes.shape}, expected ({n_cells},): one code per cell")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise Permanent(f"group codes must be integers, got dtype {codes.dtype}")
    if codes.size:
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= n_groups:
            raise Permanent(
                f"group codes must lie in [0, {n_groups}); found {low if low < 0 else high}"
                " (every cell needs a group: -1 / missing is not allowed)"
            )
    # int16 codes halve the cache footprint of the per non-zero code lookup.
    return codes.astype(np.int16 if n_groups <= np.iinfo(np.int16).max else np.int32, copy=False)


def _compute_prepared(columns: _Columns, group_codes: np.ndarray, n_groups: int) -> GroupStats:
    codes = _validated_codes(group_codes, n_groups, columns.n_cells)
    counts = np.bincount(codes, minlength=n_groups).astype(np.int64)
    out = np.empty((len(STATS), columns.n_features, n_groups), dtype=np.float64)
    if columns.dense is not None:
        dense = columns.dense
        block = max(1, min(columns.n_features, _DENSE_BLOCK_ELEMENTS // max(1, columns.n_cells)))
        status = _stats_of_dense(dense, dense.flags.f_contiguous, block, codes, counts, out)
    else:
        status = _stats_of_columns(columns.starts, columns.ends, columns.rows, columns.vals, codes, counts, out, 0)
        if status == _UNSORTED:
            # Unsorted or duplicated row indices: canonicalise a copy (duplicates summed) and rerun.
            csc = sp.csc_array(
                (columns.vals, columns.rows, np.append(columns.starts, columns.ends[-1:])),
                shape=(columns.n_cells, columns.n_features),
                copy=True,
            )
            csc.sum_duplicates()
            fixed = _csc_columns(csc)
            status = _stats_of_columns(fixed.starts, fixed.ends, fixed.rows, fixed.vals, codes, counts, out, 0)
    if status >= 0:
        raise Permanent(
            f"chunk holds NaN or infinite values (feature column {status}); every value must be a finite number"
        )
    return GroupStats(n_groups=n_groups, values={stat: out[i] for i, stat in enumerate(STATS)})


# --- compiled kernel ----------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _quantile_position(n: int, q: float) -> tuple[int, float]:
    """numpy.quantile's `linear` rule: lower rank and weight of position (n - 1) * q in n sorted values."""
    h = (n - 1) * q
    if h >= n - 1:
        return n - 1, 0.0
    lower = int(np.floor(h))
    return lower, h - lower


@numba.njit(cache=True, nogil=True)
def _lerp(a: float, b: float, t: float) -> float:
    """numpy's _lerp, operation for operation, so results match numpy.quantile on float64 input."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1.0 - t)
    return a + diff * t


@numba.njit(cache=True, nogil=True)
def _insertion_sort(a, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(lo + 1, hi):
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@numba.njit(cache=True, nogil=True)
def _select_ranks(a, lo, hi, ranks, n_ranks, stack):  # type: ignore[no-untyped-def]
    """Reorder a[lo:hi] so a[r] holds the value of sorted rank r for every r in ranks[:n_ranks].

    ranks are absolute positions in [lo, hi), ascending. Quickselect with median-of-3 and Hoare
    partition (equal keys stop both scans, so ties split evenly); expected O(hi - lo).
    """
    top = 0
    stack[0, 0] = lo
    stack[0, 1] = hi
    stack[0, 2] = 0
    stack[0, 3] = n_ranks
    top = 1
    while top > 0:
        top -= 1
        lo = stack[top, 0]
        hi = stack[top, 1]
        r0 = stack[top, 2]
        r1 = stack[top, 3]
        while r0 < r1:
            if hi - lo <= _SMALL_RANGE:
                _insertion_sort(a, lo, hi)
                break
            mid = (lo + hi) >> 1
            if a[mid] < a[lo]:
                a[mid], a[lo] = a[lo], a[mid]
            if a[hi - 1] < a[lo]:
                a[hi - 1], a[lo] = a[lo], a[hi - 1]
            if a[hi - 1] < a[mid]:
                a[hi - 1], a[mid] = a[mid], a[hi - 1]
            p = a[mid]
            i = lo
            j = hi - 1
            while True:
                i += 1
                while a[i] < p:
                    i += 1
                j -= 1
                while a[j] > p:
                    j -= 1
                if i >= j:
                    break
                a[i], a[j] = a[j], a[i]
            # a[lo:j+1] <= p, a[j+1:i] == p, a[max(i, j+1):hi] >= p
            right = max(i, j + 1)
            split_left = r0
            while split_left < r1 and ranks[split_left] <= j:
                split_left += 1
            split_right = split_left
            while split_right < r1 and ranks[split_right] < right:
                split_right += 1
            if split_right < r1:
                stack[top, 0] = right
                stack[top, 1] = hi
                stack[top, 2] = split_right
                stack[top, 3] = r1
                top += 1
            hi = j + 1
            r1 = split_left


@numba.njit(cache=True, nogil=True)
def _value_at_rank(seg, start, n_neg, n_zero, r) -> float:  # type: ignore[no-untyped-def]
    # The sorted group is [negatives, zeros, positives]; seg holds negatives then positives.
    if r < n_neg:
        return float(seg[start + r])
    if r < n_neg + n_zero:
        return 0.0
    return float(seg[start + r - n_zero])


@numba.njit(cache=True, nogil=True)
def _stats_of_columns(starts, ends, rows, vals, codes, counts, out, col0):  # type: ignore[no-untyped-def]
    """Fill out[:, col0 + c, :] for each column c; returns _OK, _UNSORTED or the column of a NaN/inf."""
    n_groups = counts.shape[0]
    n_columns = starts.shape[0]
    quantiles = np.array([0.25, 0.5, 0.75])
    q_index = np.array([_Q1, _MEDIAN, _Q3])
    max_nnz = 0
    for c in range(n_columns):
        max_nnz = max(max_nnz, ends[c] - starts[c])
    code_buf = np.empty(max_nnz, dtype=codes.dtype)
    seg = np.empty(max_nnz, dtype=vals.dtype)
    nnz_g = np.empty(n_groups, dtype=np.int64)
    neg_g = np.empty(n_groups, dtype=np.int64)
    sum_g = np.empty(n_groups, dtype=np.float64)
    min_g = np.empty(n_groups, dtype=np.float64)
    max_g = np.empty(n_groups, dtype=np.float64)
    mean_g = np.empty(n_groups, dtype=np.float64)
    dev_g = np.empty(n_groups, dtype=np.float64)
    sq_g = np.empty(n_groups, dtype=np.float64)
    need_g = np.empty(n_groups, dtype=np.bool_)
    seg_start = np.empty(n_groups, dtype=np.int64)
    neg_cur = np.empty(n_groups, dtype=np.int64)
    pos_cur = np.empty(n_groups, dtype=np.int64)
    neg_ranks = np.empty(6, dtype=np.int64)
    pos_ranks = np.empty(6, dtype=np.int64)
    stack = np.empty((8, 4), dtype=np.int64)
    nan = np.nan

    for c in range(n_columns):
        col = col0 + c
        start = starts[c]
        end = ends[c]
        nnz_g[:] = 0
        neg_g[:] = 0
        sum_g[:] = 0.0
        min_g[:] = np.inf
        max_g[:] = -np.inf
        dev_g[:] = 0.0
        sq_g[:] = 0.0

        # Pass A: per group nnz, negatives, sum, min, max of the non-zeros.
        previous_row = -1
        for k in range(start, end):
            row = rows[k]
            if row <= previous_row:
                return _UNSORTED
            previous_row = row
            v = vals[k]
            if v == 0:
                code_buf[k - start] = -1  # an explicit zero is a zero
                continue
            if not np.isfinite(v):
                return col
            g = codes[row]
            code_buf[k - start] = g
            x = np.float64(v)
            nnz_g[g] += 1
            sum_g[g] += x
            if x < min_g[g]:
                min_g[g] = x
            if x > max_g[g]:
                max_g[g] = x
            if x < 0:
                neg_g[g] += 1

        # Which groups have a quantile on a non-zero; lay their segments out.
        offset = 0
        any_need = False
        for g in range(n_groups):
            n = counts[g]
            need_g[g] = False
            if n == 0:
                continue
            mean_g[g] = sum_g[g] / n
            nz = nnz_g[g]
            if nz == 0:
                continue
            n_neg = neg_g[g]
            n_zero = n - nz
            low_q1, _ = _quantile_position(n, 0.25)
            low_q3, t_q3 = _quantile_position(n, 0.75)
            high_q3 = low_q3 + 1 if t_q3 > 0 else low_q3
            if low_q1 < n_neg or high_q3 >= n_neg + n_zero:
                need_g[g] = True
                any_need = True
                seg_start[g] = offset
                neg_cur[g] = offset
                pos_cur[g] = offset + nz
                offset += nz

        # Pass B: two-pass variance deviations; scatter the flagged groups' values.
        if any_need:
            for k in range(start, end):
                g = code_buf[k - start]
                if g < 0:
                    continue
                v = vals[k]
                d = np.float64(v) - mean_g[g]
                dev_g[g] += d
                sq_g[g] += d * d
                if need_g[g]:
                    if v < 0:
                        seg[neg_cur[g]] = v
                        neg_cur[g] += 1
                    else:
                        pos_cur[g] -= 1
                        seg[pos_cur[g]] = v
        else:
            for k in range(start, end):
                g = code_buf[k - start]
                if g < 0:
                    continue
                d = np.float64(vals[k]) - mean_g[g]
                dev_g[g] += d
                sq_g[g] += d * d

        # Finish each group.
        for g in range(n_groups):
            n = counts[g]
            nz = nnz_g[g]
            out[_COUNT, col, g] = n
            out[_NNZ, col, g] = nz
            out[_SUM, col, g] = sum_g[g]
            if n == 0:
                for s in (_MEAN, _VAR, _MIN, _MAX, _MEDIAN, _Q1, _Q3, _FRAC, _MEAN_EXPR):
                    out[s, col, g] = nan
                continue
            mean = mean_g[g]
            n_zero = n - nz
            out[_MEAN, col, g] = mean
            out[_FRAC, col, g] = nz / n
            out[_MEAN_EXPR, col, g] = sum_g[g] / nz if nz > 0 else nan
            if n < 2:
                out[_VAR, col, g] = nan  # ddof=1 as pandas: a one-cell group has var NaN, not 0
            else:
                # each implicit zero deviates by -mean; the corrected two-pass formula removes the
                # rounding left in the mean (sum of deviations is ~0 in exact arithmetic)
                dev = dev_g[g] - n_zero * mean
                sq = sq_g[g] + n_zero * mean * mean
                var = (sq - dev * dev / n) / (n - 1)
                out[_VAR, col, g] = var if var > 0.0 else 0.0
            if nz == 0:
                low = 0.0
                high = 0.0
            else:
                low = min_g[g]
                high = max_g[g]
                if n_zero > 0:
                    low = min(low, 0.0)
                    high = max(high, 0.0)
            out[_MIN, col, g] = low
            out[_MAX, col, g] = high
            if not need_g[g]:
                out[_Q1, col, g] = 0.0
                out[_MEDIAN, col, g] = 0.0
                out[_Q3, col, g] = 0.0
                continue
            s0 = seg_start[g]
            n_neg = neg_g[g]
            # Needed ranks, ascending: (lower, upper) of q1, median, q3, each in its sign's sub-array.
            n_neg_ranks = 0
            n_pos_ranks = 0
            for qi in range(3):
                lower, t = _quantile_position(n, quantiles[qi])
                for r in (lower, lower + 1):
                    if r > lower and t == 0.0:
                        continue
                    if r < n_neg:
                        target = s0 + r
                        if n_neg_ranks == 0 or neg_ranks[n_neg_ranks - 1] != target:
                            neg_ranks[n_neg_ranks] = target
                            n_neg_ranks += 1
                    elif r >= n_neg + n_zero:
                        target = s0 + r - n_zero
                        if n_pos_ranks == 0 or pos_ranks[n_pos_ranks - 1] != target:
                            pos_ranks[n_pos_ranks] = target
                            n_pos_ranks += 1
            if n_neg_ranks > 0:
                _select_ranks(seg, s0, s0 + n_neg, neg_ranks, n_neg_ranks, stack)
            if n_pos_ranks > 0:
                _select_ranks(seg, s0 + n_neg, s0 + nz, pos_ranks, n_pos_ranks, stack)
            for qi in range(3):
                lower, t = _quantile_position(n, quantiles[qi])
                a = _value_at_rank(seg, s0, n_neg, n_zero, lower)
                value = a
                if t > 0.0:
                    value = _lerp(a, _value_at_rank(seg, s0, n_neg, n_zero, lower + 1), t)
                out[q_index[qi], col, g] = value
    return _OK


@numba.njit(cache=True, nogil=True)
def _gather_dense_block(dense, f_order, j0, j1, ends, rows, vals):  # type: ignore[no-untyped-def]
    """Copy the non-zeros of columns j0:j1 into fixed-stride CSC buffers (column c at c * n_cells)."""
    n_cells = dense.shape[0]
    width = j1 - j0
    for c in range(width):
        ends[c] = c * n_cells
    if f_order:
        for c in range(width):
            pos = c * n_cells
            for i in range(n_cells):
                v = dense[i, j0 + c]
                if v != 0:
                    rows[pos] = i
                    vals[pos] = v
                    pos += 1
            ends[c] = pos
    else:
        for i in range(n_cells):
            for c in range(width):
                v = dense[i, j0 + c]
                if v != 0:
                    pos = ends[c]
                    rows[pos] = i
                    vals[pos] = v
                    ends[c] = pos + 1


@numba.njit(cache=True, nogil=True)
def _stats_of_dense(dense, f_order, block, codes, counts, out):  # type: ignore[no-untyped-def]
    """`_stats_of_columns` over a dense chunk, gathered `block` columns at a time."""
    n_cells, n_features = dense.shape
    width = min(block, n_features)
    starts = np.arange(width) * n_cells
    ends = np.empty(width, dtype=np.int64)
    rows = np.empty(max(1, width * n_cells), dtype=np.int32)
    vals = np.empty(max(1, width * n_cells), dtype=dense.dtype)
    for j0 in range(0, n_features, width):
        j1 = min(n_features, j0 + width)
        _gather_dense_block(dense, f_order, j0, j1, ends, rows, vals)
        status = _stats_of_columns(starts[: j1 - j0], ends[: j1 - j0], rows, vals, codes, counts, out, j0)
        if status != _OK:
            return status
    return _OK


@numba.njit(cache=True, nogil=True)
def _count_dense_nonzeros(dense, f_order):  # type: ignore[no-untyped-def]
    n_cells, n_features = dense.shape
    counts = np.zeros(n_features, dtype=np.int64)
    if f_order:
        for j in range(n_features):
            for i in range(n_cells):
                if dense[i, j] != 0:
                    counts[j] += 1
    else:
        for i in range(n_cells):
            for j in range(n_features):
                if dense[i, j] != 0:
                    counts[j] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def _fill_dense_csc(dense, f_order, indptr, indices, data):  # type: ignore[no-untyped-def]
    n_cells, n_features = dense.shape
    cursor = indptr[:-1].astype(np.int64)
    if f_order:
        for j in range(n_features):
            for i in range(n_cells):
                v = dense[i, j]
                if v != 0:
                    indices[cursor[j]] = i
                    data[cursor[j]] = v
                    cursor[j] += 1
    else:
        for i in range(n_cells):
            for j in range(n_features):
                v = dense[i, j]
                if v != 0:
                    indices[cursor[j]] = i
                    data[cursor[j]] = v
                    cursor[j] += 1
