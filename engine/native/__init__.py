"""fa's backward in C++ (feedback_ops.cpp), built once per torch version, loaded in milliseconds.

Why: a Python autograd.Function costs ~20 µs per layer per step, which on the small MLPs and
CNNs most FA research trains is 10 % of a step (docs/benchmarks.md). The C++ ops do the same
ATen calls in the same order as the Python backward of engine/layers.py, so training gives
bit-identical gradients either way (tests/test_native.py); the Python backward stays for
everything that needs Python in the backward (diagnostics probes, ldfa, dfa, CUDA autocast).

The library is compiled with torch's own extension builder (the system's C++ compiler and
the ninja package, a dependency; ~20 s on two cores) into `$FA_TUI_CACHE/native/<key>`
(default ~/.cache/fa-tui), the key naming the torch version, the Python ABI and a hash of the
source, so a new torch or a changed source builds anew and a stale library is never loaded.
It is built by `python -m engine.native` (README set-up, .ci/run), else by the first run
that needs it. Any failure — no compiler, a build error — is reported once on stderr and
training goes on with the Python backward, as it does with FA_TUI_NATIVE=0.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("feedback_ops.cpp")
NAME = "fa_tui_feedback_ops"
_state: dict[str, Any] = {}


def enabled() -> bool:
    """FA_TUI_NATIVE=0 turns the C++ ops off (benchmarks and tests compare both paths)."""
    return os.environ.get("FA_TUI_NATIVE", "1") != "0"


def library() -> Path:
    """Where the library of this torch, Python and source lives."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    abi = sysconfig.get_config_var("SOABI") or f"py{sys.version_info[0]}{sys.version_info[1]}"
    key = f"torch-{torch.__version__}-{abi}-{digest}".replace("+", "_")
    cache = os.environ.get("FA_TUI_CACHE") or Path.home() / ".cache" / "fa-tui"
    return Path(cache) / "native" / key / f"{NAME}.so"


def load(verbose: bool = False) -> Path:
    """Load the library into this process, compiling it first when it is not built yet, and
    return its path. The build runs in a folder of this process's own and its result is moved
    into place with one rename, so processes starting together (a sweep's first workers)
    never see half a library: each either loads a whole one or builds its own."""
    lib = library()
    if lib.exists():
        torch.ops.load_library(str(lib))
        return lib
    # imports setuptools: only when building; its "no CUDA runtime" notice is irrelevant here
    # (the ops call ATen, which dispatches to CUDA without nvcc)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load as build_and_load
    tmp = lib.parent / f".build-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PATH", "")
    # the ninja of this environment (a dependency) when the system has none
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
    try:
        build_and_load(name=NAME, sources=[str(SOURCE)], extra_cflags=["-O2"],
                       build_directory=str(tmp), is_python_module=False, verbose=verbose)
        os.replace(tmp / f"{NAME}.so", lib)
    finally:
        os.environ["PATH"] = path
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


def ops() -> Any | None:
    """torch.ops.fa_tui once the library is loaded (building it if needed), else None. Decided
    once per process; a failure is reported once on stderr."""
    if "ops" not in _state:
        _state["ops"] = None
        if enabled():
            try:
                load()
                _state["ops"] = torch.ops.fa_tui
            except Exception as e:  # noqa: BLE001 -- any failure falls back to the Python path
                print(f"fa-tui: the C++ fa ops are unavailable ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); "
                      "training uses the Python backward (same numbers, slower on small "
                      "layers). Build them with: python -m engine.native", file=sys.stderr)
    return _state["ops"]


def main() -> int:
    """python -m engine.native [-v]: build (if needed) and load the library, print its path;
    exit status 1 with the reason when it cannot be built."""
    try:
        lib = load(verbose="-v" in sys.argv)
    except Exception as e:  # noqa: BLE001 -- a reason, not a traceback
        print(f"engine.native: could not build the C++ fa ops: {type(e).__name__}: {e}\n"
              "They need a C++ compiler (CXX, default c++); fa-tui trains without "
              "them, with the Python backward.", file=sys.stderr)
        return 1
    print(lib)
    return 0
