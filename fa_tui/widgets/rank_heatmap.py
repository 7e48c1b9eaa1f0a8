"""Per-layer rank of the error signal over time, rule above BP, as heatmap strips on one
colour scale (fa_tui.core.heatmap), with each layer's latest value at the right."""
from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.text import Text
from textual.widget import Widget

from fa_tui.core.heatmap import colour_bar, heatmap, value_range


def _latest(row: Sequence[float | None]) -> str:
    v = next((v for v in reversed(row) if v is not None), None)
    return "–" if v is None else f"{v:.3g}"


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

    def show(self, metric: str, layers: Sequence[str], steps: Sequence[int],
             blocks: Sequence[tuple[str, list[list[float | None]]]], subtitle: str = "") -> None:
        """`blocks`: (label, one row per layer) pairs, e.g. ("rule", …), ("BP", …)."""
        self.border_title = metric
        self.border_subtitle = subtitle
        self.layer_names, self.steps, self.blocks = list(layers), list(steps), list(blocks)
        self.refresh()

    def render(self) -> Group:
        width = self.content_size.width
        if not self.steps:
            return Group(Text("no diagnostics yet (metrics.every = 0 turns them off)", "dim"))
        name_w = min(max(len(n) for n in self.layer_names), 14)
        value_w = 6
        strip_w = max(width - name_w - value_w - 2, 4)
        lo, hi = value_range([row for _, rows in self.blocks for row in rows])
        lines: list[Text] = []
        for label, rows in self.blocks:
            lines.append(Text(f"{label}  steps {self.steps[0]}–{self.steps[-1]}", "bold"))
            for name, row, strip in zip(self.layer_names, rows, heatmap(rows, strip_w, lo, hi)):
                line = Text(name[-name_w:].rjust(name_w) + " ", "dim")
                line.append_text(strip)
                line.append(" " * (strip_w - len(strip) + 1) + _latest(row).rjust(value_w - 1))
                lines.append(line)
        lines.append(colour_bar(lo, hi, min(width, 40)))
        return Group(*lines)
