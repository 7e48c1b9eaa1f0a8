"""Regenerate docs/benchmarks.md from fresh CPU measurements on this machine.

    python benchmarks/report.py [--rounds 15] [--repeats 5]

Runs engine_bench.py, biotorch_bench.py and startup_bench.py, each in its own process (so
one's memory and imports cannot affect another's), and writes docs/benchmarks.md: their
markdown, the machine they ran on, and, kept verbatim from the current file, the sections this
script does not measure: the CUDA figures recorded on an earlier H100 run, the workbench (TUI)
sections that benchmarks/tui_bench.py regenerates, and the diagnostics cadence table of
benchmarks/diag_share.py (real Fashion-MNIST, which this script does not assume). A section is kept by its
heading, so edit those sections in place and they survive regeneration.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "benchmarks.md"
#: headings of sections kept verbatim from the existing file
KEPT = ("## Engine, CUDA", "## Workbench (TUI)", "## Diagnostics cadence", "## Workbench start-up")

INTRO = """\
# Benchmarks

Regenerate every CPU figure on this page with one command (about 15–25 minutes; it prints as
it goes):

    .venv/bin/python benchmarks/report.py

which runs `benchmarks/engine_bench.py` (engine vs a bare loop, fa / bp by shape,
diagnostics), `benchmarks/biotorch_bench.py` (engine vs BioTorch) and
`benchmarks/startup_bench.py` (start-up and exit) and rewrites this file. The sections
"Engine, CUDA", "Workbench (TUI)", "Diagnostics cadence" and "Workbench start-up" are kept as
they are (their own scripts, named in them, regenerate their figures). Figures are ratios measured side by
side, never timed assertions in the tests.

## How to read the CPU tables

- **Method** (`benchmarks/_bench.py`): every side is a prepared training loop (data in
  memory); each round runs every side once for about 0.3 s of CPU, in an order rotated every
  round; a ratio is the median over rounds of A's time per step over B's *in the same round*,
  with the quartiles of those per-round ratios in brackets. One thread (`torch.set_num_threads(1)`).
- **CPU time first.** The machine is shared: other people's jobs raise wall time far more
  than the process's own CPU time, so the CPU column is the figure to read; wall time is
  printed beside it.
- **The null control** (the same loop built twice, "X′ / X") is in every table. Its distance
  from 1.00, and the width of the quartiles, is the noise floor: differences below it are not
  differences.
- **Engine side** = the real `Trainer.events()` loop (train events every 20 steps, evaluation at
  epoch ends); **bare side** = the same model, batches and torch SGD with nothing else.
"""

EXPLAIN = """\
### What the engine does per step, and why fa costs about what bp costs

- **Bookkeeping.** A step records its loss (`loss.detach()`) and its predicted classes
  (`logits.argmax(1)`): two small ops and no sync. The window's mean loss, accuracy and first
  non-finite step are folded from those at each train event (every `train.log_every` steps, or
  256 at most) with one read-back (engine/train.py). It used to update four device accumulators
  with about 14 small ops per step.
- **fa's backward.** Each weight layer's backward computes `δ B` and the true `δᵀh`. A Python
  `autograd.Function` costs ~20 µs per layer per step however little it does (a minimal one
  measured 1.07–1.09 × bp on 784-64-64-10 at batch 32), so rules with a fixed feedback tensor
  (fa, usf, frsf, brsf) train through the same backward as a C++ autograd op
  (engine/native/feedback_ops.cpp, built once per torch version by `python -m engine.native`):
  the same ATen calls in the same order, bit-identical weights (tests/test_native.py). The
  rows "fa, Python backward" time the Python `Function` (engine/layers.py), which the
  diagnostics probes, dfa, ldfa and CUDA autocast still use and which trains where the ops
  cannot be built. The first layer, whose input is data and needs no error, uses native
  autograd under every rule that learns nothing in the backward (all but ldfa): its weight
  gradient is the true one either way.
- **Optimiser.** torch's fused SGD kernel (one pass over each tensor instead of three with
  momentum; the same update, rounded with fused multiply-adds), the lr written only when the
  schedule changes it, and no `torch._dynamo` import (see start-up).
