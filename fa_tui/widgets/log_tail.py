"""The end of a worker's log: as many of the last lines as the panel has rows, newest at the
bottom. A tail, not a scrollback (worker.log has it all): it is always at the end, whatever
the panel's size, including zoomed."""
from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.widget import Widget


class LogTail(Widget, can_focus=True):
    DEFAULT_CSS = """
    LogTail { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines: list[str] = []

    def show(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        self.refresh()

    def render(self) -> Text:
        rows = self.content_size.height
        text = Text("\n".join(self.lines[-rows:]) if rows > 0 else "")
        text.no_wrap, text.overflow = True, "ellipsis"
        return text
