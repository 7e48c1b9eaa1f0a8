"""TUI benchmark: 16 live runs streaming events, written by a separate writer process at a
realistic rate, watched by the app (headless, as in the tests).

    python benchmarks/tui_bench.py                 # defaults: 16 runs, 20 s of watching
    python benchmarks/tui_bench.py --runs 32 --watch 60

Printed figures:
- first frame: a fresh interpreter importing fa_tui.app and mounting the app (Runs screen);
- key-press latency: from a key event entering the app until every message it caused is
  handled and the frame is painted, on Runs (sort column, order) and on Monitor with every
  run overlaid (split, log scale, metric variants, focus) — median and 95th percentile;
- CPU share: the app process's CPU time over wall time while Monitor shows all runs
  (poller thread and redraws included; the writer runs in its own process).
The writer emits per run: `train` events at --rate per second, a `diag` event with 8 layers
× 14 metrics every second, an `eval` every 10 s, a heartbeat status every 5 s, a log line
per second — what a fast MLP run with log_every 20 and metrics.every 100 looks like.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events  # noqa: E402

from fa_contract.rundir import RunDir, Status, append_event  # noqa: E402

LAYERS = [f"layers.{i}" for i in range(8)]
METRICS = ["erank_err", "erank_err_bp", "pr_err", "pr_err_bp", "erank_grad", "erank_grad_bp",
           "erank_act", "erank_step", "angle_delta", "angle_delta_sample", "angle_grad",
           "angle_step", "angle_weight", "fb_ratio"]
RULES = ["bp", "fa", "usf", "brsf", "frsf", "dfa", "ldfa"]


def write(root: Path, runs: int, rate: float, seconds: float) -> None:
    """The writer process: create `runs` running runs, then stream their events."""
    import tomli_w
    from fa_contract.config import Config
    handles = []
    for i in range(runs):
        run = RunDir(root / f"bench-{i:02d}")
        run.path.mkdir(parents=True)
        cfg = Config.model_validate({"run": {"name": run.name, "seed": i},
                                     "rule": {"name": RULES[i % len(RULES)]}})
        run.file("config.toml").write_text(tomli_w.dumps(cfg.model_dump(mode="json",
                                                                          exclude_none=True)))
        status = Status(state="running", pid=os.getpid(), started=time.time(), total_steps=10**6,
                        device="cpu")
        run.write_status(status)
        f = open(run.file("events.jsonl"), "a", encoding="utf-8")
        log = open(run.file("worker.log"), "a", encoding="utf-8")
        append_event(f, {"type": "start", "step": 0, "config": cfg.model_dump(mode="json"),
                         "device": "cpu", "host": "bench", "params": 0, "steps_per_epoch": 10**6,
                         "layers": [{"name": n, "kind": "Linear", "shape": [256, 256]}
                                    for n in LAYERS], "total_steps": 10**6})
        handles.append((run, status, f, log))
    t0 = time.time()
    tick = 0
    while time.time() - t0 < seconds:
        tick += 1
        now = time.time() - t0
        for k, (run, status, f, log) in enumerate(handles):
            step = tick * 20
            append_event(f, {"type": "train", "step": step, "epoch": 0, "loss": 2.3 / (1 + now),
                             "acc": 1 - 0.9 / (1 + now / 10), "lr": 0.01, "step_s": 0.005,
                             "samples_per_s": 25000.0})
            if tick % max(int(rate), 1) == 0:
                append_event(f, {"type": "diag", "step": step, "epoch": 0, "probe_n": 256,
                                 "layers": {n: {m: 10.0 + k + j + now % 7 for j, m in
                                                enumerate(METRICS)} for n in LAYERS}})
                log.write(f"step {step}\n")
                log.flush()
            if tick % max(int(rate * 10), 1) == 0:
                append_event(f, {"type": "eval", "step": step, "epoch": 0, "split": "val",
                                 "loss": 2.0 / (1 + now), "acc": 1 - 0.9 / (1 + now / 12)})
            if tick % max(int(rate * 5), 1) == 0:
                status.step = step
                run.write_status(status)
        time.sleep(max(0.0, tick / rate - (time.time() - t0)))


def first_frame() -> tuple[float, float]:
    """(seconds from a fresh interpreter's first line to the app's first screen being mounted,
    seconds the whole child process took, interpreter start and app teardown included)."""
    code = ("import time, asyncio, tempfile; t0 = time.perf_counter()\n"
            "from pathlib import Path\nfrom fa_tui.app import FaApp\n"
            "async def main():\n"
            "    async with FaApp(Path(tempfile.mkdtemp())).run_test(size=(100, 32)) as p:\n"
            "        print(time.perf_counter() - t0)\n"
            "asyncio.run(main())\n")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True).stdout
    return float(out.split()[0]), time.perf_counter() - start


def bytecode_cached() -> bool:
    """Whether Textual's modules load from cached bytecode. An install by pip compiles it;
    `uv pip install` does not unless given --compile-bytecode, and with
    PYTHONDONTWRITEBYTECODE=1 Python never caches it, so every start compiles Textual from
    source (about twice the first frame)."""
    import importlib.util
    import textual.app
    return Path(importlib.util.cache_from_source(textual.app.__file__)).exists()


def first_frames(n: int) -> list[float]:
    """`n` fresh interpreters' first frames (the median is what a user waits, typically)."""
    return [first_frame()[0] for _ in range(n)]


