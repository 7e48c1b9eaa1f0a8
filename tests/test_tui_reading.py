"""The workbench as a place to read results (issue 12) and the TUI display bugs of issue 9,
driven by Textual's Pilot on fixture run directories (tests/tui_fixtures.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fa_tui.app import FaApp
from fa_tui.core.store import RunStore
from fa_tui.screens.dialogs import ConfirmScreen
from fa_tui.widgets.line_chart import LineChart
from fa_tui.widgets.rank_heatmap import RankHeatmap
from fa_tui.widgets.run_table import RunTable
from test_tui import SIZE, sync, until
from tui_fixtures import NOW, T0, _config, write_run

ROOT = Path(__file__).resolve().parent.parent


def _app(root: Path) -> FaApp:
    return FaApp(root, poll_s=0.1, clock=lambda: NOW)


def _text(widget) -> str:
    """What a widget shows, as plain text, at its current size."""
    rendered = widget.render()
    lines = getattr(rendered, "renderables", [rendered])
    return "\n".join(getattr(line, "plain", str(line)) for line in lines)


async def _monitor(pilot, names) -> None:
    app = pilot.app
    await until(pilot, lambda: app.polls > 0)
    app.monitor(names)
    await until(pilot, lambda: app.screen.names == list(names)
                and all(app.snapshot.events.get(n) for n in names))
    await pilot.pause(0.1)


# --- Monitor: axes, x axis, cursor, zoom, bands, rank lines -----------------------------------
@sync
async def test_monitor_reads_in_percent_with_axes_cursor_zoom_and_x_choice(seed_runs):
    app = _app(seed_runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await _monitor(pilot, ["fa-mlp", "bp-mlp"])
        acc = app.screen.query_one("#acc", LineChart)
        assert acc.border_title == "accuracy (%)" and acc.options["bounds"] == (0.0, 100.0)
        assert "%" in _text(acc) and _text(acc).rstrip().endswith("step")
        assert all(y > 1 for s in acc.series for y in s.ys)          # percent, not fractions
        await pilot.press("x")
        assert _text(acc).rstrip().endswith("epoch")
        assert max(x for s in acc.series for x in s.xs) == pytest.approx(3.0)
        await pilot.press("x", "x")                                   # wall, then val accuracy
        assert acc.options["x_label"].startswith("best val accuracy")
        await pilot.press("x")                                        # back to step
        await pilot.press("left")                                     # cursor at the end
        assert acc.cursor == 30.0 and "step 30" in _text(acc)
        await pilot.press("left", "left")           # points every 5 steps: 30 -> 25 -> 20
        assert acc.cursor == 20.0 and "step 20 " in _text(acc)
        assert "fa-mlp train" in _text(acc) and "bp-mlp val" in _text(acc)
        await pilot.press("escape")
        assert acc.cursor is None and isinstance(app.screen, type(app.screen))
        acc.focus()
        await pilot.press("plus")
        assert acc.options["zoom_by"] == 2.0 and "zoom ×2" in acc.border_subtitle
        await pilot.press("0")
        assert acc.options["zoom_by"] == 1.0


@sync
async def test_monitor_draws_seed_groups_as_bands_and_b_shows_the_runs(seed_runs):
    names = [f"{r}-sweep-seed={s}" for r in ("fa", "bp") for s in range(3)]
    app = _app(seed_runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await _monitor(pilot, names)
        acc = app.screen.query_one("#acc", LineChart)
        assert [s.label for s in acc.series] == ["fa-sweep train", "fa-sweep val",
                                                 "bp-sweep train", "bp-sweep val"]
        assert all(s.lo is not None for s in acc.series)
        assert "3 seeds, mean ± std" in str(app.screen.query_one("#legend").render())
        await pilot.press("b")
        assert len(acc.series) == 12 and all(s.lo is None for s in acc.series)


@sync
async def test_rank_panel_shows_rule_and_bp_side_by_side_as_heatmap_or_lines(seed_runs):
    app = _app(seed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _monitor(pilot, ["fa-mlp"])
        heat = app.screen.query_one(RankHeatmap)
        text = _text(heat)
        first = text.splitlines()[0]
        assert "rule" in first and "BP" in first             # one header line: side by side
        assert all(name in text for name in ("fc1", "fc2", "head"))
        await pilot.press("h")
        assert heat.lines is not None
        rule, bp = heat.lines
        assert [s.label for s in rule] == [s.label for s in bp] == ["fc1", "fc2", "head"]
        assert "BP (same batch)" in _text(heat)


@sync
async def test_throughput_shows_in_runs_and_monitor(seed_runs):
    app = _app(seed_runs)
    async with app.run_test(size=(120, 40)) as pilot:
        await _monitor(pilot, ["fa-mlp"])
        assert "3200 samples/s" in str(app.screen.query_one("#config").render())
        await pilot.press("escape")
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row("fa-mlp") is not None)
        assert table.row("fa-mlp").speed == 3200.0
        assert table.fixed_columns == 2                      # the name stays when scrolled


# --- issue 9's display bugs -------------------------------------------------------------------
def test_resumed_run_drops_the_old_summary(tmp_path):
    """After a resume, the row (and so the status line and Monitor) showed `stop requested`
    and the first attempt's best val until the run ended again."""
    cfg = _config("r", "fa", {"name": "mlp"})
    path = write_run(tmp_path, "r", cfg, "stopped", 20, reason="stop requested")
    summary = json.loads((path / "summary.json").read_text())
    summary["best_val_acc"] = 0.99
    (path / "summary.json").write_text(json.dumps(summary))
    store = RunStore(tmp_path, clock=lambda: NOW)
    (row,) = store.refresh().rows
    assert row.reason == "stop requested" and row.best_val == 0.99
    status = json.loads((path / "status.json").read_text())
    status.update(state="running", reason=None, pid=os.getpid(), heartbeat=time.time())
    (path / "status.json").write_text(json.dumps(status))
    with (path / "events.jsonl").open("a") as f:
        f.write(json.dumps({"v": 1, "type": "resume", "step": 10, "t": T0 + 500}) + "\n")
    (row,) = store.refresh().rows
    assert row.state == "running" and row.reason is None
    evals = [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]
    assert row.best_val == max(e["acc"] for e in evals if e["type"] == "eval" and e["step"] <= 10)


