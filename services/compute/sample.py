"""A density-aware subsample of the embedding: at most K points that a browser draws at once. No I/O.

Uniform sampling of a million-cell UMAP keeps the dense clouds and loses the sparse regions and the
small groups, which are what one looks for. Here:

1. Every group of every grouping keeps up to `per_group` of its cells (K / (10 x all groups), at
   least 1, at most 100): a group of 3 cells is in the sample whatever its size.
2. The rest of the budget is shared among the cells of a 128 x 128 grid over the first two
   coordinates (halved until the budget has a point for every occupied grid cell) by water-filling: every grid cell keeps min(its points, t), t the largest cap that
   fits, and the points left over go to the fullest grid cells. Sparse regions keep every point;
   dense ones are thinned to the same ceiling.
3. Which points a group or a grid cell keeps is decided by one pseudo-random priority per point,
   seeded by the version: the same sample on every run and executor.

Each kept point carries a weight, the cells of its grid cell over the points kept there, so that
densities drawn from the sample are the full embedding's (the weights sum to the cells with
coordinates). Cells without coordinates (a blank in the metadata) are never sampled.
"""

from __future__ import annotations

import numpy as np

GRID = 128


def sample_embedding(coordinates: np.ndarray, group_codes: list[np.ndarray], size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (ascending, int64) of at most `size` sampled cells and their weights (float64)."""
    valid = np.flatnonzero(~np.isnan(coordinates).any(axis=1))
    n = valid.size
    if n == 0 or size <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    if n <= size:
        return valid.astype(np.int64), np.ones(n, dtype=np.float64)
    xy = coordinates[valid, :2]
    priority = np.random.default_rng(seed).random(n)
    kept = np.zeros(n, dtype=bool)

    # 1. small groups: the lowest priorities of each group, up to per_group cells
    n_groups_total = sum(int(codes.max()) + 1 for codes in group_codes if codes.size)
    per_group = int(min(100, max(1, size // (10 * max(1, n_groups_total)))))
    for codes in group_codes:
        c = codes[valid]
        order = np.lexsort((priority, c))
        starts = np.searchsorted(c[order], c[order], side="left")
        rank = np.arange(n) - starts
        kept[order[rank < per_group]] = True
    if kept.sum() > size:  # more groups than the budget: the lowest priorities of the reserved
        reserved = np.flatnonzero(kept)
        kept[:] = False
        kept[reserved[np.argsort(priority[reserved], kind="stable")[:size]]] = True
    budget = size - int(kept.sum())

    # The grid: 128 x 128, coarser while it has more occupied cells than the budget can give a point
    # each (so that every occupied grid cell keeps one and the weights add up to the cells).
    lows = xy.min(axis=0)
    spans = xy.max(axis=0) - lows
    spans[spans == 0] = 1.0
    unit = np.minimum((xy - lows) / spans, 1 - 1e-12)
    width = GRID
    while True:
        bins = (unit * width).astype(np.int64)
        grid = bins[:, 0] * width + (bins[:, 1] if xy.shape[1] > 1 else 0)
        grid_counts = np.bincount(grid, minlength=width * width)
        with_rest = np.count_nonzero(grid_counts - np.bincount(grid[kept], minlength=width * width))
        if width == 1 or with_rest <= budget:  # water-filling then keeps at least one of each
            break
        width //= 2

    # 2. water-fill the rest of the budget over the grid
    rest = np.flatnonzero(~kept)
    if budget > 0 and rest.size:
        g = grid[rest]
        order = np.lexsort((priority[rest], g))
        sorted_g = g[order]
        rank = np.arange(rest.size) - np.searchsorted(sorted_g, sorted_g, side="left")
        counts = np.bincount(g, minlength=width * width)
        low, high = 0, int(counts.max())
        while low < high:  # the largest cap t with sum(min(counts, t)) <= budget
            mid = (low + high + 1) // 2
            if np.minimum(counts, mid).sum() <= budget:
                low = mid
            else:
                high = mid - 1
        take = rank < low
        left = budget - int(take.sum())
        if left > 0:
            # one more point in as many of the fuller grid cells as the budget allows, by priority
            next_in_line = np.flatnonzero(rank == low)
            take[next_in_line[np.argsort(priority[rest][order][next_in_line], kind="stable")[:left]]] = True
        kept[rest[order[take]]] = True

    chosen = np.flatnonzero(kept)
    kept_per_grid = np.bincount(grid[chosen], minlength=width * width)
    weights = grid_counts[grid[chosen]] / kept_per_grid[grid[chosen]]
    # a grid cell left without a point (only when the budget is below the occupied cells of the
    # coarsest grid): its cells are spread over all points, so the weights still add up
    weights *= n / weights.sum()
    return valid[chosen].astype(np.int64), weights.astype(np.float64)
