"""The statistics the benchmarks report: nearest-rank percentiles and a distribution-free confidence
interval for a median (of the per-round ratios the comparisons take)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def median_ci95(values: Sequence[float]) -> tuple[float, float]:
    """A distribution-free confidence interval (at least 95%) for the median of `values`: the order
    statistics whose ranks a Binomial(n, 1/2) count falls between with that probability. With fewer
    than 6 values no such pair exists and the whole range is returned."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return (0.0, 0.0)
    low = 0  # the largest low with P(low < B < n - low) >= 0.95, B ~ Binomial(n, 1/2)
    for candidate in range(n // 2):
        tail = sum(math.comb(n, i) for i in range(candidate + 1)) / 2**n
        if 1 - 2 * tail < 0.95:
            break
        low = candidate + 1
    if low == 0:
        return (ordered[0], ordered[-1])
    return (ordered[low - 1], ordered[n - low])
