"""The 12 per-group statistics, the distributions and the transpose of one column chunk: numpy, scipy and numba, no I/O.

A chunk is cells x features. The kernel walks it one feature column at a time in CSC order (a dense
chunk is gathered into CSC a block of columns at a time, so no full sparse copy is made) and never
materialises a zero:

1. Scatter: each non-zero goes to its group's segment of one buffer; segment g has room for the
   group's cell count, so no counting pass is needed first. Explicit zeros are written but not kept.
2. One pass per segment (four fixed accumulator lanes): float64 sum, min, max, negatives, and the
   sums of (x - shift) and (x - shift)^2 for the variance, shift 0 or the segment's first value. The
   implicit zeros enter in closed form. If sum of squares / centred sum shows cancellation (more than
   ~3 digits), the exact corrected two-pass variance is computed instead.
3. Quantiles (numpy's `linear` rule, position (n - 1) * q): the sorted group is [negatives, zeros,
   positives], so a rank among the zeros is 0 at no cost. Only ranks on a non-zero need values:
   the segment's values are counted into equal-width value buckets, one more pass copies out just
   the buckets holding the wanted ranks, and a branch-free quickselect (ties split off in one pass)
   finishes. When the column has no negatives the ranks are known before step 2, which then counts
   the buckets itself and leaves min and max to the selection (ranks 0 and nnz - 1).

4. Distributions (`with_distributions`): the column's value range from the scatter spans 32
   histogram bins (numpy.histogram_bin_edges). A group whose pass of step 2 counts selection
   buckets counts 32 x 2^k of them over the same range, so each bin is the sum of 2^k buckets and
   costs nothing per value; the other groups' pass counts each value into its bin by the guess
   from the value alone. Either way only where `_guess_is_exact` has shown, from the edges, that
   no value of the column's dtype can land on the wrong side of an edge; elsewhere (a value one
   ulp from an edge) numpy's rule is followed in full: the guess fixed against the edges. Once the
   quartiles are known the whiskers (1.5 IQR, clipped to the data) and outlier counts follow from
   the group's min, max and negatives when no non-zero lies beyond a fence. Else the rank
   selection of step 3 has already copied out the few buckets where the fences can fall (they are
   affine in the quartiles, whose buckets it knows before its copy pass), and the counts come from
   the buckets' counts and those values; only where a fence falls outside them (rare) does one
   more compare-only pass over the group's values run, while they are in cache.

Cost: O(nnz) with no sort: the scatter, one pass per segment, and one or two more over a segment
only when one of its quantiles lands on a non-zero. Memory: the chunk, the 12 output arrays and two buffers of
one column's length (n_cells values) per thread.

Threads: each feature column is computed on its own, so `threads` > 1 splits the columns into that
many contiguous ranges of about equal non-zeros, each run by the compiled code with the GIL released.
The local executor uses every core for its one chunk; a Spark task uses one (Spark runs a task per
core). Results are deterministic (fixed accumulation order, no fastmath, a column never split): the
same bits on every run, in every process and for any number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from shared.errors import Permanent
from shared.stats import STATS, Stat

# Each statistic's row of the kernel's output.
_COUNT, _NNZ, _SUM, _MEAN, _VAR, _MIN, _MAX, _MEDIAN, _Q1, _Q3, _FRAC, _MEAN_EXPR = (
    STATS.index(stat)
    for stat in ("count", "nnz", "sum", "mean", "var", "min", "max", "median", "q1", "q3", "frac_expressing", "mean_expressing")
)

# Index hot-loop arrays through this: numba checks every signed index for negative wrap-around,
# which costs about a quarter of the kernel's time; an unsigned index skips the check.
_u = np.uint64

# Kernel status codes (the kernel cannot raise a typed error from nopython mode).
_OK = -1
_UNSORTED = -2  # rows not strictly increasing in a column: duplicates possible, canonicalise and rerun

# Ranges this short are insertion sorted instead of partitioned.
_SMALL_RANGE = 24
# Rank selection buckets a segment's values into at most this many equal-width value buckets.
_MAX_BUCKETS = 2048
# The one-pass shifted variance is kept only while sum of squares / centred sum stays below this
# (at most ~3 of float64's ~16 digits lost); past it the exact two-pass variance is computed.
_MAX_CANCELLATION = 1024.0
# Dense chunks are gathered into CSC this many cells x columns at a time (values + int32 rows).
_DENSE_BLOCK_ELEMENTS = 1 << 21
# Histogram bins of the distributions (the layout stores exactly this many).
DIST_BINS = 32


@dataclass(frozen=True)
class Distributions:
    """Per (feature, group) distributions of one chunk, for violin and box plots.

    `edges` (n_features, DIST_BINS + 1) float64: one histogram's bin edges per feature, shared by all
    its groups: `numpy.histogram_bin_edges` of the feature's non-zero values (as float64) with
    DIST_BINS bins ([0, 1] when it has none). `hist` (n_features, n_groups, DIST_BINS): the group's
    non-zero values per bin (`numpy.histogram(values, bins=edges)`), uint16 when no group has more
    than 65,535 cells, else uint32 (`layout.encode_histograms` writes uint32 either way); the
    group's zeros are `zeros` (count - nnz), so hist.sum(-1) + zeros == count. `whisker_low`,
    `whisker_high` (float64): the smallest value >= q1 - 1.5 IQR and the largest <= q3 + 1.5 IQR
    (zeros included; NaN for an empty group); `outliers_low`, `outliers_high`: the values beyond
    them on each side. `zeros` and the outlier counts are int32 (int64 for a group of 2^31 cells or
    more).
    """

    edges: np.ndarray
    hist: np.ndarray
    zeros: np.ndarray
    whisker_low: np.ndarray
    whisker_high: np.ndarray
    outliers_low: np.ndarray
    outliers_high: np.ndarray


@dataclass(frozen=True)
class GroupStats:
    """Per (feature, group) statistics of one chunk; `values[stat]` is float64 (n_features, n_groups).

    `distributions` is set when they were asked for (`with_distributions=True`).
    """

    n_groups: int
    values: dict[Stat, np.ndarray]
    distributions: Distributions | None = None

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
    chunk: np.ndarray | sp.spmatrix | sp.sparray,
    group_codes: np.ndarray,
    n_groups: int,
    *,
    threads: int = 1,
    with_distributions: bool = False,
) -> GroupStats:
    """Compute the 12 `STATS` for every (feature, group) of one cells x features chunk.

    `chunk` is dense or sparse (CSC used as is; CSR, COO and others converted to CSC once), float32,
    float64 or integer (integers and float16 are computed as float64). Sums and variances are float64;
    median, q1 and q3 interpolate linearly as numpy.quantile, zeros included (a sparse chunk's
    implicit and explicit zeros are zeros). An empty group has count 0, nnz 0, sum 0 and NaN elsewhere;
    var is NaN below two cells (ddof=1). Raises `Permanent` on a NaN or infinite value, a group code
    outside [0, n_groups), or a length mismatch. Time O(nnz + n_features * n_groups) plus selection
    where a quantile lands on a non-zero; memory beyond the chunk (and its CSC copy if it is not CSC)
    is the 12 outputs and two buffers of n_cells values per thread. `threads`: how many cores to use
    (0: all of them); the result is the same, bit for bit, for any number. `with_distributions` adds
    the histograms, whiskers and outlier counts (`Distributions`): one more pass over each group's
    non-zeros, while they are still in cache.
    """
    columns = _prepare_columns(chunk)
    return _compute_prepared(columns, group_codes, n_groups, _thread_count(threads), with_distributions)


def compute_grouping_stats(
    chunk: np.ndarray | sp.spmatrix | sp.sparray,
    groupings: Mapping[str, tuple[np.ndarray, int]],
    *,
    threads: int = 1,
    with_distributions: bool = False,
) -> dict[str, GroupStats]:
    """`compute_group_stats` for several groupings (name -> (group codes, n_groups)), converting once."""
    columns = _prepare_columns(chunk)
    n_threads = _thread_count(threads)
    return {
        name: _compute_prepared(columns, codes, n, n_threads, with_distributions) for name, (codes, n) in groupings.items()
    }


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
    # int64 column bounds (n_features + 1 values: free) keep the compiled variants few
    indptr = csc.indptr.astype(np.int64, copy=False)
    return _Columns(
        n_cells=csc.shape[0],
        n_features=csc.shape[1],
        starts=indptr[:-1],
        ends=indptr[1:],
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
    # uint8 codes keep the per non-zero code lookup in cache (a 100,000-cell chunk: 100 kB, not 400 kB)
    return codes.astype(np.uint8 if n_groups <= 256 else np.int32, copy=False)


def _thread_count(threads: int) -> int:
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: every core), got {threads}")
    return threads or os.cpu_count() or 1


def _column_ranges(weights: np.ndarray, n_threads: int) -> list[tuple[int, int]]:
    """At most n_threads contiguous, non-empty column ranges of about equal total weight."""
    n = weights.shape[0]
    if n_threads <= 1 or n <= 1:
        return [(0, n)]
    cumulative = np.cumsum(weights, dtype=np.float64)
    targets = cumulative[-1] * np.arange(1, n_threads) / n_threads
    cuts = np.unique(np.concatenate(([0], np.searchsorted(cumulative, targets, side="right"), [n])))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _first_status(ranges: list[tuple[int, int]], run: Callable[[int, int], int]) -> int:
    """Run `run(a, b)` for each column range, in threads if more than one; the first non-OK status
    in column order (_UNSORTED before a column index), or _OK."""
    if len(ranges) == 1:
        statuses = [run(*ranges[0])]
    else:
        with ThreadPoolExecutor(len(ranges), thread_name_prefix="wideviews-kernel") as pool:
            statuses = list(pool.map(lambda r: run(*r), ranges))
    if _UNSORTED in statuses:
        return _UNSORTED
    return next((s for s in statuses if s != _OK), _OK)


def _stats_of_csc(columns: _Columns, codes: np.ndarray, counts: np.ndarray, out: np.ndarray, dist: tuple, n_threads: int) -> int:
    ranges = _column_ranges(columns.ends - columns.starts + 1, n_threads)
    return _first_status(
        ranges,
        lambda a, b: _stats_of_columns(
            columns.starts[a:b], columns.ends[a:b], columns.rows, columns.vals, codes, counts, out, a, dist
        ),
    )


def _distribution_outputs(n_features: int, n_groups: int, largest_group: int, wanted: bool) -> tuple:
    """The kernel's distribution arrays: (wanted, edges, hist, whiskers, outliers); 1-element stand-ins
    when not wanted. Counts take the narrowest type that holds the largest group's cell count (the
    layout writes uint32 and float64 whatever the type): beside a chunk of few cells the histograms
    are most of the memory the kernel adds. The stand-ins match the variant of large groups, so
    numba compiles a second variant only for small ones."""
    if not wanted:
        n_features = n_groups = 1
    small = wanted and largest_group <= np.iinfo(np.uint16).max
    return (
        wanted,
        np.empty((n_features, DIST_BINS + 1), dtype=np.float64),
        np.zeros((n_features, n_groups, DIST_BINS), dtype=np.uint16 if small else np.uint32),
        np.empty((2, n_features, n_groups), dtype=np.float64),
        np.empty((2, n_features, n_groups), dtype=_count_dtype(largest_group)),
    )


def _count_dtype(largest_group: int) -> np.dtype:
    """int32 for counts of cells, or int64 for a group of 2^31 cells or more."""
    return np.dtype(np.int32 if largest_group <= np.iinfo(np.int32).max else np.int64)


def _compute_prepared(
    columns: _Columns, group_codes: np.ndarray, n_groups: int, n_threads: int, with_distributions: bool = False
) -> GroupStats:
    codes = _validated_codes(group_codes, n_groups, columns.n_cells)
    counts = np.bincount(codes, minlength=n_groups).astype(np.int64)
    out = np.empty((len(STATS), columns.n_features, n_groups), dtype=np.float64)
    dist = _distribution_outputs(columns.n_features, n_groups, int(counts.max(initial=0)), with_distributions)
    if columns.dense is not None:
        dense = columns.dense
        block = max(1, min(columns.n_features, _DENSE_BLOCK_ELEMENTS // max(1, columns.n_cells)))
        status = _first_status(
            _column_ranges(np.ones(columns.n_features), n_threads),
            lambda a, b: _stats_of_dense(
                dense, dense.flags.f_contiguous, a, b, block, codes, counts, out, dist
            ),
        )
    else:
        status = _stats_of_csc(columns, codes, counts, out, dist, n_threads)
        if status == _UNSORTED:
            # Unsorted or duplicated row indices: canonicalise a copy (duplicates summed) and rerun.
            csc = sp.csc_array(
                (columns.vals, columns.rows, np.append(columns.starts, columns.ends[-1:])),
                shape=(columns.n_cells, columns.n_features),
                copy=True,
            )
            csc.sum_duplicates()
            dist[2][...] = 0
            status = _stats_of_csc(_csc_columns(csc), codes, counts, out, dist, n_threads)
    if status >= 0:
        raise Permanent(
            f"chunk holds NaN or infinite values (feature column {status}); every value must be a finite number"
        )
    distributions = None
    if with_distributions:
        _, edges, hist, whiskers, outliers = dist
        distributions = Distributions(
            edges=edges,
            hist=hist,
            zeros=np.subtract(out[_COUNT], out[_NNZ], out=np.empty(out[_COUNT].shape, outliers.dtype), casting="unsafe"),
            whisker_low=whiskers[0],
            whisker_high=whiskers[1],
            outliers_low=outliers[0],
            outliers_high=outliers[1],
        )
    return GroupStats(n_groups=n_groups, values={stat: out[i] for i, stat in enumerate(STATS)}, distributions=distributions)


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
        v = a[_u(i)]
        j = i - 1
        while j >= lo and a[_u(j)] > v:
            a[_u(j + 1)] = a[_u(j)]
            j -= 1
        a[_u(j + 1)] = v


@numba.njit(cache=True, nogil=True)
def _partition_below(a, lo, hi, p):  # type: ignore[no-untyped-def]
    """Move the values < p of a[lo:hi] to its front without branching; returns where they end."""
    first = lo
    for i in range(lo, hi):
        x = a[_u(i)]
        a[_u(i)] = a[_u(first)]
        a[_u(first)] = x
        first += x < p
    return first


@numba.njit(cache=True, nogil=True)
def _select_ranks(a, lo, hi, ranks, n_ranks, stack):  # type: ignore[no-untyped-def]
    """Reorder a[lo:hi] so a[r] holds the value of sorted rank r for every r in ranks[:n_ranks].

    ranks are absolute positions in [lo, hi), ascending. Quickselect with a median-of-3 pivot and
    branch-free Lomuto partitions; a second partition splits off the values equal to the pivot, so
    heavy ties finish at once instead of degrading. Expected O(hi - lo) per distinct rank cluster.
    """
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
            x = a[lo]
            y = a[(lo + hi) >> 1]
            z = a[hi - 1]
            p = max(min(x, y), min(max(x, y), z))
            below = _partition_below(a, lo, hi, p)
            split_left = r0
            while split_left < r1 and ranks[split_left] < below:
                split_left += 1
            if split_left < r1:
                # x <= p iff x < the next float64 after p (x and p are float32 or float64; no NaN here)
                equal_end = _partition_below(a, below, hi, np.nextafter(np.float64(p), np.inf))  # a[below:equal_end] == p
                split_right = split_left
                while split_right < r1 and ranks[split_right] < equal_end:
                    split_right += 1
                if split_right < r1:
                    stack[top, 0] = equal_end
                    stack[top, 1] = hi
                    stack[top, 2] = split_right
                    stack[top, 3] = r1
                    top += 1
            hi = below
            r1 = split_left


@numba.njit(cache=True, nogil=True)
def _values_at_ranks(seg, s0, s1, low, high, ranks, n_ranks, values, work, fence_ranks, fences):  # type: ignore[no-untyped-def]
    """values[i] = sorted(seg[s0:s1])[ranks[i]] for ranks ascending; low, high = min, max of seg[s0:s1].

    One pass counts the values into equal-width value buckets (monotone in the value, so the buckets
    are ordered), the buckets holding the wanted ranks are known from the counts, a second pass copies
    out only those buckets' values, and a quickselect finishes inside each. O(m) with small constants;
    seg[s0:s1] is only read. Returns `_values_from_buckets`'s (targets, low, scale, last); no
    targets where the values were selected without buckets.
    """
    hist, target_of, scratch, stack, target_bucket, target_start, target_fill, rank_target, sub_ranks = work
    m = s1 - s0
    fences[0] = 0
    if low == high:
        for i in range(n_ranks):
            values[i] = low
        return 0, low, 1.0, 0
    span = high - low
    if m <= _SMALL_RANGE or not np.isfinite(span):
        for k in range(m):
            scratch[k] = seg[s0 + k]
        for i in range(n_ranks):
            sub_ranks[i] = ranks[i]
        _select_ranks(scratch, 0, m, sub_ranks, n_ranks, stack)
        for i in range(n_ranks):
            values[i] = scratch[ranks[i]]
        return 0, low, 1.0, 0
    n_buckets = min(_MAX_BUCKETS, max(16, m >> 2))
    last = n_buckets - 1
    scale = n_buckets / span
    for b in range(n_buckets):
        hist[b] = 0
    cap = _u(last)
    for k in range(s0, s1):
        hist[_capped_bucket(np.float64(seg[_u(k)]), low, scale, cap)] += 1
    return _values_from_buckets(seg, s0, s1, low, scale, last, ranks, n_ranks, values, work, fence_ranks, fences)


@numba.njit(cache=True, nogil=True)
def _values_from_buckets(seg, s0, s1, low, scale, last, ranks, n_ranks, values, work, fence_ranks, fences):  # type: ignore[no-untyped-def]
    """values[i] = sorted(seg[s0:s1])[ranks[i]], given hist[b] = how many values have bucket b.

    A value's bucket is int((value - low) * scale) capped at `last`: monotone in the value, so the
    buckets are ordered and the counts tell which bucket holds each rank. One pass copies out only
    those buckets' values and a quickselect finishes inside each: O(m) with small constants.

    With fence_ranks (`_fence_targets`) the buckets where the box plot's fences can fall are copied
    out too, so the whiskers need no pass of their own (`_whiskers_from_buckets`). Returns (targets,
    low, scale, last): the buckets copied out, each into its stretch of scratch in target order.
    """
    hist, target_of, scratch, stack, target_bucket, target_start, target_fill, rank_target, sub_ranks = work
    # Walk the counts to the bucket of each rank.
    n_targets = 0
    before = 0
    b = 0
    for i in range(n_ranks):
        r = ranks[i]
        while before + hist[b] <= r:
            before += hist[b]
            b += 1
        if n_targets == 0 or target_bucket[n_targets - 1] != b:
            target_bucket[n_targets] = b
            target_start[n_targets] = before
            n_targets += 1
        rank_target[i] = n_targets - 1
    fences[0] = 0
    if fence_ranks[0] >= 0:
        n_targets = _fence_targets(hist, low, scale, last, ranks, n_ranks, target_bucket, target_start, rank_target, n_targets, fence_ranks, fences)
    # Copy out the target buckets' values, each bucket to its own stretch of scratch.
    offset = 0
    for t in range(n_targets):
        target_of[target_bucket[t]] = t
        target_fill[t] = offset
        offset += hist[target_bucket[t]]
    cap = _u(last)
    for k in range(s0, s1):
        x = seg[_u(k)]
        t = target_of[_capped_bucket(np.float64(x), low, scale, cap)]
        if t >= 0:
            scratch[_u(target_fill[t])] = x
            target_fill[t] += 1
    offset = 0
    for t in range(n_targets):
        target_of[target_bucket[t]] = -1
        size = hist[target_bucket[t]]
        n_sub = 0
        for i in range(n_ranks):
            if rank_target[i] == t:
                sub_ranks[n_sub] = offset + ranks[i] - target_start[t]
                n_sub += 1
        if n_sub > 0:
            _select_ranks(scratch, offset, offset + size, sub_ranks, n_sub, stack)
        n_sub = 0
        for i in range(n_ranks):
            if rank_target[i] == t:
                values[i] = scratch[sub_ranks[n_sub]]
                n_sub += 1
        offset += size
    return n_targets, low, scale, last


# At most this many buckets are copied out on each side for the whiskers; a wider span of possible
# fence positions takes the whiskers' own pass instead.
_FENCE_BUCKETS = 12
# Targets of one selection: the ranks' buckets (at most 8) and the fences' (2 x (_FENCE_BUCKETS + 1)).
_MAX_TARGETS = 8 + 2 * (_FENCE_BUCKETS + 1)


@numba.njit(cache=True, nogil=True)
def _rank_span(r, fence_ranks, ranks, n_ranks, target_bucket, rank_target, zero_at):  # type: ignore[no-untyped-def]
    """Where the group's value of rank r lies in bucket coordinates (x - low) * scale: (from, to)."""
    n_neg = fence_ranks[0]
    n_zero = fence_ranks[1]
    if n_neg <= r < n_neg + n_zero:
        return zero_at, zero_at
    nz_rank = r if r < n_neg else r - n_zero
    for i in range(n_ranks):
        if ranks[i] == nz_rank:
            b = target_bucket[rank_target[i]]
            return np.float64(b), np.float64(b + 1)
    return np.nan, np.nan  # unreachable: every non-zero rank of a quartile was asked for


