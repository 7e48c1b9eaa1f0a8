"""Warm workers (engine/warm.py, fa_tui/warm.py), with real processes: a sweep started by
forking from one imported engine writes exactly what cold workers write; a forked worker is a
worker to every reader, stops cleanly on SIGTERM and resumes; a SIGKILL is recorded with its
signal; and a server that dies mid-sweep leaves the rest of the sweep to cold starts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fa_contract.rundir import RunDir, list_runs
from fa_contract.status import worker_alive
from fa_tui.launch import create_run, spawn, worker_env
from fa_tui.presets import load_preset
from fa_tui.warm import WarmStarter
from test_scheduler import ENV, check_each_ran_once, tiny, wait_until


def _sweep(root: Path, warm: bool) -> Path:
    """A 4-run sweep through `fa-tui run --jobs 2`, warm or cold; returns its runs dir."""
    root.mkdir()
    (root / "s.toml").write_text(tiny("s", 4))
    env = {**ENV, "FA_TUI_WARM": "1" if warm else "0"}
    subprocess.run([sys.executable, "-m", "fa_tui", "run", "s.toml", "--jobs", "2",
                    "--runs-dir", "runs"], cwd=root, env=env, check=True, timeout=300,
                   stdout=subprocess.DEVNULL)
    return root / "runs"


def _events(run: RunDir) -> list[dict]:
    return [json.loads(line) for line in run.file("events.jsonl").read_text().splitlines()]


def _numbers(run: RunDir) -> list[tuple]:
    return [(e["type"], e["step"], e.get("loss"), e.get("acc")) for e in _events(run)
            if e["type"] in ("train", "eval", "test")]


def test_a_warm_sweep_writes_what_a_cold_one_writes(tmp_path):
    warm, cold = _sweep(tmp_path / "warm", True), _sweep(tmp_path / "cold", False)
    check_each_ran_once(warm, 4)
    check_each_ran_once(cold, 4)
    pairs = list(zip(list_runs(warm), list_runs(cold)))
    assert len(pairs) == 4
    for w, c in pairs:
        assert w.name == c.name and _numbers(w) == _numbers(c) and _numbers(w)


def _queued(tmp_path: Path, toml: str) -> list[RunDir]:
    """Run directories for a preset, created as a launch creates them, not started."""
    (tmp_path / "p.toml").write_text(toml)
    return [create_run(tmp_path / "runs", cfg) for cfg in load_preset(tmp_path / "p.toml")]


def _long_run(tmp_path: Path) -> RunDir:
    """One queued run that trains long enough to be signalled."""
    return _queued(tmp_path, tiny("long", 1, epochs=100_000))[0]


def test_a_forked_worker_is_a_worker_stops_on_sigterm_and_is_killed_visibly(tmp_path):
    run = _long_run(tmp_path)
    starter = WarmStarter({**worker_env(), "OMP_NUM_THREADS": "1"})
    try:
        proc = spawn(run, warm=starter)
        assert type(proc).__name__ == "WarmProc"
        wait_until(lambda: run.read_status().step > 0, 120, "the forked worker to train")
        status = run.read_status()
        assert status.pid == proc.pid and worker_alive(status)   # a worker to every reader
        os.kill(proc.pid, signal.SIGTERM)
        wait_until(lambda: proc.poll() is not None, 60, "the worker to stop")
        assert proc.poll() == 0 and run.read_status().state == "stopped"
        assert run.has_checkpoint()

        again = spawn(run, resume=True, warm=starter)              # the same server again
        wait_until(lambda: any(e["type"] == "resume" for e in _events(run)), 120, "resume")
        os.kill(again.pid, signal.SIGKILL)
        wait_until(lambda: again.poll() is not None, 60, "the kill to be reported")
        assert again.poll() == -signal.SIGKILL
    finally:
        starter.close()


def test_a_dead_server_leaves_the_rest_of_the_sweep_to_cold_starts(tmp_path):
    runs = _queued(tmp_path, tiny("s", 3))
    starter = WarmStarter({**worker_env(), "OMP_NUM_THREADS": "1"})
    try:
        first = spawn(runs[0], warm=starter)
        assert type(first).__name__ == "WarmProc"
        wait_until(lambda: first.poll() is not None, 120, "the first run")
        assert starter.proc is not None
        starter.proc.kill()                                        # the server dies
        starter.proc.wait()
        rest = [spawn(r, warm=starter) for r in runs[1:]]
        assert all(isinstance(p, subprocess.Popen) for p in rest) and starter.broken
        for p in rest:
            assert p.wait(timeout=120) == 0
    finally:
        starter.close()
    assert [r.read_status().state for r in runs] == ["done"] * 3
