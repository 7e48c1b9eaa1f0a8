"""Monitor: live panels for the runs chosen in Runs — accuracy and loss of every run (or of
every seed group, as mean ± std bands) overlaid, and for the focused run the per-layer rank
(rule and BP side by side, as a heatmap or as lines), the alignment angles, the worker's log
and its config. Every chart shares one x axis (step, epoch, wall time or val accuracy) and one
cursor. Panels are redrawn only when their data or view changed."""
from __future__ import annotations

from functools import cache

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from fa_tui.core.panels import (SPLIT_MODES, angle_series, config_text, curve_series, entries,
                                legend, rank_blocks, rank_lines, series_legend)
from fa_tui.core.scale import fmt, unit_of
from fa_tui.core.runtable import STATE_STYLE
from fa_tui.core.series import angle_variants, diag_metrics, last, rank_variants
from fa_tui.core.xaxis import X_AXES
from fa_tui.core.store import Snapshot
from fa_tui.widgets.line_chart import LineChart
from fa_tui.widgets.log_tail import LogTail
from fa_tui.widgets.rank_heatmap import RankHeatmap


@cache
def schema_defaults() -> dict:
    from fa_contract.config import Config      # pydantic: only when a config is first shown
    return Config().model_dump(mode="json")


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("v", "rank_variant", "Rank metric"),
        Binding("g", "angle_variant", "Angle"),
        Binding("c", "split", "Train/val"),
        Binding("l", "log_scale", "Log loss"),
        Binding("left_square_bracket", "focus_run(-1)", "Prev run", key_display="["),
        Binding("right_square_bracket", "focus_run(1)", "Next run", key_display="]"),
        Binding("x", "x_axis", "X axis"),
        Binding("b", "bands", "Seeds: bands/runs"),
        Binding("h", "rank_view", "Heatmap/lines"),
        Binding("left", "cursor(-1)", "Cursor left", key_display="←", show=False),
        Binding("right", "cursor(1)", "Cursor right", key_display="→", show=False),
        Binding("plus,equals_sign", "y_zoom(2)", "Zoom y in", key_display="+", show=False),
        Binding("minus", "y_zoom(0.5)", "Zoom y out", key_display="-", show=False),
        Binding("0", "y_zoom(0)", "Fit y", show=False),
        Binding("z", "zoom", "Zoom panel"),
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
        self.x_index = 0
        self.bands = True
        self.rank_as_lines = False
        self.cursor: float | None = None
        self.zooms: dict[str, float] = {}
        self._xs: list[float] = []          # every x the curves have a point at
        self._drawn: tuple = ()
        self._snapshot = Snapshot()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="legend")
        with Grid(id="panels"):
            yield LineChart("accuracy (%)", id="acc")
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
        view = (self.split_mode, self.log_y, self.rank_index, self.angle_index, focus,
                self.x_index, self.bands, self.rank_as_lines, self.cursor,
                tuple(sorted(self.zooms.items())))
        key = (tuple(self.names), tuple(snapshot.versions.get(n) for n in self.names), view,
               len(snapshot.logs.get(focus, ())), row and (row.state, row.step, row.reason))
        if key == self._drawn and not force:
            return
        self._drawn = key
        self.sub_title = (f"{len(self.names)} run(s) · focus {focus}" if self.names else
                          "no run chosen: mark runs in Runs (space), then enter")
        states = {r.name: r.state for r in snapshot.rows}
        groups = entries(self.names, snapshot.configs, self.bands)
        self.query_one("#legend", Static).update(legend(groups, focus, states))
        self._curves({n: snapshot.events.get(n, []) for n in self.names}, groups)
        self._focused(snapshot, focus)

    @property
    def x_name(self) -> str:
        return list(X_AXES)[self.x_index % len(X_AXES)]

    def _chart(self, chart_id: str, series: list, metric: str, subtitle: str, **kw) -> None:
        """Plot `series` of `metric` in the chart `chart_id` with its unit, bounds, zoom, the
        x axis and the cursor."""
        unit = unit_of(metric)
        chart = self.query_one(f"#{chart_id}", LineChart)
        kw.setdefault("bounds", (unit.lo, unit.hi))
        chart.plot(series, subtitle=subtitle, x_label=X_AXES[self.x_name],
                   y_suffix=unit.suffix, zoom_by=self.zooms.get(chart_id, 1.0),
                   cursor=self.cursor, **kw)

    def _curves(self, events: dict[str, list[dict]], groups) -> None:
        splits = SPLIT_MODES[self.split_mode]
        label = " + ".join(splits) + (" (lighter)" if len(splits) > 1 else "")
        acc = curve_series(events, "acc", splits, self.x_name, groups)
        self._chart("acc", acc, "acc", label)
        loss = curve_series(events, "loss", splits, self.x_name, groups)
        finite = any(y is not None and y == y for s in loss for y in s.ys)
        trained = any(e.get("type") == "train" for evs in events.values() for e in evs)
        self._chart("loss", loss, "loss", label, log_y=self.log_y,
                    empty="no finite loss (diverged)" if trained and not finite
                    else "no data yet")
        self._xs = sorted({x for s in acc + loss for x in s.xs})

    def _focused(self, snapshot: Snapshot, name: str | None) -> None:
        """The per-run panels: rank heatmap, angles, log and config of the focused run."""
        events = snapshot.events.get(name, []) if name else []
        metrics = diag_metrics(events)
        ranks = rank_variants(metrics)
        heat = self.query_one(RankHeatmap)
        if ranks:
            variant = ranks[self.rank_index % len(ranks)]
            lines = rank_lines(events, variant, self.x_name) if self.rank_as_lines else None
            heat.show(variant[0], *rank_blocks(events, variant),
                      subtitle=f"{name} · v: metric · h: heatmap/lines", lines=lines,
                      x_label=X_AXES[self.x_name])
        else:
            heat.show("rank", [], [], [], subtitle=name or "")

        angles = angle_variants(metrics)
        chart = self.query_one("#angles", LineChart)
        if angles:
            metric = angles[self.angle_index % len(angles)]
            series = angle_series(events, metric, self.x_name)
            chart.border_title = f"{metric} (°)"
            self._chart("angles", series, metric, f"{name} · g: next angle",
                        legend=series_legend(series))
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
            text.append(f"  step {row.step}/{row.total or '?'}")
            train = last(snapshot.events.get(name, []), "train") if name else None
            speed = train and train.get("samples_per_s")
            if isinstance(speed, (int, float)):
                text.append(f"  {fmt(speed)} samples/s", "dim")
            if row.gpu_mem is not None:
                text.append(f"  {row.gpu_mem:.0f} MiB GPU", "dim")
            text.append("\n")
            if row.reason:
                text.append(f"{row.reason}\n", "" if row.state == "done" else "red")
        if name and snapshot.skipped.get(name):
            text.append(f"{snapshot.skipped[name]} corrupt event line(s) skipped\n", "yellow")
        if name in snapshot.configs:
            text.append_text(config_text(snapshot.configs[name], schema_defaults()))
        self.query_one("#config", Static).update(text)

    # --- keys -----------------------------------------------------------------------------------
    def _redraw(self) -> None:
        if not self.names:           # a key that cannot act says why
            self.notify("No run on screen: mark runs in Runs (2, then space), then enter.",
                        severity="warning")
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

    def action_x_axis(self) -> None:
        self.x_index += 1
        self.cursor = None                  # a step is not a wall time
        self.notify(f"x axis: {X_AXES[self.x_name]}", timeout=2)
        self._redraw()

    def action_bands(self) -> None:
        self.bands = not self.bands
        self.notify("seeds as mean ± std bands" if self.bands else "every run on its own",
                    timeout=2)
        self._redraw()

    def action_rank_view(self) -> None:
        self.rank_as_lines = not self.rank_as_lines
        self._redraw()

    def action_cursor(self, direction: int) -> None:
        """Move the cursor about 1/40 of the x range, onto an x where a curve has a point (so
        it reads recorded values); it appears at the right end first."""
        xs = self._xs
        if not xs:
            self.notify("No curve yet: nothing for the cursor to read.", severity="warning")
            return
        if self.cursor is None:
            self.cursor = xs[-1]
        else:
            target = self.cursor + direction * (xs[-1] - xs[0]) / 40
            ahead = [x for x in xs if (x - self.cursor) * direction > 0]
            if ahead:
                self.cursor = min(ahead, key=lambda x: abs(x - target))
        self._redraw()

    def action_y_zoom(self, factor: float) -> None:
        """Zoom the y axis of the focused chart (accuracy when none is focused); 0 fits."""
        focused = self.focused
        chart_id = focused.id if isinstance(focused, LineChart) and focused.id else "acc"
        if factor == 0:
            self.zooms.pop(chart_id, None)
        else:
            self.zooms[chart_id] = min(max(self.zooms.get(chart_id, 1.0) * factor, 1.0), 64.0)
        self._redraw()

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif self.focused is not None:
            self.maximize(self.focused)

    def action_back(self) -> None:
        if self.cursor is not None:
            self.cursor = None
            self._redraw()
        elif self.maximized is not None:
            self.minimize()
        else:
            self.app.switch_mode("runs")
