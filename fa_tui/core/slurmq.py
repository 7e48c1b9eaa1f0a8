"""The live SLURM state of cluster runs, for `fa-tui ls/show`, the CLI's follower and the TUI's
Runs screen: one `squeue` call answers for every run (never one call per run), and a
`QueueCache` spaces the calls out so a screen refreshing twice a second does not hammer the
scheduler.

Torch-free, Textual-free and submitit-free. A run directory only says what its worker (or the
submitter) last wrote; while a job waits in the queue nobody writes it, so the pending reason
("Resources", "Priority", "BeginTime"…) comes from here, and so does the news that a job left
the queue without its run ever ending (cancelled outside fa-tui before it started).
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Collection

from fa_contract.rundir import Status

#: squeue's states of a job that still holds (or waits for) resources
QUEUED_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                 "SUSPENDED", "RESV_DEL_HOLD")
SQUEUE_TIMEOUT_S = 20


@dataclass(frozen=True)
class QueueInfo:
    """One job as squeue lists it."""
    job: str                 # "123" or "123_4"
    state: str               # PENDING, RUNNING, COMPLETING…
    reason: str | None       # why it waits (PENDING), else None
    node: str | None         # where it runs (RUNNING), else None


def squeue(jobs: Collection[str]) -> dict[str, QueueInfo] | None:
    """The jobs among `jobs` that SLURM still knows as queued or running, by job id; a job
    absent from the answer has left the queue. None when squeue cannot answer (not installed,
    controller down), so that callers show what the run directories say instead of guessing."""
    jobs = sorted(set(jobs))
    if not jobs:
        return {}
    exe = shutil.which("squeue")
    if exe is None:
        return None
    # array tasks are asked for by their array job; squeue lists them as 123_4
    asked = sorted({j.split("_")[0] for j in jobs})
    try:
        done = subprocess.run([exe, "-h", "-r", "-j", ",".join(asked), "-o", "%i|%T|%r|%N"],
                              capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # a job id SLURM has forgotten makes squeue fail: then none of them is queued
        if "Invalid job id" in done.stderr:
            return {}
        return None
    found: dict[str, QueueInfo] = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        job, state, reason, node = parts
        found[job] = QueueInfo(job, state, None if reason in ("None", "") else reason,
                               node or None)
    return {j: found[j] for j in jobs if j in found}


class QueueCache:
    """At most one squeue call per `interval_s`; between calls the last answer is reused
    (for the jobs it covered). Used by the TUI's poller and the CLI's follower."""

    def __init__(self, interval_s: float = 5.0,
                 query: Callable[[Collection[str]], dict[str, QueueInfo] | None] = squeue,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.query = query
        self.clock = clock
        self.calls = 0
        self._at = float("-inf")
        self._asked: frozenset[str] = frozenset()
        self._answer: dict[str, QueueInfo] | None = None

    def get(self, jobs: Collection[str]) -> dict[str, QueueInfo] | None:
        jobs = frozenset(jobs)
        if not jobs:
            return {}
        if jobs <= self._asked and self.clock() - self._at < self.interval_s:
            return self._answer
        self._answer = self.query(jobs)
        self._asked, self._at = jobs, self.clock()
        self.calls += 1
        return self._answer


#: a run that ended this recently may still have its job in the queue (being requeued, or
#: finishing): its job is asked about too
RECENT_S = 120.0


def slurm_jobs(statuses: Collection[Status], now: float | None = None) -> set[str]:
    """The jobs worth asking about: those of runs not ended, or ended in the last minutes."""
    now = time.time() if now is None else now
    return {s.slurm_job for s in statuses
            if s.slurm_job and (s.active or now - s.heartbeat < RECENT_S)}


def live(status: Status, queue: dict[str, QueueInfo] | None) -> Status:
    """`status` as SLURM sees it now (a copy; the run directory is not touched).

    A queued run whose job waits shows the pending reason; a job that runs shows its node;
    a run still `queued` whose job SLURM no longer lists never started and never will
    (cancelled outside fa-tui, or refused by the cluster): it reads as failed. A `running`
    run whose job vanished is left to the heartbeat rule (Status.is_stale)."""
    if not status.slurm_job or queue is None:
        return status
    info = queue.get(status.slurm_job)
    if not status.active:
        # the worker checkpointed on SIGUSR2 and its job is being requeued: not an end yet
        if status.state == "stopped" and info is not None and info.state in (
                *QUEUED_STATES, "RUNNING"):
            return dataclasses.replace(status, state="queued", slurm_state=info.state,
                                       reason=f"being requeued by SLURM, job {status.slurm_job}")
        return status
    if info is None:
        if status.state == "queued":
            return dataclasses.replace(
                status, state="failed", slurm_state="GONE",
                reason=f"SLURM job {status.slurm_job} left the queue and the run never resumed "
                       f"or started (cancelled with scancel? refused by the cluster?); see the "
                       f"runs directory's .slurm/{status.slurm_job.split('_')[0]}* logs")
        return status
    if info.state == "RUNNING" or info.state == "COMPLETING":
        reason = status.reason if status.state == "running" else f"starting on {info.node}"
        return dataclasses.replace(status, slurm_state=info.state, reason=reason,
                                   host=info.node or status.host)
    why = f" ({info.reason})" if info.reason else ""
    reason = f"SLURM {info.state.lower()}{why}, job {status.slurm_job}"
    if status.reason:      # the worker's own word (requeued at step N) stays in front
        reason = f"{status.reason.split(';')[0]}; {reason}"
    return dataclasses.replace(status, slurm_state=info.state, reason=reason)


def describe(status: Status) -> str | None:
    """One line for `fa-tui show`: job, state, reason or node; None for a local run."""
    if not status.slurm_job:
        return None
    if not status.active:
        return f"job {status.slurm_job}, ended ({status.state})"
    if status.state == "running" or status.slurm_state == "RUNNING":
        return f"job {status.slurm_job}, RUNNING on {status.host}"
    return f"job {status.slurm_job}, {status.slurm_state or 'PENDING'}" + (
        f": {status.reason}" if status.reason else "")
