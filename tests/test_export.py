"""Export: hand-written run directories (docs/run-directory.md format) with known figures, so
that the seed grouping's mean ± std is checked exactly, and every format is parsed back."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fa_contract.config import Config
from fa_contract.rundir import EVENTS, RunDir, Status, append_event
from fa_tui.cli import app
from fa_tui.export import curve_table, find_runs, plot, render, summary_table
from fa_tui.launch import create_run
from tui_fixtures import start_event

runner = CliRunner()
BP_ACC = {0: 0.90, 1: 0.92, 2: 0.97}
FA_ACC = {0: 0.80, 1: 0.84}


def make_run(runs_dir: Path, rule: str, seed: int, test_acc: float | None, state: str = "done",
             summary: bool = True, **rule_cfg) -> RunDir:
    """A finished run: config.toml, status, events (start, diag×2, eval×2, test, end) and,
    unless `summary` is False (a run killed before writing it), summary.json."""
    cfg = Config.model_validate({"run": {"seed": seed}, "rule": {"name": rule, **rule_cfg},
                                 "model": {"name": "mlp", "width": 8, "depth": 1}})
    run = create_run(runs_dir, cfg, f"exp-rule={rule}-seed={seed}")
    layers = {"fc1": {"erank_err": 3.0 + seed, "erank_err_bp": 5.0, "angle_delta": 40.0 + seed,
                      "angle_grad": 30.0, "angle_weight": None if rule == "bp" else 80.0},
              "head": {"erank_err": 2.0, "erank_err_bp": 2.0, "angle_delta": 0.0,
                       "angle_grad": 0.0, "angle_weight": None if rule == "bp" else 85.0}}
    val = [0.5, (test_acc or 0.5) - 0.01]
    with open(run.file(EVENTS), "w") as f:
        append_event(f, start_event(cfg.model_dump(mode="json"), 10, ("fc1", "head"),
                                    steps_per_epoch=5))
        append_event(f, {"type": "diag", "step": 0, "epoch": 0, "layers": layers})
        append_event(f, {"type": "train", "step": 5, "epoch": 0, "loss": 1.5, "acc": 0.4})
        append_event(f, {"type": "eval", "step": 5, "epoch": 1, "split": "val", "loss": 1.2,
                         "acc": val[0]})
        append_event(f, {"type": "diag", "step": 10, "epoch": 1, "layers": layers})
        append_event(f, {"type": "eval", "step": 10, "epoch": 2, "split": "val", "loss": 1.0,
                         "acc": val[1]})
        if test_acc is not None:
            append_event(f, {"type": "test", "step": 10, "loss": 0.9, "acc": test_acc})
        append_event(f, {"type": "end", "step": 10, "status": state, "reason": None})
    if summary:
        run.write_summary({"status": state, "reason": None, "test_acc": test_acc,
                           "test_loss": 0.9, "best_val_acc": max(val), "final_val_acc": val[1],
                           "final_train_loss": 1.5, "wall_s": 3.0, "steps": 10, "epochs": 2,
                           "device": "cpu", "config": cfg.model_dump(mode="json"),
                           "layers": layers})
    run.write_status(Status(state=state, pid=None, step=10, total_steps=10))
    return run


@pytest.fixture
def runs_dir(tmp_path):
    for seed, acc in BP_ACC.items():
        make_run(tmp_path, "bp", seed, acc)
    for seed, acc in FA_ACC.items():
        make_run(tmp_path, "fa", seed, acc)
    return tmp_path


def rows_by_rule(rows):
    return {r["rule"]: r for r in rows}


def test_seed_grouping_gives_mean_std_and_n(runs_dir):
    table = summary_table(find_runs([runs_dir]))
    rows = rows_by_rule(table.rows)
    assert set(rows) == {"bp", "fa"}
    bp, fa = rows["bp"], rows["fa"]
    assert (bp["run"], bp["n"], bp["seeds"], bp["status"]) == ("exp-rule=bp", 3, "0,1,2", "done")
    assert bp["test_acc"].mean == pytest.approx(statistics.fmean(BP_ACC.values()))
    assert bp["test_acc"].std == pytest.approx(statistics.stdev(BP_ACC.values()))
    assert fa["test_acc"].mean == pytest.approx(0.82)
    assert fa["test_acc"].std == pytest.approx(0.04 / 2 ** 0.5)
    assert bp["fc1.erank_err"].mean == pytest.approx(4.0)        # 3 + mean seed (0, 1, 2)
    assert bp["fc1.erank_err"].std == pytest.approx(1.0)
    assert "fc1.angle_weight" in table.columns                    # fa has it; bp's is absent
    assert bp["fc1.angle_weight"].n == 0 and fa["fc1.angle_weight"].mean == 80.0
    # varying keys become columns; seeds and names never split a group
    assert "seed" not in table.columns and "lr" in table.columns


def test_ungrouped_has_one_row_per_run_with_its_seed(runs_dir):
    table = summary_table(find_runs([runs_dir]), group=False, layers=False)
    assert len(table.rows) == 5 and "seed" in table.columns
    assert not any("." in c for c in table.columns)               # no layer columns
    accs = {(r["rule"], r["seed"]): r["test_acc"] for r in table.rows}
    assert accs == {**{("bp", s): a for s, a in BP_ACC.items()},
                    **{("fa", s): a for s, a in FA_ACC.items()}}


def test_a_config_difference_splits_groups_and_gets_a_column(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, "ldfa", seed, 0.7 + seed / 10, rank=4)
        make_run(tmp_path, "ldfa", seed, 0.8 + seed / 10, rank=8)
    rows = summary_table(find_runs([tmp_path])).rows
    assert sorted((r["rank"], r["n"]) for r in rows) == [(4, 2), (8, 2)]


def test_json_csv_md_tex(runs_dir):
    table = summary_table(find_runs([runs_dir]))

    rows = rows_by_rule(json.loads(render(table, "json")))
    assert rows["fa"]["test_acc"]["n"] == 2
    assert rows["fa"]["test_acc"]["mean"] == pytest.approx(0.82)
    assert rows["bp"]["fc1.angle_weight"] == {"mean": None, "std": None, "n": 0}
    assert len(rows["bp"]["runs"]) == 3

    parsed = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert len(parsed) == 2
    fa = next(r for r in parsed if r["rule"] == "fa")
    assert float(fa["test_acc"]) == pytest.approx(0.82)
    assert float(fa["test_acc_std"]) == pytest.approx(0.04 / 2 ** 0.5)
    assert fa["n"] == "2" and fa["fc1.angle_weight"] == "80.0"

    md = render(table, "md").splitlines()
    assert md[0].startswith("| run | rule |") and "test_acc (%)" in md[0]
    assert set(md[1]) <= set("|-:") and md[1].count("|") == md[0].count("|")
    assert len(md) == 4
    fa_line = next(line for line in md if "| fa |" in line)
    assert "82.00 ± 2.83" in fa_line                 # percent; std 0.0283
    bp_line = next(line for line in md if "| bp |" in line)
    assert "93.00 ± 3.61" in bp_line and "| – |" in bp_line   # bp has no angle_weight

    tex = render(table, "tex")
    assert tex.startswith("\\begin{tabular}{") and tex.rstrip().endswith("\\end{tabular}")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert "$82.00 \\pm 2.83$" in tex and "test\\_acc (\\%)" in tex
    header = tex.splitlines()[2]
    assert header.count("&") == len(table.columns) - 1


def test_a_run_without_summary_is_exported_from_its_events(tmp_path):
    run = make_run(tmp_path, "fa", 0, None, state="failed", summary=False)
    row = summary_table([run], group=False).rows[0]
    assert row["status"] == "failed" and row["test_acc"] is None
    assert row["best_val_acc"] == 0.5 and row["final_val_acc"] == pytest.approx(0.49)
    assert row["fc1.erank_err"] == 3.0


def test_curves_flatten_every_metric_event(runs_dir):
    table = curve_table(find_runs([runs_dir / "exp-rule=fa-seed=1"]))
    assert [r["type"] for r in table.rows] == ["diag", "train", "eval", "diag", "eval", "test"]
    assert table.columns[:6] == ["run", "type", "x", "step", "epoch", "t"]
    assert [r["x"] for r in table.rows] == [r["step"] for r in table.rows]
    parsed = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert len(parsed) == 6
    assert parsed[0]["fc1.erank_err"] == "4.0" and parsed[0]["head.angle_weight"] == "85.0"
    assert parsed[2]["acc"] == "0.5" and parsed[2]["split"] == "val"
    assert parsed[1]["fc1.erank_err"] == ""                       # a train row has no layers


@pytest.mark.parametrize("axis", ["epoch", "wall", "val_acc"])
def test_curves_and_plots_take_another_x_axis(runs_dir, tmp_path, axis):
    runs = find_runs([runs_dir / "exp-rule=fa-seed=1"])
    events = runs[0].read_events()
    table = curve_table(runs, axis)
    if axis == "val_acc":
        # before the first validation there is no accuracy to place a row at
        evals = [e["acc"] for e in events if e.get("type") == "eval"]
        assert table.rows[0]["x"] is None and table.rows[2]["x"] == evals[0]
        assert table.rows[-1]["x"] == evals[-1]
    elif axis == "epoch":
        per_epoch = events[0]["steps_per_epoch"]
        assert [r["x"] for r in table.rows] == [r["step"] / per_epoch for r in table.rows]
    else:
        t0 = events[0]["t"]
        assert [r["x"] for r in table.rows] == [r["t"] - t0 for r in table.rows]
    pytest.importorskip("matplotlib")
    plot(runs, tmp_path / "p.png", axis, "erank_err")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_export_formats_files_and_plot(runs_dir, tmp_path):
    out = tmp_path / "table.csv"
    result = runner.invoke(app, ["export", str(runs_dir), "-o", str(out)])  # format from suffix
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(out.open()))) == 2

    result = runner.invoke(app, ["export", "exp-rule=bp-seed=0", "--runs-dir", str(runs_dir),
                                 "--format", "md", "--no-group"])
    assert result.exit_code == 0 and result.stdout.count("\n") == 3

    curves = tmp_path / "curves.csv"
    result = runner.invoke(app, ["export", str(runs_dir), "--curves", "-o", str(curves)])
    assert result.exit_code == 0
    assert len(list(csv.DictReader(curves.open()))) == 5 * 6

    result = runner.invoke(app, ["export", str(runs_dir), "--plot", str(tmp_path / "p.gif")])
    assert result.exit_code == 2 and ".png" in result.stderr
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    result = runner.invoke(app, ["export", str(runs_dir), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""                                    # only the plot was asked for
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_errors_are_one_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["export", str(empty)])
    assert result.exit_code == 2 and "no runs in this directory" in result.stderr
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "xml"])
    assert result.exit_code == 2
