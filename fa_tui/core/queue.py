"""The launch queue: a sweep starts `jobs` runs at a time; the rest wait in their run
directories as `queued` and are started as slots free up. The TUI's poller steps it; the CLI's
`fa_tui.launch.run_queue` steps it in a loop and follows the runs it starts.

With several GPUs and device `auto`, each start goes to the GPU with the fewest of the batch's
running workers (as `fa-tui run --gpus` does). A queued run stopped meanwhile (`x`) is
skipped. Quitting the app leaves started runs running and queued runs queued (Runs: `r`
starts them).
"""
from __future__ import annotations

import subprocess
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from fa_contract.rundir import RunDir
from fa_contract.status import worker_alive

Spawn = Callable[..., subprocess.Popen]      # fa_tui.launch.spawn(run, gpu, resume=…)


@dataclass
class _Batch:
    spawn: Spawn
    jobs: int
    gpus: Sequence[str]
    resume: bool
    pending: deque[RunDir]
    running: list[tuple[subprocess.Popen, str | None]] = field(default_factory=list)


class LaunchQueue:
    """Thread-safe: batches are added from a launch worker and stepped by the poller."""

    def __init__(self) -> None:
        self._batches: list[_Batch] = []
        self._lock = threading.Lock()

    def add(self, runs: Sequence[RunDir], spawn: Spawn, jobs: int = 1,
            gpus: Sequence[str] = (), resume: bool = False) -> list[str]:
        """Queue `runs` (new ones, or ended ones to resume from their checkpoints) and start
        the first `jobs` of them; returns the names started."""
        with self._lock:
            self._batches.append(_Batch(spawn, max(jobs, 1), list(gpus), resume, deque(runs)))
        return self.step()

    def step(self) -> list[str]:
        """Reap workers that exited, then start queued runs into the free slots."""
        started = []
        with self._lock:
            for batch in self._batches:
                batch.running = [(p, g) for p, g in batch.running if p.poll() is None]
                while batch.pending and len(batch.running) < batch.jobs:
                    run = batch.pending.popleft()
                    status = run.read_status()
                    # skip a run stopped meanwhile or started elsewhere; a resumed run only if
                    # a live worker has it (a worker killed seconds ago still reads as
                    # running), so a queued run can be resumed too: it starts over
                    if (worker_alive(status) if batch.resume else status.state != "queued"):
                        continue
                    gpu = _least_loaded(batch.gpus, [g for _, g in batch.running])
                    batch.running.append((batch.spawn(run, gpu, resume=batch.resume), gpu))
                    started.append(run.name)
            self._batches = [b for b in self._batches if b.pending or b.running]
        return started

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(b.pending) for b in self._batches)

    @property
    def busy(self) -> bool:
        """Whether any run is still waiting or any started worker still runs (as of the last
        step)."""
        with self._lock:
            return any(b.pending or b.running for b in self._batches)

    def pending(self) -> list[RunDir]:
        """The runs not started yet, in order."""
        with self._lock:
            return [run for b in self._batches for run in b.pending]

    def cancel(self) -> list[RunDir]:
        """Drop every run not started yet and return them (started workers are untouched)."""
        with self._lock:
            dropped = [run for b in self._batches for run in b.pending]
            for b in self._batches:
                b.pending.clear()
        return dropped


def _least_loaded(gpus: Sequence[str], busy: Sequence[str | None]) -> str | None:
    if not gpus:
        return None
    load = Counter(busy)
    return min(gpus, key=lambda g: (load[g], gpus.index(g)))