@numba.njit(cache=True, nogil=True)
def _add_bucket_targets(hist, last, first, stop, step, target_bucket, target_start, n_targets):  # type: ignore[no-untyped-def]
    """Add buckets first, first + step, ... (not stop) as targets unless a rank's already; then the
    next non-empty bucket beyond them (the nearest data past the fence). Returns (targets, that
    bucket or -1)."""
    b = first
    while b != stop:
        known = False
        for t in range(n_targets):
            known |= target_bucket[t] == b
        if not known:
            target_bucket[n_targets] = b
            target_start[n_targets] = -1  # counted in `_below_bucket` when needed
            n_targets += 1
        b += step
    while 0 <= b <= last and hist[b] == 0:
        b += step
    if not 0 <= b <= last:
        return n_targets, -1
    known = False
    for t in range(n_targets):
        known |= target_bucket[t] == b
    if not known:
        target_bucket[n_targets] = b
        target_start[n_targets] = -1
        n_targets += 1
    return n_targets, b


@numba.njit(cache=True, nogil=True)
def _fence_targets(hist, low, scale, last, ranks, n_ranks, target_bucket, target_start, rank_target, n_targets, fence_ranks, fences):  # type: ignore[no-untyped-def]
    """Add the buckets where the fences q1 - 1.5 IQR and q3 + 1.5 IQR can fall as targets, from the
    quartiles' ranks' buckets (fence_ranks: negatives, zeros, then q1's and q3's lower and upper
    ranks, -1 for none), and the nearest non-empty bucket past each span. fences: (1, high span
    first, last, the bucket below it or -1, low span first, last, the bucket above it or -1).
    Returns the targets. A span wider than _FENCE_BUCKETS is not copied (an empty span: first > last)."""
    zero_at = (0.0 - low) * scale
    q1_from, q1_to = _rank_span(fence_ranks[2], fence_ranks, ranks, n_ranks, target_bucket, rank_target, zero_at)
    if fence_ranks[3] >= 0:
        q1_to = _rank_span(fence_ranks[3], fence_ranks, ranks, n_ranks, target_bucket, rank_target, zero_at)[1]
    q3_from, q3_to = _rank_span(fence_ranks[4], fence_ranks, ranks, n_ranks, target_bucket, rank_target, zero_at)
    if fence_ranks[5] >= 0:
        q3_to = _rank_span(fence_ranks[5], fence_ranks, ranks, n_ranks, target_bucket, rank_target, zero_at)[1]
    # the fences are affine in the quartiles, and so are bucket coordinates; one bucket of margin
    # each side for the rounding
    high_from = np.floor(q3_from + 1.5 * (q3_from - q1_to)) - 1
    high_to = np.floor(q3_to + 1.5 * (q3_to - q1_from)) + 1
    low_from = np.floor(q1_from - 1.5 * (q3_to - q1_from)) - 1
    low_to = np.floor(q1_to - 1.5 * (q3_from - q1_to)) + 1
    fences[0] = 1
    fences[1], fences[2], fences[3] = 1, 0, -1
    fences[4], fences[5], fences[6] = 1, 0, -1
    if high_to >= 0 and high_from <= last and high_to - high_from < _FENCE_BUCKETS:
        first = np.int64(_higher(high_from, 0.0))
        stop = np.int64(_lower(high_to, np.float64(last))) + 1
        fences[1], fences[2] = first, stop - 1
        n_targets, fences[3] = _add_bucket_targets(hist, last, stop - 1, first - 1, -1, target_bucket, target_start, n_targets)
    if low_to >= 0 and low_from <= last and low_to - low_from < _FENCE_BUCKETS:
        first = np.int64(_higher(low_from, 0.0))
        stop = np.int64(_lower(low_to, np.float64(last))) + 1
        fences[4], fences[5] = first, stop - 1
        n_targets, fences[6] = _add_bucket_targets(hist, last, first, stop, 1, target_bucket, target_start, n_targets)
    return n_targets


