"""Compare: 2–6 runs or seed groups side by side — validation accuracy and training loss
curves (groups as mean ± std bands) over a chosen x axis, and the final per-layer
diagnostics of each (fa_tui.core.compare). `e` exports exactly this view: the table (md) and
the figure (png) under one name."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table as RichTable
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from fa_contract.rundir import RunDir
from fa_tui import export
from fa_tui.core.compare import COMPARE_METRICS, compare_table, transposed
from fa_tui.core.panels import curve_series, entries, legend, run_colours
from fa_tui.core.scale import unit_of
from fa_tui.core.store import Snapshot
from fa_tui.core.xaxis import X_AXES
from fa_tui.screens.dialogs import ConfirmScreen, PromptScreen
from fa_tui.widgets.line_chart import LineChart

HEADERS = {"erank_err": "erank", "erank_err_bp": "BP", "angle_delta": "∠δ"}


def _cell(stat: export.Stat, metric: str) -> str:
    if stat.mean is None:
        return "–"
    text = export._number(metric, stat.mean)
    return text if stat.std is None else f"{text}±{export._number(metric, stat.std)}"


class CompareScreen(Screen):
    BINDINGS = [
        Binding("x", "x_axis", "X axis"),
        Binding("b", "bands", "Seeds: bands/runs"),
        Binding("e", "export", "Export view"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
        self.x_index = 0
        self.bands = True
        self._snapshot = Snapshot()
        self._drawn: tuple = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="cmp-legend")
        with Horizontal(id="cmp-charts"):
            yield LineChart("val accuracy (%)", id="cmp-acc")
            yield LineChart("train loss", id="cmp-loss")
        with VerticalScroll(id="cmp-table-panel"):
            yield Static(id="cmp-table")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#cmp-table-panel").border_title = (
            "final per-layer diagnostics: erank_err · BP's (same batch) · angle_delta (°)")

    def on_screen_resume(self) -> None:
        self.show(self.app.snapshot)

    @property
    def x_name(self) -> str:
        return list(X_AXES)[self.x_index % len(X_AXES)]

    def groups(self, snapshot: Snapshot) -> list[tuple[str, list[str]]]:
        return entries(self.names, snapshot.configs, self.bands)

    def show(self, snapshot: Snapshot, force: bool = False) -> None:
        self._snapshot = snapshot
        key = (tuple(snapshot.versions.get(n) for n in self.names), self.x_index, self.bands)
        if key == self._drawn and not force:
            return
        self._drawn = key
        events = {n: snapshot.events.get(n, []) for n in self.names}
        groups = self.groups(snapshot)
        self.sub_title = f"compare {len(groups)}: {len(self.names)} run(s)"
        states = {r.name: r.state for r in snapshot.rows}
        self.query_one("#cmp-legend", Static).update(legend(groups, None, states))
        for chart_id, split, metric in (("cmp-acc", "val", "acc"), ("cmp-loss", "train", "loss")):
            unit = unit_of(metric)
            self.query_one(f"#{chart_id}", LineChart).plot(
                curve_series(events, metric, (split,), self.x_name, groups),
                x_label=X_AXES[self.x_name], y_suffix=unit.suffix, bounds=(unit.lo, unit.hi))
        self.query_one("#cmp-table", Static).update(self._table(groups, events))

    def _table(self, groups, events) -> RichTable:
        labels, rows = transposed(compare_table(groups, events))
        colours = run_colours([label for label, _ in groups])
        table = RichTable(box=None, padding=(0, 1), header_style="bold")
        table.add_column("layer", style="dim", no_wrap=True)
        for label in labels:
            table.add_column(Text(label, colours[label]), justify="right", no_wrap=True)
        table.add_row("", *[" · ".join(HEADERS[m] for m in COMPARE_METRICS)] * len(labels),
                      style="dim")
        for name, cells in rows:
            metrics = ("best_val_acc",) if name == "best val acc" else COMPARE_METRICS
            table.add_row(name, *[" · ".join(_cell(s, m) for s, m in zip(stats, metrics))
                                  for stats in cells])
        return table

    # --- keys -----------------------------------------------------------------------------------
    def action_x_axis(self) -> None:
        self.x_index += 1
        self.show(self._snapshot, force=True)

    def action_bands(self) -> None:
        self.bands = not self.bands
        self.show(self._snapshot, force=True)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_export(self) -> None:
        stem = f"compare-{len(self.groups(self._snapshot))}"
        self.app.push_screen(PromptScreen(
            "Export this comparison", stem,
            "a file name without suffix: writes NAME.md (the table) and NAME.png (the figure)"),
            self._export_to)

    def _export_to(self, stem: str | None, overwrite: bool = False) -> None:
        if not stem:
            return
        base = Path(stem).expanduser()
        paths = [base.with_name(base.name + ".md"), base.with_name(base.name + ".png")]
        taken = [p for p in paths if p.exists()]
        if taken and not overwrite:
            self.app.push_screen(
                ConfirmScreen("Overwrite?", "\n".join(str(p) for p in taken)
                              + "\nalready exist. Overwrite them, or cancel and pick a new name.",
                              yes="Overwrite"),
                lambda yes: yes and self._export_to(stem, overwrite=True))
            return
        self._export(paths)

    @work(thread=True, exclusive=True)
    def _export(self, paths: list[Path]) -> None:
        snapshot = self._snapshot
        groups = self.groups(snapshot)
        events = {n: snapshot.events.get(n, []) for n in self.names}
        table = compare_table(groups, events)
        runs = [RunDir(self.app.runs_dir / n) for n in self.names]
        try:
            paths[0].write_text(export.render(table, "md"), encoding="utf-8")
            export.plot(runs, paths[1], group=self.bands, x=self.x_name)
        except (export.ExportError, OSError) as e:
            self.app.call_from_thread(self.notify, str(e), title="Not exported",
                                      severity="error", markup=False)
            return
        self.app.call_from_thread(self.notify, f"Wrote {paths[0]} and {paths[1]}", markup=False)
