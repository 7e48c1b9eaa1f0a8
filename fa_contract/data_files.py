"""Where each dataset's files live on disk, and a clear message when they are not there.

Torch-free on purpose: the CLI asks `missing_files(cfg)` before it creates a run directory, so a
run that could never load its data is refused up front instead of failing inside the worker.
engine/data.py uses `find_files` to pick what to read.

Layouts searched, in order (the first directory that holds every expected file wins):
- torchvision's own, under `data_root(cfg)`: `MNIST/raw`, `FashionMNIST/raw` (idx files, plain or
  `.gz`), `cifar-10-batches-py`, `cifar-100-python` (python pickle batches);
- for fashion_mnist also the Debian/Ubuntu package `dataset-fashion-mnist`, which installs the
  gzipped idx files under /usr/share/datasets/fashion-mnist.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from platformdirs import user_cache_dir

from fa_contract.config import DataCfg

IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

# dataset -> (torchvision folder under the data root, files expected there)
TORCHVISION_LAYOUT: dict[str, tuple[str, list[str]]] = {
    "mnist": ("MNIST/raw", IDX_FILES),
    "fashion_mnist": ("FashionMNIST/raw", IDX_FILES),
    "cifar10": ("cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}

# Folders that system packages install into, searched after the torchvision layout.
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")],
}

#: the host torchvision downloads each dataset from first (its mirrors list)
DOWNLOAD_HOST = {"mnist": "ossci-datasets.s3.amazonaws.com",
                 "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                 "cifar10": "www.cs.toronto.edu", "cifar100": "www.cs.toronto.edu"}
_reachable: dict[str, tuple[bool, float]] = {}

_DOWNLOAD_SIZE = {"mnist": "~12 MB", "fashion_mnist": "~30 MB",
                  "cifar10": "~170 MB", "cifar100": "~170 MB"}


def data_root(cfg: DataCfg) -> Path:
    """cfg.root, else $FA_TUI_DATA, else `<user cache>/fa-tui/data`."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    if os.environ.get("FA_TUI_DATA"):
        return Path(os.environ["FA_TUI_DATA"]).expanduser()
    return Path(user_cache_dir("fa-tui")) / "data"


def search_dirs(cfg: DataCfg) -> list[Path]:
    """The exact folders searched for `cfg.name`, in order (empty for synthetic)."""
    if cfg.name == "synthetic":
        return []
    folder, _ = TORCHVISION_LAYOUT[cfg.name]
    return [data_root(cfg) / folder, *SYSTEM_DIRS.get(cfg.name, [])]


def _find(folder: Path, name: str, gz_ok: bool) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz") if gz_ok else (folder / name,):
        if candidate.is_file():
            return candidate
    return None


def find_files(cfg: DataCfg) -> dict[str, Path] | None:
    """Expected file name -> the path that holds it (idx files may be gzipped), taken from the
    first searched folder that has all of them; None when no folder is complete."""
    if cfg.name == "synthetic":
        return {}
    _, names = TORCHVISION_LAYOUT[cfg.name]
    gz_ok = names == IDX_FILES
    for folder in search_dirs(cfg):
        found = {n: _find(folder, n, gz_ok) for n in names}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def missing_files(cfg: DataCfg, allow_download: bool = False) -> str | None:
    """None when `cfg`'s dataset can be loaded (files present, synthetic, or `allow_download`
    and torchvision may fetch them); else one message: which dataset, the files expected, the
    exact folders searched with what each lacks, and how to get the files.

    The CLI passes `allow_download=cfg.download` to let a download-enabled run start."""
    if cfg.name == "synthetic" or find_files(cfg) is not None or allow_download:
        return None
    folder, names = TORCHVISION_LAYOUT[cfg.name]
    gz_ok = names == IDX_FILES
    dirs = search_dirs(cfg)
    lines = [f"{cfg.name}: dataset files not found.",
             "Expected files" + (" (each may also be gzipped, NAME.gz):" if gz_ok else ":"),
             "  " + ", ".join(names),
             "Searched:"]
    for d in dirs:
        lacking = [n for n in names if _find(d, n, gz_ok) is None]
        what = "missing: all" if len(lacking) == len(names) else "missing: " + ", ".join(lacking)
        lines.append(f"  {d}  ({what})")
    lines += ["To get them:",
              f"  - set data.download = true and run once with internet access: torchvision "
              f"downloads them ({_DOWNLOAD_SIZE[cfg.name]}) into {dirs[0]}",
              f"  - or copy them into {dirs[0]}, or point data.root (or $FA_TUI_DATA) at a folder "
              f"that holds {folder}/"]
    if cfg.name == "fashion_mnist":
        lines.append(f"  - or, on Debian/Ubuntu: apt-get install dataset-fashion-mnist "
                     f"(installs them into {SYSTEM_DIRS['fashion_mnist'][0]})")
    return "\n".join(lines)


def reachable(name: str, timeout: float = 2.0, cache_s: float = 60.0) -> bool:
    """Whether `name`'s download host answers a connection (cached for a minute): Compose uses
    it to flag a dataset that is neither on disk nor fetchable. The launch itself tries the
    real download (engine/fetch.py)."""
    host = DOWNLOAD_HOST.get(name)
    if host is None:
        return False
    hit = _reachable.get(host)
    if hit is not None and time.monotonic() - hit[1] < cache_s:
        return hit[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        ok = True
    except OSError:
        ok = False
    _reachable[host] = (ok, time.monotonic())
    return ok
