"""The live run table: a DataTable that is updated in place, cell by cell, so the cursor,
the scroll position and the marks survive the twice-a-second refresh."""
from __future__ import annotations

from typing import Sequence

from textual import events
from textual.widgets import DataTable

from fa_tui.core.runtable import COLUMNS, FROZEN_COLUMNS, RunRow, cells


class RunTable(DataTable):
    """Rows keyed by run name; `marked` is the multi-selection used by Monitor, stop, export."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, fixed_columns=FROZEN_COLUMNS,
                         **kwargs)
        self.marked: set[str] = set()
        self._rows: dict[str, RunRow] = {}
        self._shown: dict[str, list] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    async def _on_idle(self, event: events.Idle) -> None:
        """DataTable measures new rows' columns on its idle message but keeps the row lines
        it drew before then, keyed by its update count: on a loaded machine a frame drawn
        between `add_row` and idle leaves every row cut to the header's widths until a cell
        changes (CI caught it on fixed runs, which never change). A new count after the
        measurement redraws the rows at their measured widths."""
        pending = self._require_update_dimensions
        await super()._on_idle(event)
        if pending:
            self._update_count += 1
            self.refresh()

    @property
    def cursor_name(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def selection(self) -> list[str]:
        """The marked runs still shown, else the run under the cursor."""
        marked = [name for name in self._rows if name in self.marked]
        return marked or ([self.cursor_name] if self.cursor_name else [])

    def row(self, name: str) -> RunRow | None:
        return self._rows.get(name)

    def show(self, rows: Sequence[RunRow]) -> None:
        """Display exactly `rows`, in this order: cells are updated in place when the order
        is unchanged, and the table is rebuilt (keeping the cursor on its run) otherwise."""
        self._rows = {r.name: r for r in rows}
        new = {r.name: cells(r, r.name in self.marked) for r in rows}
        if list(new) == list(self._shown):
            for name, values in new.items():
                for (key, _), old, value in zip(COLUMNS, self._shown[name], values):
                    if old != value:
                        self.update_cell(name, key, value)
        else:
            current = self.cursor_name
            self.clear()
            for name, values in new.items():
                self.add_row(*values, key=name)
            if current in new:
                self.move_cursor(row=list(new).index(current), animate=False)
        self._shown = new

    def action_select_cursor(self) -> None:
        """Enter on an empty table would do nothing: let the screen say why instead."""
        if not self.row_count:
            self.call_later(self.run_action, "screen.monitor")
        else:
            super().action_select_cursor()

    def toggle_mark(self, name: str) -> None:
        """Flip one run's mark; the tick column follows on the next `show`."""
        self.marked ^= {name}
