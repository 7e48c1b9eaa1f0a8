"""What a launch checks against the machine before it creates anything: the GPUs asked for
exist, every run fits in memory, the runs directory can be written and has room, and the data
is on disk (fetched once, here, when missing and allowed). Torch-free; the CLI and the TUI call
`check_launch` after the preset validated and before `create_run`.

The preset itself (values, bounds, choices) is the schema's business (fa_contract/config.py,
fa_tui/presets.py); these checks are about this machine, now. Each failure is one
PreflightError message naming what was asked, what the machine has, and how to get past it.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from fa_contract.config import Config
from fa_contract.data_files import DOWNLOAD_HOST, data_root, find_files, missing_files, reachable
from fa_contract.estimate import Estimate, estimate, fmt_bytes
from fa_tui import machine

#: room a run needs on disk beyond its checkpoint: events, status, summary, log
DISK_MARGIN = 16 * 1024 * 1024


class PreflightError(Exception):
    """One message: what was asked, what this machine has, how to proceed."""


@dataclass
class Checked:
    estimates: dict[str, Estimate]          # run name -> estimate


def check_gpus(gpus: Sequence[str], configs: Sequence[Config]) -> None:
    """--gpus indices and run.device = cuda[:N] against the GPUs this machine has."""
    have = machine.gpu_count()
    listing = (f"this machine has {have} GPU(s), numbered 0..{have - 1}" if have
               else "this machine has no NVIDIA GPU (nvidia-smi -L lists none)")
    bad = [g for g in gpus if int(g) >= have]
    if bad:
        raise PreflightError(f"--gpus {','.join(gpus)}: no GPU {', '.join(bad)}: {listing}. "
                             f"Pass indices that exist" + (", or drop --gpus to run on the CPU"
                                                           if not have else "") + ".")
    if gpus:
        return
    for cfg in configs:
        device = cfg.run.device
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            if index >= have:
                raise PreflightError(f"{cfg.run.name}: run.device = {device!r}: {listing}. "
                                     f"Set run.device = 'auto' (or 'cpu').")


def _limit(cfg: Config, gpu: str | None) -> tuple[int | None, str]:
    """The free memory of the device a run of `cfg` would use, and its name."""
    device = "cuda" if gpu is not None else cfg.run.device
    index = int(gpu) if gpu is not None else int(device.partition(":")[2] or 0)
    if device == "auto":
        device = "cuda" if machine.gpu_count() else "cpu"
    if device.startswith("cuda"):
        free = machine.gpu_free_bytes(index)
        return free, f"free memory of GPU {index}"
    return machine.host_free_bytes(), "available host memory (MemAvailable)"


def check_memory(configs: Sequence[Config], jobs: int, gpus: Sequence[str]) -> dict[str, Estimate]:
    """Each run's estimate, times the runs that share its device at once, against the
    device's free memory. Returns the estimates (run name -> Estimate)."""
    estimates = {cfg.run.name: estimate(cfg) for cfg in configs}
    at_once = min(jobs, len(configs))
    per_device = math.ceil(at_once / len(gpus)) if gpus else at_once
    for cfg in sorted(configs, key=lambda c: -estimates[c.run.name].total):
        est = estimates[cfg.run.name]
        # with several GPUs, the one with the least free memory decides (any may get the run)
        limits = [_limit(cfg, g) for g in gpus] if gpus else [_limit(cfg, None)]
        known = [(f, w) for f, w in limits if f is not None]
        free, what = min(known) if known else (None, "")
        if free is None:
            continue                              # the driver does not say: nothing to check
        need = est.total * per_device
        if need > free:
            many = (f" × {per_device} runs at a time (--jobs {jobs}) = {fmt_bytes(need)}"
                    if per_device > 1 else "")
            raise PreflightError(
                f"{cfg.run.name}: needs about {est.describe()}{many}, more than the "
                f"{fmt_bytes(free)} {what}. Make the run smaller (model.width, "
                f"model.bottleneck, train.batch_size, data.train_size, metrics.probe_size), "
                f"run fewer at a time (--jobs), or pass --skip-memory-check if you know better.")
    return estimates


def check_disk(runs_dir: Path, estimates: dict[str, Estimate] | Sequence[Estimate] = ()) -> None:
    """The runs directory can be created and written, and has room for the checkpoints."""
    runs_dir = Path(runs_dir)
    probe = runs_dir.absolute()          # nothing is created here: probe the nearest folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, "not a directory", str(probe))
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".fa-tui-probe-") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise PreflightError(f"cannot write in the runs directory {runs_dir}: "
                             f"{e.strerror or e}. Free some space or choose another directory "
                             f"(--runs-dir or $FA_TUI_RUNS).") from None
    values = estimates.values() if isinstance(estimates, dict) else estimates
    need = sum(e.checkpoint + DISK_MARGIN for e in values)
    free = machine.disk_free_bytes(runs_dir)
    if free is not None and need > free:
        raise PreflightError(f"the runs directory {runs_dir} has {fmt_bytes(free)} free; these "
                             f"runs need about {fmt_bytes(need)} (checkpoints and logs). Free "
                             f"some space or choose another directory (--runs-dir).")


def fetch_data(configs: Sequence[Config], echo: Callable[[str], None] = print,
               show_progress: bool = True) -> None:
    """Fetch each missing dataset once, here, before any run exists (the workers never
    download). Offline or unreachable: PreflightError naming the files and the folder."""
    seen = set()
    for cfg in configs:
        data = cfg.data
        key = (data.name, str(data_root(data)))
        if data.name == "synthetic" or key in seen or find_files(data) is not None:
            continue
        seen.add(key)
        if not data.download:
            raise PreflightError(f"data.name = {data.name!r}: {missing_files(data)}")
        if not reachable(data.name):          # offline: say so in a second, not after a timeout
            raise PreflightError(f"data.name = {data.name!r}: the files are not on disk and "
                                 f"{DOWNLOAD_HOST[data.name]} cannot be reached (offline?), so "
                                 f"they cannot be downloaded.\n" + (missing_files(data) or ""))
        echo(f"fetching {data.name} into {data_root(data)} (once, for every run)…")
        proc = subprocess.run([sys.executable, "-m", "engine.fetch", data.name,
                               str(data_root(data))],
                              stdin=subprocess.DEVNULL, text=True,
                              stdout=subprocess.PIPE,
                              stderr=None if show_progress else subprocess.DEVNULL)
        if proc.returncode != 0 or find_files(data) is None:
            why = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "no reason given"
            raise PreflightError(f"data.name = {data.name!r}: could not download it ({why}).\n"
                                 + (missing_files(data) or ""))


def check_launch(configs: Sequence[Config], runs_dir: Path, jobs: int = 1,
                 gpus: Sequence[str] = (), memory_check: bool = True,
                 echo: Callable[[str], None] = print, show_progress: bool = True) -> Checked:
    """Every machine check, cheapest first; data last, as it may download."""
    check_gpus(gpus, configs)
    estimates = (check_memory(configs, jobs, gpus) if memory_check
                 else {c.run.name: estimate(c) for c in configs})
    check_disk(runs_dir, estimates)
    fetch_data(configs, echo, show_progress)
    return Checked(estimates)