- **Memory format.** Conv models train channels_last on the CPU as on CUDA
  (`train.channels_last = "auto"`): oneDNN's convolutions are faster in that layout, 7-31 % less
  CPU time a step for the engine's CNNs and ResNet-18, bp and fa alike, with or without
  batchnorm. The bare loop and BioTorch keep PyTorch's default layout, as a researcher's own
  loop would; the CNN rows "channels_last off" show the engine without it.
- **The floor.** fa does bp's arithmetic with B in place of W. Where matrix products set the
  pace (the 3072-800×3 MLP: ~30 ms of GEMMs per step), fa / bp is ~1 and no fa can be much
  cheaper than the engine's own bp; "engine bp / BioTorch fa" shows that floor beside
  "engine fa / BioTorch fa". BioTorch's fa is itself as fast as a bare bp loop there, so its
  ≤ 0.90 target cannot be met by any fa that does bp's arithmetic.
- dfa beats BioTorch's dfa because BioTorch computes the full backprop error at every layer and
  then replaces it in a hook; the engine sends `e B_l` instead of computing `δ W`.

### Start-up and exit

- `torch._dynamo` (~2.5 s and ~170 MB) was imported by the first `torch.optim` call:
  `Optimizer.add_param_group` and every `step()` import it to mark graph breaks, which only a
  `torch.compile` trace needs. engine/lazy_dynamo.py defers those imports until something
  really imports dynamo (the engine never does), and then hands over to torch's own wrappers.
- The worker ends with `os._exit` once its events, checkpoint, summary and final status are
  written and flushed: Python's teardown with torch loaded took over a second.
- `follow` (fa_tui/launch.py) redraws progress every 0.5 s but returns within 20 ms of
  a worker's exit.
- **Bytecode.** This VM sets `PYTHONDONTWRITEBYTECODE=1` and `uv pip install` does not
  compile bytecode by default, so every worker compiled torch's Python from source: `import
  torch` cost ~3 s of CPU instead of ~1.5 s. Install with `uv pip install --compile-bytecode`
  (or `python -m compileall` the site-packages once); the start-up table says which state it
  measured.
- **Warm workers.** A sweep's scheduler starts one `python -m engine.worker --serve`, which
  imports torch and the engine once and forks each run's worker from there (engine/warm.py,
  fa_tui/warm.py): a run then starts in the time of its data load and model build. Safe
  because the server only imports (no torch op, no CUDA); any failure of the server falls back
  to cold starts, and `FA_TUI_WARM=0` turns it off. The sweep table times both.
"""


def run(script: str, *args: str) -> str:
    """One benchmark's markdown (its stdout); stderr (warnings) goes to this terminal."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    sys.stderr.write(done.stdout)
    if done.returncode != 0:
        return done.stdout + f"\n(**{script} failed with exit status {done.returncode}**)\n"
    return done.stdout


def kept_sections(text: str) -> list[str]:
    """The sections of `text` whose heading starts with one of KEPT, verbatim."""
    parts = re.split(r"(?m)^(?=## )", text)
    return [p.rstrip() + "\n" for p in parts if p.startswith(KEPT)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=DOC)
    args = p.parse_args()
    old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    engine = run("engine_bench.py", "--rounds", str(args.rounds))
    bio = run("biotorch_bench.py", "--rounds", str(args.rounds))
    start = run("startup_bench.py", "--repeats", str(args.repeats))
    sweep = run("sweep_bench.py", "--rounds", "3")
    day = datetime.date.today().isoformat()
    body = [INTRO,
            f"## Engine, CPU ({day})\n\nMeasured by `benchmarks/engine_bench.py --rounds "
            f"{args.rounds}`. Synthetic data, SGD with momentum.\n\n" + engine.strip() + "\n",
            "## Engine vs BioTorch, CPU\n\nMeasured by `benchmarks/biotorch_bench.py`, same "
            "machine and session.\n\n" + bio.strip() + "\n",
            "## Start-up and exit\n\nMeasured by `benchmarks/startup_bench.py`, same machine "
            "and session.\n\n" + start.strip() + "\n",
            "## A sweep of short runs\n\nMeasured by `benchmarks/sweep_bench.py --rounds 3`, "
            "same machine and session: one-epoch MLP 784-256-256-10 fa runs (64 steps of "
            "batch 128, synthetic data), timed from `fa-tui run` to its return.\n\n"
            + sweep.strip() + "\n",
            EXPLAIN,
            *kept_sections(old)]
    args.out.write_text("\n".join(body), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
