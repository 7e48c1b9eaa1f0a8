"""The run-directory contract (fa_contract): records, the atomic writer, total readers, the
format version, the generated docs, and the regressions of issue 9 that live there (each of
these failed before the fix)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fa_contract import atomic, docs, events
from fa_contract import status as status_file
from fa_contract.config import Config
from fa_contract.events import EventLog, append_event, event_line
from fa_contract.rundir import EVENTS, STATUS, SUMMARY, RunDir, Status, list_runs, resolve_run
from fa_tui.cli import app
from fa_tui.core.runtable import SORT_KEYS, sort_rows
from fa_tui.core.store import RunStore
from fa_tui.launch import create_run, resume_refusal
from tui_fixtures import T0, _config, start_event, write_fixture_runs, write_run

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- the records and the docs ------------------------------------------------------------------
def test_docs_run_directory_is_generated_from_the_records():
    text = docs.DOC.read_text(encoding="utf-8")
    assert docs.render(text) == text, "run: python -m fa_contract.docs"
    for name in events.TYPES:
        assert f"| `{name}` |" in text
    assert "`pid`" not in text.split("## events.jsonl")[1].split("## summary.json")[0]


def test_start_event_has_step_and_the_writer_refuses_what_the_contract_does_not_allow():
    cfg = _config("r", "fa", {"name": "mlp"})
    line = json.loads(event_line(start_event(cfg), t=T0))
    assert line["step"] == 0 and line["v"] == 1 and line["t"] == T0
    with pytest.raises(events.ContractError, match="step is missing"):
        event_line({k: v for k, v in start_event(cfg).items() if k != "step"})
    with pytest.raises(events.ContractError, match="layers"):
        event_line({"type": "diag", "step": 1, "epoch": 0, "layers": [1, 2]})
    # layer metrics are an open mapping: a new metric name needs no schema change
    event_line({"type": "diag", "step": 1, "epoch": 0,
                "layers": {"fc1": {"erank_sent_traj": 2.5, "new_metric": None}}})


def test_status_keeps_unknown_keys_of_a_newer_writer():
    raw = {**json.loads(Status(state="queued").to_json()), "future_key": "123"}
    st = status_file.parse_status(json.dumps(raw))
    assert st.state == "queued" and st.extra == {"future_key": "123"}
    assert json.loads(st.to_json())["future_key"] == "123"


def test_a_newer_format_version_is_reported_as_such(tmp_path):
    run = RunDir(write_run(tmp_path, "new", _config("new", "bp", {"name": "mlp"}), "done", 10))
    raw = json.loads(run.file(STATUS).read_text())
    run.file(STATUS).write_text(json.dumps({**raw, "v": 99}))
    st = run.read_status()
    assert st.state == "corrupt" and "format version 99" in st.reason and "upgrade" in st.reason
    with open(run.file(EVENTS), "a") as f:
        f.write(json.dumps({"v": 99, "type": "eval", "t": T0, "step": 99, "epoch": 9,
                            "split": "val", "loss": 0.0, "acc": 1.0}) + "\n")
    log = EventLog(run.file(EVENTS))
    log.poll()
    assert 99 not in [e["step"] for e in log.events] and "format version 99" in log.problem
    result = runner.invoke(app, ["ls", "-d", str(tmp_path)])
    assert result.exit_code == 0 and "corrupt" in result.output and "99" in result.output


# --- the atomic writer -------------------------------------------------------------------------
def test_atomic_write_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.file(STATUS).symlink_to(target)
    run.write_status(Status(state="queued"))
    assert target.read_text() == "keep me"
    assert not run.file(STATUS).is_symlink() and run.read_status().state == "queued"


def test_the_events_log_is_never_opened_through_a_symlink(tmp_path):
    target = tmp_path / "precious.jsonl"
    target.write_text("keep me\n")
    (tmp_path / EVENTS).symlink_to(target)
    for append in (True, False):
        with pytest.raises(OSError, match="symbolic link"):
            atomic.open_log(tmp_path / EVENTS, append=append)
    assert target.read_text() == "keep me\n"


def test_atomic_writer_removes_temp_files_of_killed_writers(tmp_path):
    path = tmp_path / "checkpoint.pt"
    stale = tmp_path / f".checkpoint.pt.{dead_pid()}.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getppid()}.tmp"     # a live writer's: left alone
    other = tmp_path / f".status.json.{dead_pid()}.tmp"          # another file's: left alone
    for p in (stale, live, other):
        p.write_bytes(b"half")
    atomic.write_atomic(path, b"whole")
    assert path.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists()
    assert not list(tmp_path.glob(f".checkpoint.pt.{os.getpid()}.tmp"))


def test_a_resume_after_a_partial_line_does_not_record_steps_twice(tmp_path):
    """A crash (or a full disk) left half a line; the attempt had gone past its checkpoint
    (step 10). The resumed worker's `resume` event must start its own line, or it is skipped
    and steps 11-20 are recorded twice."""
    cfg = _config("r", "fa", {"name": "mlp"})
    path = tmp_path / EVENTS
    with atomic.open_log(path, append=False) as f:
        append_event(f, start_event(cfg), t=T0)
        for step in range(5, 21, 5):
            append_event(f, {"type": "train", "step": step, "epoch": 0, "loss": 1.0, "acc": 0.5})
        f.write('{"v":1,"type":"train","step":25,"lo')            # the crash
    with atomic.open_log(path, append=True) as f:                   # what the worker does
        append_event(f, {"type": "resume", "step": 10})
        append_event(f, start_event(cfg))
        for step in range(15, 31, 5):
            append_event(f, {"type": "train", "step": step, "epoch": 0, "loss": 1.0, "acc": 0.5})
    log = EventLog(path)
    log.poll()
    steps = [e["step"] for e in log.events if e["type"] == "train"]
    assert steps == [5, 10, 15, 20, 25, 30] and log.skipped == 1


def test_worker_heartbeat_and_final_status_survive_write_errors(tmp_path, monkeypatch):
    """A real write failure: a directory where the status's temporary file must go."""
    import threading
    import time

    from engine.worker import Worker
    monkeypatch.setattr(status_file, "HEARTBEAT_S", 0.02)
    monkeypatch.setattr("engine.worker.FINAL_WAIT_S", 0.02)
    run = create_run(tmp_path, Config(), "beat")
    worker = Worker(run)
    blocker = run.path / f".{STATUS}.{os.getpid()}.tmp"
    blocker.mkdir()
    beat = threading.Thread(target=worker._heartbeat)
    beat.start()
    beat_blocker = run.path / f".{STATUS}.{os.getpid()}.t{beat.ident}.tmp"   # the thread's own
    beat_blocker.mkdir()
    deadline = time.monotonic() + 30
    while beat.is_alive() and time.monotonic() < deadline and worker.status.step == 0:
        time.sleep(0.05)
        worker.status.step = 1                      # several beats failed meanwhile
    time.sleep(0.1)
    assert beat.is_alive()                          # the failures did not end the heartbeat
    blocker.rmdir()
    beat_blocker.rmdir()
    while run.read_status().step != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.read_status().step == 1              # and it beats again
    worker._ended.set()
    beat.join()
    blocker.mkdir()
    threading.Timer(0.2, blocker.rmdir).start()     # the disk recovers while _finish retries
    worker._finish("stopped", "stop requested")
    assert run.read_status().state == "stopped"


