"""The chart logic as plain functions (issue 12): axes with round ticks and units, ranges
fitted to the data inside a metric's bounds, zoom, the cursor readout, x-axis maps, seed
grouping and mean ± std bands, palettes — checked against arithmetic, no terminal."""
from __future__ import annotations

import math
import statistics

import pytest
from rich.style import Style

from fa_tui.core import bands, chart, scale, xaxis
from fa_tui.core.panels import curve_series, entries, layer_lines, rank_lines
from tui_fixtures import _config, _events


# --- scale --------------------------------------------------------------------------------------
def test_accuracy_is_percent_on_0_100_and_angles_fit_without_zero():
    acc = scale.unit_of("acc")
    assert (acc.factor, acc.suffix, acc.lo, acc.hi) == (100.0, "%", 0.0, 100.0)
    assert scale.unit_of("probe_acc") is acc and scale.unit_of("angle_grad").suffix == "°"
    # four conv layers near 90°: the axis spans them, not 0..90
    y0, y1 = scale.fit_range([88.0, 89.0, 91.0, 92.0], lo=0.0, hi=180.0)
    assert (y0, y1) == pytest.approx((87.8, 92.2))


def test_fit_range_of_one_value_and_bounds():
    # the diverged run's single accuracy 10.1 %: centred, inside [0, 100], never negative
    y0, y1 = scale.fit_range([10.1], lo=0.0, hi=100.0)
    assert y0 < 10.1 < y1 and y0 >= 0 and y1 - y0 == pytest.approx(1.01 * 1.1)
    assert scale.fit_range([100.0, 100.0], lo=0.0, hi=100.0)[1] == 100.0
    assert scale.fit_range([0.0], lo=0.0) == (0.0, pytest.approx(0.5e-3 * 1.1))
    assert scale.fit_range([], lo=0.0, hi=100.0) == (0.0, 100.0)
    assert scale.fit_range([float("nan"), 2.0, 4.0], pad=0.0) == (2.0, 4.0)


def test_zoom_shrinks_around_a_centre_inside_the_range():
    assert scale.zoom(0.0, 100.0, 2.0) == (25.0, 75.0)
    assert scale.zoom(0.0, 100.0, 4.0, centre=80.0) == (67.5, 92.5)
    assert scale.zoom(0.0, 10.0, 2.0, centre=50.0) == (7.5, 12.5)     # clamped to the range
    with pytest.raises(ValueError):
        scale.zoom(0.0, 1.0, 0.0)


