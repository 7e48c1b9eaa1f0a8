"""What every CPU benchmark here shares: sides, rotated rounds, CPU and wall time, null controls.

A *side* is a prepared training loop that runs `n` more steps when called (model, optimiser and
batches built once, data in memory). `compare()` calibrates each side to `target_s` of CPU time
per call, then runs `rounds` rounds; in round r the sides run in an order rotated by r, so no
side always goes first (warm caches) or last. Each call is timed twice: CPU time of this
process (`time.process_time`, which counts only work done for it, so other people's jobs on a
shared machine inflate it far less than wall time) and wall time. A ratio A/B is the median over
rounds of A's time per step over B's time per step *in the same round*, with the quartiles of
those per-round ratios beside it, so the spread is on the page.

Every table also carries a null control: the same loop built twice as two sides ("X" and "X′")
and compared like any other pair. Its distance from 1.00 is the noise floor of that table;
differences between real sides smaller than it mean nothing.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

#: runs about n more steps; returns how many it ran (None: exactly n)
Side = Callable[[int], "int | None"]


def one_thread() -> None:
    """Every figure here is single-threaded: CPU time then measures work, not scheduling."""
    torch.set_num_threads(1)


def machine() -> str:
    """One line naming the machine, torch and the thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {mem:.0f} GB; "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread; load average {load:.1f} at the start")


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Times:
    """Per-step seconds of one side, one entry per round."""
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


def _calibrate(side: Side, target_s: float) -> int:
    """Steps per call so that one call takes about target_s of CPU (after a warm-up call)."""
    side(2)
    n = 2
    while True:
        t = time.process_time()
        side(n)
        dt = time.process_time() - t
        if dt >= target_s / 4 or n >= 4096:
            return max(1, round(n * target_s / max(dt, 1e-9)))
        n *= 4


def compare(sides: dict[str, Side], rounds: int, target_s: float = 0.3) -> dict[str, Times]:
    """Rotated rounds of every side; see the module docstring."""
    steps = {name: _calibrate(side, target_s) for name, side in sides.items()}
    times = {name: Times() for name in sides}
    names = list(sides)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            n = steps[name]
            c, w = time.process_time(), time.perf_counter()
            done = sides[name](n) or n
            times[name].cpu.append((time.process_time() - c) / done)
            times[name].wall.append((time.perf_counter() - w) / done)
    return times


@dataclass
class Ratio:
    name: str
    cpu: float
    q1: float
    q3: float
    wall: float
    a_ms: float
    b_ms: float
    target: str

    def row(self) -> str:
        return (f"| {self.name} | **{self.cpu:.3f}** [{self.q1:.3f}, {self.q3:.3f}] | "
                f"{self.wall:.3f} | {self.a_ms:.3f} | {self.b_ms:.3f} | {self.target} |")


HEADER = ("| ratio (A / B) | CPU time: median [quartiles] | wall time | A ms/step (CPU) | "
          "B ms/step (CPU) | target |\n|---|---|---|---|---|---|")


def ratio(times: dict[str, Times], a: str, b: str, name: str, target: str = "") -> Ratio:
    ta, tb = times[a], times[b]
    per_round = [x / y for x, y in zip(ta.cpu, tb.cpu)]
    q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
    return Ratio(name, statistics.median(per_round), q[0], q[-1],
                 statistics.median(x / y for x, y in zip(ta.wall, tb.wall)),
                 statistics.median(ta.cpu) * 1e3, statistics.median(tb.cpu) * 1e3, target)


def cycle(batches: Callable[[int], Iterator]) -> Iterator:
    """Endless batches: epoch 0, 1, 2, ... of a Batches-like `batches(epoch)`."""
    epoch = 0
    while True:
        yield from batches(epoch)
        epoch += 1