@numba.njit(cache=True, nogil=True)
def _stretch(hist, target_bucket, n_targets, b):  # type: ignore[no-untyped-def]
    """First index in scratch of bucket b's values among the copied-out targets (targets in order)."""
    offset = 0
    for t in range(n_targets):
        if target_bucket[t] == b:
            return offset
        offset += hist[target_bucket[t]]
    return offset  # unreachable: every bucket of a span is a target


@numba.njit(cache=True, nogil=True)
def _below_bucket(hist, target_bucket, target_start, n_targets, b):  # type: ignore[no-untyped-def]
    """How many values lie in the buckets below b, from the nearest rank target at or below b."""
    from_bucket = 0
    count = 0
    for t in range(n_targets):
        if target_start[t] >= 0 and from_bucket <= target_bucket[t] <= b:
            from_bucket = target_bucket[t]
            count = target_start[t]
    for c in range(from_bucket, b):
        count += hist[c]
    return count


@numba.njit(cache=True, nogil=True)
def _whiskers_from_buckets(hist, scratch, target_bucket, target_start, n_targets, low, scale, last, fences, nz, fence_low, fence_high, v_low, v_high):  # type: ignore[no-untyped-def]
    """The whiskers of the non-zeros from the buckets `_fence_targets` had copied out: (found, n_low,
    n_high, w_low, w_high) as `_fence_values`; found is False where a fence fell outside its span."""
    cap = _u(last)
    n_low, n_high, w_low, w_high = 0, 0, v_low, v_high
    if fence_high < low:
        n_high, w_high = nz, -np.inf
    elif fence_high < v_high:
        b = np.int64(_capped_bucket(fence_high, low, scale, cap))
        if not fences[1] <= b <= fences[2]:
            return False, 0, 0, 0.0, 0.0
        at = _stretch(hist, target_bucket, n_targets, b)
        within = 0
        w_high = -np.inf
        for i in range(at, at + hist[b]):
            x = np.float64(scratch[i])
            within += x <= fence_high
            w_high = _higher(x if x <= fence_high else -np.inf, w_high)
        n_high = nz - _below_bucket(hist, target_bucket, target_start, n_targets, b) - within
        if within == 0:  # the whisker is the largest value of the nearest non-empty bucket below
            b -= 1
            while b >= fences[1] and hist[b] == 0:
                b -= 1
            if b < fences[1]:
                b = fences[3]
            if b >= 0:
                at = _stretch(hist, target_bucket, n_targets, b)
                for i in range(at, at + hist[b]):
                    w_high = _higher(np.float64(scratch[i]), w_high)
    if fence_low > v_low:
        b = np.int64(_capped_bucket(fence_low, low, scale, cap))
        if not fences[4] <= b <= fences[5]:
            return False, 0, 0, 0.0, 0.0
        at = _stretch(hist, target_bucket, n_targets, b)
        within = 0
        w_low = np.inf
        for i in range(at, at + hist[b]):
            x = np.float64(scratch[i])
            within += x >= fence_low
            w_low = _lower(x if x >= fence_low else np.inf, w_low)
        n_low = _below_bucket(hist, target_bucket, target_start, n_targets, b) + hist[b] - within
        if within == 0:  # the whisker is the smallest value of the nearest non-empty bucket above
            b += 1
            while b <= fences[5] and hist[b] == 0:
                b += 1
            if b > fences[5]:
                b = fences[6]
            if b >= 0:
                at = _stretch(hist, target_bucket, n_targets, b)
                for i in range(at, at + hist[b]):
                    w_low = _lower(np.float64(scratch[i]), w_low)
    return True, n_low, n_high, w_low, w_high


