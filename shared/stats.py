"""The per-group statistics: one name list used by the kernel, the layout and the API alike."""

from __future__ import annotations

from typing import Literal, get_args

Stat = Literal[
    "count",
    "nnz",
    "sum",
    "mean",
    "var",
    "min",
    "max",
    "median",
    "q1",
    "q3",
    "frac_expressing",
    "mean_expressing",
]
STATS: tuple[Stat, ...] = get_args(Stat)
