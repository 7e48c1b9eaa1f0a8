"""SVG snapshots of every screen on fixed run directories (tests/tui_fixtures.py): fixed
timestamps, a frozen clock, no live process. Update after a deliberate change with
`pytest tests/test_snapshots.py --snapshot-update`, and look at the SVGs before committing:
docs/tui.md shows them as the screenshots."""
from __future__ import annotations

from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension
from textual.widgets import DataTable

from fa_tui.app import FaApp
from tui_fixtures import NOW, write_fixture_runs, write_seed_runs

# pytest-textual-snapshot 1.0 names its extension with syrupy's old attribute; syrupy 7 reads
# `file_extension` and would store `.raw` files. Keep them `.svg` whatever the versions, so
# docs/tui.md can show them as they are.
SVGImageExtension.file_extension = "svg"


@pytest.fixture
def app(tmp_path, monkeypatch) -> FaApp:
    """The app on the fixture runs, with a relative runs path (so tmp_path never shows)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    write_fixture_runs(Path("runs"))
    return FaApp(Path("runs"), clock=lambda: NOW)


@pytest.fixture
def seed_app(tmp_path, monkeypatch) -> FaApp:
    """The app on two sweeps over three seeds (fa and bp) next to the fixture runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    write_fixture_runs(Path("runs"))
    write_seed_runs(Path("runs"))
    return FaApp(Path("runs"), clock=lambda: NOW)


SWEEPS = [f"{rule}-sweep-seed={s}" for rule in ("fa", "bp") for s in range(3)]


async def _loaded(pilot) -> None:
    """Until the poller has delivered twice (the second time with Monitor's events) and every
    table has measured its columns (a DataTable measures on its idle message, which a loaded
    machine can delay past the screenshot; Textual has no public flag for it, so read its
    own two). RunTable._on_idle is the other half: rows drawn before that measurement."""
    start = pilot.app.polls
    while pilot.app.polls < start + 2:
        await pilot.pause(0.05)
    await _settled(pilot)


async def _settled(pilot) -> None:
    """Until every table on the screen has measured its rows and columns."""
    await pilot.pause()
    while any(t._require_update_dimensions or t._updated_cells
              for t in pilot.app.screen.query(DataTable)):
        await pilot.pause(0.05)


def test_runs(app, snap_compare):
    assert snap_compare(app, terminal_size=(100, 32), run_before=_loaded)


def test_runs_80x24_filtered(app, snap_compare):
    async def before(pilot):
        await _loaded(pilot)
        await pilot.press("slash", *"mlp", "enter", "s", "s", "s", "s")   # sort by best val
        await _settled(pilot)
    assert snap_compare(app, terminal_size=(80, 24), run_before=before)


def test_monitor_two_runs(app, snap_compare):
    async def before(pilot):
        await _loaded(pilot)
        app.monitor(["fa-mlp", "bp-mlp"])
        await _loaded(pilot)
    assert snap_compare(app, terminal_size=(100, 32), run_before=before)


def test_monitor_failed_run_80x24(app, snap_compare):
    async def before(pilot):
        await _loaded(pilot)
        app.monitor(["dfa-mlp"])
        await _loaded(pilot)
        await pilot.press("v", "g", "l")          # participation ratio, angle_grad, log loss
        await _settled(pilot)
    assert snap_compare(app, terminal_size=(80, 24), run_before=before)


def test_compose_ldfa_with_an_error(app, snap_compare):
    async def before(pilot):
        await _loaded(pilot)
        await pilot.press("1")
        screen = app.screen
        screen.query_one("#field-rule-name").value = "ldfa"
        screen.query_one("#field-rule-rank").value = "0"
        screen.query_one("#field-optim-lr").value = "0.1, 0.01"
        await pilot.pause()
        screen.query_one("#field-rule-rank").query_one("Input").cursor_blink = False
        await _settled(pilot)
    assert snap_compare(app, terminal_size=(100, 32), run_before=before)


def test_help(app, snap_compare):
    assert snap_compare(app, terminal_size=(100, 32), press=["question_mark"],
                        run_before=_loaded)


def test_delete_confirmation(app, snap_compare):
    async def before(pilot):
        await _loaded(pilot)
        await pilot.press("down", "d")            # dfa-mlp, which has ended
        await _settled(pilot)
    assert snap_compare(app, terminal_size=(80, 24), run_before=before)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_monitor_with_seed_bands(seed_app, snap_compare, size):
    async def before(pilot):
        await _loaded(pilot)
        seed_app.monitor(SWEEPS)
        await _loaded(pilot)
        await pilot.press("h", "left", "left", "left")      # rank lines, cursor on
        await _settled(pilot)
    assert snap_compare(seed_app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_compare_view(seed_app, snap_compare, size):
    async def before(pilot):
        await _loaded(pilot)
        seed_app.compare([*SWEEPS, "dfa-mlp"])
        await _loaded(pilot)
    assert snap_compare(seed_app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_compose_with_help(app, snap_compare, size):
    async def before(pilot):
        await _loaded(pilot)
        await pilot.press("1")
        screen = app.screen
        screen.query_one("#field-optim-name").value = "muon"
        await pilot.pause()
        screen.query_one("#field-optim-muon_momentum").query_one("Input").focus()
        await pilot.pause()
        screen.query_one("#field-optim-muon_momentum").query_one("Input").cursor_blink = False
        await _settled(pilot)
    assert snap_compare(app, terminal_size=size, run_before=before)
