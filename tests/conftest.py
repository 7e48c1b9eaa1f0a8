"""Test-session set-up shared by every test module.

- Torch threads per xdist worker: with `-n N`, each of the N worker processes gets
  cpu_count // N intra-op threads (OMP/MKL env vars, read when torch is imported, and inherited
  by the worker processes tests start), so N processes do not oversubscribe the cores.
- The fast tier: modules that train real models or start worker processes are marked `slow`;
  `pytest -m "not slow"` is the inner loop (README).
"""
from __future__ import annotations

import os
import sys

import pytest

#: test modules that train models, start workers, build wheels or compile (seconds to minutes)
SLOW_MODULES = {"test_worker", "test_train", "test_fashion_mnist_run", "test_cuda",
                "test_snapshots", "test_tui", "test_packaging", "test_cli", "test_optim",
                "test_models", "test_rules", "test_diagnostics", "test_metrics", "test_native"}


def _threads_per_worker() -> int:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


def pytest_configure(config: pytest.Config) -> None:
    """An explicit OMP_NUM_THREADS wins; else each xdist worker gets its share of the cores.
    Not in xdist's controller, which runs no tests: its environment is the workers', and a
    value set there would read as explicit in every worker."""
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        return
    n = os.environ.get("OMP_NUM_THREADS") or str(_threads_per_worker())
    os.environ["OMP_NUM_THREADS"] = n
    os.environ.setdefault("MKL_NUM_THREADS", n)
    if "torch" in sys.modules:                     # imported already (by a plugin): set it live
        sys.modules["torch"].set_num_threads(int(n))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (two cores shared by several test runs; one
    thread also fixes the CPU kernels). Modules opt in with `usefixtures("one_thread")`."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seed_runs(tmp_path):
    """The fixture runs plus two sweeps over three seeds (fa and bp), in tmp_path/runs."""
    from tui_fixtures import write_fixture_runs, write_seed_runs
    root = tmp_path / "runs"
    write_fixture_runs(root)
    write_seed_runs(root)
    return root
