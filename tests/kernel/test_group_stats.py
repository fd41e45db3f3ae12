"""The per-group statistics kernel against pandas groupby (the reference), computed here in the test."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.compute.kernel import GroupStats, compute_group_stats, compute_grouping_stats, sparse_columns
from shared.errors import Permanent
from shared.stats import STATS

TOL = dict(rtol=1e-9, atol=1e-12, equal_nan=True)
FORMATS = ("dense_c", "dense_f", "csr", "csc", "coo", "csc_matrix", "csr_matrix")
# Few distinct values: many ties, zeros, negatives, large and tiny magnitudes.
TIE_VALUES = (0.0, 0.0, 0.0, 1.0, 2.0, 2.5, -1.0, -3.25, 0.5, 7.0, 1e-3, 123.0)


@dataclass(frozen=True)
class ChunkCase:
    values: np.ndarray  # dense cells x features, the source of truth
    group_codes: np.ndarray
    n_groups: int
    fmt: str

    def chunk(self) -> np.ndarray | sp.spmatrix | sp.sparray:
        return as_format(self.values, self.fmt)


_FORMATS = {
    "dense_c": np.ascontiguousarray,
    "dense_f": np.asfortranarray,
    "csr": sp.csr_array,
    "csc": sp.csc_array,
    "coo": sp.coo_array,
    "csc_matrix": sp.csc_matrix,
}


def as_format(dense: np.ndarray, fmt: str) -> np.ndarray | sp.spmatrix | sp.sparray:
    """`dense` in the chunk format `fmt` (csr_matrix for any other name)."""
    return _FORMATS.get(fmt, sp.csr_matrix)(dense)


@st.composite
def chunks_with_groups(draw: st.DrawFn, max_cells: int = 40) -> ChunkCase:
    n_cells = draw(st.integers(1, max_cells))
    n_features = draw(st.integers(1, 5))
    n_groups = draw(st.integers(1, 7))  # codes drawn below may leave some groups empty
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    if draw(st.booleans()):
        elements = st.sampled_from(TIE_VALUES)
    else:
        elements = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    values = draw(hnp.arrays(np.float64, (n_cells, n_features), elements=elements)).astype(dtype)
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    keep = draw(hnp.arrays(np.float64, (n_cells, n_features), elements=st.floats(0, 1))) < density
    values = np.where(keep, values, 0).astype(dtype)
    if n_features > 1 and draw(st.booleans()):
        values[:, 0] = 0  # an all-zero column
    if draw(st.booleans()):
        values = np.abs(values)  # no negatives: the kernel's fused bucket path
    codes = draw(hnp.arrays(np.int64, n_cells, elements=st.integers(0, n_groups - 1)))
    fmt = draw(st.sampled_from(FORMATS))
    return ChunkCase(values=values, group_codes=codes, n_groups=n_groups, fmt=fmt)


def pandas_stats(values: np.ndarray, group_codes: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """The 12 statistics by pandas groupby on float64, transposed to (n_features, n_groups)."""
    frame = pd.DataFrame(values.astype(np.float64))
    groups = pd.Categorical.from_codes(group_codes, categories=range(n_groups))
    grouped = frame.groupby(groups, observed=False)  # empty groups stay, as NaN
    count = np.repeat(grouped.size().to_numpy()[None, :], values.shape[1], axis=0).astype(np.float64)
    nnz = (frame != 0).groupby(groups, observed=False).sum().to_numpy().T.astype(np.float64)
    total = grouped.sum().to_numpy().T
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "count": count,
            "nnz": nnz,
            "sum": total,
            "mean": grouped.mean().to_numpy().T,
            "var": grouped.var(ddof=1).to_numpy().T,
            "min": grouped.min().to_numpy().T,
            "max": grouped.max().to_numpy().T,
            "median": grouped.median().to_numpy().T,
            "q1": grouped.quantile(0.25).to_numpy().T,
            "q3": grouped.quantile(0.75).to_numpy().T,
            "frac_expressing": nnz / count,
            "mean_expressing": np.where(nnz > 0, total / nnz, np.nan),
        }


def assert_matches_pandas(stats: GroupStats, values: np.ndarray, group_codes: np.ndarray, n_groups: int) -> None:
    expected = pandas_stats(values, group_codes, n_groups)
    assert stats.n_groups == n_groups
    assert set(stats.values) == set(STATS)
    for stat in STATS:
        got = stats.values[stat]
        assert got.dtype == np.float64 and got.shape == (values.shape[1], n_groups), stat
        np.testing.assert_allclose(got, expected[stat], **TOL, err_msg=stat)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=chunks_with_groups())
def test_group_stats_match_pandas(case: ChunkCase) -> None:
    stats = compute_group_stats(case.chunk(), case.group_codes, n_groups=case.n_groups)
    assert_matches_pandas(stats, case.values, case.group_codes, case.n_groups)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=chunks_with_groups(max_cells=400))
def test_group_stats_match_pandas_on_larger_groups(case: ChunkCase) -> None:
    # groups past the kernel's small-segment cut-off take the bucketed selection path
    stats = compute_group_stats(case.chunk(), case.group_codes, n_groups=case.n_groups)
    assert_matches_pandas(stats, case.values, case.group_codes, case.n_groups)


def large_group_columns(rng: np.random.Generator, n_cells: int, signed: bool) -> np.ndarray:
    columns = [
        rng.choice([0.0, 1.0, 1.5, 2.0], size=n_cells, p=[0.2, 0.5, 0.2, 0.1]),  # heavy ties
        np.where(rng.random(n_cells) < 0.05, rng.lognormal(0, 1, n_cells), 0.0),  # very sparse
        np.full(n_cells, 4.0),  # one value
        rng.lognormal(0, 2, n_cells),  # no zeros, wide range
        np.where(rng.random(n_cells) < 0.6, np.log1p(rng.geometric(0.5, n_cells) * 3.0), 0.0),  # log counts
        np.where(rng.random(n_cells) < 0.7, 1e-30 * rng.integers(1, 5, n_cells), 0.0),  # tiny values
    ]
    if signed:
        columns += [
            np.where(rng.random(n_cells) < 0.7, rng.normal(0, 3, n_cells), 0.0),  # negatives and zeros
            np.where(rng.random(n_cells) < 0.9, -rng.integers(1, 4, n_cells), 0.0),  # mostly negative ties
        ]
    return np.column_stack(columns)


@pytest.mark.parametrize("n_cells", [30, 100, 1000, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("signed", [False, True])
def test_quantiles_equal_numpy_on_large_tied_groups(n_cells: int, dtype: type, signed: bool) -> None:
    # groups past the small-segment cut-off; a chunk without negatives takes the fused bucket path
    rng = np.random.default_rng(n_cells)
    n_groups = 3
    codes = rng.integers(0, n_groups, n_cells)
    dense = large_group_columns(rng, n_cells, signed).astype(dtype)
    stats = compute_group_stats(sp.csc_array(dense), codes, n_groups)
    for g in range(n_groups):
        cells = dense[codes == g].astype(np.float64)
        for stat, q in (("q1", 0.25), ("median", 0.5), ("q3", 0.75)):
            # numpy's own interpolation, zeros included: equal to the last bit
            np.testing.assert_array_equal(stats.values[stat][:, g], np.quantile(cells, q, axis=0), err_msg=stat)
        np.testing.assert_array_equal(stats.values["min"][:, g], cells.min(axis=0))
        np.testing.assert_array_equal(stats.values["max"][:, g], cells.max(axis=0))
    assert_matches_pandas(stats, dense, codes, n_groups)


def test_empty_and_single_cell_groups() -> None:
    dense = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])
    stats = compute_group_stats(sp.csr_array(dense), np.array([0, 0, 2]), n_groups=4)
    # group 1 and 3 are empty: count 0, nnz 0, sum 0, NaN elsewhere
    for g in (1, 3):
        assert stats.count[0, g] == 0 and stats.nnz[0, g] == 0 and stats.sum[0, g] == 0
        for stat in ("mean", "var", "min", "max", "median", "q1", "q3", "frac_expressing", "mean_expressing"):
            assert np.isnan(stats.values[stat][:, g]).all(), stat
    # group 2 has one cell: var NaN (ddof=1), quantiles its value
    assert np.isnan(stats.var[:, 2]).all()
    np.testing.assert_array_equal(stats.median[:, 2], [0.0, 5.0])
    np.testing.assert_array_equal(stats.mean_expressing[:, 2], [np.nan, 5.0])
    np.testing.assert_array_equal(stats.frac_expressing[:, 0], [1.0, 0.0])
    np.testing.assert_array_equal(stats.var[:, 0], [0.5, 0.0])


def test_explicit_zeros_in_sparse_chunk_are_zeros() -> None:
    data = np.array([0.0, 3.0, 0.0, -0.0, 1.0], dtype=np.float32)
    rows = np.array([0, 1, 2, 3, 0])
    cols = np.array([0, 0, 0, 0, 1])
    chunk = sp.csc_array((data, (rows, cols)), shape=(4, 2))
    assert chunk.nnz == 5  # the explicit zeros (one of them -0.0) are stored
    stats = compute_group_stats(chunk, np.zeros(4, dtype=np.int64), 1)
    dense = np.array([[0, 1], [3, 0], [0, 0], [0, 0]], dtype=np.float64)
    assert_matches_pandas(stats, dense, np.zeros(4, dtype=np.int64), 1)
    assert stats.nnz[0, 0] == 1


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc"])
def test_duplicate_and_unsorted_sparse_entries_are_summed(fmt: str) -> None:
    rows = np.array([2, 0, 2, 1, 0])
    cols = np.array([0, 0, 0, 1, 1])
    data = np.array([1.0, 4.0, 2.0, -1.0, 0.5])
    coo = sp.coo_array((data, (rows, cols)), shape=(3, 2))
    dense = coo.toarray()  # duplicates summed: cell 2 of feature 0 is 3.0
    if fmt == "coo":
        chunk: sp.sparray = coo
    else:
        # build the compressed form by hand so scipy keeps the duplicates and the disorder
        major, minor = (cols, rows) if fmt == "csc" else (rows, cols)
        order = np.argsort(major, kind="stable")
        indptr = np.searchsorted(major[order], np.arange(coo.shape[1 if fmt == "csc" else 0] + 1))
        cls = sp.csc_array if fmt == "csc" else sp.csr_array
        chunk = cls((data[order], minor[order], indptr), shape=(3, 2))
        assert not chunk.has_canonical_format
    codes = np.array([0, 1, 0])
    assert_matches_pandas(compute_group_stats(chunk, codes, 2), dense, codes, 2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_rejected(fmt: str, bad: float) -> None:
    dense = np.ones((5, 3))
    dense[3, 2] = bad
    with pytest.raises(Permanent, match="NaN or infinite"):
        compute_group_stats(as_format(dense, fmt), np.zeros(5, dtype=np.int64), 1)
    with pytest.raises(Permanent, match="NaN or infinite"):
        sparse_columns(as_format(dense, fmt))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("threads", [1, 2])
def test_nan_or_inf_among_many_positive_values_is_reported_by_column(bad: float, threads: int) -> None:
    # long non-negative columns whose quartiles land on non-zeros: the path that buckets values
    rng = np.random.default_rng(5)
    dense = rng.lognormal(size=(600, 4))
    dense[rng.random((600, 4)) < 0.3] = 0.0
    dense[417, 3] = bad
    for fmt in ("csc", "dense_f"):
        with pytest.raises(Permanent, match="feature column 3"):
            compute_group_stats(as_format(dense, fmt), rng.integers(0, 2, 600), 2, threads=threads)


@pytest.mark.parametrize(
    ("codes", "n_groups", "message"),
    [
        (np.array([0, 1, 2]), 2, "group codes must lie in"),
        (np.array([0, -1, 1]), 2, "group codes must lie in"),
        (np.array([0, 1]), 2, "expected \\(3,\\)"),
        (np.array([[0, 1, 1]]), 2, "expected \\(3,\\)"),
        (np.array([0.0, 1.0, 1.0]), 2, "must be integers"),
    ],
)
def test_bad_group_codes_are_rejected(codes: np.ndarray, n_groups: int, message: str) -> None:
    with pytest.raises(Permanent, match=message):
        compute_group_stats(np.ones((3, 2)), codes, n_groups)


def test_non_numeric_chunk_is_rejected() -> None:
    with pytest.raises(Permanent, match="numeric"):
        compute_group_stats(np.array([["a"], ["b"]]), np.array([0, 0]), 1)


@pytest.mark.parametrize("with_zeros", [False, True])
def test_variance_survives_large_means(with_zeros: bool) -> None:
    rng = np.random.default_rng(7)
    n_cells, n_groups = 3000, 3
    dense = 1e9 + rng.normal(0, 1e-3, size=(n_cells, 4))  # spread ~1e-3 on a mean of 1e9
    dense[:, 1] = 1e9 + rng.integers(0, 3, n_cells)  # ties around a large mean
    if with_zeros:
        dense[rng.random((n_cells, 4)) < 0.3] = 0.0
    codes = rng.integers(0, n_groups, n_cells)
    stats = compute_group_stats(dense, codes, n_groups)
    for g in range(n_groups):
        cells = dense[codes == g]
        # exact rational arithmetic as the reference: a plain float64 two-pass is itself off by up to
        # 1e-6 here, since the mean rounds to 1.2e-7 (ulp of 1e9) against a spread of 1e-3
        exact = np.array([exact_variance(cells[:, j]) for j in range(cells.shape[1])])
        np.testing.assert_allclose(stats.var[:, g], exact, rtol=1e-12)
        # a sum-of-squares formula would be off by orders of magnitude here
        naive = ((cells**2).sum(axis=0) - cells.sum(axis=0) ** 2 / len(cells)) / (len(cells) - 1)
        if not with_zeros:
            assert np.abs(naive - exact).max() > 1e3 * np.abs(stats.var[:, g] - exact).max()


def test_variance_falls_back_to_two_pass_when_the_shift_is_far_from_the_mean() -> None:
    # The first cell is an outlier, so a variance shift taken from it sits far from the mean:
    # sum of squares / centred sum is ~n, past the kernel's cancellation limit (1024).
    rng = np.random.default_rng(13)
    values = 5.0 + rng.normal(0, 1e-3, 20_000)
    values[0] = 1e7
    shifted = values - values[0]
    assert (shifted**2).sum() / ((values - values.mean()) ** 2).sum() > 1024
    for chunk in (values[:, None], sp.csc_array(values[:, None])):
        stats = compute_group_stats(chunk, np.zeros(values.size, dtype=np.int64), 1)
        np.testing.assert_allclose(stats.var[0, 0], exact_variance(values), rtol=1e-12)


def exact_variance(values: np.ndarray) -> float:
    exact = [Fraction(float(v)) for v in values]
    mean = sum(exact) / len(exact)
    return float(sum((v - mean) ** 2 for v in exact) / (len(exact) - 1))


def test_float32_input_is_summed_in_float64() -> None:
    # 2**24 + 1 is not a float32: a float32 accumulator would stall at 2**24
    dense = np.ones((2**24 + 1, 1), dtype=np.float32)
    stats = compute_group_stats(sp.csc_array(dense), np.zeros(dense.shape[0], dtype=np.int8), 1)
    assert stats.sum[0, 0] == 2**24 + 1


def test_more_groups_than_a_byte_holds() -> None:
    rng = np.random.default_rng(9)
    dense = np.where(rng.random((2000, 3)) < 0.5, rng.lognormal(size=(2000, 3)), 0.0)
    codes = rng.integers(0, 300, 2000)
    assert_matches_pandas(compute_group_stats(sp.csc_array(dense), codes, 300), dense, codes, 300)


def test_integer_chunk_is_computed_as_float64() -> None:
    dense = np.array([[1, 0], [3, 2], [0, 0]], dtype=np.int64)
    codes = np.array([0, 0, 1])
    assert_matches_pandas(compute_group_stats(dense, codes, 2), dense.astype(np.float64), codes, 2)


def test_chunk_without_cells_or_features() -> None:
    stats = compute_group_stats(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), 2)
    assert stats.count.shape == (3, 2) and (stats.count == 0).all() and (stats.sum == 0).all()
    assert np.isnan(stats.mean).all()
    stats = compute_group_stats(sp.csr_array((4, 0)), np.zeros(4, dtype=np.int64), 1)
    assert stats.mean.shape == (0, 1)


def test_groupings_share_one_conversion_and_agree() -> None:
    rng = np.random.default_rng(3)
    dense = np.where(rng.random((200, 6)) < 0.3, rng.lognormal(size=(200, 6)), 0.0)
    by_type, by_donor = rng.integers(0, 5, 200), rng.integers(0, 3, 200)
    results = compute_grouping_stats(sp.csr_array(dense), {"type": (by_type, 5), "donor": (by_donor, 3)})
    for name, codes, n in (("type", by_type, 5), ("donor", by_donor, 3)):
        single = compute_group_stats(dense, codes, n)
        for stat in STATS:
            np.testing.assert_array_equal(results[name].values[stat], single.values[stat])


def digest(stats: GroupStats) -> str:
    return hashlib.sha256(b"".join(stats.values[s].tobytes() for s in STATS)).hexdigest()


DETERMINISM_SCRIPT = """
import hashlib, numpy as np, scipy.sparse as sp
from services.compute.kernel import compute_group_stats
from shared.stats import STATS
rng = np.random.default_rng(11)
dense = np.where(rng.random((3000, 40)) < 0.2, rng.lognormal(size=(3000, 40)), 0.0).astype(np.float32)
stats = compute_group_stats(sp.csc_array(dense), rng.integers(0, 9, 3000), 9)
print(hashlib.sha256(b"".join(stats.values[s].tobytes() for s in STATS)).hexdigest())
"""


def test_results_are_identical_across_runs_and_processes() -> None:
    namespace: dict[str, object] = {}
    code = DETERMINISM_SCRIPT.replace("print(", "RESULT = (")
    exec(compile(code, "<determinism>", "exec"), namespace)  # noqa: S102 - our own fixed script
    exec(compile(code.replace("RESULT", "AGAIN"), "<determinism>", "exec"), namespace)  # noqa: S102
    assert namespace["RESULT"] == namespace["AGAIN"]
    root = Path(__file__).resolve().parents[2]
    other = subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT], cwd=root, capture_output=True, text=True, check=True
    )
    assert other.stdout.strip() == namespace["RESULT"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=chunks_with_groups(max_cells=200), threads=st.sampled_from([2, 3, 7]))
def test_threads_give_the_same_bits_and_match_pandas(case: ChunkCase, threads: int) -> None:
    one = compute_group_stats(case.chunk(), case.group_codes, n_groups=case.n_groups)
    many = compute_group_stats(case.chunk(), case.group_codes, n_groups=case.n_groups, threads=threads)
    for stat in STATS:
        assert one.values[stat].tobytes() == many.values[stat].tobytes(), stat
    assert_matches_pandas(many, case.values, case.group_codes, case.n_groups)


@pytest.mark.parametrize("fmt", ["dense_c", "dense_f", "csc"])
def test_threads_split_columns_of_uneven_density(fmt: str) -> None:
    # one dense column among very sparse ones: ranges are cut by non-zeros, every column still computed
    rng = np.random.default_rng(11)
    values = np.where(rng.random((2000, 9)) < 0.01, rng.lognormal(size=(2000, 9)), 0.0)
    values[:, 4] = rng.normal(3.0, 1.0, 2000)
    codes = rng.integers(0, 5, 2000)
    stats = compute_group_stats(as_format(values, fmt), codes, n_groups=5, threads=0)
    assert_matches_pandas(stats, values, codes, 5)
    bad = values.copy()
    bad[7, 8] = np.nan  # in the last range: still reported, naming its column
    with pytest.raises(Permanent, match="feature column 8"):
        compute_group_stats(as_format(bad, fmt), codes, n_groups=5, threads=4)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_columns_is_canonical_csc(fmt: str, dtype: type) -> None:
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((50, 7)) < 0.3, rng.normal(size=(50, 7)), 0.0).astype(dtype)
    columns = sparse_columns(as_format(dense, fmt))
    assert isinstance(columns, sp.csc_array)
    assert columns.dtype == dtype
    assert columns.indices.dtype == np.int32 and columns.indptr.dtype == np.int32
    assert columns.has_canonical_format
    assert (columns.data != 0).all()
    np.testing.assert_array_equal(columns.toarray(), dense)


def test_sparse_columns_drops_explicit_zeros_and_sums_duplicates() -> None:
    coo = sp.coo_array((np.array([0.0, 1.0, 2.0]), (np.array([0, 1, 1]), np.array([0, 0, 0]))), shape=(2, 1))
    columns = sparse_columns(coo)
    np.testing.assert_array_equal(columns.indices, [1])
    np.testing.assert_array_equal(columns.data, [3.0])
