"""The key reference, generated from the BINDINGS of the app and of every screen, so it can
never fall out of date."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Static

EXTRA = {
    "Everywhere": [("ctrl+p", "command palette: every screen and action by name"),
                   ("tab / shift+tab", "move between fields and panels"),
                   ("ctrl+q", "quit (runs keep running)")],
    "Runs": [("↑ ↓ pgup pgdn", "move the cursor")],
}


def key_table(sections: dict[str, list[Binding]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for title, bindings in sections.items():
        table.add_row(Text(title, "bold underline"), "")
        for b in bindings:
            keys = " / ".join(format_key(k.strip()) for k in b.key.split(","))
            table.add_row(keys, b.description or b.action)
        for key, what in EXTRA.get(title, []):
            table.add_row(key, what)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, sections: dict[str, list[Binding]]) -> None:
        super().__init__(classes="dialog")
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("Keys", classes="title")
            yield Static(key_table(self.sections))
