"""One sweep expander and namer for the CLI and Compose; export groups seeds only within one
sweep and never counts a seed twice. Each test failed before the fix (issue 9)."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fa_contract.config import Config
from fa_tui.cli import app
from fa_tui.core import form
from fa_tui.export import find_runs, summary_table
from fa_tui.launch import create_run
from fa_tui.presets import load_plan, save_preset
from tui_fixtures import _config, write_run

runner = CliRunner()
GRID = """
[run]
name = "grid"
device = "cpu"
[data]
name = "synthetic"
[sweep]
"optim.lr" = [1e-5, 0.1]
"model.width" = [8, 16]
seeds = [0, 1]
"""


def test_compose_and_the_cli_expand_a_grid_into_the_same_runs_and_names(tmp_path):
    preset = tmp_path / "grid.toml"
    preset.write_text(GRID)
    plan = load_plan(preset, check_data=False)
    base = form.default_values() | {"run.device": "cpu"}
    comp = form.compose(base, {"run.name": "grid", "optim.lr": "1e-5, 0.1",
                               "model.width": "8, 16", "seeds": "0, 1"})
    assert not comp.errors and not comp.general
    assert comp.names == [r.name for r in plan.runs]
    assert comp.names[0] == "grid-lr=1e-05-width=8-seed=0" and len(comp.names) == 8
    assert [c.run.seed for c in comp.configs] == [0, 0, 0, 0, 1, 1, 1, 1]   # seeds outermost
    # the saved composition is a preset that expands back into the same runs
    save_preset(comp.preset(), tmp_path / "saved.toml")
    again = load_plan(tmp_path / "saved.toml", check_data=False)
    assert [r.name for r in again.runs] == comp.names


def test_compose_refuses_duplicate_seeds_and_values():
    base = form.default_values()
    comp = form.compose(base, {"seeds": "0, 0"})
    assert "seed 0 is listed twice" in comp.errors["seeds"] and not comp.configs
    comp = form.compose(base, {"optim.lr": "0.1, 0.1"})
    assert "listed twice" in comp.errors["optim.lr"]


def test_a_loaded_preset_keeps_its_base_name_so_an_edited_sweep_is_named_afresh(tmp_path):
    preset = tmp_path / "quickstart.toml"
    preset.write_text('[sweep]\n"rule.name" = ["bp", "fa"]\n"optim.lr" = [0.05]\n')
    plan = load_plan(preset, check_data=False)
    assert plan.base == "quickstart" and plan.runs[0].name == "quickstart-rule=bp-lr=0.05"
    # what the Compose screen does on load: the first run's values under the base name
    flat = form.flatten(plan.runs[0].config.model_dump(mode="json"))
    flat["run.name"] = plan.base
    comp = form.compose(flat, {"rule.name": "fa", "run.name": flat["run.name"]})
    assert comp.names == ["quickstart"] and comp.configs[0].rule.name == "fa"


def _run(runs: Path, name: str, seed: int, acc: float):
    cfg = _config(name, "fa", {"name": "mlp"})
    cfg["run"]["seed"] = seed
    path = write_run(runs, name, cfg, "done", 10)
    summary = {"status": "done", "best_val_acc": acc, "test_acc": acc, "steps": 10}
    (path / "summary.json").write_text(json.dumps(summary))


def test_export_groups_only_within_one_sweep(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "quickstart-rule=fa", 0, 0.5)                 # same config, another sweep
    _run(runs, "fa-lr-sweep-lr=0.05-seed=0", 0, 0.6)
    _run(runs, "fa-lr-sweep-lr=0.05-seed=1", 1, 0.8)
    table = summary_table(find_runs([runs]), group=True, layers=False)
    by_run = {row["run"]: row for row in table.rows}
    assert set(by_run) == {"quickstart-rule=fa", "fa-lr-sweep-lr=0.05"}
    sweep = by_run["fa-lr-sweep-lr=0.05"]
    assert sweep["n"] == 2 and sweep["seeds"] == "0,1"
    assert sweep["test_acc"].mean == (0.6 + 0.8) / 2
    single = by_run["quickstart-rule=fa"]
    assert single["n"] == 1 and single["test_acc"].std is None       # no ± 0.00


def test_export_flags_a_repeated_seed_instead_of_counting_it(tmp_path):
    for copy in ("a", "b"):
        _run(tmp_path / copy, "fa-seed=0", 0, 0.5 if copy == "a" else 0.7)
    result = runner.invoke(app, ["export", "-f", "json", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["n"] == 1 and rows[0]["test_acc"]["mean"] == 0.5
    assert "seed 0 of fa is already counted" in result.stderr


def test_a_relaunched_run_is_not_a_second_seed(tmp_path):
    cfg = Config.model_validate({"run": {"name": "x", "device": "cpu"}})
    first, second = create_run(tmp_path, cfg), create_run(tmp_path, cfg)
    assert (first.name, second.name) == ("x", "x-2")
    table = summary_table([first, second], group=True, layers=False)
    assert [row["n"] for row in table.rows] == [1, 1]
