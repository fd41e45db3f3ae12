"""The new views' arithmetic: distributions against numpy, marker scores against an exact reference
and scanpy, the embedding sample's guarantees, crossed group codes, and the layouts' round trips."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings

from services.compute.kernel import DIST_BINS, compute_group_stats, compute_grouping_stats
from services.compute.markers import marker_fields, top_candidates
from services.compute.sample import sample_embedding
from services.compute.views import crossed_codes
from shared import layout
from shared.staging import GroupingPlan
from tests.kernel.test_group_stats import ChunkCase, chunks_with_groups


def reference_distribution(column: np.ndarray, codes: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """numpy on the dense column: shared edges over the non-zeros, per group its histogram, the
    1.5 IQR whiskers clipped to the data and the outliers beyond them."""
    values = column.astype(np.float64)
    edges = np.histogram_bin_edges(values[values != 0], DIST_BINS)
    out = {k: [] for k in ("hist", "zeros", "whisker_low", "whisker_high", "outliers_low", "outliers_high")}
    for g in range(n_groups):
        v = values[codes == g]
        out["hist"].append(np.histogram(v[v != 0], bins=edges)[0])
        out["zeros"].append(int((v == 0).sum()))
        if v.size == 0:
            out["whisker_low"].append(np.nan)
            out["whisker_high"].append(np.nan)
            out["outliers_low"].append(0)
            out["outliers_high"].append(0)
            continue
        q1, q3 = np.quantile(v, [0.25, 0.75])
        low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        out["whisker_low"].append(v[v >= low].min())
        out["whisker_high"].append(v[v <= high].max())
        out["outliers_low"].append(int((v < low).sum()))
        out["outliers_high"].append(int((v > high).sum()))
    return {"edges": edges} | {k: np.array(v) for k, v in out.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=chunks_with_groups())
def test_distributions_match_numpy_exactly(case: ChunkCase) -> None:
    stats = compute_group_stats(case.chunk(), case.group_codes, case.n_groups, with_distributions=True)
    dist = stats.distributions
    assert dist is not None
    for j in range(case.values.shape[1]):
        want = reference_distribution(case.values[:, j], case.group_codes, case.n_groups)
        np.testing.assert_array_equal(dist.edges[j], want["edges"])
        np.testing.assert_array_equal(dist.hist[j], want["hist"])
        np.testing.assert_array_equal(dist.zeros[j], want["zeros"])
        # exact: the bins and the zeros hold every cell of the group
        np.testing.assert_array_equal(dist.hist[j].sum(axis=1) + dist.zeros[j], stats.values["count"][j])
        for key in ("whisker_low", "whisker_high", "outliers_low", "outliers_high"):
            np.testing.assert_array_equal(getattr(dist, key)[j], want[key], err_msg=key)


def test_distributions_are_the_same_bits_for_any_thread_count_and_leave_stats_unchanged() -> None:
    rng = np.random.default_rng(3)
    values = (rng.lognormal(size=(3000, 60)) * (rng.random((3000, 60)) < 0.3)).astype(np.float32)
    values[:, 5] -= 1.0  # negatives and explicit-zero-free shifts
    codes = rng.integers(0, 9, 3000)
    chunk = sp.csc_array(values)
    plain = compute_group_stats(chunk, codes, 9)
    one = compute_group_stats(chunk, codes, 9, with_distributions=True, threads=1)
    two = compute_group_stats(chunk, codes, 9, with_distributions=True, threads=2)
    for stat, got in one.values.items():
        assert got.tobytes() == plain.values[stat].tobytes() == two.values[stat].tobytes(), stat
    for key in ("edges", "hist", "whisker_low", "whisker_high", "outliers_low", "outliers_high"):
        assert getattr(one.distributions, key).tobytes() == getattr(two.distributions, key).tobytes(), key
    several = compute_grouping_stats(chunk, {"a": (codes, 9)}, with_distributions=True)["a"]
    assert several.distributions is not None and several.distributions.hist.tobytes() == one.distributions.hist.tobytes()


def test_distributions_with_explicit_zero_at_the_range_edge() -> None:
    # an explicit zero is the scatter's minimum: the bins must still span the non-zeros only
    data = np.array([0.0, 2.0, 3.0, 3.0, 9.0])
    rows = np.array([0, 1, 2, 3, 4])
    chunk = sp.csc_array((data, (rows, np.zeros(5, dtype=int))), shape=(6, 1))
    codes = np.array([0, 0, 1, 1, 1, 0])
    dist = compute_group_stats(chunk, codes, 2, with_distributions=True).distributions
    want = reference_distribution(chunk.toarray()[:, 0], codes, 2)
    np.testing.assert_array_equal(dist.edges[0], want["edges"])
    np.testing.assert_array_equal(dist.hist[0], want["hist"])
    assert want["edges"][0] == 2.0 and want["edges"][-1] == 9.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histograms_exact_for_values_on_either_side_of_every_edge(dtype: type) -> None:
    """Each column holds only the values of its dtype next to its bin edges, in groups of every size
    (the large ones' bins come from the rank selection's buckets, the mostly-zero ones' from a guess
    without the edge compares): numpy.histogram's counts, whether or not the guess alone would
    misplace one of them."""
    from services.compute.kernel import _guess_is_exact

    rng = np.random.default_rng(11)
    n_cells, n_columns = 6000, 60
    codes = np.repeat(np.arange(6), [40, 200, 700, 1500, 2560, 1000])
    values = np.zeros((n_cells, n_columns), dtype=dtype)
    guess_misplaces = 0
    for j in range(n_columns):
        lo, hi = np.sort(rng.uniform(0.01, 40, 2).astype(dtype))
        edges = np.histogram_bin_edges(np.array([lo, hi], dtype=np.float64), DIST_BINS)
        at = edges.astype(dtype)
        near = np.concatenate([at, np.nextafter(at, dtype(-np.inf)), np.nextafter(at, dtype(np.inf))])
        near = near[(near >= lo) & (near <= hi)]
        column = rng.choice(near, n_cells)
        column[:2] = lo, hi
        column[codes == 5] *= rng.random(1000) < 0.1  # a mostly-zero group: quartiles on zeros
        values[:, j] = column
        guess_misplaces += not all(_guess_is_exact(edges, DIST_BINS * m / (edges[-1] - edges[0]), m, values[:1, j]) for m in (1, 2, 8, 32, 64))
    assert guess_misplaces > 0  # the columns exercise the exact fallback too
    dist = compute_group_stats(sp.csc_array(values), codes, 6, with_distributions=True).distributions
    assert dist is not None
    for j in range(n_columns):
        want = reference_distribution(values[:, j], codes, 6)
        np.testing.assert_array_equal(dist.edges[j], want["edges"])
        np.testing.assert_array_equal(dist.hist[j], want["hist"], err_msg=f"column {j}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whiskers_exact_when_values_sit_on_the_fences(dtype: type) -> None:
    """Groups large enough for the rank selection's buckets, with values on, just inside and just
    beyond both fences (q1 = 10, q3 = 14, fences 4 and 20, scaled), negatives and zeros in some
    columns, and far outliers: the whiskers and outlier counts are numpy's."""
    rng = np.random.default_rng(12)
    n_cells, n_columns = 8000, 24
    codes = rng.integers(0, 5, n_cells)
    values = np.zeros((n_cells, n_columns), dtype=dtype)
    for j in range(n_columns):
        column = rng.choice([10.0, 11.0, 12.0, 13.0, 14.0], n_cells, p=[0.3, 0.1, 0.2, 0.1, 0.3])  # q1 10, q3 14
        tails = rng.random(n_cells)
        column[tails < 0.05] = rng.choice([3.0, 4.0, 20.0, 21.0, 4.5, 19.5], int((tails < 0.05).sum()))
        column[tails > 0.995] = rng.uniform(-200, 500, int((tails > 0.995).sum()))
        if j % 3 == 1:
            column -= 12.0  # negatives, zeros among the quartiles
        if j % 3 == 2:
            column[rng.random(n_cells) < 0.3] = 0.0  # zeros below the data
        column *= (0.25, 1.0, 3.0, 1.0 + j / 7.0)[j % 4]  # fences on values, and off them by rounding
        values[:, j] = column
    dist = compute_group_stats(sp.csc_array(values), codes, 5, with_distributions=True).distributions
    assert dist is not None
    for j in range(n_columns):
        want = reference_distribution(values[:, j], codes, 5)
        for key in ("whisker_low", "whisker_high", "outliers_low", "outliers_high"):
            np.testing.assert_array_equal(getattr(dist, key)[j], want[key], err_msg=f"{key}, column {j}")


