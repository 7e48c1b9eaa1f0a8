"""Compose that guides, Runs keys that explain, the export dialog and CLI that never overwrite
silently, and the comparison view (issue 12), through Textual's Pilot and the CLI runner."""
from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fa_tui.app import FaApp
from fa_tui.cli import app as cli
from fa_tui.core.compare import compare_table
from fa_tui.screens.compare import CompareScreen
from fa_tui.screens.dialogs import ConfirmScreen, PromptScreen
from fa_tui.screens.export import ExportScreen
from fa_tui.widgets.form_field import FormField
from fa_tui.widgets.run_table import RunTable
from test_tui import SIZE, sync, until
from tui_fixtures import NOW, write_fixture_runs

runner = CliRunner()


def _app(root: Path) -> FaApp:
    return FaApp(root, poll_s=0.1, clock=lambda: NOW)


# --- Compose -----------------------------------------------------------------------------------
@sync
async def test_compose_focuses_the_first_field_and_shows_its_help(tmp_path):
    app = _app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("1")
        await until(pilot, lambda: app.focused is not None)
        field = next(a for a in app.focused.ancestors_with_self if isinstance(a, FormField))
        assert field.path == "rule.name"
        help_text = str(app.screen.query_one("#field-help").render())
        assert "Lillicrap" in help_text and "one of: bp, fa" in help_text
        await pilot.press("tab")
        field = next(a for a in app.focused.ancestors_with_self if isinstance(a, FormField))
        assert field.path == "norm.name"
        assert "normalisation" in str(app.screen.query_one("#field-help").render())


@sync
async def test_compose_muon_momentum_reaches_the_config_and_save_writes_what_applies(tmp_path):
    from fa_tui.presets import load_preset
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("1")
        screen = app.screen
        screen.query_one("#field-optim-name").value = "muon"
        momentum = screen.query_one("#field-optim-momentum")
        muon_momentum = screen.query_one("#field-optim-muon_momentum")
        await until(pilot, lambda: muon_momentum.display and not momentum.display)
        muon_momentum.value = "0.8"
        screen.query_one("#field-train-max_steps").value = "7"     # was only in presets
        screen.query_one("#field-model-dropout").value = "0.1"      # an advanced key
        await until(pilot, lambda: screen.composition.configs
                    and screen.composition.configs[0].optim.muon_momentum == 0.8)
        assert screen.composition.configs[0].train.max_steps == 7
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = str(tmp_path / "muon.toml")
        await pilot.press("enter")
        await until(pilot, lambda: (tmp_path / "muon.toml").exists())
    doc = tomllib.loads((tmp_path / "muon.toml").read_text())
    assert doc["optim"]["muon_momentum"] == 0.8 and "momentum" not in doc["optim"]
    assert "nesterov" not in doc["optim"] and "rank" not in doc.get("rule", {})
    assert "widths" not in doc["model"] and "patch" not in doc["model"]      # an mlp
    assert doc["model"]["dropout"] == 0.1 and "mlp_ratio" not in doc["model"]
    assert "amp" not in doc.get("train", {})                                 # advanced default
    (cfg,) = load_preset(tmp_path / "muon.toml")
    assert cfg.optim.muon_momentum == 0.8 and cfg.train.max_steps == 7


# --- Runs ------------------------------------------------------------------------------------------
@sync
async def test_keys_on_an_empty_table_say_why(tmp_path):
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.polls > 0)
        for key in ("m", "enter", "d", "e", "x", "r", "c", "space"):
            app._notifications.clear()
            await pilot.press(key)
            await until(pilot, lambda: len(app._notifications) == 1)
            (note,) = app._notifications
            assert "no runs yet" in note.message and note.message.startswith("Nothing to")
        assert isinstance(app.screen.query_one(RunTable), RunTable)


@sync
async def test_a_filter_that_matches_nothing_says_so(tmp_path):
    write_fixture_runs(tmp_path / "runs")
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 6)
        await pilot.press("slash", *"zzz", "enter")
        await until(pilot, lambda: table.row_count == 0)
        detail = str(app.screen.query_one("#detail").render())
        assert "No run matches the filter 'zzz'" in detail and "No runs yet" not in detail
        await pilot.press("e")
        await until(pilot, lambda: app._notifications)
        assert "the filter hides every run" in list(app._notifications)[-1].message