# --- total readers -----------------------------------------------------------------------------
BROKEN = {
    "summary is a list": (SUMMARY, "[1, 2]"),
    "string heartbeat": (STATUS, '{"state": "running", "heartbeat": "soon", "v": 1}'),
    "status not JSON": (STATUS, "{"),
    "config section wrong type": ("config.toml", 'rule = 3\n[model]\nname = "mlp"\n'),
    "config not TOML": ("config.toml", "[[[\n"),
    "config name wrong type": ("config.toml", "[rule]\nname = 3\n[model]\nname = [1]\n"),
    "layers list in an event": (EVENTS, json.dumps(
        {"v": 1, "t": 0, "type": "diag", "step": 5, "epoch": 0, "layers": [1, 2]}) + "\n"),
}


@pytest.fixture
def broken_runs(tmp_path):
    runs = tmp_path / "runs"
    names = write_fixture_runs(runs)
    for i, (what, (file, text)) in enumerate(BROKEN.items()):
        path = write_run(runs, f"broken{i}", _config(f"broken{i}", "fa", {"name": "mlp"}),
                         "done", 10)
        with open(path / file, "a" if file == EVENTS else "w") as f:
            f.write(text)
    return runs, names


def test_every_command_survives_broken_run_files(broken_runs, tmp_path):
    runs, names = broken_runs
    result = runner.invoke(app, ["ls", "-d", str(runs)])
    assert result.exit_code == 0, result.output
    for i in range(len(BROKEN)):
        assert f"broken{i}" in result.output
    assert result.output.count("corrupt") >= 5       # status x2, config x3
    for i in range(len(BROKEN)):
        shown = runner.invoke(app, ["show", "-d", str(runs), f"broken{i}"])
        assert shown.exit_code == 0 and "Traceback" not in shown.output, shown.output
    exported = runner.invoke(app, ["export", str(runs)])
    assert exported.exit_code == 0, exported.output
    assert "bp-mlp" in exported.stdout and "skipped" in exported.stderr
    assert "broken4" in exported.stderr and "invalid TOML" in exported.stderr
    assert "broken5" in exported.stderr and "rule.name is int" in exported.stderr
    curves = runner.invoke(app, ["export", "--curves", str(runs)])
    assert curves.exit_code == 0 and "bp-mlp" in curves.stdout
    pytest.importorskip("matplotlib")
    plot = runner.invoke(app, ["export", "--plot", str(tmp_path / "p.png"), str(runs)])
    assert plot.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 0


