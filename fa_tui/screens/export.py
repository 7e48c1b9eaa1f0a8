"""The export dialog: the selected runs as a summary table (grouped over seeds or one row per
run), as curves, or as a plot — the same outputs as `fa-tui export`, from fa_tui.export."""
from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from fa_contract.rundir import RunDir
from fa_tui import export

WHAT = (("summary, mean ± std over seeds", "grouped"), ("summary, one row per run", "runs"),
        ("curves: every event", "curves"), ("plot (png, svg or pdf)", "plot"))


class ExportScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "export", "Export")]

    def __init__(self, runs: list[RunDir]) -> None:
        super().__init__(classes="dialog")
        self.runs = runs

    def compose(self) -> ComposeResult:
        names = ", ".join(r.name for r in self.runs[:3]) + (" …" if len(self.runs) > 3 else "")
        with Vertical():
            yield Static(f"Export {len(self.runs)} run(s): {names}", classes="title")
            with Horizontal(classes="row"):
                yield Label("what")
                yield Select(WHAT, value="grouped", allow_blank=False, compact=True, id="what")
            with Horizontal(classes="row"):
                yield Label("format")
                yield Select([(f, f) for f in export.FORMATS], value="md", allow_blank=False,
                             compact=True, id="format")
            with Horizontal(classes="row"):
                yield Label("file")
                yield Input(self._default_path(), compact=True, id="path")
            yield Static("relative to the directory fa-tui was started in", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Export (ctrl+s)", variant="primary", id="export")
                yield Button("Cancel (esc)", id="cancel")

    def _default_path(self, what: str = "grouped", fmt: str = "md") -> str:
        stem = self.runs[0].name if len(self.runs) == 1 else f"{len(self.runs)}-runs"
        kind = "curves" if what == "curves" else "plot" if what == "plot" else "summary"
        return f"{stem}-{kind}.{'png' if what == 'plot' else fmt}"

    @on(Select.Changed)
    def _choice(self) -> None:
        """Follow the choices with the file name, unless the user typed their own."""
        what, fmt = self.query_one("#what", Select).value, self.query_one("#format", Select).value
        self.query_one("#format", Select).disabled = what == "plot"
        path = self.query_one("#path", Input)
        defaults = {self._default_path(w, f) for _, w in WHAT for f in export.FORMATS}
        if path.value in defaults:
            path.value = self._default_path(what, fmt)

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        self.run_action(event.button.id)

    @on(Input.Submitted)
    def action_export(self) -> None:
        what = self.query_one("#what", Select).value
        fmt = self.query_one("#format", Select).value
        path = Path(self.query_one("#path", Input).value.strip()).expanduser()
        self._export(what, fmt, path)

    @work(thread=True, exclusive=True)
    def _export(self, what: str, fmt: str, path: Path) -> None:
        """In a thread: reading many event files (or matplotlib) must not freeze the screen."""
        try:
            if what == "plot":
                export.plot(self.runs, path)
            else:
                table = (export.curve_table(self.runs) if what == "curves" else
                         export.summary_table(self.runs, group=what == "grouped"))
                path.write_text(export.render(table, fmt), encoding="utf-8")
        except (export.ExportError, OSError) as e:
            self.app.call_from_thread(self.notify, str(e), title="Not exported", severity="error")
            return
        self.app.call_from_thread(self.notify, f"Wrote {path.resolve()}")
        self.app.call_from_thread(self.dismiss)

    def action_cancel(self) -> None:
        self.dismiss()
