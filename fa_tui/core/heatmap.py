"""Heatmap strips: one text row per layer, one column per moment in time, colour = value.

A strip answers "when did this layer's error signal collapse?" at a glance, which a table of
numbers does not. Missing values (a metric that does not apply, NaN) are left blank rather
than coloured as zero, so "no data" never reads as "rank 0".
"""
from __future__ import annotations

import math
from typing import Sequence

from rich.style import Style
from rich.text import Text

from fa_tui.core.downsample import bucket_means

#: viridis at five stops: perceptually ordered, readable for colour-blind users, and its
#: 256-colour approximation (tmux, old terminals) keeps the order.
STOPS: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def _missing(v: float | None) -> bool:
    return v is None or not math.isfinite(v)


def colour(value: float, lo: float, hi: float) -> str:
    """Hex colour of `value` on the scale [lo, hi] (clamped; a flat scale maps to its middle)."""
    f = 0.5 if hi <= lo else min(max((value - lo) / (hi - lo), 0.0), 1.0)
    pos = f * (len(STOPS) - 1)
    i = min(int(pos), len(STOPS) - 2)
    t = pos - i
    r, g, b = (round(a + (c - a) * t) for a, c in zip(STOPS[i], STOPS[i + 1]))
    return f"#{r:02x}{g:02x}{b:02x}"


def value_range(rows: Sequence[Sequence[float | None]]) -> tuple[float, float]:
    """(min, max) over every present value, (0, 1) when there is none."""
    vals = [v for row in rows for v in row if not _missing(v)]
    return (min(vals), max(vals)) if vals else (0.0, 1.0)


def strip(values: Sequence[float | None], width: int, lo: float, hi: float) -> Text:
    """One row: `values` squeezed into at most `width` cells (bucket means) or, when there
    are few, each widened to the same whole number of cells; a cell is a blank whose
    background is the value's colour, and a missing value stays an unstyled blank."""
    width = max(width, 1)
    cells = bucket_means(values, width)
    repeat = max(width // max(len(cells), 1), 1)
    text = Text()
    for v in cells:
        text.append(" " * repeat, None if _missing(v) else Style(bgcolor=colour(v, lo, hi)))
    return text


def heatmap(rows: Sequence[Sequence[float | None]], width: int,
            lo: float | None = None, hi: float | None = None) -> list[Text]:
    """One strip per row on one shared scale (so rows compare), by default the data's range."""
    dlo, dhi = value_range(rows)
    lo = dlo if lo is None else lo
    hi = dhi if hi is None else hi
    return [strip(row, width, lo, hi) for row in rows]


def colour_bar(lo: float, hi: float, width: int) -> Text:
    """The scale as a legend: `lo ▕colours▏ hi`."""
    left, right = f"{lo:.3g} ", f" {hi:.3g}"
    n = max(width - len(left) - len(right), 2)
    text = Text(left)
    for k in range(n):
        text.append(" ", Style(bgcolor=colour(lo + (hi - lo) * k / (n - 1), lo, hi)))
    text.append(right)
    return text
