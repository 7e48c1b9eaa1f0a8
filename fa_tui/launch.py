"""Creating, starting, stopping and queueing runs. Torch-free: the CLI and the TUI use it.

Runs are queued with `submit` (the executor, e.g. the runs directory's scheduler, starts them
through `spawn`) and watched with `follow`.

A run is started as its own process (`python -m engine.worker RUN_DIR`) in a new session, so
it survives the CLI, the TUI and an SSH disconnect; everything that follows it reads the run
directory (docs/run-directory.md). The launcher writes to a run directory only when no worker
is there to do it: when it creates the run (`queued`), when it starts the worker (`running`
with the child's pid, so a worker that dies before its first heartbeat is still detected),
when a run is stopped before it started; the scheduler writes one when a worker exited
without a final status.
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

from fa_contract.rundir import (ACTIVE_STATES, CORRUPT, EVENTS, LOG, STATUS, EventLog, RunDir,
                                Status,
                                safe_name)
from fa_contract.status import worker_alive
from fa_tui.warm import WarmProc, WarmStarter

if TYPE_CHECKING:
    from fa_contract.config import Config

__all__ = ["create_run", "spawn", "stop", "worker_alive", "resume_refusal", "submit", "follow",
           "record_exit", "exit_reason", "RunProgress"]

#: the project root, put on the worker's PYTHONPATH so it runs the same engine as this process
ROOT = Path(__file__).resolve().parent.parent
GPU_LIST = re.compile(r"^\d+(,\d+)*$")
#: free bytes a run directory's disk must have for a worker to be started there
MIN_FREE = 1 << 20


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


def worker_env() -> dict[str, str]:
    """A worker's environment: this one, with the project importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def spawn(run: RunDir, gpu: str | None = None, resume: bool = False,
          warm: WarmStarter | None = None) -> subprocess.Popen | WarmProc:
    """Start the worker of `run` in its own session, output appended to worker.log.

    `gpu` is a GPU index or list ("1", "0,1") that becomes CUDA_VISIBLE_DEVICES; any other
    value (None, "auto", "cpu", "cuda:1") leaves the environment alone and the config's
    run.device decides. With `warm` (the scheduler's) the worker is forked from a process
    that has already imported the engine (fa_tui/warm.py), else, or when that fails, it is
    a fresh interpreter. The caller may poll() the returned process or drop it."""
    args = [str(run.path.resolve())] + (["--resume"] if resume else [])
    cmd = [sys.executable, "-m", "engine.worker", *args]
    env = worker_env()
    visible = gpu if gpu and GPU_LIST.match(gpu) else None
    if visible:
        env["CUDA_VISIBLE_DEVICES"] = visible
    free = shutil.disk_usage(run.path).free
    if free < MIN_FREE:                # nothing is started that could not write its files
        raise OSError(errno.ENOSPC, f"No space left on device ({free} bytes free)", str(run.path))
    header = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[1:])}"
              + (f" CUDA_VISIBLE_DEVICES={visible}" if visible else "") + " ---\n")
    previous = run.read_status()
    with open(run.file(LOG), "ab") as log:
        log.write(header.encode())
        log.flush()
        proc: subprocess.Popen | WarmProc | None = None
        if warm is not None:
            proc = warm.start(args, {"CUDA_VISIBLE_DEVICES": visible} if visible else {},
                              run.file(LOG))
        if proc is None:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
    # the worker rewrites this within seconds; until then it shows the run as started, and
    # if the worker dies before that, the dead pid makes readers show it as failed. (On a
    # full disk the log header above already failed, so no worker was started; a disk that
    # fills in between leaves this write to the worker, which retries its own.)
    try:
        run.write_status(Status(state="running", pid=proc.pid, started=time.time(),
                                step=previous.step, total_steps=previous.total_steps,
                                device=previous.device, extra=previous.extra))
    except OSError:
        pass
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
    """What a follower knows about one run; `on_update` receives the list of them."""
    run: RunDir
    state: str = "queued"
    step: int = 0
    total: int | None = None
    gpu: str | None = None
    reason: str | None = None
    returncode: int | None = None        # of a worker this process waited for

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES


def exit_reason(rc: int, estimate: int | None = None) -> str:
    """Why a worker that exited without writing a final state ended, in words; a SIGKILL is
    most often the kernel's out-of-memory killer, so say so, with the memory the launch
    estimated the run to need (fa_contract/estimate.py) when known."""
    if rc == -signal.SIGKILL:
        from fa_contract.estimate import fmt_bytes
        est = f"; it was estimated to need {fmt_bytes(estimate)}" if estimate else ""
        return f"killed (SIGKILL — out of memory?){est}; see {LOG}"
    how = (f"killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals()
           else f"exited with status {rc}")
    return f"worker {how} before writing its final state; see {LOG}"


