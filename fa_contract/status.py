"""status.json: a run's state, rewritten atomically by whoever is responsible for the run
(docs/run-directory.md, "Who writes what"), read by everything that shows runs.

Extra fields: optional fields are declared here (issue-specific ones such as a SLURM job id
belong here too, with a default of None, so they are typed and documented); keys that a
newer writer adds and this version does not declare are kept in `Status.extra` and written
back unchanged, so a reader-writer (the launcher) never drops them.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

from fa_contract.process import pid_alive
from fa_contract.typed import doc, problem
from fa_contract.version import FORMAT_VERSION, version_problem

State = Literal["queued", "running", "done", "failed", "stopped", "diverged", "corrupt"]
#: the states a writer records; `corrupt` is the readers' word for a run they cannot read
STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "stopped", "diverged")
CORRUPT: Literal["corrupt"] = "corrupt"
ACTIVE_STATES = ("queued", "running")
HEARTBEAT_S = 5.0
#: a running worker whose heartbeat is older than this (and whose pid is gone) has died.
STALE_AFTER_S = 30.0


@dataclass(kw_only=True)
class Status:
    state: State = doc("`queued`, `running`, `done`, `failed`, `stopped` or `diverged`",
                       "queued")
    pid: int | None = doc("the worker's process id (on `host`)", None)
    host: str = doc("the machine the worker runs on", factory=socket.gethostname)
    heartbeat: float = doc("unix time of the last rewrite", factory=time.time)
    started: float | None = doc("unix time the run was started (kept across the launcher's "
                                "and the worker's writes)", None)
    reason: str | None = doc("why the run ended other than `done` (may span lines)", None)
    step: int = doc("optimiser steps done", 0)
    total_steps: int | None = doc("steps the run will take when done", None)
    device: str | None = doc("the torch device it trains on", None)
    # SLURM runs only (fa_tui/slurm.py): the job ("123" or array task "123_4") and its
    # scheduler state as last known ("PENDING", "RUNNING", "REQUEUED"); readers ask squeue
    # for the live state and pending reason (fa_tui/core/slurmq.py). The node is `host`.
    slurm_job: str | None = doc("SLURM runs: the job id (`123`, or `123_4` for an array task)",
                                None)
    slurm_state: str | None = doc("SLURM runs: the scheduler state last known (`PENDING`, "
                                  "`RUNNING`, `REQUEUED`)", None)
    v: int = doc("format version", FORMAT_VERSION)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False,
                                              metadata={"internal": True})

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def is_stale(self, now: float | None = None) -> bool:
        """A running worker that stopped beating and whose pid is gone (same host), or whose
        heartbeat is very old (other host, where the pid cannot be checked)."""
        if self.state != "running":
            return False
        age = (now or time.time()) - self.heartbeat
        if self.host == socket.gethostname():
            return not pid_alive(self.pid) and age > HEARTBEAT_S * 2 or age > STALE_AFTER_S * 10
        return age > STALE_AFTER_S

    def to_json(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "extra"}
        return json.dumps({**self.extra, **fields}, indent=1, allow_nan=False)


FIELDS = tuple(f.name for f in dataclasses.fields(Status) if f.name != "extra")


def corrupt(reason: str) -> Status:
    return Status(state=CORRUPT, reason=reason, heartbeat=0.0, host="")


def parse_status(data: bytes | str, where: str = "status.json") -> Status:
    """Any bytes -> a Status; what cannot be read becomes state `corrupt` with a one-line
    reason. Staleness is not applied here (RunDir.read_status does)."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return corrupt(f"{where} is not valid JSON")
    if not isinstance(raw, dict):
        return corrupt(f"{where} holds {type(raw).__name__}, not a JSON object")
    bad = version_problem(raw.get("v", FORMAT_VERSION), where)
    if bad is None and (wrong := problem(Status, raw)):
        bad = f"{where}: {wrong}"
    if bad:
        return corrupt(bad)
    known = {k: raw[k] for k in FIELDS if k in raw}
    return Status(**known, extra={k: v for k, v in raw.items() if k not in FIELDS})


def worker_alive(status: Status) -> bool:
    """Whether the worker that wrote `status` still runs: on this host its pid must be alive
    and still be a worker (pids are reused); on another host its heartbeat must be fresh."""
    from fa_contract.process import worker_alive as alive
    return alive(status.pid, status.host, status.active and not status.is_stale())