# How `_segment_moments` counts each value into its distribution bin.
_NO_BINS = 0
_EXACT_BINS = 1  # numpy.histogram's rule: a guess from the value, fixed against the edges
_GUESSED_BINS = 2  # the guess alone, where `_guess_is_exact` showed that no value of the dtype is misplaced


@numba.njit(cache=True, nogil=True, inline="always")
def _lower(a, b):  # type: ignore[no-untyped-def]
    """The lesser of a and b by a plain compare (numba's min() builtin compiles to far slower code)."""
    return a if a < b else b


@numba.njit(cache=True, nogil=True, inline="always")
def _higher(a, b):  # type: ignore[no-untyped-def]
    """The greater of a and b by a plain compare."""
    return a if a > b else b


@numba.njit(cache=True, nogil=True, inline="always")
def _capped_bucket(x, low, scale, cap):  # type: ignore[no-untyped-def]
    """int((x - low) * scale) capped at cap; unsigned, so one compare caps a negative bucket (a NaN's) too."""
    b = _u(np.int64((x - low) * scale))
    return b if b <= cap else cap


@numba.njit(cache=True, nogil=True, inline="always")
def _exact_bin(x, edges, norm, top):  # type: ignore[no-untyped-def]
    """numpy.histogram's equal-width bin of x: a guess from the value, fixed by the edges (without
    branches: numba keeps an inlined branch's array references counted)."""
    c = np.int64((x - edges[0]) * norm)
    c = c if c < top else top
    c -= x < edges[_u(c)]
    c += (x >= edges[_u(c + 1)]) & (c != top)
    return _u(c)


