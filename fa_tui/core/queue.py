"""The launch queue of a runs directory, as files: what clients write and the scheduler reads.

A launch (a sweep from the CLI or the TUI, a resume) is one *batch*: its runs in order, how
many may run at a time (`jobs`), the GPUs to spread them over, whether they resume, and the
memory each was estimated to need. Clients never start workers: they write the batch and make
sure the runs directory's scheduler (fa_tui/scheduler.py) runs; the scheduler starts the runs
as slots free up and records which it started. Everything lives under RUNS_DIR/.queue/:

    scheduler.lock         held (flock) by the one scheduler of this runs directory; holds its pid
    scheduler.log          the scheduler's output
    batches/ID.json        one batch, written once by a client (atomic); `jobs` may be rewritten
    batches/ID.started     the scheduler's record: run path -> {gpu, pid} or {skipped: why}

Batch ids sort in creation order (time, then pid), so runs start in the order launched. Every
write is atomic (temporary file + rename), so a client and the scheduler never see half a file,
and two clients enqueueing at once write two batches. Every reader survives garbage.

Torch- and Textual-free: the CLI, the TUI and the scheduler all use it.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from fa_contract.atomic import write_json_atomic

QUEUE_DIR = ".queue"
LOCK, LOG, BATCHES = "scheduler.lock", "scheduler.log", "batches"


@dataclass
class Batch:
    id: str
    runs: list[str]                        # absolute run directory paths, in start order
    jobs: int = 1
    gpus: list[str] = field(default_factory=list)
    resume: bool = False
    estimates: dict[str, int] = field(default_factory=dict)    # run path -> bytes

    @staticmethod
    def parse(batch_id: str, raw: Any) -> Batch | None:
        """A batch from its JSON, or None when the file is not one (any bytes may be there)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list):
            return None
        runs = [r for r in raw["runs"] if isinstance(r, str)]
        jobs = raw.get("jobs")
        gpus = raw["gpus"] if isinstance(raw.get("gpus"), list) else []
        est = raw["estimates"] if isinstance(raw.get("estimates"), dict) else {}
        return Batch(batch_id, runs, jobs if isinstance(jobs, int) and jobs >= 1 else 1,
                     [str(g) for g in gpus], raw.get("resume") is True,
                     {k: v for k, v in est.items() if isinstance(v, int)})

    def to_json(self) -> dict:
        return {"v": 1, "runs": self.runs, "jobs": self.jobs, "gpus": self.gpus,
                "resume": self.resume, "estimates": self.estimates, "created": time.time()}


class QueueDir:
    """The queue files of one runs directory."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        self.path = self.runs_dir / QUEUE_DIR
        self.batches_dir = self.path / BATCHES
        self.lock_path = self.path / LOCK
        self.log_path = self.path / LOG

    # --- clients --------------------------------------------------------------------------
    def add(self, runs: Sequence[os.PathLike | str], jobs: int = 1, gpus: Sequence[str] = (),
            resume: bool = False, estimates: dict[str, int] | None = None) -> Batch:
        """Write a new batch (atomically); the scheduler picks it up on its next poll."""
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        batch_id = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        batch = Batch(batch_id, [str(Path(r).resolve()) for r in runs], max(1, jobs),
                      list(gpus), resume, dict(estimates or {}))
        write_json_atomic(self.batches_dir / f"{batch_id}.json", batch.to_json())
        return batch

    def set_jobs(self, jobs: int) -> int:
        """Change how many runs of every waiting batch may run at a time; returns how many
        batches changed. The scheduler reads it on its next poll."""
        changed = 0
        for batch in self.batches():
            batch.jobs = max(1, jobs)
            try:
                write_json_atomic(self.batches_dir / f"{batch.id}.json", batch.to_json())
                changed += 1
            except FileNotFoundError:        # finished meanwhile
                pass
        return changed

    def waiting(self) -> list[str]:
        """Run paths enqueued but not started (or passed over) yet, in start order."""
        out = []
        for batch in self.batches():
            started = self.started(batch.id)
            out += [r for r in batch.runs if r not in started]
        return out

    def scheduler_pid(self) -> int | None:
        """The pid of this runs directory's scheduler, or None when none holds the lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # --- both -------------------------------------------------------------------------------
    def batches(self) -> list[Batch]:
        """Every readable batch, oldest first."""
        try:
            names = sorted(p.name for p in self.batches_dir.iterdir()
                           if p.suffix == ".json" and not p.name.startswith("."))
        except OSError:
            return []
        out = []
        for name in names:
            try:
                raw = json.loads((self.batches_dir / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            batch = Batch.parse(name.removesuffix(".json"), raw)
            if batch is not None:
                out.append(batch)
        return out

    def started(self, batch_id: str) -> dict[str, dict]:
        try:
            raw = json.loads((self.batches_dir / f"{batch_id}.started").read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}

    # --- the scheduler ----------------------------------------------------------------------
    def mark_started(self, batch_id: str, started: dict[str, dict]) -> None:
        write_json_atomic(self.batches_dir / f"{batch_id}.started", started)

    def remove(self, batch_id: str) -> None:
        for suffix in (".json", ".started"):
            (self.batches_dir / f"{batch_id}{suffix}").unlink(missing_ok=True)


def least_loaded(gpus: Sequence[str], busy: Sequence[str | None]) -> str | None:
    """The GPU of `gpus` with the fewest of `busy` (ties: the first); None without GPUs."""
    if not gpus:
        return None
    return min(gpus, key=lambda g: (sum(1 for b in busy if b == g), gpus.index(g)))


#: the project root (as fa_tui.launch.ROOT), on the scheduler's PYTHONPATH
_ROOT = Path(__file__).resolve().parent.parent.parent


def ensure_scheduler(runs_dir: Path) -> int | None:
    """Start the scheduler of `runs_dir` (`python -m fa_tui.scheduler`) unless one runs; returns
    the pid started, else None.

    Two clients may both start one: the second finds the lock taken and exits at once. The
    scheduler, and so every worker it starts, inherits this process's working directory and
    environment (a relative data.root, $FA_TUI_DATA): the same as when clients started the
    workers themselves, as long as one runs directory is used from one place."""
    queue = QueueDir(runs_dir)
    if queue.scheduler_pid() is not None:
        return None
    queue.path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    with open(queue.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fa_tui.scheduler",
                                 str(Path(runs_dir).resolve())],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    return proc.pid
