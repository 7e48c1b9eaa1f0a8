"""Engine benchmarks: every figure is a ratio of two timings taken side by side in this one
process, alternating A/B rounds so drift in machine load hits both sides alike.

    python benchmarks/engine_bench.py              # CPU figures (as recorded in docs/benchmarks.md)
    python benchmarks/engine_bench.py --gpu        # + ResNet-18 CIFAR epoch on CUDA (bf16, channels_last)
    python benchmarks/engine_bench.py --gpu-only   # only the CUDA figures

Ratios: the engine's bp step vs a bare hand-written PyTorch loop on the same model and batches;
fa and dfa steps vs bp; the share of wall time that diagnostics take at the default cadence.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fa_contract.config import Config, MetricsCfg
from engine.data import Batches
from engine.models import build_model
from engine.train import Trainer

VAL = 64         # validation examples held out of the CIFAR-format files
EPOCH = 50_000   # images per GPU epoch (the per-step time is scaled to exactly this)


def config(model: dict, rule: str, steps: int, batch: int, shape: list[int], device: str,
           every: int | str = 0, log_every: int = 20, lr: float = 0.01) -> Config:
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
    p.add_argument("--gpu-only", action="store_true", help="only the CUDA figures")
    args = p.parse_args()
    if args.gpu_only:
        return gpu_figures(max(3, args.rounds // 3))
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
    # the default cadence ("auto") plans the probes of the whole run to fit metrics.budget
    every = MetricsCfg().every
    share = diagnostics_share(config(mlp, "fa", 2020, 128, [3, 32, 32], "cpu", every=every),
                              warmup=20)
    rows.append((f"diagnostics share of wall time, fa mlp, every {every} (2000 steps)", share,
                 "≤ 0.05"))
    if args.gpu:
        gpu_figures(max(3, args.rounds // 3))


def cifar_files(root: Path, n_train: int) -> None:
    """A CIFAR-10 tree of random images in torchvision's on-disk format, loaded through the real
    loader (md5 table rewritten as the tests do), so the epoch below stores uint8 images on the
    device and augments them there, exactly as a real CIFAR run does."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests.datafiles import md5_checked, write_cifar10
    from torchvision.datasets import CIFAR10
    import engine.data
    write_cifar10(root, per_batch=n_train // 5, n_test=1000)
    engine.data.TORCHVISION["cifar10"] = md5_checked(CIFAR10, root)


def gpu_config(root: Path, rule: str, batch: int = 512, every: int | str = 0, max_steps: int = 0,
               model: dict | None = None) -> Config:
    return Config.model_validate({
        "run": {"device": "cuda"},
        "data": {"name": "cifar10", "root": str(root), "val_size": VAL, "download": False},
        "model": model or {"name": "resnet18"}, "norm": {"name": "batchnorm"},
        "rule": {"name": rule}, "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 1 if not max_steps else 100, "batch_size": batch, "log_every": 50,
                  "max_steps": max_steps or None},
        "metrics": {"every": every}})


def gpu_epoch_s(cfg: Config, warmup: int = 10) -> float:
    """Seconds for one epoch of the training loop (events included, the end-of-epoch eval and
    test excluded), from the per-step time after `warmup` steps of cuDNN autotuning. The train
    events read the device-side loss sums, so they are sync points, as on the CPU."""
    return time_engine(cfg, warmup) * EPOCH / cfg.train.batch_size


def gpu_bare_epoch_s(cfg: Config, warmup: int = 10) -> float:
    """The same epoch as a bare loop: plain torch modules, bf16 autocast, channels_last, the
    engine's device-resident batches."""
    tr = Trainer(cfg.model_copy(update={"metrics": MetricsCfg(every=0)}))  # for its data
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, cfg.norm, tr.data.input_shape, tr.data.classes).cuda()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    for i, (x, y) in enumerate(tr.batches.epoch(0)):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (tr.steps_per_epoch - warmup) * EPOCH / cfg.train.batch_size


def gpu_figures(rounds: int) -> None:
    """ResNet-18 on CIFAR-format data on the device, one 50k-image epoch, bf16 autocast +
    channels_last; fa, dfa and the bare loop against the engine's bp; diagnostics share."""
    name = torch.cuda.get_device_name()
    print(f"\n# {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("| measurement | ratio | A s | B s | target |\n|---|---|---|---|---|")
    rows = Rows()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cifar_files(root, EPOCH + VAL)
        bp = lambda: gpu_epoch_s(gpu_config(root, "bp"))  # noqa: E731
        r = ratio(bp, lambda: gpu_bare_epoch_s(gpu_config(root, "bp")), rounds)
        rows.append(("resnet18 epoch: engine bp / bare loop (50k, batch 512, bf16, channels_last)",
                     r, f"bp epoch {r[1]:.2f} s ≤ 5 s"))
        for rule, target in (("fa", "≤ 1.20"), ("dfa", "≤ 1.00")):
            r = ratio(lambda: gpu_epoch_s(gpu_config(root, rule)), bp, rounds)
            rows.append((f"resnet18 epoch: {rule} / bp", r, target))
        every = MetricsCfg().every
        for model, batch in (({"name": "resnet18"}, 512),
                             ({"name": "mlp", "width": 800, "depth": 3}, 128)):
            share = diagnostics_share(gpu_config(root, "fa", batch, every, 2020, model), 20)
            rows.append((f"diagnostics share of wall time, fa {model['name']} batch {batch}, "
                         f"every {every}", share, "≤ 0.05 (CPU target)"))


if __name__ == "__main__":
    main()