@numba.njit(cache=True, nogil=True)
def _guess_is_exact(edges, scale, m, like):  # type: ignore[no-untyped-def]
    """Whether int((x - edges[0]) * scale) // m is x's histogram bin for every value x of like's dtype.

    The guess and the bins are both monotone in x, so they agree everywhere iff they agree on each
    side of each inner edge: on the first value of the dtype at or above it and the last below.
    """
    probe = np.empty(2, dtype=like.dtype)
    low = edges[0]
    for j in range(1, edges.shape[0] - 1):
        probe[0] = edges[j]  # rounded to the dtype
        probe[1] = np.inf
        if probe[0] < edges[j]:
            probe[0] = np.nextafter(probe[0], probe[1])
        probe[1] = -np.inf
        probe[1] = np.nextafter(probe[0], probe[1])  # the last value below the edge
        if np.int64((np.float64(probe[0]) - low) * scale) < j * m:
            return False
        if np.int64((np.float64(probe[1]) - low) * scale) >= j * m:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _segment_moments(seg, s0, s1, shift, bucketed, bucket_low, scale, last, hist, bin_mode, edges, norm, row):  # type: ignore[no-untyped-def]
    """One pass over seg[s0:s1]: the sums of (x - shift) and (x - shift)^2 (four fixed lanes, so the
    order and the bits are fixed), and either (bucketed) each value counted into
    hist[int((x - bucket_low) * scale) capped at last], or its min, max and negatives. With `binned`
    each value is also counted into row by its distribution bin (numpy.histogram's rule: a guess
    from the value, fixed by the edges; written out here because numba does not inline a call).

    Returns (sum of deviations, sum of squares, min, max, negatives); bucketed, min and max are left
    to the rank selection (ranks 0 and m - 1: inf, -inf) and negatives is 0 (the caller buckets only
    columns without any). A non-finite value lands in a capped bucket (memory safe) and shows in the
    sums.
    """
    dev0 = 0.0
    dev1 = 0.0
    dev2 = 0.0
    dev3 = 0.0
    sq0 = 0.0
    sq1 = 0.0
    sq2 = 0.0
    sq3 = 0.0
    low = np.inf
    high = -np.inf
    n_neg = 0
    cap = _u(last)
    lo_edge = edges[0]
    top = row.shape[0] - 1
    bin_cap = _u(top)
    i = s0
    while i + 4 <= s1:
        x0 = np.float64(seg[_u(i)])
        x1 = np.float64(seg[_u(i + 1)])
        x2 = np.float64(seg[_u(i + 2)])
        x3 = np.float64(seg[_u(i + 3)])
        d0 = x0 - shift
        d1 = x1 - shift
        d2 = x2 - shift
        d3 = x3 - shift
        dev0 += d0
        dev1 += d1
        dev2 += d2
        dev3 += d3
        sq0 += d0 * d0
        sq1 += d1 * d1
        sq2 += d2 * d2
        sq3 += d3 * d3
        if bucketed:
            hist[_capped_bucket(x0, bucket_low, scale, cap)] += 1
            hist[_capped_bucket(x1, bucket_low, scale, cap)] += 1
            hist[_capped_bucket(x2, bucket_low, scale, cap)] += 1
            hist[_capped_bucket(x3, bucket_low, scale, cap)] += 1
        else:
            # plain compares: numba's min()/max() builtins compile to far slower code
            if x0 < low:
                low = x0
            if x1 < low:
                low = x1
            if x2 < low:
                low = x2
            if x3 < low:
                low = x3
            if x0 > high:
                high = x0
            if x1 > high:
                high = x1
            if x2 > high:
                high = x2
            if x3 > high:
                high = x3
            n_neg += (x0 < 0) + (x1 < 0) + (x2 < 0) + (x3 < 0)
        if bin_mode == _EXACT_BINS:
            row[_exact_bin(x0, edges, norm, top)] += 1
            row[_exact_bin(x1, edges, norm, top)] += 1
            row[_exact_bin(x2, edges, norm, top)] += 1
            row[_exact_bin(x3, edges, norm, top)] += 1
        elif bin_mode == _GUESSED_BINS:
            row[_capped_bucket(x0, lo_edge, norm, bin_cap)] += 1
            row[_capped_bucket(x1, lo_edge, norm, bin_cap)] += 1
            row[_capped_bucket(x2, lo_edge, norm, bin_cap)] += 1
            row[_capped_bucket(x3, lo_edge, norm, bin_cap)] += 1
        i += 4
    while i < s1:
        x0 = np.float64(seg[_u(i)])
        d0 = x0 - shift
        dev0 += d0
        sq0 += d0 * d0
        if bucketed:
            hist[_capped_bucket(x0, bucket_low, scale, cap)] += 1
        else:
            if x0 < low:
                low = x0
            if x0 > high:
                high = x0
            n_neg += x0 < 0
        if bin_mode == _EXACT_BINS:
            row[_exact_bin(x0, edges, norm, top)] += 1
        elif bin_mode == _GUESSED_BINS:
            row[_capped_bucket(x0, lo_edge, norm, bin_cap)] += 1
        i += 1
    return (dev0 + dev1) + (dev2 + dev3), (sq0 + sq1) + (sq2 + sq3), low, high, n_neg


@numba.njit(cache=True, nogil=True)
def _nonzero_ranks(n, nz, n_neg, q_lower, q_weight, with_extremes, nz_ranks):  # type: ignore[no-untyped-def]
    """The quantile ranks (q1, median, q3; lower and upper) that fall on a non-zero, as ranks among
    the sorted non-zeros, ascending and distinct, into nz_ranks; returns how many. With
    `with_extremes` the first and last non-zero ranks (min and max) are added.

    The sorted group is [negatives, zeros, positives]: a rank among the zeros is 0 with no work, a
    rank past the zeros is non-zero rank r - n_zero.
    """
    n_zero = n - nz
    n_ranks = 0
    if with_extremes:
        nz_ranks[0] = 0
        n_ranks = 1
    for qi in range(3):
        lower = q_lower[qi]
        for r in (lower, lower + 1):
            if r > lower and q_weight[qi] == 0.0:
                continue
            if r < n_neg:
                nz_rank = r
            elif r >= n_neg + n_zero:
                nz_rank = r - n_zero
            else:
                continue
            if n_ranks == 0 or nz_ranks[n_ranks - 1] != nz_rank:
                nz_ranks[n_ranks] = nz_rank
                n_ranks += 1
    if with_extremes and nz_ranks[n_ranks - 1] != nz - 1:
        nz_ranks[n_ranks] = nz - 1
        n_ranks += 1
    return n_ranks


