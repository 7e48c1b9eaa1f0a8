"""Shrink a curve to the number of columns that will show it, without hiding spikes.

A terminal chart has a few dozen columns; a long run has thousands of points. Averaging or
striding would hide exactly what one looks for (a loss spike, a collapse of the rank), so each
bucket keeps its minimum and its maximum, in x order.
"""
from __future__ import annotations

from typing import Sequence


def minmax(xs: Sequence[float], ys: Sequence[float], n: int) -> tuple[list[float], list[float]]:
    """At most `n` points of (xs, ys): per bucket of consecutive points, the lowest and the
    highest, in their original order, so the global extremes always survive."""
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} != {len(ys)}")
    if len(xs) <= n:
        return list(xs), list(ys)
    if n < 2:
        return ([xs[0]], [ys[0]]) if n == 1 else ([], [])
    buckets = n // 2
    size = len(xs) / buckets
    keep: list[int] = []
    for b in range(buckets):
        idx = range(int(b * size), int((b + 1) * size))
        keep += sorted({min(idx, key=ys.__getitem__), max(idx, key=ys.__getitem__)})
    return [xs[i] for i in keep], [ys[i] for i in keep]


def bucket_means(values: Sequence[float | None], n: int) -> list[float | None]:
    """`values` squeezed into at most `n` columns, each the mean of its bucket's non-missing
    values (None when the whole bucket is missing). Used for heatmap strips, whose colour
    already shows the level, so a mean is the honest summary of a column."""
    if len(values) <= n:
        return list(values)
    size = len(values) / n
    out: list[float | None] = []
    for b in range(n):
        chunk = [v for v in values[int(b * size):int((b + 1) * size)] if v is not None and v == v]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out
