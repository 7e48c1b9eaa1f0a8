"""What this machine has: GPUs, free GPU memory, free host memory, free disk. Torch-free.

The launcher checks `--gpus`, the memory estimate and the disk against these before it creates
anything. torch would answer the GPU questions too, but importing it costs seconds and the CLI
and the TUI never import it; the NVIDIA driver answers them directly: `nvidia-smi`, else the
driver's /proc/driver/nvidia/gpus folder (one entry per GPU). CUDA_VISIBLE_DEVICES is honoured
the way CUDA honours it: indices count the visible GPUs only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@lru_cache(maxsize=1)
def _smi(query: str) -> list[str] | None:
    """Lines of `nvidia-smi --query-gpu=QUERY`, one per GPU; None without a working driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _physical_gpus() -> int:
    """The driver's /proc listing first (instant), else nvidia-smi (a driver without /proc)."""
    try:
        return sum(1 for _ in PROC_GPUS.iterdir())
    except OSError:
        pass
    lines = _smi("index")
    return len(lines) if lines is not None else 0


def _visible() -> list[int] | None:
    """The physical indices CUDA_VISIBLE_DEVICES exposes, in order; None when it is unset."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item.isdigit():       # a UUID or garbage: CUDA stops at the first bad entry
            break
        out.append(int(item))
    return out


def gpu_count() -> int:
    """How many CUDA GPUs a worker started from here could use (0 without a driver)."""
    n = _physical_gpus()
    visible = _visible()
    return n if visible is None else len([i for i in visible if i < n])


def gpu_free_bytes(index: int) -> int | None:
    """Free memory of visible GPU `index`, or None when the driver does not say."""
    lines = _smi("memory.free")
    if not lines:
        return None
    visible = _visible()
    physical = index if visible is None else (visible[index] if index < len(visible) else None)
    if physical is None or physical >= len(lines):
        return None
    try:
        return int(float(lines[physical])) * 1024 * 1024       # MiB
    except ValueError:
        return None


def host_free_bytes() -> int:
    """Memory available to a new process without swapping (Linux: MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62        # unknown: do not refuse on a guess


def disk_free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
