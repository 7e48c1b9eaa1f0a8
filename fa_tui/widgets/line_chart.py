"""A focusable panel holding one braille line chart (fa_tui.core.chart) and its legend.

Data is handed over with `plot()`; drawing happens in `render()`, which Textual calls at most
once per frame and again on resize, so the curves always fit the panel's current width."""
from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.text import Text
from textual.widget import Widget

from fa_tui.core.chart import Series, render


class LineChart(Widget, can_focus=True):
    DEFAULT_CSS = """
    LineChart { height: 1fr; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = title
        self.series: list[Series] = []
        self.log_y = False
        self.y_range: tuple[float | None, float | None] = (None, None)
        self.legend: Text | None = None

    def plot(self, series: Sequence[Series], *, log_y: bool = False, subtitle: str = "",
             y_range: tuple[float | None, float | None] = (None, None),
             legend: Text | None = None) -> None:
        self.series, self.log_y, self.y_range, self.legend = list(series), log_y, y_range, legend
        self.border_subtitle = subtitle + (" · log" if log_y else "")
        self.refresh()

    def render(self) -> Group:
        width, height = self.content_size
        lines = [self.legend] if self.legend is not None else []
        lines += render(self.series, width, height - len(lines), log_y=self.log_y,
                        y_range=self.y_range)
        for line in lines:
            line.no_wrap, line.overflow = True, "crop"
        return Group(*lines)
