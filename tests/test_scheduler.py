"""The queue outlives every client (issue 10), with real processes throughout: the launching
CLI is SIGKILLed right after the first run starts, the TUI quits mid-sweep, two clients enqueue
into one runs directory at once — and every queued run still runs, exactly once, with no
command typed afterwards. Each run is tiny; the time is the workers' torch import."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fa_contract.rundir import RunDir, list_runs
from fa_tui.core.queue import QueueDir

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny(name: str, seeds: int, epochs: int = 1) -> str:
    return f"""\
[run]
name = "{name}"
device = "cpu"
[data]
shape = [8]
train_size = 64
val_size = 16
test_size = 16
[model]
width = 8
depth = 1
[train]
batch_size = 16
epochs = {epochs}
[metrics]
every = 0
[sweep]
seeds = {list(range(seeds))}
"""


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.2)


def all_ended(runs_dir: Path, count: int) -> bool:
    runs = list_runs(runs_dir)
    return len(runs) == count and all(not r.read_status().active for r in runs)


def check_each_ran_once(runs_dir: Path, count: int) -> None:
    """Every run is done, and its worker.log has one start header: nothing ran twice. Then
    the scheduler exits, leaving no batch behind."""
    runs = list_runs(runs_dir)
    assert len(runs) == count
    for run in runs:
        assert run.read_status().state == "done", (run.name, run.read_status())
        headers = [line for line in run.log_tail(10_000) if line.startswith("--- ")]
        assert len(headers) == 1, (run.name, headers)
    queue = QueueDir(runs_dir)
    wait_until(lambda: queue.scheduler_pid() is None, 30, "the scheduler to exit")
    assert queue.batches() == []


def test_sigkill_of_the_launching_cli_does_not_stop_the_sweep(tmp_path):
    """The issue's acceptance test: a sweep of 4 runs with --jobs 1; SIGKILL `fa-tui run`
    right after the first run starts; every run finishes with no command typed afterwards."""
    # 300 epochs (~1 s a run): a warm worker finishes a 1-epoch tiny run before the CLI dies
    (tmp_path / "sweep.toml").write_text(tiny("sweep", 4, epochs=300))
    runs_dir = tmp_path / "runs"
    cli = subprocess.Popen([sys.executable, "-m", "fa_tui", "run", "sweep.toml", "--jobs", "1",
                            "-d", str(runs_dir)], cwd=tmp_path, env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(r.read_status().state == "running" for r in list_runs(runs_dir)),
                   120, "the first run to start")
    finally:
        cli.kill()
        cli.wait()
    assert cli.returncode == -signal.SIGKILL
    states = sorted(r.read_status().state for r in list_runs(runs_dir))
    assert states.count("queued") >= 2              # killed early: most runs still waited
    wait_until(lambda: all_ended(runs_dir, 4), 400, "all four runs to end")
    check_each_ran_once(runs_dir, 4)


def test_two_clients_enqueue_at_once_and_nothing_runs_twice(tmp_path):
    """Two `fa-tui run --detach` into one runs directory at the same moment: both return at
    once, one scheduler serves both launches, each run starts exactly once."""
    runs_dir = tmp_path / "runs"
    procs = []
    for name in ("left", "right"):
        (tmp_path / f"{name}.toml").write_text(tiny(name, 2))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fa_tui", "run", f"{name}.toml", "--detach", "-d",
             str(runs_dir)], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "2 runs queued" in out and "Traceback" not in err
    result = subprocess.run([sys.executable, "-m", "fa_tui", "queue", "-d", str(runs_dir)],
                            env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "scheduler:" in result.stdout
    wait_until(lambda: all_ended(runs_dir, 4), 400, "all four runs to end")
    check_each_ran_once(runs_dir, 4)


def test_quitting_the_tui_mid_sweep_does_not_stop_the_sweep(tmp_path):
    """The TUI queues a 3-run sweep one at a time (as Compose does, through app.start), quits
    as soon as the first run starts; the others still run."""
    from fa_tui.app import FaApp
    from fa_tui.launch import create_run
    from fa_tui.presets import load_preset

    # 300 epochs (~1 s a run): a warm worker ends a 1-epoch tiny run between two looks
    (tmp_path / "tui.toml").write_text(tiny("tui", 3, epochs=300))
    runs_dir = tmp_path / "runs"

    async def drive() -> None:
        app = FaApp(runs_dir, poll_s=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            runs = [create_run(runs_dir, cfg) for cfg in load_preset(tmp_path / "tui.toml")]
            app.start(runs, jobs=1)
            deadline = time.monotonic() + 120
            while not any(r.read_status().state == "running" for r in runs):
                assert time.monotonic() < deadline
                await pilot.pause(0.2)
            await pilot.press("q")
    asyncio.run(drive())
    states = sorted(r.read_status().state for r in list_runs(runs_dir))
    assert states.count("queued") >= 1
    wait_until(lambda: all_ended(runs_dir, 3), 400, "all three runs to end")
    check_each_ran_once(runs_dir, 3)


def test_changing_jobs_of_a_waiting_launch(tmp_path):
    """`fa-tui queue --jobs N` rewrites the waiting launches; the scheduler reads it."""
    runs = [RunDir(tmp_path / n) for n in ("a", "b")]
    queue = QueueDir(tmp_path)
    queue.add([r.path for r in runs], jobs=1)
    assert queue.set_jobs(3) == 1 and queue.batches()[0].jobs == 3


def test_the_tui_changes_jobs_of_the_waiting_launches(tmp_path):
    """The app's "Queue: runs at a time" command rewrites the queue files, as `fa-tui queue
    --jobs` does (no scheduler is involved: the runs do not exist)."""
    from fa_tui.app import FaApp
    queue = QueueDir(tmp_path)
    queue.add([tmp_path / "a", tmp_path / "b"], jobs=1)

    async def drive() -> None:
        app = FaApp(tmp_path / "runs", poll_s=0.1)
        app.queue = queue
        async with app.run_test(size=(100, 30)) as pilot:
            app.action_queue_jobs()
            await pilot.pause()
            await pilot.press("end", "backspace", "3", "enter")     # replace the 1
            await pilot.pause()
    asyncio.run(drive())
    assert [b.jobs for b in queue.batches()] == [3]
