"""Creating, starting, stopping and queueing runs. Torch-free: the CLI and the TUI use it.

A run is started as its own process (`python -m engine.worker RUN_DIR`) in a new session, so
it survives the CLI, the TUI and an SSH disconnect; everything that follows it reads the run
directory (docs/run-directory.md). The launcher writes to a run directory only when no worker
is there to do it: when it creates the run (`queued`), when it starts the worker (`running`
with the child's pid, so a worker that dies before its first heartbeat is still detected),
when a run is stopped before it started, and when a worker exited without a final status.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from fa_contract.rundir import (ACTIVE_STATES, CORRUPT, EVENTS, LOG, EventLog, RunDir,
                                Status, safe_name)
from fa_contract.status import worker_alive
from fa_tui.core.queue import LaunchQueue

if TYPE_CHECKING:
    from fa_contract.config import Config

__all__ = ["create_run", "spawn", "stop", "worker_alive", "resume_refusal", "run_queue",
           "RunProgress"]

#: the project root, put on the worker's PYTHONPATH so it runs the same engine as this process
ROOT = Path(__file__).resolve().parent.parent
GPU_LIST = re.compile(r"^\d+(,\d+)*$")


def create_run(runs_dir: Path, cfg: Config, name: str | None = None) -> RunDir:
    """A new run directory under `runs_dir` holding config.toml and a `queued` status.

    The directory is named after `name` (default `cfg.run.name`), with `-2`, `-3`… appended
    when taken; config.toml's run.name is that final name, so names in tables and exports
    match folders. It is built in a hidden temporary folder and renamed into place, so no
    reader ever sees a half-created run, and concurrent launchers never share a name."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = safe_name(name or cfg.run.name)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=runs_dir))
    try:
        n = 1
        while True:
            final = base if n == 1 else f"{base}-{n}"
            n += 1
            if (runs_dir / final).exists():
                continue
            named = cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": final})})
            RunDir(tmp).write_config(named.model_dump(mode="json", exclude_none=True))
            RunDir(tmp).write_status(Status(state="queued"))
            try:
                os.rename(tmp, runs_dir / final)
            except OSError as e:            # another launcher took the name meanwhile
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue
            return RunDir(runs_dir / final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def spawn(run: RunDir, gpu: str | None = None, resume: bool = False) -> subprocess.Popen:
    """Start the worker of `run` in its own session, output appended to worker.log.

    `gpu` is a GPU index or list ("1", "0,1") that becomes CUDA_VISIBLE_DEVICES; any other
    value (None, "auto", "cpu", "cuda:1") leaves the environment alone and the config's
    run.device decides. The caller may wait() on the returned process or drop it."""
    cmd = [sys.executable, "-m", "engine.worker", str(run.path.resolve())]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    visible = gpu if gpu and GPU_LIST.match(gpu) else None
    if visible:
        env["CUDA_VISIBLE_DEVICES"] = visible
    header = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[1:])}"
              + (f" CUDA_VISIBLE_DEVICES={visible}" if visible else "") + " ---\n")
    previous = run.read_status()
    with open(run.file(LOG), "ab") as log:
        log.write(header.encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    # the worker rewrites this within seconds; until then it shows the run as started, and
    # if the worker dies before that, the dead pid makes readers show it as failed
    run.write_status(Status(state="running", pid=proc.pid, started=time.time(),
                            step=previous.step, total_steps=previous.total_steps,
                            device=previous.device, extra=previous.extra))
    return proc


def resume_refusal(run: RunDir) -> str | None:
    """The one resume policy (CLI `resume`, the Runs screen): why `run` must not be resumed,
    or None. A live worker has it; a done run has nothing left to do; a diverged run would
    repeat the same steps; a corrupt one cannot be read. Stopped, failed and queued runs may
    (a run without a checkpoint starts over)."""
    status = run.read_status()
    if status.state == "running" and worker_alive(status):
        return f"{run.name} is running (pid {status.pid} on {status.host}); nothing to resume"
    if status.state == "done":
        return f"{run.name} is done; nothing to resume"
    if status.state == "diverged":
        return (f"{run.name} diverged ({status.reason}); resuming would repeat the same steps. "
                f"Start a new run instead, e.g. with a lower optim.lr")
    if status.state == CORRUPT:
        return f"{run.name} cannot be read ({status.reason}); not resumed"
    return None


def stop(run: RunDir) -> bool:
    """Ask a run to stop. A live worker gets SIGTERM: it finishes its step, checkpoints and
    writes `stopped` (resumable). A run still waiting in a queue is marked `stopped` so the
    queue skips it. Returns False when there was nothing this host could stop."""
    status = run.read_status()
    if status.slurm_job and status.active:          # a SLURM job: scancel (fa_tui/slurm.py)
        from fa_tui.slurm import cancel
        return cancel(run, status)
    if status.state == "queued":
        status.state, status.reason = "stopped", "stopped before it started"
        run.write_status(status)
        return True
    if status.state != "running" or status.host != socket.gethostname():
        return False
    if not worker_alive(status):
        return False
    if status.pid is None:
        return False
    try:
        os.kill(status.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


@dataclass
class RunProgress:
    """What a queue knows about one of its runs; `on_update` receives the list of them."""
    run: RunDir
    state: str = "queued"
    step: int = 0
    total: int | None = None
    gpu: str | None = None
    reason: str | None = None
    returncode: int | None = None

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES


@dataclass
class _Slot:
    progress: RunProgress
    proc: subprocess.Popen
    events: EventLog


def run_queue(runs: Sequence[RunDir], jobs: int = 1, gpus: Sequence[str] | None = None,
              on_update: Callable[[list[RunProgress]], None] = lambda progress: None,
              resume: bool = False, poll_s: float = 0.5) -> list[RunProgress]:
    """Run `runs` with at most `jobs` workers at a time, in order, until all have ended.

    The scheduling is the TUI's LaunchQueue (fa_tui/core/queue.py): each new worker gets the
    GPU of `gpus` with the fewest of this queue's workers (ties: the first), and a queued run
    stopped before its turn (`fa-tui stop`) is skipped. This loop steps it and follows the
    workers it starts: progress from the events (steps) and status.json (state); `on_update`
    is called after every poll with the same list, which is also returned.

    On KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one by the CLI) running workers are
    stopped — they checkpoint — and waited for, runs not yet started are marked stopped, and
    the interrupt is raised again."""
    progress = [RunProgress(run) for run in runs]
    of_run = {id(p.run): p for p in progress}
    slots: list[_Slot] = []

    def start(run: RunDir, gpu: str | None, resume: bool) -> subprocess.Popen:
        p = of_run[id(run)]
        proc = spawn(run, gpu, resume)
        p.gpu, p.state = gpu, "running"
        slots.append(_Slot(p, proc, EventLog(run.file(EVENTS))))
        return proc

    def skipped() -> None:
        """Runs the queue passed over (stopped, or taken over, before their turn)."""
        waiting = {id(run) for run in queue.pending()}
        for p in progress:
            if p.state == "queued" and id(p.run) not in waiting:
                _read_final(p)

    queue = LaunchQueue()
    try:
        queue.add(runs, start, jobs, gpus or (), resume)
        while True:
            for slot in list(slots):
                _poll(slot)
                if slot.proc.poll() is not None:
                    _poll(slot)             # the last events
                    slot.progress.returncode = slot.proc.returncode
                    _read_final(slot.progress)
                    slots.remove(slot)
            queue.step()
            skipped()
            on_update(progress)
            if not slots and not queue.busy:
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        for run in queue.cancel():
            stop(run)
            _read_final(of_run[id(run)])
        for slot in slots:
            stop(slot.progress.run)
        for slot in slots:
            slot.progress.returncode = slot.proc.wait()
            _poll(slot)
            _read_final(slot.progress)
        on_update(progress)
        raise
    return progress


def _poll(slot: _Slot) -> None:
    """Step from the newest events (smoother than the 5 s heartbeat), total from the status."""
    p = slot.progress
    for event in slot.events.poll():
        p.step = event.get("step", p.step)
        p.total = event.get("total_steps", p.total)
    status = p.run.read_status()
    p.total = status.total_steps or p.total
    p.step = max(p.step, status.step)
    p.reason = status.reason


def _read_final(p: RunProgress) -> None:
    """The state after the worker exited. A worker that exited without writing a final state
    (killed, out of memory, crashed in the interpreter) can no longer write one: record it as
    failed here, with its exit status, instead of leaving `running` until the heartbeat ages."""
    status = p.run.read_status()
    if p.returncode is not None and status.state in ACTIVE_STATES:
        rc = p.returncode
        how = (f"killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals()
               else f"exited with status {rc}")
        status.state = "failed"
        status.reason = f"worker {how} before writing its final state; see {LOG}"
        p.run.write_status(status)
    p.state, p.reason = status.state, status.reason
    p.step = max(p.step, status.step)
    p.total = status.total_steps or p.total