def test_elapsed_never_jumps_backwards_when_a_run_ends(tmp_path):
    cfg = _config("r", "fa", {"name": "mlp"})
    path = write_run(tmp_path, "r", cfg, "running", 20, started=T0, live=True)
    (live,) = RunStore(tmp_path, clock=lambda: T0 + 50).refresh().rows
    status = json.loads((path / "status.json").read_text())
    status.update(state="stopped", pid=None, heartbeat=T0 + 51)     # ended a second later
    (path / "status.json").write_text(json.dumps(status))
    (path / "summary.json").write_text(json.dumps({"wall_s": 30.0, "status": "stopped"}))
    (ended,) = RunStore(tmp_path, clock=lambda: T0 + 60).refresh().rows
    assert live.elapsed == 50.0 and ended.elapsed == 51.0


def _diverged(root: Path) -> None:
    """Loss non-finite from step 3 (the worker notices at its step-20 train event): the
    events hold one val accuracy and only null losses."""
    cfg = _config("div", "fa", {"name": "mlp"})
    path = write_run(root, "div", cfg, "diverged", 20, reason="non-finite loss at step 3")
    events = [{"type": "start", "config": cfg, "steps_per_epoch": 10, "total_steps": 24}]
    events += [{"type": "train", "step": s, "epoch": 0, "loss": None, "acc": 0.101}
               for s in (5, 10, 15, 20)]
    events += [{"type": "eval", "step": 10, "epoch": 1, "split": "val", "loss": None,
                "acc": 0.101},
               {"type": "end", "step": 20, "status": "diverged",
                "reason": "non-finite loss at step 3"}]
    (path / "events.jsonl").write_text("".join(json.dumps({**e, "v": 1, "t": T0 + i}) + "\n"
                                               for i, e in enumerate(events)))
    status = json.loads((path / "status.json").read_text())
    status["total_steps"] = 24
    (path / "status.json").write_text(json.dumps(status))


@sync
async def test_diverged_run_reads_consistently(tmp_path):
    _diverged(tmp_path)
    app = _app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _monitor(pilot, ["div"])
        assert "step 3/24" in str(app.screen.query_one("#config").render())
        assert "no finite loss (diverged)" in _text(app.screen.query_one("#loss"))
        acc = app.screen.query_one("#acc", LineChart)
        axis = [line[:6].strip() for line in _text(acc).splitlines() if "┤" in line]
        assert axis and all(not label.startswith("-") for label in axis)
        assert all(label.endswith("%") for label in axis)


@sync
async def test_markup_in_dialogs_and_toasts_is_shown_as_written(tmp_path):
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(ConfirmScreen("Load [sweep]?", "keys of [section] stay"))
        await pilot.pause()
        shown = " ".join(str(s.render()) for s in app.screen.query("Static"))
        assert "[sweep]" in shown and "[section]" in shown
        await pilot.press("n")
        app.screen.notify("unknown key [sweep] in [section]")      # as the screens call it
        await until(pilot, lambda: len(app._notifications) == 1)
        (note,) = app._notifications
        assert note.message == "unknown key [sweep] in [section]" and note.markup is False


@sync
async def test_monitor_keys_without_runs_say_why(tmp_path):
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls > 0)
        await pilot.press("3")
        for key in ("v", "x", "right"):
            app._notifications.clear()
            await pilot.press(key)
            await until(pilot, lambda: len(app._notifications) == 1)
            message = next(iter(app._notifications)).message
            assert "No run on screen" in message or "No curve yet" in message


def test_first_frame_path_loads_neither_torch_nor_pydantic():
    """What the Runs screen needs at start-up: pydantic arrives with Compose or a launch."""
    code = ("import sys, fa_tui.app, fa_tui.screens.monitor, fa_tui.screens.compare\n"
            "bad = {'torch', 'pydantic'} & set(sys.modules)\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
