"""The export dialog: the selected runs as a summary table (grouped over seeds or one row per
run), as curves, or as a plot — the same outputs as `fa-tui export`, from fa_tui.export.

Only the options that apply to the chosen kind are shown (format for tables, per-layer
columns for summaries, x axis and seed bands for a plot), and an existing file is never
replaced without a confirmation; declining proposes a free name instead."""
from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from fa_contract.rundir import RunDir
from fa_tui import export
from fa_tui.core.xaxis import X_AXES
from fa_tui.screens.dialogs import ConfirmScreen

WHAT = (("summary, mean ± std over seeds", "grouped"), ("summary, one row per run", "runs"),
        ("curves: every event", "curves"), ("plot (png, svg or pdf)", "plot"))
#: option row -> the kinds it applies to
APPLIES = {"format-row": ("grouped", "runs", "curves"), "layers-row": ("grouped", "runs"),
           "x-row": ("plot",), "bands-row": ("plot",)}


class ExportScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "export", "Export")]

    def __init__(self, runs: list[RunDir]) -> None:
        super().__init__(classes="dialog")
        self.runs = runs

    def compose(self) -> ComposeResult:
        names = ", ".join(r.name for r in self.runs[:3]) + (" …" if len(self.runs) > 3 else "")
        with Vertical():
            yield Static(f"Export {len(self.runs)} run(s): {names}", classes="title",
                         markup=False)
            with Horizontal(classes="row"):
                yield Label("what")
                yield Select(WHAT, value="grouped", allow_blank=False, compact=True, id="what")
            with Horizontal(classes="row", id="format-row"):
                yield Label("format")
                yield Select([(f, f) for f in export.FORMATS], value="md", allow_blank=False,
                             compact=True, id="format")
            with Horizontal(classes="row", id="layers-row"):
                yield Label("layers")
                yield Checkbox("per-layer diagnostics columns", True, compact=True, id="layers")
            with Horizontal(classes="row", id="x-row"):
                yield Label("x axis")
                yield Select([(label, name) for name, label in X_AXES.items()], value="step",
                             allow_blank=False, compact=True, id="x")
            with Horizontal(classes="row", id="bands-row"):
                yield Label("seeds")
                yield Checkbox("one mean ± std band per group of seeds", True, compact=True,
                               id="bands")
            with Horizontal(classes="row"):
                yield Label("file")
                yield Input(self._default_path(), compact=True, id="path")
            yield Static("relative to the directory fa-tui was started in", classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Export (ctrl+s)", variant="primary", id="export")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self._show_options("grouped")

    def _default_path(self, what: str = "grouped", fmt: str = "md") -> str:
        stem = self.runs[0].name if len(self.runs) == 1 else f"{len(self.runs)}-runs"
        kind = "curves" if what == "curves" else "plot" if what == "plot" else "summary"
        return f"{stem}-{kind}.{'png' if what == 'plot' else fmt}"

    def _show_options(self, what: str) -> None:
        for row_id, kinds in APPLIES.items():
            self.query_one(f"#{row_id}").display = what in kinds

    @on(Select.Changed)
    def _choice(self) -> None:
        """Show the options of the chosen kind; follow the choices with the file name,
        unless the user typed their own."""
        what, fmt = self.query_one("#what", Select).value, self.query_one("#format", Select).value
        self._show_options(str(what))
        path = self.query_one("#path", Input)
        defaults = {self._default_path(w, f) for _, w in WHAT for f in export.FORMATS}
        if path.value in defaults:
            path.value = self._default_path(str(what), str(fmt))

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        self.run_action(event.button.id)

    @on(Input.Submitted)
    def action_export(self, overwrite: bool = False) -> None:
        path = Path(self.query_one("#path", Input).value.strip()).expanduser()
        if path.exists() and not overwrite:
            self.app.push_screen(
                ConfirmScreen(f"{path} exists", "Overwrite it? No proposes a free name.",
                              yes="Overwrite"), self._confirmed)
            return
        self._export(str(self.query_one("#what", Select).value),
                     str(self.query_one("#format", Select).value),
                     self.query_one("#layers", Checkbox).value,
                     str(self.query_one("#x", Select).value),
                     self.query_one("#bands", Checkbox).value, path)

    def _confirmed(self, yes: bool | None) -> None:
        if yes:
            self.action_export(overwrite=True)
        else:
            field = self.query_one("#path", Input)
            field.value = str(export.free_name(Path(field.value.strip()).expanduser()))
            self.notify(f"Not overwritten; the file name is now {field.value}")

    @work(thread=True, exclusive=True)
    def _export(self, what: str, fmt: str, layers: bool, x: str, bands: bool,
                path: Path) -> None:
        """In a thread: reading many event files (or matplotlib) must not freeze the screen."""
        try:
            if what == "plot":
                export.plot(self.runs, path, group=bands, x=x)
            else:
                table = (export.curve_table(self.runs) if what == "curves" else
                         export.summary_table(self.runs, group=what == "grouped",
                                              layers=layers))
                path.write_text(export.render(table, fmt), encoding="utf-8")
        except (export.ExportError, OSError) as e:
            self.app.call_from_thread(self.notify, str(e), title="Not exported", severity="error")
            return
        self.app.call_from_thread(self.notify, f"Wrote {path.resolve()}")
        self.app.call_from_thread(self.dismiss)

    def action_cancel(self) -> None:
        self.dismiss()
