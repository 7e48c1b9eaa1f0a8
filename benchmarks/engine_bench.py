"""Engine benchmarks on the CPU (and, with --gpu, the recorded CUDA figures).

    python benchmarks/engine_bench.py                 # CPU tables (docs/benchmarks.md)
    python benchmarks/engine_bench.py --rounds 21     # more rounds, tighter medians
    python benchmarks/engine_bench.py --gpu-only      # ResNet-18 CIFAR epoch etc. on CUDA

CPU tables (method: benchmarks/_bench.py; rotated rounds, CPU and wall time, 1 thread, a null
control in every table):

1. engine vs a bare PyTorch loop, per model: the bare loop twice (null), engine bp / bare
   (the cost of the engine's loop: events, bookkeeping), fa / bp and dfa / bp.
2. fa / bp by width and depth of an MLP (784 inputs, batch 128), with bp twice as the null.
3. the diagnostics' share of a run's time at the default `metrics.every`.

The engine side is the real `Trainer.events()` loop (train events every 20 steps, evaluation at
epoch ends); the bare side is the same model, optimiser and batches with nothing else. Data are
synthetic and small (a few thousand examples cycled over epochs), so peak memory stays well
under 2 GB; the peak is printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _bench import HEADER, Side, compare, cycle, machine, one_thread, peak_rss_gb, ratio
from fa_contract.config import Config, MetricsCfg
from engine import native
from engine.data import Batches
from engine.models import build_model
from engine.train import Trainer

VAL = 64         # validation examples held out of the CIFAR-format files
EPOCH = 50_000   # images per GPU epoch (the per-step time is scaled to exactly this)
TRAIN = 4096     # synthetic training examples per CPU side (cycled)

#: the models of the issue's tables: (label, model config, input shape, batch)
MODELS = [
    ("MLP 784-64-64-10, batch 32", {"name": "mlp", "width": 64, "depth": 2}, [1, 28, 28], 32),
    ("MLP 784-256-256-10, batch 128", {"name": "mlp", "width": 256, "depth": 2}, [1, 28, 28], 128),
    ("MLP 3072-800×3-10, batch 128", {"name": "mlp", "width": 800, "depth": 3}, [3, 32, 32], 128),
    ("CNN 32-64-64-128, batch 64", {"name": "cnn", "widths": [32, 64, 64, 128]}, [3, 32, 32], 64),
]
#: fa / bp by shape: (width, depth), 784 inputs, batch 128
SHAPES = [(256, 2), (512, 2), (1024, 2), (2048, 2), (256, 4)]


def config(model: dict, rule: str, steps: int, batch: int, shape: list[int], device: str,
           every: int | str = 0, log_every: int = 20, lr: float = 0.01, epochs: int = 1,
           train_size: int | None = None) -> Config:
    return Config.model_validate({
        "run": {"device": device},
        "data": {"shape": shape, "train_size": train_size or batch * steps + 64, "test_size": 64,
                 "val_size": 64},
        "model": model, "rule": {"name": rule},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9},
        "train": {"epochs": epochs, "batch_size": batch, "max_steps": None if epochs > 1 else steps,
                  "log_every": log_every},
        "metrics": {"every": every, "probe_size": MetricsCfg().probe_size}})


def cpu_config(model: dict, rule: str, shape: list[int], batch: int) -> Config:
    """A run long enough never to end (epochs of TRAIN examples, cycled)."""
    heavy = model["name"] == "cnn"     # ~0.1 s a step: a train event every 5 steps
    return config(model, rule, 0, batch, shape, "cpu", lr=1e-3, epochs=100_000,
                  train_size=TRAIN + 64, log_every=5 if heavy else 20)


def contiguous(cfg: Config) -> Config:
    """cfg with train.channels_last = "off": the memory format of the bare loop."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"channels_last": "off"})})