@numba.njit(cache=True, nogil=True)
def _centred_squares(seg, s0, s1, mean, n_zero) -> float:  # type: ignore[no-untyped-def]
    """Sum of squared deviations from `mean` of seg[s0:s1] plus n_zero zeros: corrected two-pass."""
    dev0 = 0.0
    dev1 = 0.0
    sq0 = 0.0
    sq1 = 0.0
    i = s0
    while i + 2 <= s1:
        d0 = np.float64(seg[_u(i)]) - mean
        d1 = np.float64(seg[_u(i + 1)]) - mean
        dev0 += d0
        dev1 += d1
        sq0 += d0 * d0
        sq1 += d1 * d1
        i += 2
    if i < s1:
        d0 = np.float64(seg[_u(i)]) - mean
        dev0 += d0
        sq0 += d0 * d0
    n = (s1 - s0) + n_zero
    # each implicit zero deviates by -mean; the correction term removes the rounding left in mean
    dev = (dev0 + dev1) - n_zero * mean
    sq = (sq0 + sq1) + n_zero * mean * mean
    return sq - dev * dev / n


@numba.njit(cache=True, nogil=True)
def _group_value_at_rank(r, n_neg, n_zero, nz_ranks, rank_values, n_ranks) -> float:  # type: ignore[no-untyped-def]
    if n_neg <= r < n_neg + n_zero:
        return 0.0
    nz_rank = r if r < n_neg else r - n_zero
    for i in range(n_ranks):
        if nz_ranks[i] == nz_rank:
            return rank_values[i]
    return np.nan  # unreachable: every non-zero rank asked for was selected