def test_the_poller_shows_broken_runs_and_recovers_when_the_file_is_fixed(broken_runs):
    runs, names = broken_runs
    store = RunStore(runs)
    rows = {r.name: r for r in store.refresh(("broken6",)).rows}
    for key in SORT_KEYS:                             # what the table sorts by is comparable
        sort_rows(list(rows.values()), key)
    assert set(names) <= set(rows) and rows["broken3"].state == "corrupt"
    assert "rule is int" in rows["broken3"].reason and "\n" not in rows["broken3"].reason
    good = RunDir(runs / "bp-mlp").file("config.toml").read_text()
    (runs / "broken3" / "config.toml").write_text(good)
    rows = {r.name: r for r in store.refresh().rows}
    assert rows["broken3"].state == "done"


def test_ls_shows_one_line_of_a_multi_line_reason(tmp_path):
    reason = "RuntimeError: boom\n" + "\n".join(f"  frame {i}" for i in range(25))
    write_run(tmp_path, "crashed", _config("crashed", "fa", {"name": "mlp"}), "failed", 10,
              reason=reason)
    result = runner.invoke(app, ["ls", "-d", str(tmp_path)])
    assert result.exit_code == 0 and "RuntimeError: boom …" in result.output
    assert "frame 3" not in result.output
    shown = runner.invoke(app, ["show", "-d", str(tmp_path), "crashed"])
    assert "frame 24" in shown.output                  # show keeps all of it


# --- one run resolver, one resume policy ------------------------------------------------------
def test_export_and_show_resolve_a_run_name_alike_when_a_folder_of_that_name_exists(
        tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_run(runs, "r1", _config("r1", "bp", {"name": "mlp"}), "done", 10)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r1").mkdir()                          # an unrelated folder ./r1
    assert resolve_run("r1", runs).path == runs / "r1"
    for args in (["show", "r1"], ["export", "r1"]):
        result = runner.invoke(app, [*args, "-d", str(runs)])
        assert result.exit_code == 0 and "r1" in result.output, (args, result.output)


def test_one_resume_policy(tmp_path):
    mlp = {"name": "mlp"}
    for state in ("done", "diverged", "stopped", "failed"):
        write_run(tmp_path, state, _config(state, "fa", mlp), state, 10, reason="why")
    refusals = {r.name: resume_refusal(r) for r in list_runs(tmp_path)}
    assert "done" in refusals["done"] and "diverged" in refusals["diverged"]
    assert refusals["stopped"] is None and refusals["failed"] is None
    RunDir(tmp_path / "stopped").file(STATUS).write_text("garbage")
    assert "cannot be read" in resume_refusal(RunDir(tmp_path / "stopped"))
    result = runner.invoke(app, ["resume", "-d", str(tmp_path), "stopped"])
    assert result.exit_code == 2 and "cannot be read" in result.output


def test_fa_tui_app_loads_neither_torch_nor_pydantic():
    code = ("import sys, fa_tui.app, fa_tui.launch, fa_tui.core.queue; "
            "print(sorted(m for m in ('torch', 'pydantic', 'engine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_engine_registries_are_keyed_by_the_schemas_choices():
    """The lists of choices are written once (fa_contract.config); the engine's registries
    must offer exactly those names."""
    from engine.models import BUILDERS
    from engine.models.activations import ACTIVATIONS as ACTIVATION_MODULES
    from engine.rules import RULES as RULE_CLASSES
    from fa_contract import config
    from fa_tui.core import form
    assert tuple(RULE_CLASSES) == config.RULES and tuple(BUILDERS) == config.MODELS
    assert set(ACTIVATION_MODULES) == set(config.ACTIVATIONS)
    assert form.choices("rule.name") == config.RULES
    assert form.choices("optim.name") == config.OPTIMISERS


def test_a_worker_refuses_an_events_log_that_is_a_symlink(tmp_path):
    from engine.worker import main as worker_main
    target = tmp_path / "precious.jsonl"
    target.write_text("keep me\n")
    run = create_run(tmp_path / "runs", Config(), "linked")
    run.file(EVENTS).symlink_to(target)
    assert worker_main([str(run.path)]) == 1
    status = run.read_status()
    assert status.state == "failed" and "symbolic link" in status.reason
    assert target.read_text() == "keep me\n"


def test_the_readers_know_every_config_section():
    from fa_contract.rundir import SECTIONS
    assert SECTIONS == tuple(Config.model_fields)
