"""The run lifecycle with real worker processes: SIGKILL reads as failed and resumes to done,
SIGTERM stops with a checkpoint and resumes bit-identically to an uninterrupted run, a crash
at build is `failed` with its reason and a summary, a divergence is `diverged`.

One test does the process part, overlapping the slow bits: each worker process pays torch's
import time (seconds on a busy machine), so only the interrupted workers (killed, stopped
mid-run, stopped while still importing) and the `fa-tui resume` run as processes; the
uninterrupted reference and the second resume run in this process, with one thread like the
workers. Crash, divergence and resume-without-checkpoint run the worker in this process."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fa_contract import rundir
from fa_contract import status as status_file
from fa_contract.config import Config
from fa_contract.rundir import CHECKPOINT, EventLog, RunDir
from engine.worker import main as worker_main
from fa_tui.launch import create_run, spawn, stop

ROOT = Path(__file__).resolve().parent.parent
TIMING_KEYS = {"t", "wall_s", "step_s", "samples_per_s", "diag_s"}


def tiny(**sections: dict) -> Config:
    """The tiny synthetic run of the test suite; `sections` override keys per section."""
    cfg = {"run": {"device": "cpu", "seed": 0},
           "data": {"name": "synthetic", "shape": [16], "train_size": 256, "test_size": 64,
                    "val_size": 64},
           "model": {"name": "mlp", "width": 16, "depth": 1},
           "train": {"epochs": 2, "batch_size": 32},
           "metrics": {"every": 5}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return Config.model_validate(cfg)


# Long enough (4 epochs of 248 steps) that a signal sent early lands mid-run.
LONG = tiny(data={"train_size": 2048}, train={"epochs": 4, "batch_size": 8})


def history(run: RunDir) -> list[dict]:
    """The run's metric history as EventLog reads it, without wall-clock fields and without
    the lifecycle events (start, resume, end) that differ between attempts."""
    return [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in run.read_events()
            if e["type"] in ("train", "eval", "diag", "epoch", "test")]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def lifecycle(runs_dir: Path) -> dict:
    """Kill one worker, stop another, resume both, run the reference; return what was seen."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as the workers: same kernels, same bits
    try:
        with pytest.MonkeyPatch.context() as mp:
            # both: torch takes its thread count from MKL_NUM_THREADS when that is set
            mp.setenv("OMP_NUM_THREADS", "1")
            mp.setenv("MKL_NUM_THREADS", "1")
            return _lifecycle(runs_dir)
    finally:
        torch.set_num_threads(threads)


