"""The SLURM executor (`run.executor = "slurm"`): runs are submitted through submitit, a sweep
as one job array, and each job runs the very worker a local launch runs (`python -m
engine.worker RUN_DIR`), so the run directory — on a filesystem the login node shares with the
compute nodes — stays the one interface (docs/cluster.md).

Lifecycle of one run:
- `check` refuses, before anything exists, a cluster without `sbatch` or a partition the
  cluster does not have (SlurmError: the CLI exits 2).
- `submit` sends the runs (one array per distinct [slurm] table) and records the job id in
  status.json (`queued`, slurm_state PENDING); squeue tells the pending reason meanwhile.
- On the node, `SlurmWorker` starts the worker and writes `running` with its pid (as
  fa_tui/launch.spawn does). SLURM signals the job's processes with SIGUSR2 `slurm.signal_s`
  before its time limit (or on preemption): the worker checkpoints and stops; submitit calls
  `SlurmWorker.checkpoint`, which marks the run `queued` (REQUEUED) and hands submitit the
  same worker with --resume; submitit requeues the job (same job id), and the history reads
  as one run (the event log's resume rule).
- `cancel` (fa-tui stop, the TUI's stop) is scancel: SLURM sends SIGTERM first, the worker
  checkpoints and writes `stopped`; `fa-tui resume` submits the runs again.

submitit is imported only here, inside the functions that submit; torch never.

Length: submitting, the node-side wrapper and following a sweep share the job bookkeeping
(ids, states, requeues), so they stay in one module for now.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fa_contract.config import SlurmCfg
from fa_contract.rundir import ACTIVE_STATES, LOG, RunDir, Status
from fa_tui.launch import ROOT

#: submitit's own files (sbatch scripts, pickles, logs) per job, under the runs directory;
#: hidden, so list_runs never mistakes them for runs
SUBMITIT_DIR = ".slurm"
POLL_S = 0.5


class SlurmError(Exception):
    """The cluster cannot take the runs (no sbatch, unknown partition, sbatch refused)."""


# --- before submitting --------------------------------------------------------------------------
def minutes(time_limit: str) -> int:
    """slurm.time ("90", "HH:MM:SS", "D-HH:MM:SS", as the schema allows) in whole minutes,
    rounded up (submitit's `time` is minutes)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", time_limit)
    if m is None:
        return int(time_limit)
    days, hours, mins, secs = (int(g or 0) for g in m.groups())
    return max(1, days * 1440 + hours * 60 + mins + (secs > 0))


def partitions() -> tuple[list[str], str | None]:
    """The cluster's partitions and its default one (sinfo marks it with `*`)."""
    exe = shutil.which("sinfo")
    if exe is None:
        raise SlurmError("sinfo not found: this machine is not a SLURM login node (install "
                         "the SLURM client, or use run.executor = \"local\")")
    try:
        done = subprocess.run([exe, "-h", "-o", "%P"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"sinfo did not answer ({e}): is the SLURM controller up?") from None
    if done.returncode != 0:
        raise SlurmError(f"sinfo failed: {done.stderr.strip() or done.returncode}; is the SLURM "
                         f"controller up? (scripts/slurm-cluster start starts a local one)")
    names = [p.strip() for p in done.stdout.split()]
    default = next((p.rstrip("*") for p in names if p.endswith("*")), None)
    return [p.rstrip("*") for p in names], default


def check(cfgs: Sequence[SlurmCfg], source: str = "the preset") -> None:
    """Refuse what SLURM would refuse, before any run directory or job exists."""
    if shutil.which("sbatch") is None:
        raise SlurmError(f"{source}: run.executor = \"slurm\" but sbatch is not found on PATH: "
                         f"run fa-tui on the cluster's login node, or use --executor local")
    names, default = partitions()
    for cfg in cfgs:
        if cfg.partition is None and default is None:
            raise SlurmError(f"{source}: slurm.partition is unset and the cluster has no default "
                             f"partition; set slurm.partition to one of: {', '.join(names)}")
        if cfg.partition is not None and cfg.partition not in names:
            raise SlurmError(f"{source}: slurm.partition = {cfg.partition!r}: no such partition "
                             f"on this cluster; set slurm.partition to one of: "
                             f"{', '.join(names) or '(none)'}")


# --- submitting ---------------------------------------------------------------------------------
def sbatch_parameters(cfg: SlurmCfg, name: str) -> dict[str, Any]:
    """The [slurm] table as submitit's SlurmExecutor parameters (each one #SBATCH line)."""
    extra: dict[str, Any] = {}
    for option in cfg.extra:
        key, eq, value = option[2:].partition("=")
        extra[key] = value if eq else True
    params: dict[str, Any] = {
        "job_name": name, "time": minutes(cfg.time), "cpus_per_task": cfg.cpus,
        "signal_delay_s": cfg.signal_s, "stderr_to_stdout": True}
    optional = {"partition": cfg.partition, "mem": cfg.mem, "account": cfg.account,
                "qos": cfg.qos, "constraint": cfg.constraint,
                "gres": f"gpu:{cfg.gpus}" if cfg.gpus else None,
                "array_parallelism": cfg.parallel, "additional_parameters": extra or None}
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def submit(runs: Sequence[RunDir], resume: bool = False) -> list[str]:
    """Submit `runs` (created by fa_tui.launch.create_run, or ended ones to resume): one job
    array per distinct [slurm] table, in order. Returns the job ids ("123_0"…), one per run,
    and records each in the run's status. Raises SlurmError when sbatch refuses."""
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    from fa_contract.config import Config
    groups: dict[str, list[tuple[RunDir, SlurmCfg]]] = {}
    for run in runs:
        cfg = Config.model_validate(run.read_config()).slurm
        groups.setdefault(cfg.model_dump_json(), []).append((run, cfg))
    ids: dict[str, str] = {}
    for members in groups.values():
        cfg = members[0][1]
        root = members[0][0].path.parent.resolve()
        executor = submitit.SlurmExecutor(folder=root / SUBMITIT_DIR / "%j",
                                          max_num_timeout=cfg.requeues)
        executor.update_parameters(**sbatch_parameters(cfg, f"fa-tui:{root.name}"))
        folder = root / SUBMITIT_DIR
        before = set(folder.iterdir()) if folder.is_dir() else set()
        try:
            with executor.batch():
                jobs = [executor.submit(SlurmWorker(str(run.path.resolve()), resume))
                        for run, _ in members]
        except (FailedSubmissionError, FailedJobError, subprocess.CalledProcessError,
                OSError) as e:
            # submitit's pickles and script of the refused submission: not left behind
            for path in set(folder.iterdir()) - before if folder.is_dir() else ():
                if path.is_file():
                    path.unlink(missing_ok=True)
            if not before and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise SlurmError(f"sbatch refused the runs: {_first_line(e)}") from None
        for (run, _), job in zip(members, jobs):
            ids[run.name] = job.job_id
            _mark_submitted(run, job.job_id)
    return [ids[run.name] for run in runs]


def launch(runs_dir: Path, named: Sequence[tuple[str, Any]], source: str) -> list[RunDir]:
    """Check the cluster, create the runs (name, Config) under `runs_dir`, submit them. When
    the cluster refuses, the runs just created are removed again: nothing is left on disk.
    The CLI's `run --executor slurm` and the TUI's Compose both launch through here."""
    from fa_tui.launch import create_run
    check([cfg.slurm for _, cfg in named], source=source)
    runs: list[RunDir] = []
    try:
        for name, cfg in named:
            runs.append(create_run(runs_dir, cfg, name))
        submit(runs)
    except BaseException:
        for run in runs:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    return runs


def resubmit(runs: Sequence[RunDir]) -> list[str]:
    """`resume` of SLURM runs: submit them again with --resume (new jobs), after checking the
    cluster. Refused (SlurmError) while a run's job is still queued or running."""
    from fa_contract.config import Config
    from fa_tui.core.slurmq import squeue
    statuses = [run.read_status() for run in runs]
    queue = squeue([s.slurm_job for s in statuses if s.slurm_job]) or {}
    for run, status in zip(runs, statuses):
        if status.slurm_job in queue:
            raise SlurmError(f"{run.name} is still SLURM job {status.slurm_job} "
                             f"({queue[status.slurm_job].state}); nothing to resume. Stop it "
                             f"first with fa-tui stop")
    check([Config.model_validate(run.read_config()).slurm for run in runs],
          source=str(runs[0].path / "config.toml"))
    return submit(runs, resume=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    sbatch = [line for line in text.splitlines() if "sbatch: error" in line]
    return (sbatch[0] if sbatch else text.splitlines()[0] if text else type(e).__name__).strip()


def _mark_submitted(run: RunDir, job: str) -> None:
    """`queued` with the job id, unless the job already started and its worker wrote (the
    window is the scheduler's start-up plus the interpreter's; nothing is lost either way)."""
    status = run.read_status()
    if status.state == "running":
        return
    run.write_status(Status(state="queued", step=status.step, total_steps=status.total_steps,
                            device=status.device, started=status.started, slurm_job=job,
                            slurm_state="PENDING"))


def cancel(run: RunDir, status: Status) -> bool:
    """scancel the run's job. A running worker gets SIGTERM from SLURM and checkpoints
    (`stopped`, resumable); a job that had not started is marked `stopped` here, since no
    worker will ever write it. Returns False when scancel could not be run."""
    exe = shutil.which("scancel")
    if exe is None or not status.slurm_job:
        return False
    try:
        done = subprocess.run([exe, status.slurm_job], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        return False
    if status.state == "queued":
        status.state, status.reason = "stopped", "cancelled before it started (scancel)"
        status.slurm_state = "CANCELLED"
        run.write_status(status)
    return True


# --- on the compute node ------------------------------------------------------------------------
@dataclass
class SlurmWorker:
    """What a SLURM job runs (pickled by submitit): the run's worker as a child process, then
    the same bookkeeping fa_tui/launch.py does for a local worker. `checkpoint` is submitit's
    hook on SIGUSR2 (time limit, preemption): it returns this run with resume=True, to be
    requeued."""
    run_path: str
    resume: bool = False

    def __post_init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict:
        return {"run_path": self.run_path, "resume": self.resume}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __call__(self) -> str:
        from fa_contract.process import slurm_job
        run = RunDir(self.run_path)
        previous = run.read_status()
        if previous.slurm_state == "CANCELLED" or previous.state in ("done", "diverged"):
            return previous.state            # cancelled while it waited (scancel raced)
        cmd = [sys.executable, "-m", "engine.worker", str(run.path)]
        # a job SLURM itself started again (preempted with SIGTERM, node failure) runs the
        # first submission's pickle: a checkpoint on disk means continue, never start over
        if self.resume or run.has_checkpoint():
            cmd.append("--resume")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(run.file(LOG), "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[1:])} "
                      f"(SLURM job {slurm_job()}) ---\n".encode())
            log.flush()
            # not a session of its own: SLURM's signals must reach the worker
            self._proc = proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                                 stderr=subprocess.STDOUT, env=env)
        run.write_status(Status(state="running", pid=proc.pid, started=previous.started or
                                time.time(), step=previous.step,
                                total_steps=previous.total_steps, device=previous.device,
                                slurm_job=slurm_job(), slurm_state="RUNNING"))
        # poll, never Popen.wait(): submitit's SIGUSR2 handler runs `checkpoint` in this
        # thread, and a blocking wait would hold the lock its own wait needs
        while proc.poll() is None:
            time.sleep(POLL_S)
        from fa_tui.launch import RunProgress, _read_final
        final = RunProgress(run, returncode=proc.returncode)
        _read_final(final)
        return final.state

    def checkpoint(self) -> Any:
        """SIGUSR2: the worker got it too (SLURM signals every process of the job step) and is
        checkpointing; make sure it did (a site may signal the batch shell only), wait for it,
        then mark the run requeued and return the resumed worker for submitit to requeue.
        None (no requeue) when the run ended meanwhile."""
        from submitit.helpers import DelayedSubmission
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGUSR2)
            except ProcessLookupError:
                pass
            while proc.poll() is None:
                time.sleep(0.1)
        run = RunDir(self.run_path)
        status = run.read_status()
        if status.state not in ("stopped", *ACTIVE_STATES):
            return None
        status.state, status.slurm_state, status.pid = "queued", "REQUEUED", None
        status.reason = (f"requeued by SLURM at step {status.step} (time limit or preemption); "
                         f"it resumes from its checkpoint")
        run.write_status(status)
        return DelayedSubmission(SlurmWorker(self.run_path, resume=True))


def slurm_runs(runs: Sequence[RunDir]) -> list[RunDir]:
    """The runs whose config says run.executor = "slurm"."""
    out = []
    for run in runs:
        try:
            if run.read_config().get("run", {}).get("executor") == "slurm":
                out.append(run)
        except (OSError, ValueError):
            continue
    return out


def job_root(run: RunDir) -> Path:
    return run.path.parent / SUBMITIT_DIR


def follow(runs: Sequence[RunDir], on_update: Any, poll_s: float = 1.0,
           squeue_every_s: float = 5.0) -> list:
    """Call `on_update` with the runs' progress (fa_tui.launch.RunProgress, state as SLURM
    sees it: fa_tui/core/slurmq.live) until every run has ended; returns the last progress.
    One squeue call per `squeue_every_s` at most, for all runs together. A run has ended
    when its status says so and SLURM no longer lists its job (a worker that checkpointed
    for a requeue wrote `stopped` a moment before the job went back to the queue)."""
    from fa_tui.core.slurmq import QueueCache, live, slurm_jobs
    from fa_tui.launch import RunProgress
    cache = QueueCache(squeue_every_s)
    while True:
        statuses = [run.read_status() for run in runs]
        queue = cache.get(slurm_jobs(statuses))
        progress = []
        for run, status in zip(runs, statuses):
            now = live(status, queue)
            progress.append(RunProgress(run, state=now.state, step=now.step,
                                        total=now.total_steps, reason=now.reason))
        on_update(progress)
        if all(p.finished for p in progress) and (
                queue is None or not any(s.slurm_job in queue for s in statuses)):
            return progress
        time.sleep(poll_s)
