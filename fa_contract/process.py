"""Whether a process that wrote a run file still runs. Torch-free; used by readers (stale
detection), the launcher, the launch queue and the atomic writer (stale temporary files)."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` runs on this host (a zombie child of ours counts as dead)."""
    if not pid or pid < 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def slurm_job() -> str | None:
    """The SLURM job this process runs in ("123", or "123_4" for an array task), else None
    (the worker and the job wrapper of fa_tui/slurm.py both record it)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def worker_alive(pid: int | None, host: str, fresh: bool) -> bool:
    """Whether the worker `pid` on `host` still runs: on this host its pid must be alive and
    still be a worker (pids are reused); on another host `fresh` (its heartbeat) decides."""
    if host != socket.gethostname():
        return fresh
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:            # no /proc (macOS): trust the pid
        return True
    return b"engine.worker" in cmdline
