"""The scheduler of a runs directory: `python -m fa_tui.scheduler RUNS_DIR`.

The queue of a launch must outlive whoever launched it: a TUI that quits, an SSH connection
that drops, a `fa-tui run` killed by SIGKILL. So no client owns it. Clients write batches into
RUNS_DIR/.queue (fa_tui/core/queue.py) and call `ensure_scheduler`, which starts this process
in its own session when none runs. It holds an flock on .queue/scheduler.lock — one scheduler
per runs directory, so nothing is started twice — starts queued runs through
`fa_tui.launch.spawn` (the one way a worker starts) as slots free up, records each start
before the next, reaps its workers (a worker that died without a final state, e.g. killed by
the kernel's out-of-memory killer, is marked failed with the memory it was estimated to need),
and exits when nothing is queued or running. Restarted after a crash, it continues from the
files: runs it started are not started again, and their live workers still hold their slots.

Torch-free (it imports pydantic through the launcher, which is fine: it is a background
process).
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from functools import partial
from typing import Callable, Protocol

from fa_contract.rundir import ACTIVE_STATES, CONFIG, RunDir
from fa_tui.core.queue import Batch, QueueDir, least_loaded
from fa_tui.core.queue import ensure_scheduler  # noqa: F401 -- where clients found it
from fa_tui.warm import WarmStarter, enabled as warm_enabled

POLL_S = 0.5
#: how long a final status that cannot be written (disk full) is retried before giving up
RETRY_WRITE_S = 3600.0


class Process(Protocol):
    """A started worker: a subprocess.Popen, or a fa_tui.warm.WarmProc."""
    pid: int

    def poll(self) -> int | None: ...


class Scheduler:
    """`spawn` starts one worker (default `fa_tui.launch.spawn`, the one way a worker starts,
    with this scheduler's warm workers (fa_tui/warm.py) unless FA_TUI_WARM=0; tests pass a
    stand-in)."""

    def __init__(self, runs_dir: Path, poll_s: float = POLL_S,
                 spawn: Callable[..., Process] | None = None) -> None:
        self.queue = QueueDir(runs_dir)
        self.spawn = spawn
        self.warm: WarmStarter | None = None
        self.poll_s = poll_s
        self.procs: dict[str, Process] = {}               # run path -> the worker we started
        self.unwritten: dict[str, tuple[str, float]] = {}  # run path -> (reason, since)
        self.estimates: dict[str, int] = {}
        self.spawned: set[str] = set()      # every run this process started, written or not
        self._lock_fd: int | None = None

    # --- the lock -------------------------------------------------------------------------
    def lock(self) -> bool:
        self.queue.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.queue.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        if not self.lock():
            return 0                    # another scheduler has this runs directory
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # workers keep running
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            while True:
                try:
                    busy = self.step()
                except OSError as e:        # a full or read-only disk: say so, try again
                    print(f"{time.strftime('%H:%M:%S')} {e}", flush=True)
                    busy = True
                if not busy:
                    # Release, then look again: a client that wrote a batch before this look
                    # is served by us; one that writes after it finds the lock free and starts
                    # a new scheduler.
                    self.unlock()
                    if not self.queue.batches() or not self.lock():
                        return 0
                    continue
                time.sleep(self.poll_s)
        finally:
            if self.warm is not None:
                self.warm.close()
            self.unlock()

    def step(self) -> bool:
        """One poll: reap, start what fits, drop finished batches; whether anything is left."""
        self._reap()
        batches = self.queue.batches()
        for batch in batches:
            self.estimates.update(batch.estimates)
            if self._schedule(batch):
                self.queue.remove(batch.id)
        return bool(self.queue.batches() or self.procs or self.unwritten)

    def _alive(self, path: str, info: dict) -> bool:
        proc = self.procs.get(path)
        if proc is not None:
            return proc.poll() is None
        if "pid" not in info:
            return False
        from fa_tui.launch import worker_alive   # a worker a previous scheduler started
        status = RunDir(path).read_status()
        return status.pid == info["pid"] and worker_alive(status)

    def _schedule(self, batch: Batch) -> bool:
        """Start runs of `batch` into its free slots; True when it is finished."""
        from fa_tui.launch import spawn as default_spawn, worker_alive, worker_env
        if self.spawn is None and self.warm is None and warm_enabled():
            self.warm = WarmStarter(worker_env())
        spawn = self.spawn or partial(default_spawn, warm=self.warm)
        started = self.queue.started(batch.id)
        running = [info.get("gpu") for path, info in started.items() if self._alive(path, info)]
        for path in batch.runs:
            if len(running) >= batch.jobs:
                break
            if path in started:
                continue
            if path in self.spawned:        # started, but the record could not be written
                started[path] = {"pid": self.procs[path].pid} if path in self.procs else {}
                continue
            run = RunDir(path)
            status = run.read_status()
            if not run.file(CONFIG).is_file():
                started[path] = {"skipped": "deleted"}
            # a run stopped meanwhile or started elsewhere is passed over; a resume only
            # when a live worker has it (a queued run can be resumed: it starts over)
            elif worker_alive(status) if batch.resume else status.state != "queued":
                started[path] = {"skipped": status.state}
            else:
                gpu = least_loaded(batch.gpus, running)
                try:
                    proc = spawn(run, gpu, resume=batch.resume)
                except OSError as e:
                    started[path] = {"skipped": f"could not start: {e.strerror or e}"}
                    self._fail(path, f"the worker could not be started: {e.strerror or e}")
                else:
                    self.procs[path] = proc
                    self.spawned.add(path)
                    started[path] = {"gpu": gpu, "pid": proc.pid}
                    running.append(gpu)
            # recorded before the next start: a scheduler killed here never starts it twice
            self.queue.mark_started(batch.id, started)
        done = all(p in started for p in batch.runs)
        return done and not any(self._alive(p, i) for p, i in started.items())

    def _reap(self) -> None:
        for path, proc in list(self.procs.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.procs[path]
            status = RunDir(path).read_status()
            if status.state in ACTIVE_STATES and status.pid in (proc.pid, None):
                from fa_tui.launch import exit_reason
                self._fail(path, exit_reason(rc, self.estimates.get(path)))
        for path, (reason, since) in list(self.unwritten.items()):
            self._fail(path, reason, since)

    def _fail(self, path: str, reason: str, since: float | None = None) -> None:
        """Mark a run failed; on a full disk keep trying (for an hour) until it can be."""
        run = RunDir(path)
        status = run.read_status()
        status.state, status.reason = "failed", reason
        try:
            run.write_status(status)
            self.unwritten.pop(path, None)
        except OSError:
            since = since or time.time()
            if time.time() - since < RETRY_WRITE_S:
                self.unwritten[path] = (reason, since)
            else:
                self.unwritten.pop(path, None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fa_tui.scheduler RUNS_DIR", file=sys.stderr)
        return 2
    return Scheduler(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
