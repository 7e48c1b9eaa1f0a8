"""A timed sweep of short runs, cold workers against warm ones, side by side.

    python benchmarks/sweep_bench.py [--runs 20] [--jobs 2] [--rounds 1]

Each side is one real `fa-tui run PRESET --jobs J` of `--runs` seeds into a fresh runs
directory, timed from the command's start to its return (launch, queue, every worker, every
exit): cold with FA_TUI_WARM=0 (a fresh interpreter per run, torch imported each time), warm
with the scheduler's fork server (fa_tui/warm.py). The run is a one-epoch MLP 784-256-256-10,
fa, SGD, batch 128, on 8,192 synthetic samples (64 steps, diagnostics at the auto cadence) —
the size of run a hyper-parameter sweep on a small model is made of. The sides alternate,
starting with cold, and the medians over `--rounds` are printed with their ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PRESET = """\
# sweep benchmark: one epoch of a small MLP per seed
[run]
name = "bench"
device = "cpu"
[data]
shape = [784]
train_size = 8192
val_size = 1024
test_size = 1024
[model]
width = 256
depth = 2
[rule]
name = "fa"
[optim]
name = "sgd"
lr = 0.01
[train]
batch_size = 128
epochs = 1
[sweep]
seeds = {seeds}
"""


def one_sweep(runs: int, jobs: int, warm: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        preset = Path(tmp) / "sweep.toml"
        preset.write_text(PRESET.format(seeds=list(range(runs))))
        env = {**os.environ, "FA_TUI_WARM": "1" if warm else "0", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fa_tui", "run", str(preset), "--jobs", str(jobs),
                        "--runs-dir", str(Path(tmp) / "runs")], env=env, check=True,
                       stdout=subprocess.DEVNULL, cwd=tmp)
        return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.rounds):
        cold.append(one_sweep(args.runs, args.jobs, warm=False))
        warm.append(one_sweep(args.runs, args.jobs, warm=True))
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"| {args.runs}-run sweep, `--jobs {args.jobs}`, median of {args.rounds} | wall s "
          "| s a run |\n|---|---|---|")
    print(f"| cold: a fresh interpreter per run (`FA_TUI_WARM=0`) | {c:.1f} | {c / args.runs:.2f} |")
    print(f"| warm: forked from the scheduler's server | {w:.1f} | {w / args.runs:.2f} |")
    print(f"\nwarm / cold = **{w / c:.2f}**; load average at the end "
          f"{os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