def exact_welch(values: np.ndarray, codes: np.ndarray, g: int) -> np.ndarray:
    a, b = values[codes == g], values[codes != g]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return np.where(np.isnan(score), 0.0, score)


def test_marker_scores_match_welch_on_the_values() -> None:
    rng = np.random.default_rng(0)
    values = (rng.lognormal(1.0, 1.0, size=(800, 50)) * (rng.random((800, 50)) < 0.4)).astype(np.float64)
    values[:, 7] = 0.0  # a feature with no non-zero: score 0 everywhere
    codes = rng.integers(0, 6, 800)
    fields = marker_fields(compute_group_stats(sp.csc_array(values), codes, 6))
    for g in range(6):
        a, b = values[codes == g], values[codes != g]
        np.testing.assert_allclose(fields["score"][:, g], exact_welch(values, codes, g), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fields["mean_out"][:, g], b.mean(0), rtol=1e-12)
        np.testing.assert_allclose(fields["frac_out"][:, g], (b != 0).mean(0), rtol=1e-12)
        np.testing.assert_allclose(fields["log2fc"][:, g], np.log2((a.mean(0) + 1e-9) / (b.mean(0) + 1e-9)), rtol=1e-9)
    assert (fields["score"][7] == 0).all()


# scanpy computes the same Welch t from its own means and variances (E[x^2] - E[x]^2); its scores
# and ours agree to within this (measured: 6e-8 relative on this data).
SCANPY_RTOL = 1e-6
SCANPY_ATOL = 1e-6


