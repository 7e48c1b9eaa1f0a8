"""The CLI's bad-input matrix: every broken preset or --set is refused by the real CLI with one
clear message on stderr and exit status 2, without a traceback and before any run directory
exists."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# name -> (preset text, extra CLI args, fragments the message must contain)
CASES = {
    "unknown_key": ("[optim]\nlrr = 0.1\n", [], ["optim.lrr", "Did you mean 'optim.lr'?"]),
    "unknown_section": ("[optimizer]\nlr = 0.1\n", [], ["'optimizer'", "Did you mean 'optim'?"]),
    "wrong_type": ('[optim]\nlr = "fast"\n', [], ["optim.lr", "expected a number"]),
    "out_of_range": ("[train]\nepochs = 0\n", [], ["train.epochs", ">= 1"]),
    "unknown_choice": ('[rule]\nname = "fb"\n', [], ["rule.name", "'bp', 'fa'"]),
    "bad_toml": ("[rule]\nname = fa\n", [], ["invalid TOML", "line 2, column 8"]),
    "missing_extends": ('extends = "gone.toml"\n', [], ["extends", "gone.toml"]),
    "empty_sweep": ('[sweep]\n"rule.name" = []\n', [], ["rule.name", "empty sweep list"]),
    "unknown_sweep_key": ('[sweep]\n"rule.nmae" = ["fa"]\n', [],
                          ["rule.nmae", "Did you mean 'rule.name'?"]),
    "bad_set_syntax": ("[rule]\nname = 'fa'\n", ["--set", "optim.lr"], ["bad --set syntax"]),
    "bad_set_type": ("[rule]\nname = 'fa'\n", ["--set", "train.epochs=many"],
                     ["train.epochs", "expected an integer"]),
    "val_split_too_big": ("[data]\ntrain_size = 4096\nval_size = 5000\n", [],
                          ["data.val_size = 5000", "synthetic has 4096", "data.train_size",
                           "below 4096"]),
    "batch_too_big": ('[data]\nname = "cifar10"\nval_size = 49990\n[train]\nbatch_size = 64\n',
                      [], ["train.batch_size = 64", "10 training examples",
                           "data.val_size = 49990"]),
    "missing_data": ('[data]\nname = "cifar10"\nroot = "{tmp}/nodata"\ndownload = false\n', [],
                     ["data.name", "cifar10", "not found"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_preset_exits_2_with_a_message_and_creates_nothing(case, tmp_path):
    text, args, fragments = CASES[case]
    preset = tmp_path / f"{case}.toml"
    preset.write_text(text.format(tmp=tmp_path), encoding="utf-8")
    runs = tmp_path / "runs"
    env = {**os.environ, "FA_TUI_DATA": str(tmp_path / "nodata")}
    proc = subprocess.run([sys.executable, "-m", "fa_tui", "run", str(preset),
                           "--runs-dir", str(runs), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert preset.name in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert not runs.exists() or not any(runs.iterdir())


def test_missing_preset_file_exits_2(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "fa_tui", "run", str(tmp_path / "nope.toml"),
                           "--runs-dir", str(runs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "nope.toml" in proc.stderr and "quickstart" in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())
