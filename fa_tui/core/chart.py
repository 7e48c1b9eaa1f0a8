"""Line charts drawn with braille characters: each text cell holds a 2×4 grid of dots, so a
40-column panel gets 80 horizontal pixels. A plain function from series to Rich text lines,
which keeps the widget trivial and the renderer testable without a terminal.

A chart has round tick values with units on both axes (fa_tui.core.scale), a y range fitted
to the data inside the metric's bounds, an optional zoom, mean ± std bands drawn as a light
fill under their mean line, and a cursor: a highlighted column whose values `readout` lists.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rich.style import Style
from rich.text import Text

from fa_tui.core.downsample import minmax
from fa_tui.core.scale import fit_range, fmt, ticks, zoom

#: bit of the braille dot at (row, column) inside one cell (Unicode braille patterns).
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS = Style(dim=True)
CURSOR = Style(bgcolor="#3a3a3a")
LABEL_W = 7

__all__ = ["Series", "render", "readout", "fmt", "PALETTE", "LAYER_PALETTE", "lighten"]


@dataclass(frozen=True)
class Series:
    """One line; `lo`/`hi` (same length as xs) make it the mean of a band."""
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None


def _finite(xs: Sequence[float], ys: Sequence[float], log_y: bool) -> tuple[list, list]:
    """Drop missing/non-finite points (and non-positive ones on a log axis)."""
    px, py = [], []
    for x, y in zip(xs, ys):
        if y is None or x is None or not math.isfinite(y) or (log_y and y <= 0):
            continue
        px.append(x)
        py.append(math.log10(y) if log_y else y)
    return px, py


@dataclass(frozen=True)
class Frame:
    """The data -> pixel map of one chart: x in [x0, x1] over `pw` pixels, y in [y0, y1]
    over `ph` pixels (y grows downwards on screen)."""
    x0: float
    x1: float
    y0: float
    y1: float
    pw: int
    ph: int

    def px(self, x: float) -> int:
        return round((x - self.x0) / (self.x1 - self.x0) * (self.pw - 1))

    def py(self, y: float) -> int:
        return round((self.y1 - y) / (self.y1 - self.y0) * (self.ph - 1))


def frame(series: Sequence[Series], w: int, h: int, *, log_y: bool = False,
          bounds: tuple[float | None, float | None] = (None, None),
          y_range: tuple[float | None, float | None] = (None, None),
          zoom_by: float = 1.0) -> Frame | None:
    """The axes' ranges for `series` in a plot area of w×h cells: x spans the data; y is
    fitted to the data (bands included) inside `bounds`, then zoomed `zoom_by` times around
    where the curves end; `y_range` pins either end. None when nothing is finite."""
    tr = (lambda v: math.log10(v) if v and v > 0 else None) if log_y else (lambda v: v)
    xs_all, ys_all, ends = [], [], []
    for s in series:
        xs, ys = _finite(s.xs, s.ys, log_y)
        if not xs:
            continue
        xs_all += xs
        ys_all += ys
        ends.append(ys[-1])
        for band in (s.lo, s.hi):
            if band is not None:
                ys_all += _finite(s.xs, band, log_y)[1]
    if not xs_all:
        return None
    lo, hi = (tr(b) if b is not None else None for b in bounds)
    y0, y1 = fit_range(ys_all, lo=lo, hi=hi)
    if zoom_by != 1.0:
        y0, y1 = zoom(y0, y1, zoom_by, sum(ends) / len(ends))
    pin0, pin1 = (tr(v) if v is not None else None for v in y_range)
    y0 = pin0 if pin0 is not None else y0
    y1 = pin1 if pin1 is not None else y1
    if y1 <= y0:
        y1 = y0 + 1.0
    x0, x1 = min(xs_all), max(xs_all)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x0 + 0.5
    return Frame(x0, x1, y0, y1, 2 * w, 4 * h)


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.bits = [[0] * w for _ in range(h)]
        self.ink: list[list[str | None]] = [[None] * w for _ in range(h)]

    def dot(self, px: int, py: int, colour: str) -> None:
        if 0 <= px < 2 * self.w and 0 <= py < 4 * self.h:
            row, col = py // 4, px // 2
            self.bits[row][col] |= DOTS[py % 4][px % 2]
            self.ink[row][col] = colour

    def line(self, pts: Sequence[tuple[int, int]], colour: str) -> None:
        self.dot(*pts[0], colour)
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            n = max(abs(bx - ax), abs(by - ay), 1)
            for k in range(1, n + 1):
                self.dot(round(ax + (bx - ax) * k / n), round(ay + (by - ay) * k / n), colour)

    def fill(self, cols: dict[int, tuple[int, int]], colour: str) -> None:
        """Vertical spans per pixel column, interpolated across the columns in between."""
        keys = sorted(cols)
        for a, b in zip(keys, keys[1:] + keys[-1:]):
            (ta, ba), (tb, bb) = cols[a], cols[b]
            for px in range(a, max(b, a + 1)):
                f = (px - a) / (b - a) if b > a else 0.0
                top, bot = round(ta + (tb - ta) * f), round(ba + (bb - ba) * f)
                for py in range(min(top, bot), max(top, bot) + 1):
                    self.dot(px, py, colour)


def _band_columns(s: Series, fr: Frame, log_y: bool) -> dict[int, tuple[int, int]]:
    cols: dict[int, tuple[int, int]] = {}
    _, lo = _finite(s.xs, s.lo or [], log_y)
    xs, hi = _finite(s.xs, s.hi or [], log_y)
    for x, a, b in zip(xs, lo, hi):
        px, top, bot = fr.px(x), fr.py(b), fr.py(a)
        old = cols.get(px)
        cols[px] = (min(top, old[0]), max(bot, old[1])) if old else (top, bot)
    return cols


def _x_axis(fr: Frame, w: int, x_label: str) -> str:
    """`└`, round x values at their columns, and `x_label` at the right end (room for it is
    kept free when the axis is wide enough to hold it and two values)."""
    cells = [" "] * w
    tag = " " + x_label if x_label else ""
    if len(tag) > w - 8:
        tag = " " + x_label.split(" ")[0]
    room = w - len(tag) if len(tag) <= w - 8 else w
    last_end = -1
    for v in ticks(fr.x0, fr.x1, max(w // 10, 2)):
        label = fmt(v)
        col = fr.px(v) // 2
        start = max(col - len(label) // 2, 0)
        if (last_end >= 0 and start <= last_end + 1) or start + len(label) > room:
            continue
        cells[start:start + len(label)] = label
        last_end = start + len(label) - 1
    if room < w:
        cells[room:] = tag
    return " " * LABEL_W + "└" + "".join(cells)


def y_ticks(fr: Frame, n: int, log_y: bool) -> list[float]:
    """Round y values (in plot units): on a log axis whole decades when the axis spans two
    or more, else round values of the data (1, 1.5, 2 …) placed at their logarithm."""
    if not log_y:
        return ticks(fr.y0, fr.y1, n)
    decades = [float(k) for k in range(math.ceil(fr.y0 - 1e-9), math.floor(fr.y1 + 1e-9) + 1)]
    if len(decades) >= 3 or (len(decades) == 2 and n <= 2):
        return decades
    return [math.log10(v) for v in ticks(10 ** fr.y0, 10 ** fr.y1, n) if v > 0]


def render(series: Sequence[Series], width: int, height: int, *, log_y: bool = False,
           y_range: tuple[float | None, float | None] = (None, None),
           bounds: tuple[float | None, float | None] = (None, None), zoom_by: float = 1.0,
           x_label: str = "", y_suffix: str = "", cursor: float | None = None,
           empty: str = "no data yet") -> list[Text]:
    """`height` lines of at most `width` cells: y tick labels (with `y_suffix`), the plot,
    and an x axis with round values and `x_label`. Bands are filled first (a lighter shade),
    lines drawn over them; where two lines cross, the one drawn last wins. `cursor` (an x
    value) highlights its column."""
    w, h = max(width - LABEL_W - 1, 2), max(height - 1, 1)
    fr = frame(series, w, h, log_y=log_y, bounds=bounds, y_range=y_range, zoom_by=zoom_by)
    if fr is None:
        return [Text(empty.center(width), style=AXIS)] + [Text("")] * (height - 1)
    canvas = _Canvas(w, h)
    for s in series:
        if s.lo is not None and s.hi is not None:
            cols = _band_columns(s, fr, log_y)
            if cols:
                canvas.fill(cols, lighten(s.colour, 0.6))
    for s in series:
        xs, ys = _finite(s.xs, s.ys, log_y)
        if xs:
            xs, ys = minmax(xs, ys, 2 * w)
            canvas.line([(fr.px(x), fr.py(y)) for x, y in zip(xs, ys)], s.colour)

    tick_rows: dict[int, float] = {}
    for v in y_ticks(fr, max(h // 2, 2), log_y):
        tick_rows.setdefault(fr.py(v) // 4, v)
    cursor_col = fr.px(cursor) // 2 if cursor is not None and fr.x0 <= cursor <= fr.x1 else None
    lines = []
    for r in range(h):
        tick = tick_rows.get(r)
        label = fmt(10 ** tick if log_y else tick, y_suffix) if tick is not None else ""
        line = Text()
        line.append(label.rjust(LABEL_W - 1)[-(LABEL_W - 1):] + " ", AXIS)
        line.append("┤" if tick is not None else "│", style=AXIS)
        for c in range(w):
            bits, ink = canvas.bits[r][c], canvas.ink[r][c]
            style = Style(color=ink) if ink else None
            if c == cursor_col:
                style = style + CURSOR if style else CURSOR
            line.append(chr(0x2800 + bits) if bits else " ", style)
        lines.append(line)
    lines.append(Text(_x_axis(fr, w, x_label)[:width], style=AXIS))
    return lines


def readout(series: Sequence[Series], x: float) -> list[tuple[Series, float, float]]:
    """(series, x, y) of each series' point nearest to `x` (missing values skipped): what the
    cursor reads."""
    out = []
    for s in series:
        pts = [(px, py) for px, py in zip(s.xs, s.ys)
               if py is not None and px is not None and math.isfinite(py)]
        if pts:
            px, py = min(pts, key=lambda p: abs(p[0] - x))
            out.append((s, px, py))
    return out


#: Tableau 10 for runs: distinct hues that stay distinct after a 256-colour downgrade.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
           "#edc948", "#76b7b2", "#ff9da7", "#9c755f", "#bab0ac")
#: layers, shallow to deep: a sequential ramp (plasma, without its darkest third, which
#: vanishes on a dark terminal) so depth reads as order, and no hue of it is a run colour.
LAYER_PALETTE = ("#8b0aa5", "#a82296", "#c13b82", "#d8576b", "#ed7953", "#fb9f3a",
                 "#fdca26", "#f0f921")


def layer_colour(i: int, n: int) -> str:
    """Colour of layer i of n: spread over the ramp so 3 layers are as far apart as 8."""
    if n <= 1:
        return LAYER_PALETTE[2]
    k = round(i * (len(LAYER_PALETTE) - 1) / (n - 1)) if n <= len(LAYER_PALETTE) else i
    return LAYER_PALETTE[k % len(LAYER_PALETTE)]


def lighten(colour: str, f: float = 0.45) -> str:
    """`colour` mixed with white: the same run's second curve (val next to train)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * f):02x}" for c in (r, g, b))
