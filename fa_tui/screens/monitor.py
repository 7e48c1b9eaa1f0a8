"""Monitor: live panels for the runs chosen in Runs — accuracy and loss of every run overlaid,
and for the focused run the per-layer rank heatmap (rule vs BP), the alignment angles, the
worker's log and its config. Panels are redrawn only when their data or view changed."""
from __future__ import annotations

from functools import cache

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from fa_contract.config import Config
from fa_tui.core.panels import (SPLIT_MODES, angle_series, config_text, curve_series, legend,
                                rank_blocks, series_legend)
from fa_tui.core.runtable import STATE_STYLE
from fa_tui.core.series import angle_variants, diag_metrics, rank_variants
from fa_tui.core.store import Snapshot
from fa_tui.widgets.line_chart import LineChart
from fa_tui.widgets.log_tail import LogTail
from fa_tui.widgets.rank_heatmap import RankHeatmap


@cache
def schema_defaults() -> dict:
    return Config().model_dump(mode="json")


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("v", "rank_variant", "Rank metric"),
        Binding("g", "angle_variant", "Angle"),
        Binding("c", "split", "Train/val"),
        Binding("l", "log_scale", "Log loss"),
        Binding("left_square_bracket", "focus_run(-1)", "Prev run", key_display="["),
        Binding("right_square_bracket", "focus_run(1)", "Next run", key_display="]"),
        Binding("z", "zoom", "Zoom"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.focus_index = 0
        self.split_mode = 0
        self.log_y = False
        self.rank_index = 0
        self.angle_index = 0
        self._drawn: tuple = ()
        self._snapshot = Snapshot()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="legend")
        with Grid(id="panels"):
            yield LineChart("accuracy", id="acc")
            yield LineChart("loss", id="loss")
            yield RankHeatmap(id="rank")
            yield LineChart("angles", id="angles")
            yield LogTail(id="log")
            with VerticalScroll(id="config-panel"):
                yield Static(id="config")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LogTail).border_title = "worker.log"
        self.query_one("#config-panel").border_title = "config"

    def on_screen_resume(self) -> None:
        self.show(self.app.snapshot)

    @property
    def focus_name(self) -> str | None:
        return self.names[self.focus_index % len(self.names)] if self.names else None

    # --- drawing ------------------------------------------------------------------------------
    def show(self, snapshot: Snapshot, force: bool = False) -> None:
        """Redraw from `snapshot` if anything on screen would change: the runs, their event
        versions, the focused run's log and state, or the view (keys)."""
        self._snapshot = snapshot
        self.names = [n for n in self.app.monitored if snapshot.row(n) is not None]
        focus = self.focus_name
        row = snapshot.row(focus) if focus else None
        view = (self.split_mode, self.log_y, self.rank_index, self.angle_index, focus)
        key = (tuple(self.names), tuple(snapshot.versions.get(n) for n in self.names), view,
               len(snapshot.logs.get(focus, ())), row and (row.state, row.step, row.reason))
        if key == self._drawn and not force:
            return
        self._drawn = key
        self.sub_title = (f"{len(self.names)} run(s) · focus {focus}" if self.names else
                          "no run chosen: mark runs in Runs (space), then enter")
        states = {r.name: r.state for r in snapshot.rows}
        self.query_one("#legend", Static).update(legend(self.names, focus, states))
        self._curves({n: snapshot.events.get(n, []) for n in self.names})
        self._focused(snapshot, focus)

    def _curves(self, events: dict[str, list[dict]]) -> None:
        splits = SPLIT_MODES[self.split_mode]
        label = " + ".join(splits) + (" (lighter)" if len(splits) > 1 else "")
        self.query_one("#acc", LineChart).plot(curve_series(events, "acc", splits),
                                               subtitle=label)
        self.query_one("#loss", LineChart).plot(curve_series(events, "loss", splits),
                                                subtitle=label, log_y=self.log_y)

    def _focused(self, snapshot: Snapshot, name: str | None) -> None:
        """The per-run panels: rank heatmap, angles, log and config of the focused run."""
        events = snapshot.events.get(name, []) if name else []
        metrics = diag_metrics(events)
        ranks = rank_variants(metrics)
        heat = self.query_one(RankHeatmap)
        if ranks:
            variant = ranks[self.rank_index % len(ranks)]
            heat.show(variant[0], *rank_blocks(events, variant),
                      subtitle=f"{name} · v: next metric")
        else:
            heat.show("rank", [], [], [], subtitle=name or "")

        angles = angle_variants(metrics)
        chart = self.query_one("#angles", LineChart)
        if angles:
            metric = angles[self.angle_index % len(angles)]
            series = angle_series(events, metric)
            top = max((max(s.ys) for s in series), default=0)
            chart.border_title = f"{metric} (°)"
            chart.plot(series, subtitle=f"{name} · g: next angle",
                       y_range=(0, 90 if top <= 90 else None), legend=series_legend(series))
        else:
            chart.border_title = "angles"
            chart.plot([], subtitle=name or "")

        self.query_one(LogTail).show(snapshot.logs.get(name, []) if name else [])
        self._config(snapshot, name)

    def _config(self, snapshot: Snapshot, name: str | None) -> None:
        row = snapshot.row(name) if name else None
        text = Text()
        if row is not None:
            text.append(row.state, STATE_STYLE.get(row.state, "bold"))
            text.append(f"  step {row.step}/{row.total or '?'}\n")
            if row.reason:
                text.append(f"{row.reason}\n", "" if row.state == "done" else "red")
        if name and snapshot.skipped.get(name):
            text.append(f"{snapshot.skipped[name]} corrupt event line(s) skipped\n", "yellow")
        if name in snapshot.configs:
            text.append_text(config_text(snapshot.configs[name], schema_defaults()))
        self.query_one("#config", Static).update(text)

    # --- keys -----------------------------------------------------------------------------------
    def _redraw(self) -> None:
        self.show(self._snapshot, force=True)

    def action_rank_variant(self) -> None:
        self.rank_index += 1
        self._redraw()

    def action_angle_variant(self) -> None:
        self.angle_index += 1
        self._redraw()

    def action_split(self) -> None:
        self.split_mode = (self.split_mode + 1) % len(SPLIT_MODES)
        self._redraw()

    def action_log_scale(self) -> None:
        self.log_y = not self.log_y
        self._redraw()

    def action_focus_run(self, step: int) -> None:
        if self.names:
            self.focus_index = (self.focus_index + step) % len(self.names)
            self._redraw()

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif self.focused is not None:
            self.maximize(self.focused)

    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
        else:
            self.app.switch_mode("runs")
