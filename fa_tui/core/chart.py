"""Line charts drawn with braille characters: each text cell holds a 2×4 grid of dots, so a
40-column panel gets 80 horizontal pixels. A plain function from series to Rich text lines,
which keeps the widget trivial and the renderer testable without a terminal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rich.style import Style
from rich.text import Text

from fa_tui.core.downsample import minmax

#: bit of the braille dot at (row, column) inside one cell (Unicode braille patterns).
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS = Style(dim=True)


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str


def fmt(v: float) -> str:
    """A tick label in at most 6 characters."""
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.4g}"[:6].rstrip(".")


def _finite(xs: Sequence[float], ys: Sequence[float], log_y: bool) -> tuple[list, list]:
    """Drop missing/non-finite points (and non-positive ones on a log axis)."""
    px, py = [], []
    for x, y in zip(xs, ys):
        if y is None or not math.isfinite(y) or (log_y and y <= 0):
            continue
        px.append(x)
        py.append(math.log10(y) if log_y else y)
    return px, py


def render(series: Sequence[Series], width: int, height: int, *, log_y: bool = False,
           y_range: tuple[float | None, float | None] = (None, None)) -> list[Text]:
    """`height` lines of at most `width` cells: y tick labels, the plot, and an x axis
    labelled with the first and last x. `y_range` pins either end of the y axis (in data
    units); the rest follows the data. Lines are drawn in their series' colour; where two
    cross, the one drawn last wins."""
    label_w = 7
    w, h = max(width - label_w - 1, 2), max(height - 1, 1)
    data = [(s, *_finite(s.xs, s.ys, log_y)) for s in series]
    data = [(s, *minmax(xs, ys, 2 * w)) for s, xs, ys in data if xs]
    if not data:
        return [Text("no data yet".center(width), style=AXIS)] + [Text("")] * (height - 1)

    x0 = min(min(xs) for _, xs, _ in data)
    x1 = max(max(xs) for _, xs, _ in data)
    pin = [math.log10(v) if (log_y and v) else v for v in y_range]
    y0 = pin[0] if pin[0] is not None else min(min(ys) for _, _, ys in data)
    y1 = pin[1] if pin[1] is not None else max(max(ys) for _, _, ys in data)
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 <= x0:
        x1 = x0 + 1

    bits = [[0] * w for _ in range(h)]
    ink: list[list[str | None]] = [[None] * w for _ in range(h)]

    def dot(px: int, py: int, colour: str) -> None:
        if 0 <= px < 2 * w and 0 <= py < 4 * h:
            row, col = py // 4, px // 2
            bits[row][col] |= DOTS[py % 4][px % 2]
            ink[row][col] = colour

    for s, xs, ys in data:
        pts = [(round((x - x0) / (x1 - x0) * (2 * w - 1)),
                round((y1 - y) / (y1 - y0) * (4 * h - 1))) for x, y in zip(xs, ys)]
        dot(*pts[0], s.colour)
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            n = max(abs(bx - ax), abs(by - ay), 1)
            for k in range(1, n + 1):
                dot(round(ax + (bx - ax) * k / n), round(ay + (by - ay) * k / n), s.colour)

    ticks = {0: y1, h - 1: y0}
    if h >= 5:
        ticks[h // 2] = (y0 + y1) / 2
    lines = []
    for r in range(h):
        tick = ticks.get(r)
        label = fmt(10 ** tick if log_y else tick) if tick is not None else ""
        line = Text()
        line.append(label.rjust(label_w - 1)[: label_w - 1] + " ", AXIS)
        line.append("┤" if tick is not None else "│", style=AXIS)
        for c in range(w):
            line.append(chr(0x2800 + bits[r][c]) if bits[r][c] else " ",
                        Style(color=ink[r][c]) if ink[r][c] else None)
        lines.append(line)
    left, right = fmt(x0), fmt(x1)
    axis = " " * label_w + "└" + left + right.rjust(max(w - len(left), len(right) + 1))
    lines.append(Text(axis[:width], style=AXIS))
    return lines


#: Tableau 10: distinct hues that stay distinct after a 256-colour downgrade.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
           "#edc948", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac")


def lighten(colour: str, f: float = 0.45) -> str:
    """`colour` mixed with white: the same run's second curve (val next to train)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * f):02x}" for c in (r, g, b))
