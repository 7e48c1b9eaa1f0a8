"""A focusable panel holding one braille line chart (fa_tui.core.chart), its legend and,
when the cursor is on, the values every series has at the cursor.

Data is handed over with `plot()`; drawing happens in `render()`, which Textual calls at most
once per frame and again on resize, so the curves always fit the panel's current width."""
from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.text import Text
from textual.widget import Widget

from fa_tui.core.chart import Series, readout, render
from fa_tui.core.scale import fmt


def readout_text(series: Sequence[Series], x: float, x_label: str, suffix: str) -> Text:
    """`step 15 │ fa-mlp train 62.3% │ bp-mlp train 70.1%`: what the cursor reads."""
    text = Text(f"{x_label.split(' (')[0]} {fmt(x)}", "bold")
    for s, _, y in readout(series, x):
        text.append(" │ ", "dim")
        text.append(s.label + " ", s.colour)
        text.append(fmt(y, suffix))
    return text


class LineChart(Widget, can_focus=True):
    DEFAULT_CSS = """
    LineChart { height: 1fr; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = title
        self.series: list[Series] = []
        self.options: dict = {}
        self.legend: Text | None = None
        self.cursor: float | None = None

    def plot(self, series: Sequence[Series], *, log_y: bool = False, subtitle: str = "",
             y_range: tuple[float | None, float | None] = (None, None),
             bounds: tuple[float | None, float | None] = (None, None), zoom_by: float = 1.0,
             x_label: str = "", y_suffix: str = "", cursor: float | None = None,
             legend: Text | None = None, empty: str = "no data yet") -> None:
        self.series, self.legend, self.cursor = list(series), legend, cursor
        self.options = dict(log_y=log_y, y_range=y_range, bounds=bounds, zoom_by=zoom_by,
                            x_label=x_label, y_suffix=y_suffix, cursor=cursor, empty=empty)
        self.border_subtitle = subtitle + (" · log" if log_y else "") + (
            f" · zoom ×{zoom_by:g}" if zoom_by != 1 else "")
        self.refresh()

    def render(self) -> Group:
        width, height = self.content_size
        lines = [self.legend] if self.legend is not None else []
        if self.cursor is not None and self.series:
            lines.append(readout_text(self.series, self.cursor, self.options["x_label"],
                                      self.options["y_suffix"]))
        lines += render(self.series, width, height - len(lines), **self.options)
        for line in lines:
            line.no_wrap, line.overflow = True, "crop"
        return Group(*lines)