def test_marker_ranking_matches_scanpy_t_test() -> None:
    sc = pytest.importorskip("scanpy")  # in the test extra: present wherever the suite runs
    import anndata as ad

    rng = np.random.default_rng(1)
    n, f, n_groups = 900, 60, 5
    codes = rng.integers(0, n_groups, n)
    values = rng.lognormal(size=(n, f)) * (rng.random((n, f)) < 0.3)
    values[codes == 2, :5] += 3.0  # clear markers of group 2
    values = np.log1p(values).astype(np.float32)
    features = [f"GENE{j:03d}" for j in range(f)]
    fields = marker_fields(compute_group_stats(sp.csc_array(values), codes, n_groups))
    adata = ad.AnnData(
        X=sp.csr_matrix(values),
        obs=pd.DataFrame({"g": pd.Categorical([str(c) for c in codes])}, index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=features),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(adata, "g", method="t-test", n_genes=f)
    result = adata.uns["rank_genes_groups"]
    top = top_candidates("g", features, fields, 20)
    for g in range(n_groups):
        names = list(result["names"][str(g)])
        scores = np.asarray(result["scores"][str(g)], dtype=np.float64)
        ours = fields["score"][[features.index(x) for x in names], g]
        np.testing.assert_allclose(ours, scores, rtol=SCANPY_RTOL, atol=SCANPY_ATOL)
        mine = top.filter(pa.compute.equal(top.column("group"), g))
        # the same top features in the same order wherever scanpy's scores are not tied within the tolerance
        gaps = np.abs(np.diff(scores[:21])) > 1e-4
        ranked = mine.column("feature").to_pylist()
        for i in range(20):
            if (i == 0 or gaps[i - 1]) and gaps[i]:
                assert ranked[i] == names[i], (g, i)
    assert top.filter(pa.compute.equal(top.column("group"), 2)).column("feature").to_pylist()[:5] == sorted(features[:5], key=lambda x: -fields["score"][features.index(x), 2])


def test_top_candidates_break_ties_by_name() -> None:
    fields = {k: np.zeros((3, 1)) for k in layout.MARKER_FIELDS}
    fields["score"][:, 0] = [1.0, 2.0, 1.0]
    table = top_candidates("g", ["b", "z", "a"], fields, 3)
    assert table.column("feature").to_pylist() == ["z", "a", "b"]


def test_embedding_sample_keeps_sparse_regions_and_small_groups() -> None:
    rng = np.random.default_rng(5)
    dense = rng.normal(0, 0.05, size=(200_000, 2))
    sparse = rng.uniform(5, 10, size=(300, 2))  # a sparse region far away
    coords = np.vstack([dense, sparse, [[np.nan, np.nan]]])
    codes = np.zeros(coords.shape[0], dtype=np.int32)
    codes[rng.choice(200_000, 3, replace=False)] = 1  # a group of 3 cells inside the dense cloud
    positions, weights = sample_embedding(coords, [codes], 5_000, seed=42)
    assert positions.size == 5_000 and (np.diff(positions) > 0).all()
    assert coords.shape[0] - 1 not in positions  # no coordinates: never sampled
    assert set(np.flatnonzero(codes == 1)) <= set(positions.tolist())
    assert np.isin(np.arange(200_000, 200_300), positions).all()  # every point of the sparse region
    np.testing.assert_allclose(weights.sum(), coords.shape[0] - 1)
    again = sample_embedding(coords, [codes], 5_000, seed=42)
    assert again[0].tobytes() == positions.tobytes() and again[1].tobytes() == weights.tobytes()
    small, w = sample_embedding(coords[:100], [codes[:100]], 5_000, seed=1)
    assert small.tolist() == list(range(100)) and (w == 1).all()


def test_crossed_codes_index_the_pairs() -> None:
    a = GroupingPlan(name="a", view="stats_a", groups=["x", "y"], counts=[2, 2])
    b = GroupingPlan(name="b", view="stats_b", groups=["1", "2", "3"], counts=[1, 1, 2])
    crossed = GroupingPlan(name="a × b", view="stats_a_by_b", groups=["x | 1", "x | 3", "y | 2", "y | 3"], counts=[1, 1, 1, 1], crossed=["a", "b"], pairs=[(0, 0), (0, 2), (1, 1), (1, 2)])
    codes = crossed_codes(crossed, (a, np.array([0, 1, 0, 1])), (b, np.array([0, 1, 2, 2])))
    assert codes.tolist() == [0, 2, 1, 3]


def test_layouts_round_trip() -> None:
    edges = np.linspace(0, 1, DIST_BINS + 1)
    counts = np.arange(3 * DIST_BINS, dtype=np.uint32).reshape(3, DIST_BINS)
    e, c = layout.decode_histograms(layout.encode_histograms(edges, counts))
    assert e.tobytes() == edges.tobytes() and (c == counts).all()
    fields = {k: np.arange(2, dtype=float) + i for i, k in enumerate(layout.MARKER_FIELDS)}
    names, back = layout.decode_markers(layout.encode_markers(["CD3É", "x"], fields))
    assert names == ["CD3É", "x"] and all((back[k] == fields[k]).all() for k in fields)
    part = layout.encode_sample_part(np.array([3, 9]), np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.5, 2.0]), np.array([[0, 1], [2, 3]]), ["a", "bé"])
    pos, coords, weights, groups, ids = layout.decode_sample_part(part)
    assert pos.tolist() == [3, 9] and coords.tolist() == [[1, 2], [3, 4]] and weights.tolist() == [1.5, 2.0]
    assert groups.tolist() == [[0, 1], [2, 3]] and ids == ["a", "bé"]
    assert layout.markers_row("cell_type", "B cell") == b"cell_type\x00B cell"
    assert layout.view_family("dist_cell_type") == b"d" and layout.view_family("stats_x") == b"s"