async def idle_share(root: Path, seconds: float) -> tuple[float, int]:
    """(CPU share of the app on Runs with only ended runs, polls delivered) over `seconds`:
    what an open workbench costs while nothing trains."""
    from fa_tui.app import FaApp
    from fa_tui.widgets.run_table import RunTable
    app = FaApp(root)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(RunTable)
        while table.row_count == 0:
            await pilot.pause(0.1)
        await pilot.pause(2.0)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        return (time.process_time() - cpu) / (time.perf_counter() - wall), app.polls


def ended_runs(root: Path, n: int) -> None:
    """`n` finished runs (the hand-written fixtures of the tests, several times over)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tui_fixtures import write_seed_runs
    for k in range(max(n // 6, 1)):
        write_seed_runs(root / f"batch-{k}")
        for run in (root / f"batch-{k}").iterdir():
            run.rename(root / f"{k}-{run.name}")
        (root / f"batch-{k}").rmdir()


def view_state(screen) -> tuple:
    """What the benchmarked keys change, on either screen."""
    names = ("sort_key", "reverse", "split_mode", "log_y", "rank_index", "angle_index",
             "focus_index")
    table = screen.query("RunTable")
    return (*(getattr(screen, n, None) for n in names),
            table.first().cursor_row if table else None)


async def press_latency(pilot, keys: list[str], rounds: int) -> list[float]:
    """Per key: hand a key event to the driver (as a terminal would), wait until the screen's
    state shows the key's effect, then paint the frame (layout, render of every changed
    widget, output). Pilot's own `press()` is not used for timing: it sleeps in 20 ms steps
    until the process looks idle, which measures the harness rather than the app."""
    app = pilot.app
    out = []
    for _ in range(rounds):
        for key in keys:
            char = {"right_square_bracket": "]", "left_square_bracket": "["}.get(key, key)
            event = events.Key(key, char if len(char) == 1 else None)
            event.set_sender(app)
            before = view_state(app.screen)
            t = time.perf_counter()
            app._driver.send_message(event)
            while view_state(app.screen) == before:
                await asyncio.sleep(0)
                assert time.perf_counter() - t < 5, f"key {key!r} changed nothing"
            app.screen._on_timer_update()
            out.append(time.perf_counter() - t)
            await pilot.pause(0.05)
    return out


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"median {1000 * statistics.median(xs):.1f} ms, "
            f"p95 {1000 * xs[int(0.95 * (len(xs) - 1))]:.1f} ms (n={len(xs)})")


async def watch(root: Path, runs: int, seconds: float) -> None:
    from fa_tui.app import FaApp
    from fa_tui.widgets.run_table import RunTable
    app = FaApp(root)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(RunTable)
        while table.row_count < runs:
            await pilot.pause(0.1)
        runs_keys = await press_latency(pilot, ["s", "o"], 20)
        await pilot.press("a", "enter")
        while len(app.screen.names if hasattr(app.screen, "names") else ()) < runs:
            await pilot.pause(0.1)
        await pilot.pause(1.0)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
        monitor_keys = await press_latency(pilot, ["c", "l", "v", "g", "right_square_bracket"], 6)
        print(f"key latency, Runs ({runs} live runs): {summary(runs_keys)}")
        print(f"key latency, Monitor ({runs} runs overlaid): {summary(monitor_keys)}")
        print(f"app CPU share while Monitor shows {runs} live runs: {100 * share:.1f}% of one "
              f"core over {seconds:.0f} s ({app.polls} polls)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--rate", type=float, default=4.0, help="train events per second per run")
    ap.add_argument("--watch", type=float, default=20.0, help="seconds of CPU measurement")
    ap.add_argument("--frames", type=int, default=5, help="first-frame measurements")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement")
    ap.add_argument("--startup-only", action="store_true",
                    help="first frame and idle CPU only, no live runs")
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.writer:
        write(Path(args.writer), args.runs, args.rate, seconds=args.watch + 120)
        return
    frames = first_frames(args.frames)
    print(f"first frame: median {statistics.median(frames):.2f} s from import to mounted "
          f"screen over {len(frames)} fresh interpreters "
          f"(min {min(frames):.2f} s, max {max(frames):.2f} s); Textual bytecode "
          + ("cached" if bytecode_cached() else
             "NOT cached: compile it (python -m compileall on site-packages/textual and rich, "
             "or uv pip install --compile-bytecode)"))
    with tempfile.TemporaryDirectory() as tmp:
        ended_runs(Path(tmp), 36)
        share, polls = asyncio.run(idle_share(Path(tmp), args.idle))
        print(f"app CPU share on Runs with 36 ended runs and no live run: {100 * share:.2f}% "
              f"of one core over {args.idle:.0f} s ({polls} polls delivered)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.startup_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        writer = subprocess.Popen([sys.executable, __file__, "--writer", tmp, "--runs",
                                   str(args.runs), "--rate", str(args.rate),
                                   "--watch", str(args.watch)])
        try:
            asyncio.run(watch(Path(tmp), args.runs, args.watch))
        finally:
            writer.terminate()
            writer.wait()


if __name__ == "__main__":
    main()
