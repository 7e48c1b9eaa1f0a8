"""The SLURM executor against a real SLURM: the single-node cluster of scripts/slurm-cluster
(root, Debian's slurm-wlm and munge; the tests that need it skip with the reason otherwise).

Real jobs, real workers, real signals: a sweep as one job array gives the local executor's
metrics bit for bit; stop is scancel and resume finishes the run; a one-minute time limit
makes SLURM signal the worker, which checkpoints, and the requeued job resumes with no step
lost or doubled; a pending job shows its reason; a missing partition or sbatch is refused
before anything exists. The runs are tiny (synthetic data, small MLP).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fa_contract.config import Config, SlurmCfg
from fa_contract.rundir import EVENTS, RunDir, list_runs
from fa_tui.cli import app
from fa_tui.core.store import RunStore
from fa_tui.core.slurmq import QueueCache, QueueInfo, live, slurm_jobs, squeue
from fa_tui.slurm import minutes, sbatch_parameters

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm-cluster"
WAIT_S = 600          # generous: the machine may be shared; no assertion is about time
# quickstart-sized: the quickstart preset, one rule, shorter
SWEEP = """\
extends = "quickstart"
[rule]
name = "fa"
[train]
epochs = 1
[sweep]
seeds = [0, 1, 2]
"""
LONG = """\
extends = "quickstart"
[rule]
name = "bp"
[train]
epochs = {epochs}
"""


@pytest.fixture(scope="session")
def cluster() -> None:
    """Start (or find) the local cluster; skip with the script's reason when it cannot."""
    if shutil.which("sinfo") is None and not Path("/usr/bin/sinfo").exists():
        pytest.skip("SLURM is not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("scripts/slurm-cluster needs root to start the local cluster")
    # pytest-xdist workers share one cluster: one of them starts it at a time
    with open("/tmp/fa-tui-slurm-cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True,
                              timeout=120)
    if done.returncode != 0:
        pytest.skip(f"the local SLURM cluster did not start: {done.stderr.strip()}")


def fa_tui(cwd: Path, *args: str, background: bool = False, env: dict | None = None):
    cmd = [sys.executable, "-m", "fa_tui", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=WAIT_S)


def wait_for(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


def train_losses(run: RunDir) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in run.read_events() if e["type"] == "train"]


def expected_train_steps(run: RunDir) -> list[int]:
    """Where an uninterrupted run logs train events: every train.log_every steps and the
    last step (engine/train.py)."""
    every = run.read_config()["train"]["log_every"]
    total = run.read_status().total_steps
    return sorted(set(range(every, total + 1, every)) | {total})


def raw_event_types(run: RunDir) -> list[str]:
    return [json.loads(line)["type"] for line in run.file(EVENTS).read_text().splitlines()]


class ReleaseRequeued(threading.Thread):
    """SLURM holds a requeued job for two minutes (Reason=BeginTime) before it may start
    again. That is the cluster's policy, not the executor's; to keep the test short this
    lets the requeued job go early (`scontrol update StartTime=now`, what an admin can do)
    and counts how often it did. Not at once: a job started while its previous run still
    cleans up is killed ("Job credential revoked"), which is what the delay is for.

    It also raises the requeued job's time limit to `then_limit` minutes: how much a
    one-minute chunk trains depends on how loaded the machine is (the worker's start-up eats
    into it), so the rest of the run gets room to finish whatever the load."""

    SETTLE_S = 10.0

    def __init__(self, job: str, then_limit: int = 10) -> None:
        super().__init__(daemon=True)
        self.job, self.released, self.done = job, 0, threading.Event()
        self.then_limit = then_limit

    def run(self) -> None:
        held_since = None
        while not self.done.wait(1.0):
            info = (squeue([self.job]) or {}).get(self.job)
            if not (info and info.state == "PENDING" and info.reason == "BeginTime"):
                held_since = None
            elif held_since is None:
                held_since = time.monotonic()
            elif time.monotonic() - held_since > self.SETTLE_S:
                subprocess.run(["scontrol", "update", f"JobId={self.job}", "StartTime=now",
                                f"TimeLimit={self.then_limit}"], capture_output=True, timeout=30)
                self.released += 1
                held_since = None


# --- against the real cluster -----------------------------------------------------------------
def test_sweep_as_one_array_matches_the_local_executor(cluster, tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    done = fa_tui(tmp_path, "run", "sweep.toml", "--executor", "slurm", "-d", "slurm")
    assert done.returncode == 0, done.stdout + done.stderr
    slurm_runs = sorted(list_runs(tmp_path / "slurm"), key=lambda r: r.name)
    assert len(slurm_runs) == 3
    statuses = [r.read_status() for r in slurm_runs]
    assert [s.state for s in statuses] == ["done"] * 3
    arrays = {s.slurm_job.split("_")[0] for s in statuses}
    assert len(arrays) == 1, "a sweep is one job array"
    assert sorted(s.slurm_job.split("_")[1] for s in statuses) == ["0", "1", "2"]
    assert all(r.read_config()["run"]["executor"] == "slurm" for r in slurm_runs)

    local = fa_tui(tmp_path, "run", "sweep.toml", "-d", "local", "-j", "2")
    assert local.returncode == 0, local.stdout + local.stderr
    local_runs = sorted(list_runs(tmp_path / "local"), key=lambda r: r.name)
    assert [r.name for r in local_runs] == [r.name for r in slurm_runs]
    for s_run, l_run in zip(slurm_runs, local_runs):
        s_sum, l_sum = s_run.read_summary(), l_run.read_summary()
        for key in ("test_acc", "test_loss", "best_val_acc", "final_val_acc",
                    "final_train_loss", "steps"):
            assert s_sum[key] == l_sum[key], (s_run.name, key)
        assert train_losses(s_run) == train_losses(l_run)
        assert s_sum["layers"] == l_sum["layers"]

    # ls, show and export name the job; export groups nothing by executor
    ls = fa_tui(tmp_path, "ls", "-d", "slurm")
    assert "slurm" in ls.stdout and statuses[0].slurm_job in ls.stdout
    show = fa_tui(tmp_path, "show", "-d", "slurm", slurm_runs[0].name)
    assert f"job {statuses[0].slurm_job}, ended (done)" in show.stdout
    export = fa_tui(tmp_path, "export", "slurm", "-f", "json", "--no-group")
    rows = json.loads(export.stdout)
    assert sorted(row["slurm_job"] for row in rows) == sorted(s.slurm_job for s in statuses)


def test_stop_cancels_the_job_and_resume_finishes_the_run(cluster, tmp_path):
    (tmp_path / "long.toml").write_text(LONG.format(epochs=60))
    follower = fa_tui(tmp_path, "run", "long.toml", "--executor", "slurm", "-d", "runs",
                      background=True)
    try:
        run = wait_for(lambda: next(iter(list_runs(tmp_path / "runs")), None), "the run")
        wait_for(lambda: run.read_status().state == "running" and run.read_status().step > 0,
                 "the worker to train")
        job = run.read_status().slurm_job
        stop = fa_tui(tmp_path, "stop", "-d", "runs", run.name, "--wait")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert run.read_status().state == "stopped"
        assert run.has_checkpoint()
        stopped_at = run.read_status().step
        assert 0 < stopped_at < run.read_status().total_steps
        # the follower sees the end and says the run did not finish
        assert follower.wait(timeout=WAIT_S) == 1
    finally:
        follower.kill()
    wait_for(lambda: squeue([job]) == {}, "the cancelled job to leave the queue")

    resumed = fa_tui(tmp_path, "resume", "-d", "runs", run.name)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = run.read_status()
    assert status.state == "done" and status.step == status.total_steps
    assert status.slurm_job != job, "resume is a new submission"
    assert [s for s, _ in train_losses(run)] == expected_train_steps(run)
    assert raw_event_types(run).count("resume") == 1


def test_time_limit_requeues_and_the_run_reads_as_uninterrupted(cluster, tmp_path):
    """A one-minute limit on a longer run: SLURM sends SIGUSR2 `signal_s` before the limit,
    the worker checkpoints, submitit requeues the job (same id), the worker resumes. (SLURM
    signals at its first time check at most 40 s before the limit here, so 20-50 s after the
    start: the run, a minute of training without load, is always cut.)"""
    (tmp_path / "long.toml").write_text(LONG.format(epochs=2000))
    follower = fa_tui(tmp_path, "run", "long.toml", "--executor", "slurm", "-d", "runs",
                      "--set", "slurm.partition=short", "--set", "slurm.time=1",
                      "--set", "slurm.signal_s=10", background=True)
    release = None
    try:
        run = wait_for(lambda: next(iter(list_runs(tmp_path / "runs")), None), "the run")
        job = wait_for(lambda: run.read_status().slurm_job, "the job id")
        release = ReleaseRequeued(job)
        release.start()
        rc = follower.wait(timeout=WAIT_S)
        output = follower.stdout.read()
    finally:
        follower.kill()
        if release is not None:
            release.done.set()
            subprocess.run(["scancel", release.job], capture_output=True, timeout=30)
    assert rc == 0, output
    assert "requeued" in output
    status = run.read_status()
    assert status.state == "done" and status.slurm_job == job
    resumes = raw_event_types(run).count("resume")
    assert resumes >= 1 and release.released >= 1
    # no step lost or doubled: the train events are exactly an uninterrupted run's
    assert [s for s, _ in train_losses(run)] == expected_train_steps(run)
    steps = [e["step"] for e in run.read_events() if e["type"] == "epoch"]
    assert steps == sorted(set(steps)) and len(steps) == run.read_config()["train"]["epochs"]


def test_a_pending_run_shows_its_reason_and_stop_cancels_it(cluster, tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    follower = fa_tui(tmp_path, "run", "sweep.toml", "--executor", "slurm", "-d", "runs",
                      "--set", 'slurm.extra=["--begin=now+1hour"]', "--set", "run.seed=0",
                      background=True)
    try:
        run = wait_for(lambda: next(iter(list_runs(tmp_path / "runs")), None), "the run")
        job = wait_for(lambda: run.read_status().slurm_job, "the job id")
        wait_for(lambda: "BeginTime" in fa_tui(tmp_path, "ls", "-d", "runs").stdout,
                 "ls to show the pending reason")
        show = fa_tui(tmp_path, "show", "-d", "runs", run.name)
        assert f"job {job}, PENDING" in show.stdout and "BeginTime" in show.stdout
        # the TUI's poller: the Runs table's reason column, one squeue call per 5 s at most
        store = RunStore(tmp_path / "runs")
        row = store.refresh().row(run.name)
        assert row.state == "queued" and "BeginTime" in row.reason and job in row.reason
        store.refresh()
        assert store.queue.calls == 1
        assert run.read_status().state == "queued"
        stop = fa_tui(tmp_path, "stop", "-d", "runs", run.name)
        assert stop.returncode == 0
        assert run.read_status().state == "stopped"
        assert follower.wait(timeout=WAIT_S) == 1
    finally:
        follower.kill()
    assert squeue([job]) == {}


def test_a_missing_partition_is_refused_before_anything_is_submitted(cluster, tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    done = fa_tui(tmp_path, "run", "sweep.toml", "--executor", "slurm", "-d", "runs",
                  "--set", "slurm.partition=nowhere")
    assert done.returncode == 2
    assert "slurm.partition = 'nowhere': no such partition" in done.stderr
    assert "debug" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
    # what only sbatch can refuse (no GPUs on this cluster): its message, and no run left
    done = fa_tui(tmp_path, "run", "sweep.toml", "--executor", "slurm", "-d", "runs",
                  "--set", "slurm.gpus=1")
    assert done.returncode == 2 and "sbatch refused the runs" in done.stderr
    assert "Traceback" not in done.stderr
    assert list((tmp_path / "runs").iterdir()) == []


# --- without a cluster ------------------------------------------------------------------------
def test_no_sbatch_is_refused_before_anything_exists(tmp_path):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    done = fa_tui(tmp_path, "run", "sweep.toml", "--executor", "slurm", "-d", "runs",
                  env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 2
    assert "sbatch is not found" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("setting, message", [
    ("slurm.partitio=gpu", "Did you mean 'slurm.partition'?"),
    ("slurm.time=soon", "slurm.time = \"soon\""),
    ('slurm.extra=["exclusive"]', "not a long sbatch option"),
    ("slurm.gpus=-1", "out of range"),
    ("run.executor=cloud", "expected one of 'local', 'slurm'"),
])
def test_bad_slurm_keys_are_one_message_and_exit_2(tmp_path, setting, message):
    (tmp_path / "sweep.toml").write_text(SWEEP)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "sweep.toml"), "-d",
                                      str(tmp_path / "runs"), "--set", setting])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_the_slurm_table_becomes_sbatch_options():
    cfg = SlurmCfg(partition="gpu", time="1-02:03:04", gpus=2, cpus=8, mem="32G",
                   account="lab", qos="high", constraint="a100", parallel=4, signal_s=300,
                   extra=["--exclusive", "--begin=now+1hour"])
    params = sbatch_parameters(cfg, "fa-tui:runs")
    assert params == {
        "job_name": "fa-tui:runs", "time": 24 * 60 + 2 * 60 + 3 + 1, "cpus_per_task": 8,
        "signal_delay_s": 300, "stderr_to_stdout": True, "partition": "gpu", "mem": "32G",
        "account": "lab", "qos": "high", "constraint": "a100", "gres": "gpu:2",
        "array_parallelism": 4,
        "additional_parameters": {"exclusive": True, "begin": "now+1hour"}}
    assert [minutes(t) for t in ("90", "00:01:00", "01:00:00", "2-00:00:00", "00:00:01")] == \
        [90, 1, 60, 2880, 1]
    # a local preset's runs carry the defaults, which change nothing locally
    assert Config().run.executor == "local" and Config().slurm == SlurmCfg()


def test_live_state_comes_from_one_squeue_answer():
    from fa_contract.rundir import Status
    now = time.time()
    pending = Status(state="queued", slurm_job="7_1")
    running = Status(state="running", slurm_job="7_0", pid=1)
    requeue = Status(state="stopped", slurm_job="8", heartbeat=now)
    old = Status(state="done", slurm_job="3", heartbeat=now - 3600)
    local = Status(state="running", pid=1)
    assert slurm_jobs([pending, running, requeue, old, local], now) == {"7_1", "7_0", "8"}
    queue = {"7_1": QueueInfo("7_1", "PENDING", "Resources", None),
             "7_0": QueueInfo("7_0", "RUNNING", None, "node3"),
             "8": QueueInfo("8", "PENDING", "BeginTime", None)}
    shown = live(pending, queue)
    assert (shown.state, shown.slurm_state) == ("queued", "PENDING")
    assert "Resources" in shown.reason and "7_1" in shown.reason
    assert live(running, queue).host == "node3"
    assert live(requeue, queue).state == "queued"       # checkpointed for a requeue
    assert live(requeue, {}).state == "stopped"         # the job left: it really stopped
    assert live(pending, {}).state == "failed"          # its job vanished before it started
    assert live(pending, None) == pending               # squeue could not answer: as written
    assert live(local, queue) == local
    calls = []
    cache = QueueCache(interval_s=60, query=lambda jobs: calls.append(set(jobs)) or queue)
    for _ in range(5):
        cache.get({"7_1", "7_0"})
    cache.get({"8"})        # a job the last answer did not cover: asked at once
    assert calls == [{"7_1", "7_0"}, {"8"}]


def test_compose_offers_the_executor_and_its_runs_go_to_slurm_as_one_array(cluster, tmp_path):
    """The Compose form's values (fa_tui/core/form.py) through the launch the screen calls;
    the jobs are held (--begin) and cancelled, so nothing trains."""
    from fa_tui.core import form
    from fa_tui.launch import stop
    from fa_tui.slurm import launch
    assert not form.FIELDS["slurm.partition"].visible({"run.executor": "local"})
    assert form.FIELDS["slurm.partition"].visible({"run.executor": "slurm"})
    assert not form.FIELDS[form.JOBS].visible({"run.executor": "slurm"})
    bad = form.compose(form.default_values(), {"run.executor": "slurm", "slurm.time": "soon"})
    assert "slurm.time" in bad.errors and not bad.configs
    comp = form.compose(form.default_values(), {
        "run.executor": "slurm", "slurm.partition": "short", "slurm.time": "5",
        "slurm.cpus": "1", "seeds": "0-1"})
    assert [c.run.executor for c in comp.configs] == ["slurm", "slurm"]
    held = [(name, cfg.model_copy(update={"slurm": cfg.slurm.model_copy(
        update={"extra": ["--begin=now+1hour"]})})) for name, cfg in zip(comp.names, comp.configs)]
    runs = launch(tmp_path / "runs", held, source="Compose")
    jobs = [r.read_status().slurm_job for r in runs]
    assert len({j.split("_")[0] for j in jobs}) == 1 and len(set(jobs)) == 2
    assert set(wait_for(lambda: squeue(jobs), "the jobs in the queue")) == set(jobs)
    assert all(stop(r) for r in runs)
    assert [r.read_status().state for r in runs] == ["stopped", "stopped"]
    wait_for(lambda: squeue(jobs) == {}, "the cancelled jobs to leave the queue")


def test_sigusr2_makes_a_local_worker_checkpoint_and_stop(tmp_path):
    """SLURM's warning signal, without SLURM: the worker treats SIGUSR2 as a clean stop
    (checkpoint, `stopped`), which is what makes a requeued job resumable."""
    import signal

    from fa_tui.launch import create_run, spawn
    cfg = Config.model_validate({"run": {"device": "cpu"}, "train": {"epochs": 20000},
                                 "data": {"shape": [16], "train_size": 512, "val_size": 64,
                                          "test_size": 64},
                                 "model": {"width": 16, "depth": 1}, "metrics": {"every": 0}})
    run = create_run(tmp_path / "runs", cfg)
    proc = spawn(run)
    try:
        wait_for(lambda: run.read_status().step > 0 and run.has_checkpoint(), "an epoch")
        proc.send_signal(signal.SIGUSR2)
        assert proc.wait(timeout=WAIT_S) == 0
    finally:
        proc.kill()
    status = run.read_status()
    assert status.state == "stopped" and 0 < status.step < status.total_steps
    assert run.has_checkpoint() and raw_event_types(run)[-1] == "end"