def record_exit(run: RunDir, returncode: int, estimate: int | None = None) -> Status:
    """The state after a worker exited: one that exited without writing a final state (killed,
    out of memory, crashed in the interpreter) can no longer write one, so it is recorded as
    failed here, at once, instead of leaving `running` until the heartbeat ages. Raises
    OSError when the status cannot be written (the caller may retry)."""
    status = run.read_status()
    if status.state in ACTIVE_STATES:
        status.state, status.reason = "failed", exit_reason(returncode, estimate)
        run.write_status(status)
    return status


def _read_final(p: RunProgress) -> None:
    """`p` updated to its run's state after the worker it waited for exited (record_exit)."""
    status = (record_exit(p.run, p.returncode) if p.returncode is not None
              else p.run.read_status())
    p.state, p.reason = status.state, status.reason
    p.step = max(p.step, status.step)
    p.total = status.total_steps or p.total


# --- the queue: clients enqueue, an executor starts -----------------------------------------
def submit(runs_dir: Path, runs: Sequence[RunDir], jobs: int = 1, gpus: Sequence[str] = (),
           resume: bool = False, estimates: dict[str, int] | None = None) -> None:
    """Hand `runs` to the executor, which starts them `jobs` at a time over `gpus` (each
    worker sees one, as CUDA_VISIBLE_DEVICES) and outlives this process.

    This is the one place where the executor is chosen. The local one is the runs directory's
    scheduler (fa_tui/scheduler.py): the batch is written into RUNS_DIR/.queue and the
    scheduler is started if none runs. `estimates` (run path -> bytes) let it say how much
    memory a worker killed by the kernel was expected to need."""
    from fa_tui.core.queue import QueueDir
    from fa_tui.core.queue import ensure_scheduler
    QueueDir(runs_dir).add([r.path for r in runs], jobs, gpus, resume, estimates)
    ensure_scheduler(Path(runs_dir))


def follow(runs: Sequence[RunDir], runs_dir: Path,
           on_update: Callable[[list[RunProgress]], None] = lambda progress: None,
           poll_s: float = 0.5) -> list[RunProgress]:
    """Watch `runs` until every one has ended; returns their last progress.

    Following only reads: interrupting it stops nothing. Progress comes from the events
    (steps) and status.json (state); the GPU from the queue's record. Should the scheduler
    have died with runs still queued (killed, machine rebooted), it is started again."""
    from fa_tui.core.queue import QueueDir
    from fa_tui.core.queue import ensure_scheduler
    queue = QueueDir(runs_dir)
    progress = [RunProgress(run) for run in runs]
    logs = {id(p): EventLog(p.run.file(EVENTS)) for p in progress}
    polls = 0
    while True:
        gpus = {path: info.get("gpu") for b in queue.batches()
                for path, info in queue.started(b.id).items()}
        # a run still waiting in the queue is queued whatever its status says (a run to
        # resume reads stopped or failed until its worker starts)
        waiting = set(queue.waiting())
        for p in progress:
            if p.finished:
                continue
            if str(p.run.path.resolve()) in waiting:
                p.state, p.reason = "queued", None
                continue
            for event in logs[id(p)].poll():
                p.step = event.get("step", p.step)
                p.total = event.get("total_steps", p.total)
            status = p.run.read_status()
            p.state, p.reason = status.state, status.reason
            p.total = status.total_steps or p.total
            p.step = max(p.step, status.step)
            p.gpu = gpus.get(str(p.run.path.resolve()), p.gpu)
        on_update(progress)
        if all(p.finished for p in progress):
            return progress
        polls += 1
        if polls % 10 == 0 and queue.batches():
            ensure_scheduler(Path(runs_dir))
        _wait_for_change([p.run.file(STATUS) for p in progress
                          if not p.finished and p.state != "queued"], poll_s)


def _wait_for_change(paths: Sequence[Path], timeout: float, tick: float = 0.02) -> None:
    """Sleep up to `timeout`, but return within `tick` of any of `paths` changing: a worker
    rewrites its status.json as it ends, so a run's end is seen at once and `fa-tui run`
    returns with it, while progress is still redrawn only every `timeout`."""
    def stamps() -> list[int | None]:
        out: list[int | None] = []
        for path in paths:
            try:
                out.append(path.stat().st_mtime_ns)
            except OSError:
                out.append(None)
        return out

    before = stamps()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(tick, left))
        if paths and stamps() != before:
            return