@numba.njit(cache=True, nogil=True)
def _stats_of_columns(starts, ends, rows, vals, codes, counts, out, col0, dist):  # type: ignore[no-untyped-def]
    """Fill out[:, col0 + c, :] for each column c; returns _OK, _UNSORTED or the column of a NaN/inf.

    `dist` = (wanted, edges, hist, whiskers, outliers): when wanted, each column's distributions too
    (`_column_distributions`, after its stats: the quartiles set the whiskers' fences).

    A column's own value range (found during its scatter) spans its selection buckets, so a column
    depends on nothing but itself: the same bits however the columns are split among threads.
    """
    n_groups = counts.shape[0]
    n_columns = starts.shape[0]
    q_index = np.array([_Q1, _MEDIAN, _Q3])
    # A group's non-zeros in one column are at most its cells: segment g starts at the cells before it.
    base = np.zeros(n_groups, dtype=np.int64)
    for g in range(1, n_groups):
        base[g] = base[g - 1] + counts[g - 1]
    n_cells = base[n_groups - 1] + counts[n_groups - 1] if n_groups > 0 else 0
    seg = np.empty(max(1, n_cells), dtype=vals.dtype)
    cursor = np.empty(n_groups, dtype=np.int64)
    nz_ranks = np.empty(8, dtype=np.int64)
    rank_values = np.empty(8, dtype=np.float64)
    target_of = np.full(_MAX_BUCKETS, -1, dtype=np.int64)
    # Quantile positions depend on the group's cell count only: once per group, not per column.
    q_lower = np.empty((n_groups, 3), dtype=np.int64)
    q_weight = np.empty((n_groups, 3), dtype=np.float64)
    q_top = np.empty(n_groups, dtype=np.int64)
    for g in range(n_groups):
        for qi in range(3):
            q_lower[g, qi], q_weight[g, qi] = _quantile_position(counts[g], 0.25 * (qi + 1))
        q_top[g] = q_lower[g, 2] + (1 if q_weight[g, 2] > 0.0 else 0)
    hist = np.empty(_MAX_BUCKETS, dtype=np.int64)
    with_dist, dist_edges, dist_hist, dist_whiskers, dist_outliers = dist
    seg_low = np.empty(n_groups, dtype=np.float64)
    guess_exact = np.empty(7, dtype=np.int64)
    # the whiskers' buckets: (negatives, zeros, q1's and q3's ranks) in, `_fence_targets`'s spans out
    fence_ranks = np.empty(6, dtype=np.int64)
    fences = np.zeros(7, dtype=np.int64)
    seg_high = np.empty(n_groups, dtype=np.float64)
    work = (
        hist,
        target_of,
        np.empty(max(1, n_cells), dtype=vals.dtype),  # scratch
        np.empty((10, 4), dtype=np.int64),  # stack
        np.empty(_MAX_TARGETS, dtype=np.int64),  # target_bucket
        np.empty(_MAX_TARGETS, dtype=np.int64),  # target_start
        np.empty(_MAX_TARGETS, dtype=np.int64),  # target_fill
        np.empty(8, dtype=np.int64),  # rank_target
        np.empty(8, dtype=np.int64),  # sub_ranks
    )
    nan = np.nan

    for c in range(n_columns):
        col = col0 + c
        start = starts[c]
        end = ends[c]
        cursor[:] = base
        # Scatter the column's values into their group's segment; an explicit zero is written but
        # not kept (the next value of its group overwrites it), so no branch is taken per value.
        # The column's value range comes along (register compares): the range of its selection
        # buckets. A NaN wins no compare, so it is noted apart.
        previous_row = -1
        unsorted = False
        value_low = np.inf
        value_high = -np.inf
        has_nan = False
        for k in range(start, end):
            row = rows[_u(k)]
            unsorted |= row <= previous_row
            previous_row = row
            v = vals[_u(k)]
            has_nan |= v != v
            if v < value_low:
                value_low = v
            if v > value_high:
                value_high = v
            g = codes[_u(row)]
            position = cursor[g]
            seg[_u(position)] = v
            cursor[g] = position + (v != 0)
        if unsorted:
            return _UNSORTED
        # Without negatives in the column every group's quantile ranks are known before its pass, so
        # the pass can count its values into the selection buckets too (saving a pass over the segment).
        value_span = value_high - value_low
        # (a NaN or inf column takes the plain pass, whose sums turn non-finite and report it)
        bucket_ready = value_low >= 0 and value_span > 0 and np.isfinite(value_span) and not has_nan
        # The distribution bins span the column's non-zeros. The scatter's range is theirs unless an
        # explicit zero is an extreme (range [0, x] or [x, 0]): then the bins take a pass of their own
        # once every group's non-zero range is known (`_column_distributions`).
        binned = with_dist and value_low != 0.0 and value_high != 0.0 and end > start and np.isfinite(value_span) and not has_nan
        dcol = col if with_dist else 0
        dist_norm = 0.0
        # per k: whether the guess of `_guess_is_exact` with 2^k buckets a bin is exact (-1: not known yet)
        guess_exact[:] = -1
        if binned:
            _histogram_edges(value_low, value_high, dist_edges[dcol])
            dist_norm = (dist_edges.shape[1] - 1) / (dist_edges[dcol, -1] - dist_edges[dcol, 0])

        for g in range(n_groups):
            n = counts[g]
            nz = cursor[g] - base[g]
            out[_COUNT, col, g] = n
            out[_NNZ, col, g] = nz
            if n == 0:
                out[_SUM, col, g] = 0.0
                for s in (_MEAN, _VAR, _MIN, _MAX, _MEDIAN, _Q1, _Q3, _FRAC, _MEAN_EXPR):
                    out[s, col, g] = nan
                continue
            s0 = base[g]
            s1 = s0 + nz
            # One pass over the segment: sum, min, max, negatives, and the shifted sums for the
            # variance (4 fixed accumulators each: fast, and the order is fixed so results are too).
            # Shift 0 when zeros are at least half the group (they then sit near the mean), else the
            # first non-zero: either keeps the sums close to the mean for typical data, and the
            # cancellation check below falls back to an exact two-pass variance when they are not.
            shift = 0.0 if 2 * nz <= n else np.float64(seg[s0])
            scale = 1.0
            last = 0
            # without negatives a quantile lands on a non-zero iff the highest rank asked (q3's upper)
            # lies past the zeros
            bucketed = bucket_ready and nz > _SMALL_RANGE and q_top[g] >= n - nz
            bin_mode = _NO_BINS
            bins_per_bucket = 0  # > 0: the distribution bins are sums of that many selection buckets
            if bucketed:
                n_buckets = min(_MAX_BUCKETS, max(16, nz >> 2))
                if binned:
                    # DIST_BINS x a power of two buckets over the same range (value_low is the
                    # first edge): where no value can fall on the wrong side of an edge, the
                    # histogram is the bucket counts summed, at no cost per value
                    k = 0
                    while k < 6 and DIST_BINS << (k + 1) <= n_buckets:
                        k += 1
                    n_buckets = DIST_BINS << k
                    if guess_exact[k] < 0:
                        guess_exact[k] = _guess_is_exact(dist_edges[dcol], n_buckets / value_span, 1 << k, seg)
                    if guess_exact[k]:
                        bins_per_bucket = 1 << k
                    else:
                        bin_mode = _EXACT_BINS
                last = n_buckets - 1
                scale = n_buckets / value_span
                hist[:n_buckets] = 0
            elif binned:
                if guess_exact[0] < 0:
                    guess_exact[0] = _guess_is_exact(dist_edges[dcol], dist_norm, 1, seg)
                bin_mode = _GUESSED_BINS if guess_exact[0] else _EXACT_BINS
            dist_row = dist_hist[dcol, g if with_dist else 0]
            dev_nz, sq_nz, low, high, n_neg = _segment_moments(
                seg, s0, s1, shift, bucketed, value_low, scale, last, hist, bin_mode, dist_edges[dcol], dist_norm, dist_row
            )
            for b in range(DIST_BINS if bins_per_bucket else 0):
                for k in range(b * bins_per_bucket, (b + 1) * bins_per_bucket):
                    dist_row[b] += hist[k]

            n_ranks = _nonzero_ranks(n, nz, n_neg, q_lower[g], q_weight[g], bucketed, nz_ranks)
            # with shift 0 (the usual sparse case) this is the plain float64 sum of the values
            total = dev_nz + nz * shift
            if not (np.isfinite(total) and np.isfinite(sq_nz)):
                # a NaN or inf makes the sums non-finite (finite values overflow float64 only near 1e154)
                return col
            mean = total / n
            n_zero = n - nz
            out[_SUM, col, g] = total
            out[_MEAN, col, g] = mean
            out[_FRAC, col, g] = nz / n
            out[_MEAN_EXPR, col, g] = total / nz if nz > 0 else nan

            if n < 2:
                out[_VAR, col, g] = nan  # ddof=1 as pandas: a one-cell group has var NaN, not 0
            else:
                # each implicit zero deviates from the shift by -shift
                dev = dev_nz - n_zero * shift
                sq = sq_nz + n_zero * shift * shift
                centred = sq - dev * dev / n
                if centred * _MAX_CANCELLATION < sq:
                    # the shift was far from the mean relative to the spread: sq - dev^2/n lost more
                    # than log10(_MAX_CANCELLATION) digits, so take the exact two-pass route
                    centred = _centred_squares(seg, s0, s1, mean, n_zero)
                var = centred / (n - 1)
                out[_VAR, col, g] = var if var > 0.0 else 0.0

            n_targets = 0
            b_low, b_scale, b_last = 0.0, 1.0, 0
            if n_ranks > 0:
                fence_ranks[0] = -1
                if with_dist:
                    fence_ranks[0] = n_neg
                    fence_ranks[1] = n_zero
                    for k in range(2):
                        fence_ranks[2 + 2 * k] = q_lower[g, 2 * k]
                        fence_ranks[3 + 2 * k] = q_lower[g, 2 * k] + 1 if q_weight[g, 2 * k] > 0.0 else -1
                if bucketed:
                    n_targets, b_low, b_scale, b_last = _values_from_buckets(
                        seg, s0, s1, value_low, scale, last, nz_ranks, n_ranks, rank_values, work, fence_ranks, fences
                    )
                    low = rank_values[0]  # ranks 0 and nz - 1 were selected too
                    high = rank_values[n_ranks - 1]
                else:
                    n_targets, b_low, b_scale, b_last = _values_at_ranks(
                        seg, s0, s1, low, high, nz_ranks, n_ranks, rank_values, work, fence_ranks, fences
                    )
            seg_low[g] = low
            seg_high[g] = high
            if nz == 0:
                out[_MIN, col, g] = 0.0
                out[_MAX, col, g] = 0.0
            elif n_zero > 0:
                out[_MIN, col, g] = low if low < 0.0 else 0.0
                out[_MAX, col, g] = high if high > 0.0 else 0.0
            else:
                out[_MIN, col, g] = low
                out[_MAX, col, g] = high
            if n_ranks == 0:  # every quantile lands on a zero
                out[_Q1, col, g] = 0.0
                out[_MEDIAN, col, g] = 0.0
                out[_Q3, col, g] = 0.0
            else:
                for qi in range(3):
                    lower = q_lower[g, qi]
                    t = q_weight[g, qi]
                    a = _group_value_at_rank(lower, n_neg, n_zero, nz_ranks, rank_values, n_ranks)
                    value = a
                    if t > 0.0:
                        b = _group_value_at_rank(lower + 1, n_neg, n_zero, nz_ranks, rank_values, n_ranks)
                        value = _lerp(a, b, t)
                    out[q_index[qi], col, g] = value
            if with_dist:
                # Box-plot whiskers (1.5 IQR, clipped to the data) and outlier counts, right after the
                # quartiles: most groups need no look at a value (`_whiskers_without_values`), the
                # others the buckets the rank selection copied out around the fences, or else one
                # compare-only pass over the segment while it is in cache. (Arrays are passed only
                # where a look is needed: each call with arrays costs their reference counts.)
                q1 = out[_Q1, col, g]
                q3 = out[_Q3, col, g]
                fence_low = q1 - 1.5 * (q3 - q1)
                fence_high = q3 + 1.5 * (q3 - q1)
                known, n_low, n_high, w_low, w_high = _whiskers_without_values(nz, n_neg, low, high, fence_low, fence_high)
                if not known and n_ranks > 0 and fences[0]:
                    known, n_low, n_high, w_low, w_high = _whiskers_from_buckets(
                        work[0], work[2], work[4], work[5], n_targets, b_low, b_scale, b_last, fences, nz, fence_low, fence_high, low, high
                    )
                if not known:
                    n_low, n_high, w_low, w_high = _fence_values(seg, s0, s1, fence_low, fence_high)
                if n_zero > 0:
                    n_low, n_high, w_low, w_high = _whiskers_with_zeros(n_zero, fence_low, fence_high, n_low, n_high, w_low, w_high)
                dist_whiskers[0, col, g] = w_low
                dist_whiskers[1, col, g] = w_high
                dist_outliers[0, col, g] = n_low
                dist_outliers[1, col, g] = n_high
        if with_dist:
            _column_distributions(
                seg, base, cursor, counts, col, seg_low, seg_high, binned,
                dist_edges[col], dist_hist[col], dist_whiskers, dist_outliers,
            )
    return _OK


