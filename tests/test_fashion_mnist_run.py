"""A real Fashion-MNIST run through the real CLI, on the Debian package's idx files.

Skipped, with the reason, where `dataset-fashion-mnist` is not installed (CI installs it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian_files = pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed "
           "(apt-get install dataset-fashion-mnist)")


def run_preset(tmp_path: Path, sets: list[str], timeout: int) -> dict:
    """`fa-tui run fashion_mnist_fa_vs_bp --set …` into tmp_path/runs, offline (no download
    folder), one thread; returns the one run's summary.json."""
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FA_TUI_DATA": str(tmp_path / "no-data")}
    cmd = [sys.executable, "-m", "fa_tui", "run", "fashion_mnist_fa_vs_bp", "--runs-dir", str(runs)]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return json.loads((run / "summary.json").read_text())


@needs_debian_files
def test_fa_learns_fashion_mnist_from_the_debian_files(tmp_path):
    summary = run_preset(tmp_path, [
        "rule.name=fa", "run.seed=0", "run.device=cpu", "train.epochs=1", "train.max_steps=150",
        "data.download=false", "metrics.every=50", "metrics.probe_size=64"], timeout=600)
    assert summary["status"] == "done"
    assert summary["steps"] == 150
    # 150 fa steps of an MLP on real Fashion-MNIST get well above chance (0.1): ~0.8 observed
    assert summary["test_acc"] > 0.6
    assert summary["best_val_acc"] > 0.6
    fc2 = summary["layers"]["fc2"]
    assert 0 < fc2["angle_delta"] < 90          # feedback alignment has begun
    assert summary["layers"]["head"]["angle_weight"] is not None


@needs_debian_files
def test_dfa_trains_a_relu_mlp_for_one_epoch_with_its_defaults(tmp_path):
    """Issue 8's "done when": dfa with its default feedback normalisation (Launay et al.'s
    scale), a ReLU MLP, SGD lr 0.01 momentum 0.9, one whole epoch: ends done above 70 %. With
    the old 1/sqrt(n_L) scale this diverged (loss 3e14 by step 200)."""
    summary = run_preset(tmp_path, [
        "rule.name=dfa", "run.seed=0", "run.device=cpu", "train.epochs=1", "optim.name=sgd",
        "optim.lr=0.01", "optim.momentum=0.9", "optim.schedule=constant",
        "model.activation=relu", "data.download=false", "metrics.probe_size=64"], timeout=900)
    assert summary["status"] == "done", summary.get("reason")
    assert summary["epochs"] == 1
    assert summary["test_acc"] > 0.70
