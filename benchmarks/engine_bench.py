"""Engine benchmarks: every figure is a ratio of two timings taken side by side in this one
process, alternating A/B rounds so drift in machine load hits both sides alike.

    python benchmarks/engine_bench.py              # CPU figures (as recorded in docs/benchmarks.md)
    python benchmarks/engine_bench.py --gpu        # + ResNet-18 CIFAR epoch on CUDA (bf16, channels_last)

Ratios: the engine's bp step vs a bare hand-written PyTorch loop on the same model and batches;
fa and dfa steps vs bp; the share of wall time that diagnostics take at the default cadence.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from engine.config import Config, MetricsCfg
from engine.data import Batches
from engine.models import build_model
from engine.train import Trainer


def config(model: dict, rule: str, steps: int, batch: int, shape: list[int], device: str,
           every: int = 0, log_every: int = 20, lr: float = 0.01) -> Config:
    return Config.model_validate({
        "run": {"device": device},
        "data": {"shape": shape, "train_size": batch * steps + 64, "test_size": 64, "val_size": 64},
        "model": model, "rule": {"name": rule},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9},
        "train": {"epochs": 1, "batch_size": batch, "max_steps": steps, "log_every": log_every},
        "metrics": {"every": every, "probe_size": MetricsCfg().probe_size}})


def time_engine(cfg: Config, warmup: int) -> float:
    """Seconds per step of Trainer.events() between the train events at step `warmup` and at
    the last step (both are sync points)."""
    tr = Trainer(cfg)
    t_start = s_start = None
    for ev in tr.events():
        if ev["type"] != "train":
            continue
        if t_start is None and ev["step"] >= warmup:
            t_start, s_start = time.perf_counter(), ev["step"]
        elif ev["step"] == tr.total_steps:
            return (time.perf_counter() - t_start) / (tr.total_steps - s_start)
    raise RuntimeError(f"run ended early: {ev}")


def time_bare(cfg: Config, warmup: int) -> float:
    """The same model, data, batches and optimiser as a bare PyTorch loop."""
    tr = Trainer(cfg.model_copy(update={"metrics": MetricsCfg(every=0)}))  # only for its data
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, cfg.norm, tr.data.input_shape, tr.data.classes).to(tr.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    batches = Batches(tr.data, cfg.train.batch_size, cfg.run.seed, False, tr.device)
    total = tr.total_steps
    t_start = None
    for i, (x, y) in enumerate(batches.epoch(0)):
        if i == warmup:
            loss.item()
            t_start = time.perf_counter()
        if i == total:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()
    return (time.perf_counter() - t_start) / (total - warmup)


def diagnostics_share(cfg: Config, warmup: int) -> tuple[float, float, float]:
    """Time spent in diagnostics (the diag events' own `diag_s`) over the wall time of the same
    run, after `warmup` steps: both halves are measured in one run, so slow drifts of machine
    speed cannot bias the share. Also returns seconds per diag and per training step."""
    tr = Trainer(cfg)
    t_start, diag_s, n_diag = None, 0.0, 0
    for ev in tr.events():
        if ev["type"] == "train" and t_start is None and ev["step"] >= warmup:
            t_start, s_start = time.perf_counter(), ev["step"]
        elif ev["type"] == "diag" and t_start is not None:
            diag_s, n_diag = diag_s + ev["diag_s"], n_diag + 1
        elif ev["type"] == "train" and ev["step"] == tr.total_steps:
            wall = time.perf_counter() - t_start
            steps = tr.total_steps - s_start
            return diag_s / wall, diag_s / n_diag, (wall - diag_s) / steps
    raise RuntimeError("run ended early")


def ratio(a, b, rounds: int) -> tuple[float, float, float]:
    """Median of a()/b() over alternating rounds; also the medians of a and b."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(a())
        tb.append(b())
    return statistics.median(x / y for x, y in zip(ta, tb)), statistics.median(ta), statistics.median(tb)


class Rows(list):
    """Prints each row as soon as it is measured."""

    def append(self, row) -> None:
        name, (q, a, b), target = row
        print(f"| {name} | {q:.3f} | {a:.4f} | {b:.4f} | {target} |", flush=True)
        super().append(row)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--gpu", action="store_true", help="also the CUDA ResNet-18 epoch figures")
    args = p.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    mlp = {"name": "mlp", "width": 800, "depth": 3}            # Launay et al.'s 3072-800-800-800-10
    cnn = {"name": "cnn", "widths": [32, 64, 64, 128]}
    print("| measurement | ratio | A s | B s | target |\n|---|---|---|---|---|")
    rows = Rows()
    w, s = 20, 60
    r = ratio(lambda: time_engine(config(mlp, "bp", w + s, 128, [3, 32, 32], "cpu"), w),
              lambda: time_bare(config(mlp, "bp", w + s, 128, [3, 32, 32], "cpu"), w), args.rounds)
    rows.append(("engine bp step / bare PyTorch loop (mlp 3072-800x3-10, batch 128)", r, "≤ 1.05"))
    for rule, target in (("fa", "≤ 1.10"), ("dfa", "≤ 1.00")):
        r = ratio(lambda: time_engine(config(mlp, rule, w + s, 128, [3, 32, 32], "cpu"), w),
                  lambda: time_engine(config(mlp, "bp", w + s, 128, [3, 32, 32], "cpu"), w),
                  args.rounds)
        rows.append((f"{rule} step / bp step (mlp)", r, target))
    w, s = 4, 16
    for rule, target in (("fa", "≤ 1.10"), ("dfa", "≤ 1.00")):
        r = ratio(lambda: time_engine(config(cnn, rule, w + s, 64, [3, 32, 32], "cpu", log_every=4, lr=1e-3), w),
                  lambda: time_engine(config(cnn, "bp", w + s, 64, [3, 32, 32], "cpu", log_every=4, lr=1e-3), w),
                  max(3, args.rounds - 2))
        rows.append((f"{rule} step / bp step (cnn 32-64-64-128, batch 64)", r, target))
    every = MetricsCfg().every
    share = diagnostics_share(config(mlp, "fa", 20 + 3 * every, 128, [3, 32, 32], "cpu",
                                     every=every), warmup=20)
    rows.append((f"diagnostics share of wall time, fa mlp, every {every} steps", share, "≤ 0.05"))
    if args.gpu:
        gpu_epoch()


def gpu_epoch() -> None:
    """ResNet-18 on CIFAR-shaped data, one 50k-image epoch, bf16 autocast + channels_last."""
    res = {}
    for rule in ("bp", "fa", "bp", "fa"):
        cfg = Config.model_validate({
            "run": {"device": "cuda"},
            "data": {"shape": [3, 32, 32], "train_size": 50_000 + 64, "test_size": 64, "val_size": 64},
            "model": {"name": "resnet18"}, "norm": {"name": "batchnorm"}, "rule": {"name": rule},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "train": {"epochs": 1, "batch_size": 512, "log_every": 50}, "metrics": {"every": 0}})
        tr = Trainer(cfg)
        for ev in tr.events():
            if ev["type"] == "train" and ev["step"] == 10:
                torch.cuda.synchronize()
                t0, s0 = time.perf_counter(), ev["step"]
            if ev["type"] == "train" and ev["step"] == tr.total_steps:
                torch.cuda.synchronize()
                per = (time.perf_counter() - t0) / (ev["step"] - s0)
        res[rule] = per * tr.steps_per_epoch
    print(f"| resnet18 epoch (50k, bf16, channels_last) bp | {res['bp']:.2f} s | target ≤ 5 s |")
    print(f"| resnet18 epoch fa / bp | {res['fa'] / res['bp']:.3f} | target ≤ 1.2 |")


if __name__ == "__main__":
    main()
