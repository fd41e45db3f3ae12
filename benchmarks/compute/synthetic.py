"""A synthetic column chunk like single-cell data: log-normalised counts (many ties), uneven groups."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def make_group_codes(n_cells: int, n_groups: int, seed: int = 0) -> np.ndarray:
    """Group codes with uneven sizes (a Zipf-like spread, largest about 20x the smallest)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_groups + 1) ** 0.9
    sizes = np.floor(weights / weights.sum() * n_cells).astype(np.int64)
    sizes[0] += n_cells - sizes.sum()
    codes = np.repeat(np.arange(n_groups, dtype=np.int32), sizes)
    rng.shuffle(codes)
    return codes


def make_chunk(
    n_cells: int, n_features: int, density: float, group_codes: np.ndarray, seed: int = 0
) -> sp.csc_array:
    """A cells x features float32 CSC chunk with mean density `density`.

    Each feature has its own density (Beta spread around the mean) modulated per group (marker-like);
    values are log1p(count * 1e4 / library size) with small integer counts and library sizes on 200
    levels, so a column holds many tied values.
    """
    rng = np.random.default_rng(seed + 1)
    n_groups = int(group_codes.max()) + 1
    concentration = 2.0
    p_feature = rng.beta(density * concentration, (1 - density) * concentration, size=n_features)
    p_feature *= density / p_feature.mean()
    group_factor = rng.lognormal(0.0, 0.5, size=(n_features, n_groups))
    library = np.round(rng.lognormal(np.log(5000), 0.4, size=n_cells), -1).astype(np.float32)
    library_levels = np.quantile(library, np.linspace(0, 1, 200)).astype(np.float32)
    library = library_levels[np.searchsorted(library_levels, library).clip(0, 199)]
    scale = (1e4 / library).astype(np.float32)
    indptr = np.zeros(n_features + 1, dtype=np.int64)
    rows_parts: list[np.ndarray] = []
    vals_parts: list[np.ndarray] = []
    for j in range(n_features):
        p = np.clip(p_feature[j] * group_factor[j], 0.0, 0.98).astype(np.float32)[group_codes]
        rows = np.flatnonzero(rng.random(n_cells, dtype=np.float32) < p).astype(np.int32)
        counts = rng.geometric(0.55, size=rows.size).astype(np.float32)
        rows_parts.append(rows)
        vals_parts.append(np.log1p(counts * scale[rows]).astype(np.float32))
        indptr[j + 1] = indptr[j] + rows.size
    indices = np.concatenate(rows_parts)
    data = np.concatenate(vals_parts)
    return sp.csc_array((data, indices, indptr.astype(np.int32)), shape=(n_cells, n_features))
