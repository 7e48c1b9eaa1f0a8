"""The headless CLI: `fa-tui run` end to end (four concurrent workers), ls/show/stop/presets/
export on the result, the launcher's queue, and every user mistake as one message + exit 2.

Only the end-to-end test starts real workers (each pays torch's import time); everything else
runs in this process, which never imports torch."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fa_contract.config import Config
from fa_contract.rundir import EVENTS, LOG, EventLog, RunDir, Status, list_runs
from fa_tui.cli import app
from fa_tui.launch import create_run, follow, stop

ROOT = Path(__file__).resolve().parent.parent
TINY = """\
# Tiny sweep: bp and fa, two seeds each
[run]
device = "cpu"
[data]
name = "synthetic"
shape = [16]
train_size = 256
test_size = 64
val_size = 64
[model]
name = "mlp"
width = 16
depth = 1
[train]
epochs = 2
batch_size = 32
[metrics]
every = 5
[sweep]
"rule.name" = ["bp", "fa"]
seeds = [0, 1]
"""
NAMES = {f"tiny-rule={r}-seed={s}" for r in ("bp", "fa") for s in (0, 1)}
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_run_end_to_end_with_four_concurrent_workers(tmp_path):
    """`fa-tui run tiny.toml --jobs 4` as a user types it, in a subprocess; then ls, show and
    export on what it left. One test: under pytest-xdist a shared fixture would run twice."""
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = subprocess.run(
        [sys.executable, "-m", "fa_tui", "run", "tiny.toml", "--jobs", "4", "--runs-dir", "runs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    runs_dir = tmp_path / "runs"
    check_runs_are_done(proc, runs_dir)
    check_every_events_file_parses(runs_dir)
    check_ls_show_export(runs_dir)


def check_runs_are_done(proc: subprocess.CompletedProcess, runs_dir: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    assert {r.name for r in list_runs(runs_dir)} == NAMES
    for name in NAMES:
        run = RunDir(runs_dir / name)
        summary = run.read_summary()
        assert summary["status"] == "done" and summary["reason"] is None
        assert 0.0 <= summary["test_acc"] <= 1.0
        assert set(summary["layers"]) == {"fc1", "head"}
        assert summary["layers"]["fc1"]["erank_err"] >= 1.0
        assert summary["config"]["run"]["name"] == name
        assert run.read_config()["rule"]["name"] == name.split("=")[1].split("-")[0]
        assert run.read_status().state == "done" and run.has_checkpoint()
    assert "4 runs queued under runs" in proc.stdout
    for name in NAMES:                       # the summary table, after the progress lines
        assert name in proc.stdout.split("summary")[-1]
    assert proc.stderr.strip() == ("following the runs; Ctrl-C stops only this view, the runs "
                                   "go on")


def check_every_events_file_parses(runs_dir: Path) -> None:
    """Four workers wrote at once: every line of every events file is whole JSON."""
    for name in NAMES:
        path = runs_dir / name / EVENTS
        lines = path.read_text().splitlines()
        events = [json.loads(line) for line in lines]           # every line, strictly
        assert events[0]["type"] == "start" and events[-1]["type"] == "end"
        assert all(e["v"] == 1 and isinstance(e["t"], float) for e in events)
        steps = [e["step"] for e in events if "step" in e]
        assert steps == sorted(steps)
        log = EventLog(path)
        log.poll()
        assert log.skipped == 0 and len(log.events) == len(lines)


def check_ls_show_export(runs_dir: Path) -> None:
    result = cli("ls", "--runs-dir", runs_dir)
    assert result.exit_code == 0
    for name in NAMES:
        assert name in result.output
    assert result.output.count("done") == 4 and "mlp 16x1" in result.output

    result = cli("--runs-dir", runs_dir, "show", "tiny-rule=fa-seed=1")   # global --runs-dir
    assert result.exit_code == 0, result.output
    for text in ("state", "done", "test acc", "erank_err", "angle_weight", "fc1", "head"):
        assert text in result.output
    summary = RunDir(runs_dir / "tiny-rule=fa-seed=1").read_summary()
    assert 0 < summary["diag_s"] < summary["wall_s"]
    share = re.search(r"diagnostics\s+\S+, ([\d.]+)% of the wall time", result.output)
    assert share and float(share[1]) == pytest.approx(
        100 * summary["diag_s"] / summary["wall_s"], abs=0.06)

    result = cli("export", runs_dir, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["run"] for r in rows} == {"tiny-rule=bp", "tiny-rule=fa"}
    for row in rows:
        assert row["n"] == 2 and row["seeds"] == "0,1" and row["status"] == "done"
        assert row["test_acc"]["n"] == 2 and row["test_acc"]["std"] is not None
        assert "fc1.erank_err" in row


def test_fa_tui_never_imports_torch():
    code = ("import sys, fa_tui.cli, fa_tui.launch, fa_tui.export, fa_tui.presets, "
            "fa_tui.scheduler, fa_tui.preflight, fa_tui.machine, fa_contract.estimate, fa_tui.core.queue; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_bad_preset_is_one_message_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("width = 16", "widht = 16"))
    result = cli("run", bad, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "widht" in result.stderr and "Did you mean 'model.width'" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()

    result = cli("run", tmp_path / "tiny.toml", "--set", "optim.lr=-1", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "no such preset" in result.stderr
    (tmp_path / "tiny.toml").write_text(TINY)
    result = cli("run", tmp_path / "tiny.toml", "--set", "optim.lr=-1", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "optim.lr" in result.stderr
    result = cli("run", tmp_path / "tiny.toml", "--gpus", "0,x", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "--gpus" in result.stderr
    result = cli("run", tmp_path / "tiny.toml", "--gpus", "0", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "run.device = 'cpu'" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["show", "nope"], ["stop", "nope"], ["resume", "nope"],
                                     ["export", "nope"]])
def test_unknown_run_is_one_message_and_exit_2(tmp_path, command):
    create_run(tmp_path, Config(), "nope-not-quite")
    result = cli(*command, "--runs-dir", tmp_path)
    assert result.exit_code == 2
    assert "nope" in result.stderr and "Traceback" not in result.output
    if command[0] != "export":
        assert "Did you mean 'nope-not-quite'?" in result.stderr


def test_resume_refuses_finished_runs(tmp_path):
    for state, says in (("done", "nothing to resume"), ("diverged", "would repeat the same")):
        run = create_run(tmp_path, Config(), state)
        run.write_status(Status(state=state, reason="non-finite loss at step 3"))
        result = cli("resume", state, "--runs-dir", tmp_path)
        assert result.exit_code == 2 and says in result.stderr


def test_create_run_names_are_unique_and_atomic(tmp_path):
    cfg = Config()
    first, second = create_run(tmp_path, cfg, "x/y"), create_run(tmp_path, cfg, "x/y")
    assert (first.name, second.name) == ("x_y", "x_y-2")
    assert second.read_config()["run"]["name"] == "x_y-2"
    assert Config.model_validate(second.read_config()).optim == cfg.optim
    assert "root" not in second.read_config()["data"]            # TOML has no null
    assert second.read_status().state == "queued"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_y", "x_y-2"]   # no temp folder


def _scheduled(runs_dir, runs, jobs=1, resume=False, estimates=None):
    """Queue `runs` and step this runs directory's scheduler in this process until done."""
    from fa_tui.core.queue import QueueDir
    from fa_tui.scheduler import Scheduler
    QueueDir(runs_dir).add([r.path for r in runs], jobs, resume=resume, estimates=estimates)
    sched = Scheduler(runs_dir, poll_s=0.05)
    while sched.step():
        time.sleep(0.05)
    return follow(runs, runs_dir, poll_s=0.01)


