"""The CLI's bad-input matrix: every broken preset or --set is refused by the real CLI with one
clear message on stderr and exit status 2, without a traceback and before any run directory
exists."""
from __future__ import annotations

import os
import subprocess
import sys
import time
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
    # values the schema used to accept and the worker then failed on (issue 10)
    "inf_lr": ("[optim]\nlr = inf\n", [], ["optim.lr = inf", "finite number"]),
    "inf_weight_decay": ("[optim]\nweight_decay = inf\n", [],
                         ["optim.weight_decay = inf", "finite"]),
    "inf_scale": ("[rule]\nscale = inf\n", [], ["rule.scale = inf", "finite"]),
    "nan_beta": ("[optim]\nbetas = [nan, 0.999]\n", [], ["optim.betas[0] = nan", "finite"]),
    "big_beta": ("[optim]\nbetas = [0.9, 1.5]\n", [], ["optim.betas[1] = 1.5", "< 1"]),
    "cnn_zero_width": ('[model]\nname = "cnn"\nwidths = [0, 8, 8, 8]\n', [],
                       ["model.widths[0] = 0", ">= 1"]),
    "empty_subset": ("[data]\nsubset = []\n", [], ["data.subset", "at least 1"]),
    "subset_out_of_range": ("[data]\nsubset = [0, 12]\n", [],
                            ["data.subset", "classes 0..9", "[12]"]),
    "negative_subset": ("[data]\nsubset = [-1, 2]\n", [], ["data.subset[0] = -1", ">= 0"]),
    "zero_shape": ("[data]\nshape = [0]\n", [], ["data.shape[0] = 0", ">= 1"]),
    "negative_shape": ("[data]\nshape = [-5]\n", [], ["data.shape[0] = -5", ">= 1"]),
    "huge_width": ("[model]\nwidth = 10000000000\n", [], ["model.width = 10000000000", "<="]),
    "huge_train_size": ("[data]\ntrain_size = 1000000000000\n", [],
                        ["data.train_size", "<="]),
    "cnn_on_vectors": ('[model]\nname = "cnn"\n[data]\nshape = [30]\n', [],
                       ["model.name = 'cnn' needs image inputs", "data.shape = [30]"]),
    "vit_patch": ('[model]\nname = "vit"\npatch = 5\n', [],
                  ["model.patch = 5 does not divide the 28×28 input"]),
    "big_sweep": ("[sweep]\nseeds = [%s]\n\"optim.lr\" = [%s]\n"
                  % (", ".join(map(str, range(1000))),
                     ", ".join(f"0.{i:04d}1" for i in range(1000))), [],
                  ["sweep", "1,000,000 runs", "10,000"]),
    "deep_nesting": ('[sweep]\n"optim.lr" = ' + "[" * 2000 + "]" * 2000 + "\n", [],
                     ["nested more than"]),
    # the memory guard: the schema accepts it, no machine here has 800 GiB
    "memory": ("[model]\nbottleneck = 100000000\n", [],
               ["needs about", " parameters; ", "more than the",
                "--skip-memory-check"]),
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


def _run(args: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "FA_TUI_DATA": str(tmp_path / "nodata")}
    return subprocess.run([sys.executable, "-m", "fa_tui", "run", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _refused(proc: subprocess.CompletedProcess, runs: Path) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert proc.stderr.count("error:") == 1, proc.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_a_long_extends_chain_is_one_message(tmp_path):
    """1100 files each extending the next: refused at the bound, naming the file and `extends`
    (it used to be a RecursionError traceback)."""
    for i in range(1100):
        text = f'extends = "c{i + 1}.toml"\n' if i < 1099 else "[optim]\nlr = 0.1\n"
        (tmp_path / f"c{i}.toml").write_text(text, encoding="utf-8")
    runs = tmp_path / "runs"
    proc = _run([str(tmp_path / "c0.toml"), "-d", str(runs)], tmp_path)
    _refused(proc, runs)
    assert "c0.toml: extends: a chain of more than 32 files" in proc.stderr


def test_gpus_the_machine_lacks_are_refused(tmp_path):
    """--gpus is checked against the GPUs this machine has (nvidia-smi -L, torch-free)."""
    from fa_tui.machine import gpu_count
    runs = tmp_path / "runs"
    missing = str(gpu_count() + 7)
    proc = _run(["quickstart", "-d", str(runs), "--gpus", missing], tmp_path)
    _refused(proc, runs)
    assert f"--gpus {missing}" in proc.stderr
    assert "GPU" in proc.stderr and "set run.device" not in proc.stderr


def test_offline_dataset_download_is_refused_in_seconds(tmp_path):
    """cifar10 with download = true (the default) and no files, on a machine without network:
    exit 2 naming the files and the folder to copy them into, before anything is created."""
    from fa_contract.data_files import reachable
    if reachable("cifar10"):
        pytest.skip("www.cs.toronto.edu is reachable: this test needs a machine without network")
    runs = tmp_path / "runs"
    start = time.monotonic()
    proc = _run(["quickstart", "--set", "data.name=cifar10", "-d", str(runs)], tmp_path)
    print(f"offline refusal took {time.monotonic() - start:.1f} s")
    _refused(proc, runs)
    for fragment in ("data.name = 'cifar10'", "cannot be reached", "data_batch_1",
                     f"copy them into {tmp_path / 'nodata' / 'cifar-10-batches-py'}"):
        assert fragment in proc.stderr, (fragment, proc.stderr)


def test_memory_guard_refuses_the_bottleneck_that_ate_the_machine(tmp_path):
    """The issue's acceptance case, timed for the report (printed, not asserted)."""
    runs = tmp_path / "runs"
    start = time.monotonic()
    proc = _run(["quickstart", "--set", "model.bottleneck=100000000", "-d", str(runs)], tmp_path)
    print(f"memory refusal took {time.monotonic() - start:.2f} s")
    _refused(proc, runs)
    assert "quickstart.toml" in proc.stderr and "GiB" in proc.stderr


def test_the_fetch_helper_fails_with_one_line_offline(tmp_path):
    """`python -m engine.fetch` (what the launcher runs when a dataset is missing): offline,
    exit 1 and the reason as the last stdout line, nothing left but torchvision's folder."""
    from fa_contract.data_files import reachable
    if reachable("mnist"):
        pytest.skip("the MNIST mirror is reachable: this test needs a machine without network")
    proc = subprocess.run([sys.executable, "-m", "engine.fetch", "mnist", str(tmp_path / "d")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(("URLError", "RuntimeError"))
    bad = subprocess.run([sys.executable, "-m", "engine.fetch", "imagenet", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a downloadable dataset" in bad.stdout
