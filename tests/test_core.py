"""fa_tui.core: the TUI's logic without a terminal — downsampling, heatmap strips, charts,
series from events, the run table model, the poller and the Compose form."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.style import Style

from fa_contract.config import Config
from fa_contract.rundir import EventLog
from fa_tui.core import chart, form, heatmap, panels, runtable, series
from fa_tui.core.downsample import bucket_means, minmax
from fa_tui.core.store import RunStore
from tui_fixtures import NOW, T0, _config, write_fixture_runs, write_run


# --- downsampling ---------------------------------------------------------------------------
def test_minmax_keeps_extremes_and_order_within_width():
    xs = list(range(1000))
    ys = [math.sin(x / 37) * (1 + x / 500) for x in xs]
    ys[613] = 50.0             # a spike in the middle of a bucket
    ys[271] = -50.0
    for width in (2, 3, 17, 80, 999):
        dx, dy = minmax(xs, ys, width)
        assert len(dx) == len(dy) <= width
        assert max(dy) == 50.0 and min(dy) == -50.0
        assert dx == sorted(dx)
        assert all(ys[x] == y for x, y in zip(dx, dy))


def test_minmax_short_input_is_untouched():
    assert minmax([1, 2, 3], [3.0, 1.0, 2.0], 10) == ([1, 2, 3], [3.0, 1.0, 2.0])
    assert minmax([1, 2, 3], [3.0, 1.0, 2.0], 1) == ([1], [3.0])
    with pytest.raises(ValueError):
        minmax([1, 2], [1.0], 5)


def test_bucket_means_averages_and_keeps_gaps():
    assert bucket_means([1.0, 3.0, None, None, 5.0, float("nan")], 3) == [2.0, None, 5.0]
    assert bucket_means([1.0, None], 5) == [1.0, None]


# --- heatmap strips ---------------------------------------------------------------------------
def test_colour_scale_ends_and_clamps():
    assert heatmap.colour(0.0, 0.0, 1.0) == "#440154"      # viridis' first stop
    assert heatmap.colour(1.0, 0.0, 1.0) == "#fde725"      # and last
    assert heatmap.colour(-5.0, 0.0, 1.0) == "#440154"
    assert heatmap.colour(9.0, 0.0, 1.0) == "#fde725"
    assert heatmap.colour(3.0, 3.0, 3.0) == heatmap.colour(0.5, 0.0, 1.0)   # flat scale


def _cell_styles(text) -> list:
    """The style of every cell of a strip, None for an unstyled blank."""
    styles = [None] * len(text)
    for span in text.spans:
        for i in range(span.start, span.end):
            styles[i] = span.style
    return styles


def test_strip_colours_each_value_and_leaves_nan_blank():
    values = [1.0, None, 5.0, float("nan"), 3.0]
    text = heatmap.strip(values, width=5, lo=1.0, hi=5.0)
    assert text.plain == " " * 5
    styles = _cell_styles(text)
    assert styles[1] is None and styles[3] is None
    for i in (0, 2, 4):
        assert styles[i] == Style(bgcolor=heatmap.colour(values[i], 1.0, 5.0))
    assert styles[0] != styles[2]


def test_strip_widens_few_values_and_squeezes_many():
    wide = heatmap.strip([0.0, 1.0], width=10, lo=0.0, hi=1.0)
    assert len(wide) == 10
    assert _cell_styles(wide)[:5] == [Style(bgcolor="#440154")] * 5
    narrow = heatmap.strip([float(i) for i in range(100)], width=10, lo=0.0, hi=99.0)
    assert len(narrow) == 10


def test_heatmap_rows_share_one_scale():
    rows = heatmap.heatmap([[1.0, 2.0], [10.0, None]], width=2)
    assert _cell_styles(rows[0])[0] == Style(bgcolor="#440154")
    assert _cell_styles(rows[1])[0] == Style(bgcolor="#fde725")
    assert _cell_styles(rows[1])[1] is None


# --- line charts ------------------------------------------------------------------------------
def test_chart_fits_its_box_and_draws_every_series():
    s1 = chart.Series("a", list(range(500)), [x * x for x in range(500)], "#ff0000")
    s2 = chart.Series("b", [0, 499], [0.0, 0.0], "#00ff00")
    lines = chart.render([s1, s2], width=40, height=10)
    assert len(lines) == 10
    assert all(line.cell_len <= 40 for line in lines)
    colours = {str(span.style.color.name) for line in lines for span in line.spans
               if isinstance(span.style, Style) and span.style.color}
    assert {"#ff0000", "#00ff00"} <= colours
    axis = lines[-1].plain
    assert axis.strip().startswith("└0") and axis.split()[1:] == ["200", "400"]
    # each round value sits at its own column: x = 400 of [0, 499] over 2*32 pixels
    assert axis.index("400") + 1 == chart.LABEL_W + 1 + round(400 / 499 * 63) // 2


def test_chart_log_axis_drops_non_positive_and_labels_decades():
    s = chart.Series("loss", [0, 1, 2, 3], [100.0, 10.0, 0.0, 1.0], "#ffffff")
    lines = chart.render([s], width=30, height=6, log_y=True)
    assert lines[0].plain.strip().startswith("100")
    assert lines[-2].plain.strip().startswith("1 ")


def test_chart_without_data_says_so():
    lines = chart.render([chart.Series("x", [1], [float("nan")], "#fff")], 30, 4)
    assert "no data yet" in lines[0].plain and len(lines) == 4


# --- series from events -----------------------------------------------------------------------
def _fa_events(tmp_path: Path) -> list[dict]:
    write_run(tmp_path, "fa", _config("fa", "fa", {"name": "mlp"}), "done", 30)
    log = EventLog(tmp_path / "fa" / "events.jsonl")
    log.poll()
    return log.events


def test_curves_layers_and_variants(tmp_path):
    events = _fa_events(tmp_path)
    xs, ys = series.curve(events, "val", "acc")
    assert xs == [10, 20, 30] and ys == sorted(ys)
    assert series.curve(events, "train", "loss")[0] == [5, 10, 15, 20, 25, 30]
    assert series.layer_names(events) == ["fc1", "fc2", "head"]
    metrics = series.diag_metrics(events)
    assert series.rank_variants(metrics) == [("erank_err", "erank_err_bp"),
                                             ("pr_err", "pr_err_bp")]
    assert series.angle_variants(metrics) == ["angle_delta", "angle_grad", "angle_weight"]
    steps, rows = series.diag_grid(events, "erank_err", ["fc1", "missing"])
    assert steps == [5, 10, 15, 20, 25, 30]
    assert rows[1] == [None] * 6 and rows[0][0] > rows[0][-1]


def test_layer_series_skip_metrics_that_do_not_apply(tmp_path):
    write_run(tmp_path, "bp", _config("bp", "bp", {"name": "mlp"}), "done", 30)
    events = RunStore(tmp_path).refresh({"bp"}).events["bp"]
    assert panels.angle_series(events, "angle_weight") == []      # null under bp
    assert len(panels.angle_series(events, "angle_delta")) == 3


def test_panels_colour_runs_and_lighten_val():
    events = {"a": [{"type": "train", "step": 1, "acc": 0.5},
                    {"type": "eval", "step": 1, "split": "val", "acc": 0.4}],
              "b": [{"type": "train", "step": 1, "acc": 0.6}]}
    out = panels.curve_series(events, "acc", ("train", "val"))
    assert [s.label for s in out] == ["a train", "a val", "b train", "b val"]
    assert out[0].colour == chart.PALETTE[0] and out[2].colour == chart.PALETTE[1]
    assert out[1].colour == chart.lighten(chart.PALETTE[0]) != out[0].colour


def test_config_text_bolds_what_differs_from_defaults():
    defaults = Config().model_dump(mode="json")
    cfg = json.loads(json.dumps(defaults))
    cfg["optim"]["lr"] = 0.5
    text = panels.config_text(cfg, defaults)
    bold = {text.plain[s.start:s.end] for s in text.spans if s.style == "bold"}
    assert bold == {"0.5\n"}


# --- the run table ------------------------------------------------------------------------------
def test_rows_from_fixture_run_directories(tmp_path):
    write_fixture_runs(tmp_path)
    rows = {r.name: r for r in RunStore(tmp_path, clock=lambda: NOW).refresh().rows}
    assert {n: r.state for n, r in rows.items()} == {
        "bp-mlp": "done", "fa-mlp": "done", "ldfa-cnn": "running", "dfa-mlp": "diverged",
        "usf-mlp": "failed", "frsf-mlp": "queued"}
    assert rows["dfa-mlp"].reason == "non-finite loss at step 17"
    assert rows["ldfa-cnn"].elapsed == NOW - (T0 + 120)          # live: from the clock
    # ended: from its start to its final status (the same clock as live), not summary.json's
    # training time, so the figure never jumps backwards when a run ends
    assert rows["fa-mlp"].elapsed == (T0 + 100) - (T0 + 60)
    # diverged: progress stops where the loss went bad (status.step 20 counts NaN steps)
    assert rows["dfa-mlp"].step == 17 and rows["dfa-mlp"].total == 30
    assert rows["ldfa-cnn"].rule == "ldfa r10 oja" and rows["ldfa-cnn"].progress == 0.5
    assert rows["ldfa-cnn"].best_val == pytest.approx(0.1 + 0.7 * (1 - math.exp(-2.5 * 0.7 / 3)))
    assert rows["frsf-mlp"].best_val is None


def test_stale_running_run_shows_as_failed_with_reason(tmp_path):
    cfg = _config("gone", "fa", {"name": "mlp"})
    path = write_run(tmp_path, "gone", cfg, "running", 10)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    status = json.loads((path / "status.json").read_text())
    status.update(pid=int(dead), heartbeat=T0)           # its worker died long ago
    (path / "status.json").write_text(json.dumps(status))
    (row,) = RunStore(tmp_path).refresh().rows
    assert row.state == "failed" and "worker vanished" in row.reason


def test_filter_and_sort():
    def row(name, state, rule, best):
        return runtable.RunRow(name, state, rule, "mlp", "synthetic", "sgd", "none", 0, 10,
                               best, None, "cpu", None, None)
    rows = [row("a", "running", "fa", 0.5), row("b", "done", "bp", None),
            row("c", "failed", "fa", 0.9)]
    rows.append(row("d", "done", "ldfa r4 oja", 0.1))
    assert [r.name for r in rows if runtable.matches(r, "rule:fa")] == ["a", "c"]
    assert [r.name for r in rows if runtable.matches(r, "rule:ldfa")] == ["d"]
    assert [r.name for r in rows if runtable.matches(r, "FA state:run")] == ["a"]
    assert [r.name for r in rows if runtable.matches(r, "bp")] == ["b"]
    assert [r.name for r in rows if runtable.matches(r, "fa")] == ["a", "c", "d"]
    assert [r.name for r in runtable.sort_rows(rows, "best_val", reverse=True)] == [
        "c", "a", "d", "b"]
    assert [r.name for r in runtable.sort_rows(rows, "best_val")] == ["d", "a", "c", "b"]


def test_cell_formatting():
    assert runtable.fmt_elapsed(None) == "–"
    assert runtable.fmt_elapsed(59.9) == "59s"
    assert runtable.fmt_elapsed(3599) == "59m59s"
    assert runtable.fmt_elapsed(7325) == "2h02m"
    assert runtable.progress_bar(0.5, 8) == "████      50%"
    assert runtable.progress_bar(1 / 16, 8) == "▌" + " " * 10 + "6%"
    assert runtable.progress_bar(2.0, 4) == "████ 100%"


# --- the poller ---------------------------------------------------------------------------------
def test_store_reads_incrementally_and_follows_resume(tmp_path):
    cfg = _config("live", "fa", {"name": "mlp"})
    path = write_run(tmp_path, "live", cfg, "running", 10, live=True)
    store = RunStore(tmp_path)
    snap = store.refresh({"live"})
    v0, n0 = snap.versions["live"], len(snap.events["live"])
    assert store.refresh({"live"}).versions["live"] == v0          # nothing new: same version
    with open(path / "events.jsonl", "a") as f:
        f.write(json.dumps({"v": 1, "t": T0, "type": "eval", "step": 12, "epoch": 1, "split": "val",
                            "loss": 0.1, "acc": 0.99}) + "\n")
        f.write('{"v": 1, "type": "train", "step": 13, "lo')          # half-written
    snap = store.refresh({"live"})
    assert snap.versions["live"] > v0 and len(snap.events["live"]) == n0 + 1
    assert snap.rows[0].best_val == 0.99
    with open(path / "events.jsonl", "a") as f:
        f.write('ss": 1.0}\n' + json.dumps({"v": 1, "t": T0, "type": "resume", "step": 10}) + "\n")
    snap = store.refresh({"live"})
    steps = [e.get("step") for e in snap.events["live"]]
    assert 12 not in steps and 13 not in steps and steps[-1] == 10  # superseded, dropped
    assert snap.rows[0].best_val < 0.99                              # recomputed


def test_store_sees_new_and_deleted_runs_and_only_loads_watched(tmp_path):
    store = RunStore(tmp_path / "missing")
    assert store.refresh().rows == ()                                # no directory yet: empty
    store = RunStore(tmp_path)
    write_fixture_runs(tmp_path)
    snap = store.refresh({"fa-mlp"})
    assert set(snap.events) == {"fa-mlp"} and snap.skipped["fa-mlp"] == 1
    assert snap.logs["fa-mlp"][-1] == "step 30: ok"
    os.rename(tmp_path / "bp-mlp", tmp_path / ".trash")
    assert "bp-mlp" not in {r.name for r in store.refresh().rows}


# --- the Compose form ---------------------------------------------------------------------------
def test_form_sweeps_over_lists_and_seeds():
    base = form.default_values()
    comp = form.compose(base, {"rule.name": "ldfa", "rule.rank": "4, 8", "seeds": "0-2",
                               "run.name": "r"})
    assert len(comp.configs) == 6 and not comp.errors
    assert comp.names[0] == "r-rank=4-seed=0" and comp.names[-1] == "r-rank=8-seed=2"
    assert {(c.rule.rank, c.run.seed) for c in comp.configs} == {
        (r, s) for r in (4, 8) for s in range(3)}
    assert comp.axes == {"rule.rank": [4, 8], "run.seed": [0, 1, 2]}


def test_form_errors_come_from_the_schema_and_land_on_their_field():
    comp = form.compose(form.default_values(), {"rule.rank": "0", "optim.lr": "fast",
                                                "model.widths": "8, 8", "seeds": "x"})
    assert set(comp.errors) == {"seeds"}                     # parse errors first
    comp = form.compose(form.default_values(), {"rule.rank": "0", "optim.lr": "fast",
                                                "model.widths": "8, 8"})
    assert set(comp.errors) == {"rule.rank", "optim.lr", "model.widths"}
    assert "greater than or equal to 1" in comp.errors["rule.rank"]
    assert not comp.configs
    cleared = form.compose(form.default_values(), {"optim.lr": "", "model.bottleneck": ""})
    assert set(cleared.errors) == {"optim.lr"}               # required; bottleneck is optional
    big = form.compose(form.default_values(), {"seeds": "0-99"})
    assert big.general and "at most" in big.general[0]


def test_form_flags_a_dataset_neither_on_disk_nor_fetchable(tmp_path, monkeypatch):
    """cifar10 with download = true but no files and no network: Compose says so on the
    dataset field (the launch would refuse it); with the files present it is fine."""
    from fa_contract.data_files import reachable
    if reachable("cifar10"):
        pytest.skip("www.cs.toronto.edu is reachable: this test needs a machine without network")
    monkeypatch.setenv("FA_TUI_DATA", str(tmp_path))
    comp = form.compose(form.default_values(), {"data.name": "cifar10", "data.download": True})
    assert "cifar10: dataset files not found" in comp.errors["data.name"]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"x")
    comp = form.compose(form.default_values(), {"data.name": "cifar10", "data.download": True})
    assert "data.name" not in comp.errors


def test_form_fields_follow_the_schema_and_the_choices():
    assert form.choices("rule.name") == ("bp", "fa", "usf", "brsf", "frsf", "dfa", "ldfa")
    assert form.choices("rule.feedback_norm") == ("launay", "fan_out", "off")
    assert form.kind("model.widths") == "list" and form.kind("optim.lr") == "number"
    assert form.choices("run.device")[:2] == ("auto", "cpu")
    spec = form.FIELDS["rule.rank"]
    assert spec.visible({"rule.name": "ldfa"}) and not spec.visible({"rule.name": "fa"})
    assert form.FIELDS["optim.momentum"].visible({"optim.name": "sgd"})
    assert not form.FIELDS["optim.momentum"].visible({"optim.name": "adam"})
    assert form.FIELDS["model.widths"].visible({"model.name": "cnn"})


def test_form_sweep_round_trips_through_a_preset(tmp_path):
    from fa_tui.presets import load_preset, save_preset
    comp = form.compose(form.default_values(), {"optim.lr": "0.1, 0.01", "seeds": "3, 4",
                                                "run.name": "grid"})
    save_preset(comp.preset(), tmp_path / "grid.toml")
    loaded = load_preset(tmp_path / "grid.toml")
    assert sorted((c.optim.lr, c.run.seed) for c in loaded) == sorted(
        (c.optim.lr, c.run.seed) for c in comp.configs)


# --- the launch queue (files) and its scheduler -------------------------------------------------
def test_scheduler_starts_jobs_at_a_time_and_spreads_gpus(tmp_path):
    """The scheduler, stepped in this process with a stand-in spawn that starts real children:
    `jobs` at a time, each start on the least-loaded GPU, a run stopped while waiting passed
    over, and every start recorded in the queue files."""
    from fa_contract.rundir import RunDir, Status
    from fa_tui.core.queue import QueueDir
    from fa_tui.scheduler import Scheduler

    calls, procs = [], []

    def spawn(run, gpu, resume=False):       # a real child, like a worker; "a" ends first
        calls.append((run.name, gpu, resume))
        run.write_status(Status(state="running"))
        code = f"import time; time.sleep({1 if run.name == 'a' else 60})"
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
        return procs[-1]

    runs = []
    for name in ("a", "b", "c", "d"):
        write_run(tmp_path, name, _config(name, "fa", {"name": "mlp"}), "queued", 0)
        runs.append(RunDir(tmp_path / name))
    RunDir(tmp_path / "c").write_status(Status(state="stopped"))   # stopped while waiting
    queue = QueueDir(tmp_path)
    batch = queue.add([r.path for r in runs], jobs=2, gpus=["0", "1"])
    sched = Scheduler(tmp_path, spawn=spawn)
    try:
        assert sched.step()
        assert [c[:2] for c in calls] == [("a", "0"), ("b", "1")]
        assert [Path(p).name for p in queue.waiting()] == ["c", "d"]
        assert sched.step() and len(calls) == 2            # both slots busy
        for _ in range(3000):                              # until "a" exits (60 s at most)
            sched.step()
            if len(calls) == 3:
                break
            time.sleep(0.02)
        assert calls[-1] == ("d", "0", False)             # the GPU "a" freed; c skipped
        started = queue.started(batch.id)
        assert started[str(runs[2].path.resolve())] == {"skipped": "stopped"}
        assert queue.waiting() == []
        # a second scheduler on the same runs directory cannot take the lock
        assert sched.lock() and not Scheduler(tmp_path).lock()
        sched.unlock()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    for _ in range(100):
        if not sched.step():
            break
    assert queue.batches() == []                          # finished batches are removed
    # workers that ended without a final state: the scheduler says how
    a, d = RunDir(tmp_path / "a").read_status(), RunDir(tmp_path / "d").read_status()
    assert a.state == "failed" and a.reason.startswith("worker exited with status 0 before")
    assert d.state == "failed" and d.reason.startswith("killed (SIGKILL — out of memory?)")


def test_queue_files_survive_garbage_and_resume_rules(tmp_path):
    """Readers survive any bytes in the queue files; a resume batch passes over a run a live
    worker has, and starts one whose worker just died, or a queued one."""
    import socket

    from fa_contract.rundir import RunDir, Status
    from fa_tui.core.queue import QueueDir
    from fa_tui.scheduler import Scheduler

    queue = QueueDir(tmp_path)
    queue.batches_dir.mkdir(parents=True)
    (queue.batches_dir / "0-garbage.json").write_bytes(b"\xff\x00{not json")
    (queue.batches_dir / "1-list.json").write_text("[1, 2]")
    (queue.batches_dir / "2-odd.json").write_text('{"runs": [1, "x"], "jobs": "many"}')
    assert [(b.runs, b.jobs) for b in queue.batches()] == [(["x"], 1)]
    (queue.batches_dir / "2-odd.started").write_text("nonsense")
    assert queue.started("2-odd") == {}
    for f in queue.batches_dir.iterdir():
        f.unlink()

    procs, calls = [], []

    def spawn(run, gpu, resume=False):
        calls.append(run.name)
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return procs[-1]

    runs = []
    for name in ("a", "b", "c"):
        write_run(tmp_path, name, _config(name, "fa", {"name": "mlp"}), "queued", 0)
        runs.append(RunDir(tmp_path / name))
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "engine.worker"])
    procs.append(worker)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    for run, pid in ((runs[1], worker.pid), (runs[0], int(dead.stdout))):
        run.write_status(Status(state="running", pid=pid, host=socket.gethostname(),
                                heartbeat=time.time()))
    queue.add([r.path for r in runs], jobs=2, resume=True)
    try:
        Scheduler(tmp_path, spawn=spawn).step()
        assert calls == ["a", "c"]                         # b's worker lives: passed over
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
