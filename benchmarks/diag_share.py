"""Diagnostics share of wall time under the default cadence (metrics.every = "auto") on real
Fashion-MNIST, CPU: how many probes land in the first epoch and what share of the run's wall
time (up to the last training step: evaluation excluded) they take, the step-0 probe included. Prints a markdown table (docs/benchmarks.md).

    OMP_NUM_THREADS=1 python benchmarks/diag_share.py [--root /usr/share/datasets/fashion-mnist]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from fa_contract.config import Config
from engine.train import Trainer


def share(model: dict, root: str, epochs: int) -> tuple[int | None, int, int, float, float]:
    cfg = Config.model_validate({
        "run": {"device": "cpu"},
        "data": {"name": "fashion_mnist", "root": root, "download": False},
        "model": model, "rule": {"name": "fa"},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"epochs": epochs, "batch_size": 128, "log_every": 50}})
    tr = Trainer(cfg)
    t0 = time.perf_counter()
    diag_s, n, first = 0.0, 0, 0
    for ev in tr.events():
        if ev["type"] == "diag":
            diag_s, n = diag_s + ev["diag_s"], n + 1
            first += ev["step"] <= tr.steps_per_epoch
        if ev["type"] == "train" and ev["step"] == tr.total_steps:
            break
    wall = time.perf_counter() - t0
    return tr.probe_every, n, first, diag_s / wall, diag_s / max(n, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()
    print(f"# {platform.node()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| fa, batch 128 (430 steps per epoch) | epochs | every (auto) | probes | in epoch 1 "
          "| share of wall time | s per probe |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, model, epochs in (
            ("mlp 784-256x2-10", {"name": "mlp", "width": 256, "depth": 2}, 10),
            ("mlp 784-800x3-10", {"name": "mlp", "width": 800, "depth": 3}, 3),
            ("cnn 8-16-16-16", {"name": "cnn", "widths": [8, 16, 16, 16]}, 1)):
        every, n, first, s, per = share(model, args.root, epochs)
        print(f"| {name} | {epochs} | {every} | {n} | {first} | {s:.3f} | {per:.3f} |",
              flush=True)

if __name__ == "__main__":
    main()
