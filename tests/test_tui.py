"""The app driven by Textual's Pilot: navigation, filter/marks, Monitor's keys, delete with
confirmation, the Compose form, and — once the worker exists — a real run launched from
Compose, watched in Monitor and stopped from Runs."""
from __future__ import annotations

import asyncio
import functools
import io
from pathlib import Path

import pytest
from rich.console import Console

from fa_contract.rundir import list_runs
from fa_tui.app import FaApp
from fa_tui.launch import stop
from fa_tui.screens.dialogs import ConfirmScreen, PromptScreen
from fa_tui.widgets.line_chart import LineChart
from fa_tui.widgets.rank_heatmap import RankHeatmap
from fa_tui.widgets.run_table import RunTable
from tui_fixtures import NOW, write_fixture_runs

ROOT = Path(__file__).resolve().parent.parent
SIZE = (100, 32)


def sync(test):
    """Run an async Pilot test with asyncio (no pytest async plugin needed)."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return wrapper


async def until(pilot, predicate, timeout: float = 20.0) -> None:
    """Let the app run until `predicate()` holds (a guard against hanging, not a timing test)."""
    waited = 0.0
    while not predicate():
        assert waited < timeout, "condition not reached"
        await pilot.pause(0.05)
        waited += 0.05


def _app(root: Path) -> FaApp:
    return FaApp(root, poll_s=0.1, clock=lambda: NOW)


@pytest.fixture
def fixture_runs(tmp_path) -> Path:
    write_fixture_runs(tmp_path / "runs")
    return tmp_path / "runs"


@sync
async def test_missing_runs_dir_is_created(tmp_path):
    root = tmp_path / "deep" / "runs"
    async with _app(root).run_test(size=SIZE) as pilot:
        await until(pilot, lambda: pilot.app.polls > 0 and pilot.app.query(RunTable))
        assert root.is_dir()
        assert pilot.app.query_one(RunTable).row_count == 0


@sync
async def test_filter_marks_and_monitor_keys(fixture_runs):
    app = _app(fixture_runs)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 6)
        await pilot.press("slash", *"rule:fa", "enter")
        assert table.row_count == 1 and table.cursor_name == "fa-mlp"
        await pilot.press("escape")
        assert table.row_count == 6
        await pilot.press("space", "space")                   # marks the first two rows
        assert len(table.marked) == 2
        marked = table.selection()
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "MonitorScreen"
                    and app.screen.names == marked)
        heat = app.screen.query_one(RankHeatmap)
        assert app.screen.focus_name == marked[0]
        await pilot.press("right_square_bracket")
        assert app.screen.focus_name == marked[1]
        await pilot.press("v")
        assert heat.border_title == "pr_err"
        await pilot.press("l")
        assert app.screen.query_one("#loss", LineChart).options["log_y"]
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"


@sync
async def test_delete_asks_first_and_refuses_active_runs(fixture_runs):
    app = _app(fixture_runs)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 6)
        await pilot.press("slash", *"ldfa", "enter", "d")      # running: refused
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape", "slash", *"dfa-mlp", "enter", "d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert (fixture_runs / "dfa-mlp").is_dir()
        await pilot.press("d", "y")
        await until(pilot, lambda: not (fixture_runs / "dfa-mlp").exists())
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 5)


@sync
async def test_export_the_marked_runs(fixture_runs, tmp_path):
    app = _app(fixture_runs)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 6)
        await pilot.press("slash", *"state:done", "enter", "a", "e")
        screen = app.screen
        screen.query_one("#format").value = "csv"
        screen.query_one("#what").value = "runs"
        await pilot.pause()
        assert screen.query_one("#path").value == "2-runs-summary.csv"
        screen.query_one("#path").value = str(tmp_path / "out.csv")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: (tmp_path / "out.csv").exists() and app.screen is not screen)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == 3 and {"bp-mlp", "fa-mlp"} <= {ln.split(",")[0] for ln in lines}


@sync
async def test_compose_validates_inline_and_saves_a_preset(tmp_path):
    from fa_tui.presets import load_preset
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("1")
        screen = app.screen
        rank = screen.query_one("#field-rule-rank")
        assert not rank.display                               # bp: no rank field
        screen.query_one("#field-rule-name").value = "ldfa"
        await until(pilot, lambda: rank.display)
        rank.value = "0"
        await until(pilot, lambda: rank.has_class("-invalid"))
        assert "greater than or equal to 1" in str(rank.query_one(".error").render())
        rank.value = "4"
        screen.query_one("#field-seeds").value = "0-1"
        await until(pilot, lambda: len(screen.composition.configs) == 2)
        assert not rank.has_class("-invalid")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PromptScreen)
        prompt = app.screen.query_one("Input")
        prompt.value = str(tmp_path / "mine.toml")
        await pilot.press("enter")
        await until(pilot, lambda: (tmp_path / "mine.toml").exists())
    configs = load_preset(tmp_path / "mine.toml")
    assert [(c.rule.name, c.rule.rank, c.run.seed) for c in configs] == [
        ("ldfa", 4, 0), ("ldfa", 4, 1)]


@sync
async def test_help_lists_every_key_and_palette_has_the_screens(tmp_path):
    from fa_tui.screens.help import HelpScreen, key_table
    from fa_tui.screens.monitor import MonitorScreen
    from fa_tui.screens.runs import RunsScreen
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(key_table(app.screen.sections))
        text = console.export_text()
        for binding in [*app.BINDINGS, *RunsScreen.BINDINGS, *MonitorScreen.BINDINGS]:
            assert binding.description in text
        await pilot.press("escape")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Go to Compose", "Go to Runs", "Go to Monitor", "Help", "Stop",
                "Export"} <= titles


@pytest.fixture
def runs_dir(tmp_path):
    """A runs directory whose workers are stopped afterwards, even when the test fails."""
    runs = tmp_path / "runs"
    yield runs
    for run in list_runs(runs):
        stop(run)


@sync
async def test_compose_launch_monitor_stop_a_real_run(runs_dir):
    """The whole loop on a tiny synthetic run: compose it, launch it on the CPU, find it in
    Runs, watch its curves grow in Monitor, stop it."""
    runs = runs_dir
    app = FaApp(runs, poll_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("1")
        screen = app.screen
        for path, value in {
                "data.name": "synthetic", "data.shape": "16", "data.train_size": "512",
                "data.test_size": "128", "data.val_size": "64", "model.name": "mlp",
                "model.width": "16", "model.depth": "1", "train.epochs": "1000",
                "train.batch_size": "8", "metrics.every": "5", "run.device": "cpu",
                "run.name": "e2e"}.items():
            screen.query_one("#field-" + path.replace(".", "-")).value = value
        await until(pilot, lambda: screen.composition.configs
                    and screen.composition.configs[0].data.shape == [16])
        await pilot.press("ctrl+l")
        table = None
        await until(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        table = app.screen.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 1, timeout=30)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "MonitorScreen")
        acc = app.screen.query_one("#acc", LineChart)
        await until(pilot, lambda: any(len(s.xs) for s in acc.series), timeout=120)
        first = sum(len(s.xs) for s in acc.series)
        await until(pilot, lambda: sum(len(s.xs) for s in acc.series) > first, timeout=120)
        assert app.snapshot.rows[0].active   # 1000 epochs: still training when stopped
        await pilot.press("2", "x")
        await until(pilot, lambda: not app.snapshot.rows[0].active, timeout=60)
        assert app.snapshot.rows[0].state == "stopped"
