"""A full disk and read-only storage, on a small real tmpfs (skipped, with the reason, where
this process may not mount one): clear reasons, no tracebacks, nothing started that cannot
write, no 0-byte or partial files left behind, and a worker whose disk fills ends with the
real reason once space is back instead of reading "worker vanished" later."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fa_contract.config import Config
from fa_contract.rundir import LOG
from fa_tui.launch import create_run, spawn

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = {"run": {"device": "cpu"}, "data": {"shape": [8], "train_size": 64, "val_size": 16,
                                           "test_size": 16},
        "model": {"width": 8, "depth": 1}, "train": {"batch_size": 16},
        "metrics": {"every": 0}}


@pytest.fixture
def disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not permitted'}); "
                    "the full-disk tests need one")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write zeros into folder/filler until the disk is full; returns the filler."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def fa_tui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fa_tui", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def no_empty_or_temp_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file() and path.name != "filler":
            assert not path.name.endswith(".tmp"), path
            assert path.stat().st_size > 0, f"0-byte file left behind: {path}"


def test_launch_and_resume_on_a_full_disk_are_refused(disk, tmp_path):
    runs = disk / "runs"
    old = create_run(runs, Config.model_validate(TINY), "old")
    old.write_status(old.read_status().__class__(state="stopped", reason="stopped"))
    fill(disk)
    proc = fa_tui("run", "quickstart", "-d", str(runs), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr and str(runs) in proc.stderr
    assert [p.name for p in runs.iterdir()] == ["old"]               # nothing created
    proc = fa_tui("resume", "old", "-d", str(runs), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "No space left on device" in proc.stderr
    assert not old.file(LOG).exists()                                 # no worker started
    with pytest.raises(OSError) as info:                              # nor by the launcher
        spawn(old)
    assert "No space left" in str(info.value) and not old.file(LOG).exists()
    no_empty_or_temp_files(disk)


def test_export_on_a_full_disk_leaves_no_empty_file(disk, tmp_path):
    runs = tmp_path / "runs"
    create_run(runs, Config.model_validate(TINY), "r")
    fill(disk)
    out = disk / "table.md"
    proc = fa_tui("export", str(runs), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert f"cannot write {out}: No space left on device" in proc.stderr
    assert not out.exists()
    no_empty_or_temp_files(disk)


def test_read_only_runs_directory_is_refused(disk, tmp_path):
    runs = disk / "runs"
    old = create_run(runs, Config.model_validate(TINY), "old")
    old.write_status(old.read_status().__class__(state="stopped", reason="stopped"))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    for args in (("run", "quickstart"), ("resume", "old")):
        proc = fa_tui(*args, "-d", str(runs), cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
        assert "Read-only file system" in proc.stderr, proc.stderr
    assert [p.name for p in runs.iterdir()] == ["old"] and not old.file(LOG).exists()


def test_a_worker_whose_disk_fills_ends_with_the_reason_once_space_is_back(disk):
    """Start a real worker, fill the disk once it trains: its next event cannot be written,
    so the run fails; its summary and final status cannot be written either, so it
    keeps trying (alive, not 'vanished'); once space is back they say why."""
    long = {**TINY, "data": {**TINY["data"], "train_size": 20000}, "train": {
        "batch_size": 16, "epochs": 100, "log_every": 5}}
    run = create_run(disk / "runs", Config.model_validate(long), "filling")
    proc = spawn(run)
    deadline = time.monotonic() + 120
    while not (run.path / "events.jsonl").exists() or not (run.path / "events.jsonl").stat().st_size:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    filler = fill(disk)                  # training: its next event cannot be written
    time.sleep(8)                        # so it fails, and retries its final files
    assert proc.poll() is None, "the worker must wait for space, not exit"
    assert run.read_status().state == "running"
    filler.unlink()
    assert proc.wait(timeout=60) == 1
    status = run.read_status()
    assert status.state == "failed"
    assert status.reason.startswith("the disk is full (No space left on device) while "
                                    "writing "), status.reason
    assert status.reason.endswith("free some space, then resume the run (fa-tui resume)")
    assert run.read_summary()["reason"] == status.reason
    no_empty_or_temp_files(disk)



def test_the_heartbeat_survives_a_full_disk_blip(disk, monkeypatch):
    """A few seconds of full disk fail some heartbeats; the thread keeps beating and the
    status is fresh again as soon as space is back (it used to die for the rest of the run)."""
    import engine.worker as worker_mod
    monkeypatch.setattr("fa_contract.status.HEARTBEAT_S", 0.1)   # what the heartbeat reads
    run = create_run(disk / "runs", Config.model_validate(TINY), "beating")
    worker = worker_mod.Worker(run)
    beat = threading.Thread(target=worker._heartbeat, daemon=True)
    beat.start()
    try:
        time.sleep(0.5)
        filler = fill(disk)
        time.sleep(0.3)                                  # a beat begun before it has landed
        stale = run.read_status().heartbeat
        time.sleep(1.5)                                  # ~15 failed beats
        assert beat.is_alive() and run.read_status().heartbeat == stale
        filler.unlink()
        time.sleep(0.5)
        assert beat.is_alive() and run.read_status().heartbeat > stale
    finally:
        worker._ended.set()
        beat.join()
    no_empty_or_temp_files(disk)