@numba.njit(cache=True, nogil=True)
def _histogram_edges(first, last, edges):  # type: ignore[no-untyped-def]
    """numpy.histogram_bin_edges(values, bins) for values spanning [first, last], operation for
    operation (numpy.linspace), into edges (bins + 1 values)."""
    if first == last:
        first -= 0.5
        last += 0.5
    bins = edges.shape[0] - 1
    delta = last - first
    step = delta / bins
    for i in range(bins):
        if step == 0.0:
            edges[i] = (i / bins) * delta + first
        else:
            edges[i] = i * step + first
    edges[bins] = last


@numba.njit(cache=True, nogil=True)
def _bin_values(seg, s0, s1, edges, row):  # type: ignore[no-untyped-def]
    """Count seg[s0:s1] into row by numpy.histogram's equal-width bin (`_exact_bin`)."""
    top = row.shape[0] - 1
    norm = (top + 1) / (edges[top + 1] - edges[0])
    for i in range(s0, s1):
        row[_exact_bin(np.float64(seg[_u(i)]), edges, norm, top)] += 1


@numba.njit(cache=True, nogil=True)
def _fence_values(seg, s0, s1, fence_low, fence_high):  # type: ignore[no-untyped-def]
    """The values of seg[s0:s1] below fence_low and above fence_high, and the extremes of those
    within: (n_low, n_high, w_low, w_high). Two lanes, selects before the compares (whether a value
    is an outlier is data, a branch on it mispredicts)."""
    n_low = 0
    n_high = 0
    low0 = np.inf
    low1 = np.inf
    high0 = -np.inf
    high1 = -np.inf
    i = s0
    while i + 2 <= s1:
        x0 = np.float64(seg[_u(i)])
        x1 = np.float64(seg[_u(i + 1)])
        n_low += (x0 < fence_low) + (x1 < fence_low)
        n_high += (x0 > fence_high) + (x1 > fence_high)
        low0 = _lower(x0 if x0 >= fence_low else np.inf, low0)
        low1 = _lower(x1 if x1 >= fence_low else np.inf, low1)
        high0 = _higher(x0 if x0 <= fence_high else -np.inf, high0)
        high1 = _higher(x1 if x1 <= fence_high else -np.inf, high1)
        i += 2
    if i < s1:
        x0 = np.float64(seg[_u(i)])
        n_low += x0 < fence_low
        n_high += x0 > fence_high
        low0 = _lower(x0 if x0 >= fence_low else np.inf, low0)
        high0 = _higher(x0 if x0 <= fence_high else -np.inf, high0)
    return n_low, n_high, _lower(low0, low1), _higher(high0, high1)


@numba.njit(cache=True, nogil=True)
def _column_distributions(seg, base, cursor, counts, col, seg_low, seg_high, binned, edges, hist, whiskers, outliers):  # type: ignore[no-untyped-def]
    """One column's histograms unless the moments pass `binned` them (edges shared by its groups: the
    range of all its non-zeros), from the groups' non-zeros still in their segments; and the
    whiskers of its empty groups (the others had theirs with their quartiles)."""
    n_groups = counts.shape[0]
    if not binned:
        first = np.inf
        last = -np.inf
        for g in range(n_groups):
            if cursor[g] > base[g]:
                if seg_low[g] < first:
                    first = seg_low[g]
                if seg_high[g] > last:
                    last = seg_high[g]
        if first > last:  # no non-zero in the column: numpy's default range
            first = 0.0
            last = 1.0
        _histogram_edges(first, last, edges)
        for g in range(n_groups):
            _bin_values(seg, base[g], cursor[g], edges, hist[g])
    for g in range(n_groups):
        if counts[g] == 0:
            whiskers[0, col, g] = np.nan
            whiskers[1, col, g] = np.nan
            outliers[0, col, g] = 0
            outliers[1, col, g] = 0


@numba.njit(cache=True, nogil=True, inline="always")
def _whiskers_without_values(nz, n_neg, low, high, fence_low, fence_high):  # type: ignore[no-untyped-def]
    """(known, n_low, n_high, w_low, w_high) of a group's non-zeros (min low, max high, n_neg
    negatives) when the fences alone tell them: no non-zero, none beyond a fence, or q1 = q3 = 0."""
    if nz == 0:
        return True, 0, 0, np.inf, -np.inf
    if fence_low <= low and high <= fence_high:
        # no non-zero is an outlier: the whiskers are the extremes
        return True, 0, 0, low, high
    if fence_low == 0.0 and fence_high == 0.0:
        # q1 = q3 = 0 (a mostly-zero group): every non-zero is an outlier, on its sign's side
        return True, n_neg, nz - n_neg, np.inf, -np.inf
    return False, 0, 0, 0.0, 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _whiskers_with_zeros(n_zero, fence_low, fence_high, n_low, n_high, w_low, w_high):  # type: ignore[no-untyped-def]
    """The non-zeros' whiskers and outlier counts with the group's n_zero zeros added."""
    if 0.0 < fence_low:
        n_low += n_zero
    elif 0.0 < w_low:
        w_low = 0.0
    if 0.0 > fence_high:
        n_high += n_zero
    elif 0.0 > w_high:
        w_high = 0.0
    return n_low, n_high, w_low, w_high


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
def _stats_of_dense(dense, f_order, first, stop, block, codes, counts, out, dist):  # type: ignore[no-untyped-def]
    """`_stats_of_columns` over columns first:stop of a dense chunk, gathered `block` columns at a time."""
    n_cells = dense.shape[0]
    width = max(1, min(block, stop - first))
    starts = np.arange(width) * n_cells
    ends = np.empty(width, dtype=np.int64)
    rows = np.empty(max(1, width * n_cells), dtype=np.int32)
    vals = np.empty(max(1, width * n_cells), dtype=dense.dtype)
    for j0 in range(first, stop, width):
        j1 = min(stop, j0 + width)
        _gather_dense_block(dense, f_order, j0, j1, ends, rows, vals)
        status = _stats_of_columns(
            starts[: j1 - j0], ends[: j1 - j0], rows, vals, codes, counts, out, j0, dist
        )
        if status != _OK:
            return status
    return _OK


@numba.njit(cache=True, nogil=True)
def _count_dense_nonzeros(dense, f_order):  # type: ignore[no-untyped-def]
    """The non-zeros of each column, reading the array in its memory order."""
    n_cells, n_features = dense.shape
    counts = np.zeros(n_features, dtype=np.int64)
    outer, inner = (n_features, n_cells) if f_order else (n_cells, n_features)
    for a in range(outer):
        for b in range(inner):
            i, j = (b, a) if f_order else (a, b)
            counts[j] += dense[i, j] != 0
    return counts


@numba.njit(cache=True, nogil=True)
def _fill_dense_csc(dense, f_order, indptr, indices, data):  # type: ignore[no-untyped-def]
    """Copy the non-zeros into CSC arrays sized by `_count_dense_nonzeros`, in the array's memory order."""
    n_cells, n_features = dense.shape
    cursor = indptr[:-1].astype(np.int64)
    outer, inner = (n_features, n_cells) if f_order else (n_cells, n_features)
    for a in range(outer):
        for b in range(inner):
            i, j = (b, a) if f_order else (a, b)
            v = dense[i, j]
            if v != 0:
                indices[cursor[j]] = i
                data[cursor[j]] = v
                cursor[j] += 1