def _lifecycle(runs_dir: Path) -> dict:
    names = ("reference", "killed", "stopped", "early")
    runs = {name: create_run(runs_dir, LONG, name) for name in names}
    killed, stopped, early = runs["killed"], runs["stopped"], runs["early"]
    procs = {name: spawn(runs[name]) for name in ("killed", "stopped", "early")}
    # stop `early` as soon as its worker wrote its first status, long before torch is imported
    launched = early.read_status().heartbeat
    wait_for(lambda: early.read_status().heartbeat != launched, 60, "the early worker")
    assert stop(early)
    stopped_log = EventLog(stopped.file(rundir.EVENTS))
    stopped_seen: list[dict] = []

    def stopped_started() -> bool:
        stopped_seen.extend(stopped_log.poll())
        return any(e.get("step", 0) >= 10 for e in stopped_seen)

    # SIGKILL after the first epoch's checkpoint; SIGTERM (fa-tui stop's path) at step 10
    wait_for(killed.has_checkpoint, 120, "the first checkpoint")
    procs["killed"].send_signal(signal.SIGKILL)
    wait_for(stopped_started, 120, "step 10 of the stopped run")
    assert stop(stopped)
    codes = {name: p.wait(timeout=120) for name, p in procs.items()}
    killed_raw = json.loads(killed.file(rundir.STATUS).read_text())
    killed_step = max(e.get("step", 0) for e in killed.read_events())
    stopped_after = stopped.read_status()
    stopped_end = stopped.read_events()[-1]
    stopped_summary = stopped.read_summary()

    # `fa-tui resume` the killed run, hanging up on it once it has started the worker;
    # meanwhile, in this process, the uninterrupted reference and the stopped run's resume
    cli = subprocess.Popen(
        [sys.executable, "-m", "fa_tui", "resume", "killed", "--runs-dir", str(runs_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    wait_for(lambda: killed.read_status().pid not in (None, killed_raw["pid"]), 60,
             "the resumed worker")
    cli.send_signal(signal.SIGHUP)
    codes["reference"] = worker_main([str(runs["reference"].path)])
    codes["stopped resumed"] = worker_main([str(stopped.path), "--resume"])
    _, cli_err = cli.communicate(timeout=240)
    return {"runs": runs, "codes": codes, "killed_raw": killed_raw, "killed_step": killed_step,
            "stopped_after": stopped_after, "stopped_end": stopped_end,
            "stopped_summary": stopped_summary, "resume_rc": cli.returncode,
            "resume_err": cli_err}


def test_kill_stop_and_resume_against_an_uninterrupted_run(tmp_path, monkeypatch):
    """One test, not several sharing a module fixture: under pytest-xdist each process would
    run the fixture again, and it is the slow part of the suite."""
    seen = lifecycle(tmp_path / "runs")
    check_reference(seen)
    check_killed_then_resumed(seen, monkeypatch, tmp_path)
    check_stopped_then_resumed_bit_identically(seen)
    check_hangup_does_not_stop_the_resume_queue(seen)
    check_stopped_while_starting(seen)


def check_reference(seen: dict) -> None:
    ref = seen["runs"]["reference"]
    assert seen["codes"]["reference"] == 0
    summary = ref.read_summary()
    assert summary["status"] == "done" and summary["reason"] is None
    assert summary["steps"] == 4 * 248 and summary["epochs"] == 4
    assert 0.0 <= summary["test_acc"] <= 1.0
    assert set(summary["layers"]) == {"fc1", "head"}
    assert summary["layers"]["fc1"]["erank_err"] >= 1.0
    assert summary["config"]["run"]["name"] == "reference"
    status = ref.read_status()
    assert (status.state, status.step, status.total_steps, status.device) == ("done", 992, 992, "cpu")
    events = ref.read_events()
    assert [e["type"] for e in events][:2] == ["start", "diag"]
    assert [e["type"] for e in events][-2:] == ["test", "end"]
    assert events[-1]["status"] == "done"
    assert sum(e["type"] == "epoch" for e in events) == 4


def check_killed_then_resumed(seen: dict, monkeypatch, tmp_path: Path) -> None:
    killed = seen["runs"]["killed"]
    assert seen["codes"]["killed"] == -signal.SIGKILL
    raw = seen["killed_raw"]
    assert raw["state"] == "running" and 248 <= seen["killed_step"] < 992   # mid-run
    # read_status on the status it left (copied aside: the original was resumed since): a
    # running status whose pid is gone and whose heartbeat is two beats old is a vanished
    # worker. The beat is shortened instead of waiting 10 s.
    monkeypatch.setattr(status_file, "HEARTBEAT_S", 0.05)
    left = RunDir(tmp_path)
    left.file(rundir.STATUS).write_text(json.dumps(raw))
    time.sleep(0.15)
    status = left.read_status()
    assert status.state == "failed" and "vanished" in status.reason
    # after the resume: done, and the history reads as one uninterrupted run
    assert seen["resume_rc"] == 0, seen["resume_err"]
    assert killed.read_status().state == "done"
    assert killed.read_summary()["status"] == "done"
    resumes = [e for e in killed.read_events() if e["type"] == "resume"]
    assert [e["step"] for e in resumes] == [248]       # from the first epoch's checkpoint
    assert history(killed) == history(seen["runs"]["reference"])


def check_stopped_then_resumed_bit_identically(seen: dict) -> None:
    runs = seen["runs"]
    assert seen["codes"]["stopped"] == seen["codes"]["stopped resumed"] == 0
    after = seen["stopped_after"]
    assert after.state == "stopped" and 10 <= after.step < 992
    end = seen["stopped_end"]
    assert (end["type"], end["status"], end["step"]) == ("end", "stopped", after.step)
    assert seen["stopped_summary"]["status"] == "stopped"
    assert seen["stopped_summary"]["steps"] == after.step
    # after the resume: the same run as the uninterrupted reference, bit for bit
    stopped, ref = runs["stopped"], runs["reference"]
    assert stopped.read_status().state == "done"
    assert stopped.read_summary()["test_acc"] == ref.read_summary()["test_acc"]
    assert stopped.read_summary()["best_val_acc"] == ref.read_summary()["best_val_acc"]
    a = torch.load(stopped.file(CHECKPOINT), weights_only=True)
    b = torch.load(ref.file(CHECKPOINT), weights_only=True)
    assert a["progress"]["step"] == b["progress"]["step"] == 992
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert history(stopped) == history(ref)
    assert [e["step"] for e in stopped.read_events() if e["type"] == "resume"] == [after.step]


def check_hangup_does_not_stop_the_resume_queue(seen: dict) -> None:
    """`fa-tui resume` got SIGHUP right after starting its worker, and still saw it done."""
    assert seen["resume_rc"] == 0, seen["resume_err"]
    assert seen["runs"]["killed"].read_status().state == "done"
    assert "Traceback" not in seen["runs"]["killed"].file(rundir.LOG).read_text()


def check_stopped_while_starting(seen: dict) -> None:
    """A stop during the worker's imports (Ctrl-C right after a launch) is a clean stop."""
    early = seen["runs"]["early"]
    assert seen["codes"]["early"] == 0
    status = early.read_status()
    assert (status.state, status.step, status.reason) == ("stopped", 0, "stop requested")
    assert early.has_checkpoint() and early.read_summary()["status"] == "stopped"
    assert [e["type"] for e in early.read_events()][-1] == "end"


def test_crash_at_build_is_failed_with_reason_and_summary(tmp_path, capsys):
    # a config the schema now refuses at launch (a cnn needs C×H×W input), as an older
    # version could have written it: the worker fails at build with a reason
    run = create_run(tmp_path, tiny(), "crash")
    text = run.file("config.toml").read_text()
    run.file("config.toml").write_text(text.replace('name = "mlp"', 'name = "cnn"'))
    handler = signal.getsignal(signal.SIGTERM)
    assert worker_main([str(run.path)]) == 1
    assert signal.getsignal(signal.SIGTERM) is handler        # the worker gave it back
    status = run.read_status()
    assert status.state == "failed" and status.reason.startswith("ValidationError:")
    assert "model.name = 'cnn' needs image inputs" in status.reason
    summary = run.read_summary()
    assert summary["status"] == "failed" and summary["reason"] == status.reason
    assert summary["test_acc"] is None and summary["layers"] == {}
    assert summary["config"]["model"]["name"] == "cnn" and summary["wall_s"] >= 0
    end = run.read_events()[-1]
    assert (end["type"], end["status"], end["reason"]) == ("end", "failed", status.reason)
    assert "Traceback" in capsys.readouterr().err           # worker.log under the launcher


def test_divergence_is_a_result_not_a_failure(tmp_path):
    run = create_run(tmp_path, tiny(optim={"lr": 1e6}, train={"log_every": 1}), "boom")
    assert worker_main([str(run.path)]) == 0
    status = run.read_status()
    assert status.state == "diverged" and "step" in status.reason
    summary = run.read_summary()
    assert summary["status"] == "diverged" and summary["reason"] == status.reason
    assert summary["steps"] >= 1
    for line in run.file(rundir.EVENTS).read_text().splitlines():
        json.loads(line)                                      # NaN written as null: strict JSON


def test_resume_without_checkpoint_starts_over(tmp_path):
    run = create_run(tmp_path, tiny(train={"epochs": 1}), "fresh")
    run.file(rundir.EVENTS).write_text('{"v":1,"type":"start","t":0}\n')   # an earlier attempt
    assert worker_main([str(run.path), "--resume"]) == 0
    events = run.read_events()
    assert [e["type"] for e in events].count("start") == 1          # a fresh history
    assert not any(e["type"] == "resume" for e in events)
    assert run.read_status().state == "done" and run.has_checkpoint()
