"""Per-layer rank of the error signal over time, rule and exact BP side by side on one scale.

Two views (`h` in Monitor): heatmap strips (fa_tui.core.heatmap; one row per layer, time to
the right, each layer's latest value at the end) as the overview, or per-layer lines
(fa_tui.core.chart, layer palette) that can be read off. Side by side rather than stacked so
that at 80×24 the BP rows are never cut off."""
from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.text import Text
from textual.widget import Widget

from fa_tui.core.chart import Series, render
from fa_tui.core.heatmap import colour_bar, heatmap, value_range
from fa_tui.core.scale import fit_range
from fa_tui.core.panels import series_legend


def _latest(row: Sequence[float | None]) -> str:
    v = next((v for v in reversed(row) if v is not None), None)
    return "–" if v is None else f"{v:.3g}"


def side_by_side(left: list[Text], right: list[Text], left_w: int, gap: int = 1) -> list[Text]:
    """Two blocks of lines as columns: `left` padded to `left_w` cells."""
    out = []
    for i in range(max(len(left), len(right))):
        line = left[i].copy() if i < len(left) else Text()
        line.truncate(left_w, pad=True)
        line.append(" " * gap)
        if i < len(right):
            line.append_text(right[i])
        out.append(line)
    return out


class RankHeatmap(Widget, can_focus=True):
    DEFAULT_CSS = """
    RankHeatmap { height: 1fr; overflow-y: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "rank"
        self.layer_names: list[str] = []
        self.blocks: list[tuple[str, list[list[float | None]]]] = []
        self.steps: list[int] = []
        self.lines: tuple[list[Series], list[Series]] | None = None
        self.x_label = ""

    def show(self, metric: str, layers: Sequence[str], steps: Sequence[int],
             blocks: Sequence[tuple[str, list[list[float | None]]]], subtitle: str = "",
             lines: tuple[list[Series], list[Series]] | None = None, x_label: str = "") -> None:
        """`blocks`: (label, one row per layer) pairs, ("rule", …) and ("BP", …); `lines`:
        (rule series, BP series) to draw lines instead of the heatmap."""
        self.border_title = metric
        self.border_subtitle = subtitle
        self.layer_names, self.steps, self.blocks = list(layers), list(steps), list(blocks)
        self.lines, self.x_label = lines, x_label
        self.refresh()

    def render(self) -> Group:
        width, height = self.content_size
        if not self.steps:
            return Group(Text("no diagnostics yet (metrics.every = 0 turns them off)", "dim"))
        if self.lines is not None:
            return Group(*self._render_lines(width, height))
        return Group(*self._render_heatmap(width))

    def _render_lines(self, width: int, height: int) -> list[Text]:
        rule, bp = self.lines
        y0, y1 = fit_range([y for s in rule + bp for y in s.ys], lo=0.0)
        half = (width - 1) // 2 if bp else width
        opts = dict(y_range=(y0, y1), x_label=self.x_label)
        left = [Text("rule", "bold")] + render(rule, half, height - 2, **opts)
        if not bp:
            return left + [series_legend(rule)]
        right = [Text("BP (same batch)", "bold")] + render(bp, width - half - 1, height - 2,
                                                           **opts)
        return side_by_side(left, right, half) + [series_legend(rule)]

    def _render_heatmap(self, width: int) -> list[Text]:
        name_w = min(max(len(n) for n in self.layer_names), 10)
        value_w = 6
        n = len(self.blocks)
        block_w = max((width - name_w - 1) // n - 1, value_w + 3)
        strip_w = block_w - value_w
        lo, hi = value_range([row for _, rows in self.blocks for row in rows])
        columns = []
        for label, rows in self.blocks:
            col = [Text(label, "bold")]
            for row, strip in zip(rows, heatmap(rows, strip_w, lo, hi)):
                line = strip.copy()
                line.append(" " * (strip_w - len(strip)) + _latest(row).rjust(value_w))
                col.append(line)
            columns.append(col)
        names = [Text(" " * name_w)] + [Text(nm[-name_w:].rjust(name_w), "dim")
                                       for nm in self.layer_names]
        lines = names
        used = name_w
        for col in columns:
            lines = side_by_side(lines, col, used)
            used += 1 + block_w
        lines.append(Text(f"steps {self.steps[0]}–{self.steps[-1]}  ", "dim")
                     + colour_bar(lo, hi, min(width - 20, 40)))
        return lines