def test_ticks_are_round_and_inside():
    assert scale.ticks(0.0, 100.0, 5) == [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    assert scale.ticks(87.8, 92.2, 3) == [88.0, 90.0, 92.0]            # step 2 for 4.4 / 3
    assert scale.ticks(0.13, 0.17, 2) == [0.14, 0.16]
    for lo, hi in ((3.75, 31.25), (1e-4, 3e-4), (-7.0, 13.0)):
        t = scale.ticks(lo, hi, 1)
        assert len(t) >= 2 and all(lo <= v <= hi for v in t)


# --- the renderer ------------------------------------------------------------------------------
def _plain(lines):
    return [line.plain for line in lines]


def test_y_ticks_carry_the_unit_and_sit_at_their_rows():
    s = chart.Series("a", [0, 1], [20.0, 80.0], "#ff0000")
    lines = chart.render([s], 30, 7, y_suffix="%", bounds=(0, 100), x_label="step")
    labelled = {i: line.plain[:6].strip() for i, line in enumerate(lines[:-1])
                if line.plain[7] == "┤"}
    fr = chart.frame([s], 30 - chart.LABEL_W - 1, 6, bounds=(0, 100))
    assert labelled == {fr.py(v) // 4: scale.fmt(v, "%") for v in scale.ticks(fr.y0, fr.y1, 3)}
    assert lines[-1].plain.endswith(" step")


def test_a_band_is_filled_between_lo_and_hi_under_its_mean():
    s = chart.Series("g", [0, 10], [50.0, 50.0], "#4e79a7", lo=[40.0, 40.0], hi=[60.0, 60.0])
    lines = chart.render([s], 40, 9, bounds=(0, 100))
    fill = chart.lighten("#4e79a7", 0.6)
    colours = [{str(sp.style.color.name) for sp in line.spans
                if isinstance(sp.style, Style) and sp.style.color} for line in lines[:-1]]
    assert all(c for c in colours)                  # 40..60 spans the whole fitted range
    assert any("#4e79a7" in c for c in colours) and any(fill in c for c in colours)


def test_cursor_highlights_its_column_and_reads_every_series():
    a = chart.Series("a", [0, 5, 10], [1.0, 2.0, 3.0], "#ff0000")
    b = chart.Series("b", [0, 4, 8], [9.0, None, 7.0], "#00ff00")
    lines = chart.render([a, b], 40, 6, cursor=5.0)
    fr = chart.frame([a, b], 40 - chart.LABEL_W - 1, 5)
    col = chart.LABEL_W + 1 + fr.px(5.0) // 2
    for line in lines[:-1]:
        styles = [sp.style for sp in line.spans if sp.start <= col < sp.end]
        assert any(isinstance(st, Style) and st.bgcolor for st in styles)
    read = {s.label: (x, y) for s, x, y in chart.readout([a, b], 5.0)}
    assert read == {"a": (5, 2.0), "b": (8, 7.0)}      # b's missing point at 4 is skipped


def test_no_finite_values_says_why():
    lines = chart.render([chart.Series("loss", [1, 2], [float("nan"), None], "#fff")], 30, 4,
                         empty="no finite loss (diverged)")
    assert "no finite loss" in lines[0].plain and len(lines) == 4


def test_layer_palette_is_not_the_run_palette():
    layers = [chart.layer_colour(i, 4) for i in range(4)]
    assert len(set(layers)) == 4 and not set(layers) & set(chart.PALETTE)


# --- x axes ------------------------------------------------------------------------------------
def _events_of(rule="fa", seed=0, steps=30):
    return _events(_config("r", rule, {"name": "mlp"}, seed=seed), steps, 2.0, "done")


def test_x_axes_map_steps():
    evs = _events_of()
    assert xaxis.x_axis(evs, "step")(15) == 15.0
    assert xaxis.x_axis(evs, "epoch")(15) == pytest.approx(1.5)       # 10 steps per epoch
    wall = xaxis.x_axis(evs, "wall")
    t = {e["step"]: e["t"] for e in evs if "step" in e}
    assert wall(30) == pytest.approx((t[30] - evs[0]["t"]) / 60)
    val = xaxis.x_axis(evs, "val_acc")
    accs = {e["step"]: e["acc"] for e in evs if e["type"] == "eval"}
    assert val(5) is None                               # before the first evaluation
    assert val(15) == pytest.approx(100 * accs[10])     # best reached so far
    assert val(30) == pytest.approx(100 * max(accs.values()))
    with pytest.raises(ValueError):
        xaxis.x_axis(evs, "time")


def test_wall_axis_leaves_out_the_time_a_run_was_stopped():
    evs = [{"type": "start", "t": 0.0}, {"type": "train", "step": 10, "t": 60.0},
           {"type": "resume", "step": 10, "t": 3600.0}, {"type": "train", "step": 20, "t": 3660.0}]
    wall = xaxis.x_axis(evs, "wall")
    assert wall(10) == pytest.approx(1.0) and wall(20) == pytest.approx(2.0)


# --- seeds as bands ----------------------------------------------------------------------------
def test_seed_groups_only_within_one_sweep_and_same_config():
    cfg = lambda name, seed, lr=0.05: {"run": {"name": name, "seed": seed, "device": "cpu"},  # noqa: E731
                                       "optim": {"lr": lr}}
    configs = {"s-seed=0": cfg("s-seed=0", 0), "s-seed=1": cfg("s-seed=1", 1),
               "s-lr=0.1-seed=0": cfg("s-lr=0.1-seed=0", 0, 0.1),
               "other-seed=0": cfg("other-seed=0", 0), "single": cfg("single", 3)}
    assert bands.seed_groups(configs) == [("s", ["s-seed=0", "s-seed=1"]),
                                          ("s-lr=0.1-seed=0", ["s-lr=0.1-seed=0"]),
                                          ("other-seed=0", ["other-seed=0"]),
                                          ("single", ["single"])]


def test_band_is_mean_and_sample_std_per_x():
    b = bands.band([([0, 1, 2], [1.0, 2.0, 3.0]), ([0, 1, 2], [3.0, 4.0, 5.0]),
                    ([0, 1], [2.0, None])])
    assert b.xs == [0, 1, 2] and b.n == [3, 2, 2]
    assert b.mean == [2.0, 3.0, 4.0]
    assert b.std == pytest.approx([1.0, statistics.stdev([2.0, 4.0]), statistics.stdev([3, 5])])
    assert b.lo[0] == 1.0 and b.hi[0] == 3.0
    one = bands.band([([0, 2], [1.0, 3.0]), ([1], [5.0])])      # interpolated onto the union
    assert one.xs == [0, 1, 2] and one.mean == [1.0, 3.5, 3.0] and one.n == [1, 2, 1]


def test_curve_series_in_percent_with_bands(tmp_path):
    events = {f"fa-seed={s}": _events_of(seed=s) for s in range(3)}
    configs = {n: _config(n, "fa", {"name": "mlp"}, seed=int(n[-1])) for n in events}
    groups = entries(list(events), configs, bands=True)
    assert groups == [("fa", list(events))]
    (train,) = curve_series(events, "acc", ("train",), "step", groups)
    per_run = [[100 * e["acc"] for e in evs if e["type"] == "train"] for evs in events.values()]
    assert train.ys == pytest.approx([statistics.fmean(v) for v in zip(*per_run)])
    assert train.hi[0] - train.ys[0] == pytest.approx(statistics.stdev([r[0] for r in per_run]))
    separate = curve_series(events, "acc", ("train",), "step", entries(list(events), configs, False))
    assert len(separate) == 3 and all(s.lo is None for s in separate)


def test_rank_lines_rule_and_bp_per_layer():
    evs = _events_of()
    rule, bp = rank_lines(evs, ("erank_err", "erank_err_bp"))
    assert [s.label for s in rule] == [s.label for s in bp] == ["fc1", "fc2", "head"]
    diag = [e for e in evs if e["type"] == "diag"]
    assert rule[0].ys == [e["layers"]["fc1"]["erank_err"] for e in diag]
    assert bp[2].ys == [e["layers"]["head"]["erank_err_bp"] for e in diag]
    assert rule[0].colour == chart.layer_colour(0, 3)
    # on the val-accuracy axis, diagnostics before the first evaluation have no x
    assert len(layer_lines(evs, "erank_err", "val_acc")[0].xs) == len(diag) - 1
    assert math.isclose(layer_lines(evs, "erank_err", "epoch")[0].xs[-1], 3.0)


def test_throughput_and_gpu_memory_come_from_the_latest_train_event():
    from fa_tui.core.runtable import cells, throughput
    events = [{"type": "train", "samples_per_s": 100.0},
              {"type": "train", "samples_per_s": 250.0, "gpu_mem_mib": 812.5},
              {"type": "eval", "acc": 0.5}, {"type": "train", "samples_per_s": None}]
    assert throughput(events) == (250.0, 812.5)
    assert throughput([{"type": "train", "samples_per_s": 50.0}], (250.0, 812.5)) == (50.0, 812.5)
    from fa_tui.core import runtable
    row = runtable.RunRow("r", "failed", "fa", "mlp", "synthetic", "sgd", "none", 3, 10, None,
                          None, "cpu", "RuntimeError: boom\nTraceback ...\n  line", None,
                          speed=1234.0, gpu_mem=812.5)
    shown = cells(row, False)
    cols = [k for k, _ in runtable.COLUMNS]
    assert shown[cols.index("speed")] == "1,234" and shown[cols.index("gpu_mem")] == "812"
    assert shown[cols.index("reason")].plain == "RuntimeError: boom"


def test_log_axis_ticks_are_decades_or_round_values():
    wide = chart.Frame(0, 1, math.log10(0.05), math.log10(20.0), 10, 20)
    assert chart.y_ticks(wide, 3, log_y=True) == [-1.0, 0.0, 1.0]
    narrow = chart.Frame(0, 1, math.log10(0.9), math.log10(1.7), 10, 20)
    assert [round(10 ** v, 9) for v in chart.y_ticks(narrow, 2, log_y=True)] == [1.0, 1.5]


def test_fmt_never_cuts_a_number_in_half():
    """86,508 samples/s once read "8.651e" (the cut of 8.651e+04): every value fits in six
    characters and reads back within the precision it shows."""
    for v in (86508.0, 12345.6, 1500.0, 999.5, 99999.0, 100000.0, 0.5, 0.00012, -2500.0, 3.14159):
        text = scale.fmt(v)
        assert len(text) <= 6, text
        assert abs(float(text) - v) <= max(abs(v) * 0.05, 0.5e-3), (v, text)
