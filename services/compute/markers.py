"""Marker features of one chunk: one-vs-rest Welch t-statistics from the per-group moments. No I/O.

For a feature and a group g of n_g cells (mean m_g, variance v_g with ddof=1) against the rest of
the cells (n_r = N - n_g, mean m_r, variance v_r, ddof=1):

    score  = (m_g - m_r) / sqrt(v_g / n_g + v_r / n_r)        (Welch's t, scanpy's "t-test" score)
    log2fc = log2((m_g + 1e-9) / (m_r + 1e-9))                (the means as stored; NaN if one is negative)

The rest's moments come from the groups' (count, mean, var) without touching a value again: its sum
of squared deviations is the groups' own plus their means' spread around the rest's mean (the
parallel variance formula, about the overall mean so that it costs O(groups) per feature; sums over
groups in a fixed order, so the bits do not depend on the chunk's width). A score that is undefined (a group or rest of under two cells, or both variances 0 with equal
means) is 0, as scanpy sets it. Features are ranked by score, best first, ties by feature name.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from services.compute.kernel import GroupStats
from shared.layout import MARKER_FIELDS

CANDIDATE_SCHEMA = pa.schema(
    [("grouping", pa.string()), ("group", pa.int32()), ("feature", pa.string())] + [(f, pa.float64()) for f in MARKER_FIELDS]
)
_PSEUDO = 1e-9


# Features per block: the temporaries of one block stay small beside the chunk (a few MB at most).
_BLOCK_FEATURES = 256


def marker_fields(stats: GroupStats) -> dict[str, np.ndarray]:
    """Per (feature, group) of one chunk: score, log2fc, mean_in, mean_out, frac_in, frac_out (float64)."""
    n_features = stats.values["count"].shape[0]
    out = {k: np.empty((n_features, stats.n_groups)) for k in ("score", "log2fc", "mean_out", "frac_out")}
    for start in range(0, n_features, _BLOCK_FEATURES):
        block = slice(start, start + _BLOCK_FEATURES)
        for key, values in _block_fields({s: v[block] for s, v in stats.values.items()}, stats.n_groups).items():
            out[key][block] = values
    return out | {"mean_in": stats.values["mean"], "frac_in": stats.values["frac_expressing"]}


def _block_fields(values: dict[str, np.ndarray], n_groups: int) -> dict[str, np.ndarray]:
    count = values["count"]
    total_sum = values["sum"]
    mean = values["mean"]
    nnz = values["nnz"]
    # Fixed-order sums over groups (never numpy's pairwise reductions, whose blocking varies).
    n_all = np.zeros(count.shape[0])
    sum_all = np.zeros(count.shape[0])
    nnz_all = np.zeros(count.shape[0])
    for g in range(n_groups):
        n_all += count[:, g]
        sum_all += total_sum[:, g]
        nnz_all += nnz[:, g]
    with np.errstate(invalid="ignore", divide="ignore"):
        own_squares = np.where(count > 1, values["var"] * (count - 1), 0.0)
        mean_all = sum_all / n_all
        deviation = np.where(count > 0, mean - mean_all[:, None], 0.0)
        within = np.zeros(count.shape[0])
        between = np.zeros(count.shape[0])
        for g in range(n_groups):
            within += own_squares[:, g]
            between += count[:, g] * deviation[:, g] ** 2
        n_rest = n_all[:, None] - count
        mean_rest = (sum_all[:, None] - total_sum) / n_rest
        # sum over h != g of n_h (m_h - m_rest)^2 = the same about the overall mean, less the rest's own
        rest_between = between[:, None] - count * deviation**2 - n_rest * (mean_rest - mean_all[:, None]) ** 2
        rest_squares = np.maximum(within[:, None] - own_squares + rest_between, 0.0)
        var_rest = np.where(n_rest > 1, rest_squares / (n_rest - 1), np.nan)
        score = (mean - mean_rest) / np.sqrt(values["var"] / count + var_rest / n_rest)
        return {
            "score": np.where(np.isnan(score), 0.0, score),
            "log2fc": np.log2((mean + _PSEUDO) / (mean_rest + _PSEUDO)),
            "mean_out": mean_rest,
            "frac_out": (nnz_all[:, None] - nnz) / n_rest,
        }


def top_candidates(grouping: str, features: list[str], fields: dict[str, np.ndarray], top_n: int) -> pa.Table:
    """The best `top_n` features of each group by score (ties: feature name), as candidate rows."""
    score = fields["score"]
    n_features, n_groups = score.shape
    names = np.array(features, dtype=object)
    by_name = np.argsort(names.astype(str), kind="stable")
    ranked = -score[by_name]  # ascending is best first; NaN sorts last, as in a full sort
    if n_features > top_n:
        # Per group, every feature that can be among its best: all up to the top_n-th score, ties
        # included (a group whose top_n-th score is NaN keeps all). Sorting only those (stably, in
        # name order) gives the same first top_n as sorting every feature.
        threshold = np.partition(ranked, top_n - 1, axis=0)[top_n - 1]
        keep = (ranked <= threshold) | np.isnan(threshold)
    else:
        keep = np.ones_like(ranked, dtype=bool)
    rows, groups = [], []
    for g in range(n_groups):
        near = np.flatnonzero(keep[:, g])
        best = near[np.argsort(ranked[near, g], kind="stable")][:top_n]
        rows.append(by_name[best])
        groups.append(np.full(best.size, g, dtype=np.int32))
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    group = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int32)
    columns = {"grouping": pa.array([grouping] * row.size, pa.string()), "group": pa.array(group), "feature": pa.array(names[row].tolist(), pa.string())}
    columns.update({key: pa.array(np.asarray(fields[key][row, group], dtype=np.float64)) for key in MARKER_FIELDS})
    return pa.table(columns, schema=CANDIDATE_SCHEMA)
