"""Where a training step and a diagnostics probe spend their time, per rule, on any device.

    python benchmarks/profile_step.py --device cuda --model resnet18 --rules bp fa dfa

For each rule: wall time per step (synchronised), the device's busy time per step, and the
top operators by device time and by host time (torch.profiler), then the same for one probe.
A step whose wall time is far above its device time is bound by the host (Python, launches).
This prints findings for a person to read; benchmarks/engine_bench.py holds the ratios.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from fa_contract.config import Config
from engine.train import Trainer


def trainer(device: str, model: str, rule: str, batch: int, every: int) -> Trainer:
    models = {"resnet18": {"name": "resnet18"}, "mlp": {"name": "mlp", "width": 800, "depth": 3},
              "cnn": {"name": "cnn", "widths": [32, 64, 64, 128]}}
    return Trainer(Config.model_validate({
        "run": {"device": device},
        "data": {"shape": [3, 32, 32], "train_size": batch * 40, "test_size": 64, "val_size": 64},
        "model": models[model], "norm": {"name": "batchnorm" if model != "mlp" else "none"},
        "rule": {"name": rule}, "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"batch_size": batch}, "metrics": {"every": every}}))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def table(prof, device: str, rows: int) -> None:
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))
    if device.startswith("cuda"):
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows // 2,
                                        max_name_column_width=60))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--rules", nargs="+", default=["bp", "fa", "dfa"])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--probe", action="store_true", help="also profile one diagnostics probe")
    args = p.parse_args()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    for rule in args.rules:
        tr = trainer(args.device, args.model, rule, args.batch, 1 if args.probe else 0)
        batches = list(tr.batches.epoch(0))[:args.steps + 10]
        for x, y in batches[:10]:                                 # warm-up and autotuning
            tr._train_step(tr._input(x), y)
        sync(args.device)
        t0 = time.perf_counter()
        for x, y in batches[10:]:
            tr._train_step(tr._input(x), y)
        sync(args.device)
        wall = (time.perf_counter() - t0) / args.steps
        with profile(activities=acts) as prof:
            for x, y in batches[10:]:
                tr._train_step(tr._input(x), y)
            sync(args.device)
        print(f"\n## {args.model} {rule}: {wall * 1e3:.2f} ms per step (wall, synchronised)")
        table(prof, args.device, args.rows)
        if args.probe:
            tr._measure(None)
            sync(args.device)
            t0 = time.perf_counter()
            with profile(activities=acts) as prof:
                tr._measure(None)
                sync(args.device)
            print(f"\n## {args.model} {rule} probe of {len(tr.diag.probe_y)}: "
                  f"{time.perf_counter() - t0:.3f} s (under the profiler)")
            table(prof, args.device, args.rows)


if __name__ == "__main__":
    main()