def test_embedding_sample_weights_add_up_when_the_budget_is_below_the_occupied_grid() -> None:
    rng = np.random.default_rng(8)
    coords = rng.uniform(0, 1, size=(400, 2))  # ~400 occupied cells of a 128 x 128 grid
    codes = [rng.integers(0, 10, 400).astype(np.int32), np.zeros(400, dtype=np.int32)]
    positions, weights = sample_embedding(coords, codes, 250, seed=3)
    assert positions.size == 250
    np.testing.assert_allclose(weights.sum(), 400)
    assert set(codes[0][positions]) == set(range(10))


@pytest.mark.parametrize("seed", range(6))
def test_top_candidates_are_the_best_by_score_then_name_with_ties_and_nan(seed: int) -> None:
    """Only the features up to each group's top_n-th score are sorted: the result must still be the
    full ranking's head (score descending, NaN last, ties by feature name), checked against Python's sort."""
    rng = np.random.default_rng(seed)
    n_features, n_groups, top_n = 300, 7, 40
    score = np.round(rng.normal(size=(n_features, n_groups)), 1)  # many ties
    score[rng.random(score.shape) < 0.2] = np.nan
    score[:, 3] = np.nan  # a group with no score at all
    score[: n_features - 10, 5] = np.nan  # fewer scores than top_n
    names = [f"F{i:04d}" for i in rng.permutation(n_features)]
    fields = {key: rng.normal(size=(n_features, n_groups)) for key in ("log2fc", "mean_in", "mean_out", "frac_in", "frac_out")}
    fields["score"] = score
    got = top_candidates("g", names, fields, top_n).to_pandas()
    for g in range(n_groups):
        def key(i: int) -> tuple[bool, float, str]:
            return (bool(np.isnan(score[i, g])), -score[i, g] if not np.isnan(score[i, g]) else 0.0, names[i])

        want = sorted(range(n_features), key=key)[:top_n]
        mine = got[got["group"] == g]
        assert list(mine["feature"]) == [names[i] for i in want], g
        np.testing.assert_array_equal(mine["log2fc"].to_numpy(), fields["log2fc"][want, g])
