"""How long a run takes to start and to be seen ending, and where the start-up goes.

    python benchmarks/startup_bench.py [--repeats 5]

1. Phases of a worker's start, in a fresh interpreter each time: CPU and wall seconds after
   `import fa_contract.config`, `import torch`, `import engine.train`, the data load, building the
   Trainer and the first training step; and whether `torch._dynamo` got imported.
2. Launch to first step: a real worker (`fa_tui.launch.spawn`) on a one-epoch Fashion-MNIST
   MLP run (784-256-256-10, batch 128, fa; synthetic data of the same shape when the files
   are absent), `train.log_every = 1`, diagnostics off; from just before the spawn to the `t`
   of the start event and of the step-1 train event.
3. End to exit: from the run's `end` event to the worker's exit (seen by polling every 5 ms)
   and to the return of `fa-tui run` on the same configuration.
4. Sweep overhead: the time outside training per run (launch to first step + end to exit)
   over a one-minute run: an estimate from these costs, not a timed 20-run sweep.

Each figure is the median over `--repeats` (an odd number) launches. Wall times include
whatever else the machine is running: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from fa_contract.config import Config
from fa_contract.data_files import find_files
from fa_tui.launch import ROOT, create_run, spawn

PHASES = textwrap.dedent("""
    import json, sys, time
    t0, c0 = time.perf_counter(), time.process_time()
    marks = []
    def mark(name, wall=None, cpu=None):
        marks.append((name, time.perf_counter() - t0 if wall is None else wall,
                      time.process_time() - c0 if cpu is None else cpu))
    from fa_contract.config import Config; mark("import fa_contract.config")
    cfg = Config.model_validate(json.loads(sys.argv[1]))
    import torch; mark("import torch")
    import engine.train as T; mark("import engine.train")
    load, spent = T.load_data, []
    def timed(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        out = load(*args, **kwargs)
        spent.append((time.perf_counter() - w, time.process_time() - c))
        return out
    T.load_data = timed
    tr = T.Trainer(cfg); mark("Trainer() built")
    events = tr.events()
    while next(events)["type"] != "train":
        pass
    mark("first training step done")
    mark("(of which: the data load, not cumulative)", *spent[0])
    print(json.dumps({"marks": marks, "dynamo": "torch._dynamo" in sys.modules}))
""")


PHASE_CPU: list[float] = []      # CPU seconds to the first step, filled by phases()


def run_config() -> dict:
    cfg = {"data": {"name": "fashion_mnist", "val_size": 5000, "download": False},
           "model": {"name": "mlp", "width": 256, "depth": 2}, "rule": {"name": "fa"},
           "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
           "train": {"epochs": 1, "batch_size": 128, "log_every": 1},
           "metrics": {"every": 0}, "run": {"device": "cpu"}}
    if find_files(Config.model_validate(cfg).data) is None:
        cfg["data"] = {"name": "synthetic", "shape": [1, 28, 28], "train_size": 60_000,
                       "test_size": 10_000, "val_size": 5000}
    return cfg


def bytecode_note() -> str:
    import torch
    cached = any((Path(torch.__file__).parent / "__pycache__").glob("*.pyc"))
    flag = sys.flags.dont_write_bytecode
    return (f"torch's bytecode {'is' if cached else 'is NOT'} compiled (__pycache__); "
            f"PYTHONDONTWRITEBYTECODE {'set' if flag else 'unset'}")


def phases(cfg: dict, repeats: int) -> None:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PHASES, json.dumps(cfg)], cwd=ROOT,
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs.append(json.loads(out.stdout))
    print("| phase (cumulative, in a fresh interpreter) | wall s | CPU s |\n|---|---|---|")
    for i, (name, _, _) in enumerate(runs[0]["marks"]):
        wall = statistics.median(r["marks"][i][1] for r in runs)
        cpu = statistics.median(r["marks"][i][2] for r in runs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
        if name == "first training step done":
            PHASE_CPU.append(cpu)
    print(f"\n`torch._dynamo` imported by a training run: "
          f"{'yes' if any(r['dynamo'] for r in runs) else 'no'}\n")


def events_of(run) -> list[dict]:
    return [json.loads(line) for line in open(run.file("events.jsonl"))]


def launch_to_step(cfg: dict, repeats: int, root: Path) -> tuple[list[float], list[float],
                                                                  list[float], list[float]]:
    start, step, exit_, cpu = [], [], [], []
    for i in range(repeats):
        run = create_run(root, Config.model_validate(cfg), f"start-{i}")
        c0 = os.times()
        t0 = time.time()
        proc = spawn(run)
        while proc.poll() is None:
            time.sleep(0.005)
        t_exit = time.time()
        c1 = os.times()
        ev = events_of(run)
        start.append(next(e["t"] for e in ev if e["type"] == "start") - t0)
        step.append(next(e["t"] for e in ev if e["type"] == "train") - t0)
        exit_.append(t_exit - ev[-1]["t"])
        cpu.append(c1.children_user + c1.children_system - c0.children_user - c0.children_system)
    return start, step, exit_, cpu


def cli_exit(cfg: dict, repeats: int, root: Path) -> list[float]:
    import tomli_w

    from fa_contract.rundir import list_runs
    path = root / "cli.toml"
    path.write_text(tomli_w.dumps(cfg))
    out = []
    for i in range(repeats):
        runs = root / f"cli-{i}"
        subprocess.run([sys.executable, "-m", "fa_tui", "run", str(path), "-d", str(runs)],
                       cwd=ROOT, capture_output=True, check=False)
        t_return = time.time()
        (run_dir,) = list_runs(runs)        # the runs dir also holds the queue's .queue/
        run_dir = run_dir.path
        last = json.loads(run_dir.joinpath("events.jsonl").read_text().splitlines()[-1])
        out.append(t_return - last["t"])
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cfg = run_config()
    med = statistics.median
    print(f"Data: {cfg['data']['name']}; {bytecode_note()}; load average "
          f"{os.getloadavg()[0]:.1f} at the start.\n")
    phases(cfg, args.repeats)
    with tempfile.TemporaryDirectory(prefix="fa-startup-") as tmp:
        root = Path(tmp)
        start, step, exit_, cpu = launch_to_step(cfg, args.repeats, root)
        cli = cli_exit(cfg, args.repeats, root)
    outside = med(step) + med(exit_)
    first_cpu = PHASE_CPU[-1]
    print("| measurement (median of %d) | seconds | target |\n|---|---|---|" % args.repeats)
    print(f"| worker launch → start event | {med(start):.2f} | |")
    print(f"| worker launch → first training step done | {med(step):.2f} | ≤ 3 |")
    print(f"| end event → worker exit | {med(exit_):.3f} | |")
    print(f"| end event → `fa-tui run` returns | {med(cli):.3f} | ≤ 0.3 |")
    print(f"| whole worker, CPU time (1 epoch) | {med(cpu):.2f} | |")
    print(f"| sweep overhead estimate, wall: (launch → first step + end → exit) / (60 s + that) "
          f"| {outside / (60 + outside):.3f} | < 0.05 |")
    cpu_out = first_cpu + med(exit_)
    print(f"| the same with the start-up's CPU time (phases table) in place of its wall time "
          f"| {cpu_out / (60 + cpu_out):.3f} | < 0.05 |")
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}\n")


if __name__ == "__main__":
    main()