def engine_side(cfg: Config, python_backward: bool = False) -> Side:
    """The engine's own loop: Trainer.events(), advanced a whole number of train events. Should
    the run end (a divergence of a random-feedback rule over thousands of steps), a new run is
    built inside the timed call, which only makes the engine look slower, and stderr says so.
    `python_backward`: fa's layers use the Python backward even where the C++ ops are built."""
    state: dict = {}

    def fresh() -> None:
        state["tr"] = Trainer(cfg)
        if python_backward:
            state["tr"].rule.native_ops = None
        state["events"] = state["tr"].events()

    fresh()
    log_every = cfg.train.log_every

    def run(n: int) -> int:
        steps = max(1, round(n / log_every)) * log_every
        done = 0
        while done < steps:
            before = state["tr"].step
            ev = next(state["events"])
            done += state["tr"].step - before
            if ev["type"] == "end":
                print(f"engine side {cfg.model.name}/{cfg.rule.name} ended ({ev.get('reason')})"
                      f"; restarted", file=sys.stderr, flush=True)
                fresh()
        return done
    return run


def bare_side(cfg: Config) -> Side:
    """The same model, batches and optimiser as a bare PyTorch loop, nothing else."""
    tr = Trainer(cfg.model_copy(update={"metrics": MetricsCfg(every=0)}))  # for its data only
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, cfg.norm, tr.data.input_shape, tr.data.classes).to(tr.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    batches = Batches(tr.data, cfg.train.batch_size, cfg.run.seed, False, tr.device)
    stream = cycle(batches.epoch)
    del tr

    def run(n: int) -> None:
        for _ in range(n):
            x, y = next(stream)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()
    return run


def time_engine(cfg: Config, warmup: int) -> float:
    """Seconds per step of Trainer.events() between the train events at step `warmup` and at
    the last step (both are sync points). Used by the GPU figures."""
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


def engine_vs_bare(rounds: int) -> None:
    print("### Engine vs a bare PyTorch loop\n")
    for label, model, shape, batch in MODELS:
        cfg = {rule: cpu_config(model, rule, shape, batch) for rule in ("bp", "fa", "dfa")}
        sides = {"bare": bare_side(cfg["bp"]), "bare′": bare_side(cfg["bp"]),
                 "bp": engine_side(cfg["bp"]), "fa": engine_side(cfg["fa"]),
                 "dfa": engine_side(cfg["dfa"]), "fa (Python)": engine_side(cfg["fa"], True)}
        heavy = model["name"] == "cnn"
        if heavy:     # the engine trains convnets channels_last: what that alone is worth
            sides["bp (contiguous)"] = engine_side(contiguous(cfg["bp"]))
        t = compare(sides, max(7, rounds - 4) if heavy else rounds)
        print(f"**{label}** ({rounds if not heavy else max(7, rounds - 4)} rounds)\n")
        print(HEADER)
        layout = [ratio(t, "bp (contiguous)", "bare", "engine bp, channels_last off / bare",
                        "")] if heavy else []
        for row in (ratio(t, "bare′", "bare", "null control: bare′ / bare", "≈ 1"),
                    ratio(t, "bp", "bare", "engine bp / bare", "≤ 1.03"), *layout,
                    ratio(t, "fa", "bp", "engine fa / engine bp", "≤ 1.05"),
                    ratio(t, "fa (Python)", "bp", "engine fa, Python backward / engine bp", ""),
                    ratio(t, "dfa", "bp", "engine dfa / engine bp", "")):
            print(row.row())
        print(flush=True)
        del sides


def fa_by_shape(rounds: int) -> None:
    print("### fa / bp by width and depth (MLP, 784 inputs, batch 128)\n")
    print(HEADER)
    for width, depth in SHAPES:
        model = {"name": "mlp", "width": width, "depth": depth}
        bp, fa = (cpu_config(model, r, [1, 28, 28], 128) for r in ("bp", "fa"))
        t = compare({"bp": engine_side(bp), "bp′": engine_side(bp), "fa": engine_side(fa),
                     "fa (Python)": engine_side(fa, True)}, rounds)
        label = f"width {width}, depth {depth}"
        print(ratio(t, "bp′", "bp", f"{label}: null control bp′ / bp", "≈ 1").row())
        print(ratio(t, "fa", "bp", f"{label}: fa / bp", "≤ 1.05").row())
        print(ratio(t, "fa (Python)", "bp", f"{label}: fa, Python backward / bp", "").row(),
              flush=True)
    print()


def diagnostics_row() -> None:
    every = MetricsCfg().every     # "auto": the run's probes are planned to fit metrics.budget
    steps = 20 + (3 * every if isinstance(every, int) else 2000)
    mlp = {"name": "mlp", "width": 800, "depth": 3}
    cfg = config(mlp, "fa", 0, 128, [3, 32, 32], "cpu", every=every, epochs=100_000,
                 train_size=TRAIN + 64)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": steps})})
    share, per_diag, per_step = diagnostics_share(cfg, warmup=20)
    print("### Diagnostics\n")
    print("| measurement | share | s per probe | s per step | target |\n|---|---|---|---|---|")
    print(f"| diagnostics share of wall time, fa MLP 3072-800×3-10 batch 128, every {every} "
          f"steps | {share:.3f} | {per_diag:.3f} | {per_step:.4f} | ≤ 0.05 |\n", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--only", choices=("bare", "shape", "diag"), action="append",
                   help="run only these tables (repeatable)")
    p.add_argument("--gpu", action="store_true", help="also the CUDA ResNet-18 epoch figures")
    p.add_argument("--gpu-only", action="store_true", help="only the CUDA figures")
    args = p.parse_args()
    if args.gpu_only:
        return gpu_figures(max(3, args.rounds // 5))
    one_thread()
    print(f"Machine: {machine()}\n", flush=True)
    backward = "Python (C++ ops not built)" if native.ops() is None else "C++ (engine/native)"
    print(f"fa's backward: {backward} in every engine fa row unless the row says Python.\n",
          flush=True)
    only = set(args.only or ("bare", "shape", "diag"))
    if "bare" in only:
        engine_vs_bare(args.rounds)
    if "shape" in only:
        fa_by_shape(args.rounds)
    if "diag" in only:
        diagnostics_row()
    print(f"Peak memory of this benchmark process: {peak_rss_gb():.2f} GB\n")
    if args.gpu:
        gpu_figures(max(3, args.rounds // 5))


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


def _alternate(a, b, rounds: int) -> tuple[float, float, float]:
    """GPU figures: median of a()/b() over alternating rounds; also the medians of a and b."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(a())
        tb.append(b())
    return (statistics.median(x / y for x, y in zip(ta, tb)), statistics.median(ta),
            statistics.median(tb))


class Rows(list):
    """GPU figures: prints each row as soon as it is measured."""

    def append(self, row) -> None:
        name, (q, a, b), target = row
        print(f"| {name} | {q:.3f} | {a:.4f} | {b:.4f} | {target} |", flush=True)
        super().append(row)


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
        r = _alternate(bp, lambda: gpu_bare_epoch_s(gpu_config(root, "bp")), rounds)
        rows.append(("resnet18 epoch: engine bp / bare loop (50k, batch 512, bf16, channels_last)",
                     r, f"bp epoch {r[1]:.2f} s ≤ 5 s"))
        for rule, target in (("fa", "≤ 1.20"), ("dfa", "≤ 1.00")):
            r = _alternate(lambda: gpu_epoch_s(gpu_config(root, rule)), bp, rounds)
            rows.append((f"resnet18 epoch: {rule} / bp", r, target))
        every = MetricsCfg().every
        for model, batch in (({"name": "resnet18"}, 512),
                             ({"name": "mlp", "width": 800, "depth": 3}, 128)):
            share = diagnostics_share(gpu_config(root, "fa", batch, every, 2020, model), 20)
            rows.append((f"diagnostics share of wall time, fa {model['name']} batch {batch}, "
                         f"every {every}", share, "≤ 0.05 (CPU target)"))


if __name__ == "__main__":
    main()