def test_stopping_a_queued_run_makes_the_queue_skip_it(tmp_path):
    run = create_run(tmp_path, Config(), "waiting")
    assert stop(run)
    assert run.read_status().state == "stopped"
    progress = _scheduled(tmp_path, [run])
    assert [(p.state, p.reason) for p in progress] == [("stopped", "stopped before it started")]
    assert not run.file(LOG).exists()                           # no worker was started
    result = cli("stop", "waiting", "--runs-dir", tmp_path)
    assert result.exit_code == 0 and "not running (stopped)" in result.output



def small_config() -> Config:
    """A run of a few steps on 16-dimensional synthetic data, diagnostics off."""
    return Config.model_validate(
        {"run": {"device": "cpu"}, "data": {"shape": [16], "train_size": 128, "val_size": 32,
                                            "test_size": 32},
         "model": {"width": 8, "depth": 1}, "train": {"batch_size": 32},
         "metrics": {"every": 0}})

def test_resuming_a_queued_run_starts_it_from_scratch(tmp_path):
    """A run created but never started (e.g. its queue file was lost) is resumable: the
    queue starts it with --resume, and with no checkpoint the worker starts over."""
    cfg = small_config()
    run = create_run(tmp_path, cfg, "never-started")
    progress = _scheduled(tmp_path, [run], resume=True)
    assert [p.state for p in progress] == ["done"]
    assert run.read_status().state == "done" and run.read_summary()["steps"] == 3


def test_queue_records_a_worker_killed_by_sigkill_with_its_memory_estimate(tmp_path):
    """SIGKILL the worker as soon as the scheduler started it (a second before it could end),
    as the kernel's out-of-memory killer would: the run says so, with its estimate."""
    from fa_tui.core.queue import QueueDir
    from fa_tui.scheduler import Scheduler
    run = create_run(tmp_path, Config(), "doomed")
    QueueDir(tmp_path).add([run.path], estimates={str(run.path.resolve()): 3 * 2 ** 30})
    sched = Scheduler(tmp_path, poll_s=0.01)
    sched.step()
    status = run.read_status()
    assert status.state == "running"
    os.kill(status.pid, signal.SIGKILL)
    while sched.step():
        time.sleep(0.01)
    status = run.read_status()
    assert status.state == "failed"
    assert status.reason == ("killed (SIGKILL — out of memory?); it was estimated to need "
                             "3.0 GiB; see worker.log")


def test_presets_lists_the_shipped_presets():
    result = cli("presets")
    assert result.exit_code == 0
    assert "quickstart" in result.output and "BP vs FA" in result.output


def test_following_a_resume_waits_for_the_queue(tmp_path):
    """A run to resume reads `stopped` until the scheduler starts its worker: following it
    must wait for that, not report it ended (found by the kill/stop/resume lifecycle test)."""
    from fa_tui.core.queue import QueueDir
    cfg = small_config()
    run = create_run(tmp_path, cfg, "to-resume")
    run.write_status(Status(state="stopped", reason="stopped"))
    QueueDir(tmp_path).add([run.path], resume=True)          # no scheduler yet
    seen = []
    progress = follow([run], tmp_path, on_update=lambda ps: seen.append(ps[0].state),
                      poll_s=0.05)
    assert seen[0] == "queued"                                # not "stopped"
    assert [p.state for p in progress] == ["done"]            # follow started the scheduler