# --- comparison view -----------------------------------------------------------------------------
@sync
async def test_compare_two_seed_groups_and_export_the_view(seed_runs, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    app = _app(seed_runs)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 12)
        await pilot.press("slash", *"bp-mlp", "enter", "c")            # one run: refused
        await until(pilot, lambda: app._notifications)
        assert "Compare needs 2–6" in list(app._notifications)[-1].message
        await pilot.press("escape", "slash", *"sweep", "enter", "a", "c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        await until(pilot, lambda: all(app.snapshot.events.get(n) for n in screen.names))
        screen.show(app.snapshot, force=True)
        await pilot.pause()
        acc = screen.query_one("#cmp-acc")
        assert sorted(s.label for s in acc.series) == ["bp-sweep val", "fa-sweep val"]
        console = Console(width=160, record=True, file=io.StringIO())
        console.print(screen.query_one("#cmp-table").content)
        table_text = console.export_text()
        assert "fa-sweep" in table_text and "fc1" in table_text
        await pilot.press("e")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("Input").value = "paper"
        await pilot.press("enter")
        await until(pilot, lambda: (tmp_path / "paper.png").exists())
        md = (tmp_path / "paper.md").read_text()
        await pilot.press("e")                                          # again: asks first
        app.screen.query_one("Input").value = "paper"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
    events = {n: app.snapshot.events[n] for n in screen.names}
    expected = compare_table(screen.groups(app.snapshot), events)
    from fa_tui.export import render
    assert md == render(expected, "md")
    assert sorted(r["run"] for r in expected.rows) == ["bp-sweep", "fa-sweep"]  # table order
    assert expected.rows[0]["n"] == 3 and expected.rows[0]["best_val_acc"].n == 3


# --- export: dialog and CLI ------------------------------------------------------------------------
@sync
async def test_export_dialog_options_follow_the_kind_and_overwrite_is_confirmed(seed_runs,
                                                                               tmp_path):
    app = _app(seed_runs)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(RunTable)
        await until(pilot, lambda: table.row_count == 12)
        await pilot.press("slash", *"fa-sweep", "enter", "a", "e")
        screen = app.screen
        assert isinstance(screen, ExportScreen)
        shown = lambda: {r: screen.query_one(f"#{r}").display  # noqa: E731
                         for r in ("format-row", "layers-row", "x-row", "bands-row")}
        assert shown() == {"format-row": True, "layers-row": True, "x-row": False,
                           "bands-row": False}
        screen.query_one("#what").value = "plot"
        await pilot.pause()
        assert shown() == {"format-row": False, "layers-row": False, "x-row": True,
                           "bands-row": True}
        screen.query_one("#what").value = "grouped"
        await pilot.pause()
        screen.query_one("#layers").value = False
        target = tmp_path / "t.md"
        target.write_text("keep me")
        screen.query_one("#path").value = str(target)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen)
        assert target.read_text() == "keep me"
        assert screen.query_one("#path").value == str(tmp_path / "t-2.md")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: (tmp_path / "t-2.md").exists())
    header = (tmp_path / "t-2.md").read_text().splitlines()[0]
    assert "fc1" not in header and "best_val_acc" in header              # --no-layers


def test_cli_export_refuses_to_overwrite_without_force(seed_runs, tmp_path):
    out = tmp_path / "table.md"
    out.write_text("old")
    result = runner.invoke(cli, ["export", str(seed_runs / "fa-sweep-seed=0"), "-o", str(out),
                                 "--no-layers"])
    assert result.exit_code == 2 and "--force" in result.stderr and out.read_text() == "old"
    result = runner.invoke(cli, ["export", str(seed_runs / "fa-sweep-seed=0"), "-o", str(out),
                                 "--no-layers", "--force"])
    assert result.exit_code == 0 and "fc1" not in out.read_text()


def test_cli_plot_draws_seed_groups_as_bands(seed_runs, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    captured = {}
    original = Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["fig"] = fig
        return original(fig, *args, **kwargs)

    Figure.savefig = keep
    try:
        runs = [str(seed_runs / f"fa-sweep-seed={s}") for s in range(3)]
        result = runner.invoke(cli, ["export", *runs, "--plot", str(tmp_path / "p.png")])
    finally:
        Figure.savefig = original
    assert result.exit_code == 0, result.output
    acc_ax, rank_ax, _ = captured["fig"].axes
    assert any(isinstance(c, PolyCollection) for c in acc_ax.collections)   # the ± std band
    assert any("n=3" in (line.get_label() or "") for line in acc_ax.lines)
    assert any(line.get_linestyle() == "--" for line in rank_ax.lines)      # BP reference


@pytest.mark.parametrize("answer", ["y", "n"])
def test_cli_export_asks_at_a_terminal(seed_runs, tmp_path, answer):
    """With a terminal on stdin and stderr the command asks (a real pseudo-terminal)."""
    import os
    import pty
    import subprocess
    import sys
    out = tmp_path / "table.md"
    out.write_text("old")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fa_tui", "export",
                             str(seed_runs / "fa-sweep-seed=0"), "-o", str(out)],
                            stdin=slave, stdout=subprocess.PIPE, stderr=slave,
                            cwd=Path(__file__).resolve().parent.parent)
    os.close(slave)
    seen = b""
    while b"Overwrite?" not in seen:
        seen += os.read(master, 1024)
    os.write(master, f"{answer}\n".encode())
    code = proc.wait(timeout=60)
    os.close(master)
    if answer == "y":
        assert code == 0 and "| run " in out.read_text()
    else:
        assert code == 2 and out.read_text() == "old"


@sync
async def test_advanced_section_opens_from_the_keyboard(tmp_path):
    from textual.widgets import Collapsible
    app = _app(tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("1")
        advanced = app.screen.query_one("#advanced", Collapsible)
        assert advanced.collapsed
        title = advanced.query_one("CollapsibleTitle")
        for _ in range(80):                      # tab through the form to its title
            if app.focused is title:
                break
            await pilot.press("tab")
        assert app.focused is title
        await pilot.press("enter")
        assert not advanced.collapsed
        await pilot.press("tab")
        field = next(a for a in app.focused.ancestors_with_self if isinstance(a, FormField))
        assert field.path not in {"rule.name", "optim.lr"} and field.display
        assert field.spec.path in str(app.screen.query_one("#field-help").render())
