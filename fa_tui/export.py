"""Tables, curves and plots of runs for papers and scripts (`fa-tui export`). Torch-free.

Summary table: one row per run — the key config fields (rule, model, data, optim, norm, lr,
plus every other config key that differs between the exported runs), the state, the test and
validation accuracies and, per weight layer, the final diagnostics of summary.json. Runs whose
come from one sweep and differ only by seed form one row with mean ± sample std and n, which is
what a paper reports (fa_tui/core/grouping.py; a repeated seed is flagged, never counted twice).
A run that cannot be read is skipped and named in `Table.skipped`. A run without summary.json (still running, or killed) is exported from its events,
so no metric is lost.

Curves: one row per train/eval/diag/test event, diag layers flattened to `layer.metric`
columns, with an `x` column for the chosen x-axis (X_AXES). Formats: json, csv, md (pipe table) and tex (booktabs tabular); md and tex show
accuracies in percent, json and csv keep raw fractions at full precision.

Length: the two tables, their four renderers and the plot share the column and number
formatting rules, which is the point of keeping them in one module.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from fa_contract.dotted import flatten as _flatten
from fa_contract.rundir import CONFIG, CORRUPT, RunDir, iter_metric, list_runs, resolve_run
from fa_tui.core.grouping import (NOT_CONDITION_SECTIONS, NOT_CONDITIONS, Stat, Table,  # noqa: F401
                                  seed_groups, sweep_name)

FORMATS = ("json", "csv", "md", "tex")
#: column -> dotted config key, always shown
KEY_COLUMNS = {"rule": "rule.name", "model": "model.name", "data": "data.name",
               "optim": "optim.name", "norm": "norm.name", "lr": "optim.lr"}
RUN_METRICS = ("test_acc", "best_val_acc", "final_val_acc")
#: the per-layer diagnostics that tables show, in groups (`fa-tui show` prints one table each)
LAYER_GROUPS = {
    "error ranks, per probe batch": ("erank_err", "erank_err_bp", "erank_err_rn",
                                     "erank_err_rn_bp", "erank_sent", "erank_sent_bp"),
    "trajectory ranks, over the window": ("erank_sent_traj", "erank_sent_traj_bp",
                                          "erank_grad_traj", "erank_grad_traj_bp", "erank_disp"),
    "angles (degrees)": ("angle_delta", "angle_grad", "angle_weight"),
}
LAYER_METRICS = tuple(m for group in LAYER_GROUPS.values() for m in group)
#: what curves and plots can be drawn against: training step, epoch (fractional), wall time
#: since the run's first event (s), or the latest validation accuracy (to compare runs at
#: matched accuracy rather than at matched step)
X_AXES = ("step", "epoch", "wall", "val_acc")
CURVE_EVENTS = ("train", "eval", "diag", "test")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


class ExportError(Exception):
    """A mistake the user can fix (unknown run, bad output name, matplotlib missing)."""


# --- which runs -----------------------------------------------------------------------------
def find_runs(targets: Iterable[str | Path], runs_dir: Path | None = None) -> list[RunDir]:
    """Each target is a run directory, a directory of runs (all of them, by name), or the name
    of a run under `runs_dir`. Duplicates are dropped, order is kept."""
    found: dict[Path, RunDir] = {}
    for target in targets:
        path = Path(target)
        run = resolve_run(target, Path(runs_dir)) if runs_dir is not None else None
        if run is None and (path / CONFIG).is_file():
            run = RunDir(path)
        if run is not None:            # the same rule as `show` (fa_contract.rundir.resolve_run)
            runs = [run]
        elif path.is_dir():
            runs = sorted(list_runs(path), key=lambda r: r.name)
            if not runs:
                raise ExportError(f"{target}: no runs in this directory (a run directory holds "
                                  f"{CONFIG})")
        else:
            where = f" nor a run under {runs_dir}" if runs_dir is not None else ""
            raise ExportError(f"{target}: not a run directory, a directory of runs{where}. "
                              f"`fa-tui ls` lists the runs.")
        for run in runs:
            found.setdefault(run.path.resolve(), run)
    return list(found.values())


def record(run: RunDir) -> dict:
    """summary.json plus name, state (a dead worker reads as failed, an unreadable run as
    corrupt), config.toml and `problem` (what could not be read, or None); for a run without
    a readable summary, the same figures recovered from its events. Never raises."""
    view = run.view()
    summary = view.summary or _from_events(run.read_events())
    return {**summary, "name": run.name, "status": view.status.state,
            "reason": view.status.reason or summary.get("reason"), "config": view.config,
            "problem": view.problem, "slurm_job": view.status.slurm_job}


def _from_events(events: list[dict]) -> dict:
    _, accs = iter_metric(events, "eval", "acc")
    test: dict = next((e for e in reversed(events) if e.get("type") == "test"), {})
    diag: dict = next((e for e in reversed(events) if e.get("type") == "diag"), {})
    return {"test_acc": test.get("acc"), "test_loss": test.get("loss"),
            "best_val_acc": max(accs, default=None), "final_val_acc": accs[-1] if accs else None,
            "steps": max((e.get("step", 0) for e in events), default=0),
            "layers": diag.get("layers", {})}


# --- summary table --------------------------------------------------------------------------
def summary_table(runs: Sequence[RunDir], group: bool = True, layers: bool = True) -> Table:
    """One row per condition (mean ± std over seeds) or, with group=False, per run. Runs
    that cannot be read are left out and named in `notes`."""
    records, notes = [], []
    for run in runs:
        rec = record(run)
        if rec["status"] == CORRUPT:
            notes.append(f"skipped {run.path}: {rec['reason']}")
        else:
            records.append(rec)
    flats = [{k: v for k, v in _flatten(r["config"]).items()
              if not k.startswith(NOT_CONDITION_SECTIONS)} for r in records]
    config_cols = dict(KEY_COLUMNS)
    shown = set(KEY_COLUMNS.values()) | set(NOT_CONDITIONS)
    keys = list(dict.fromkeys(k for flat in flats for k in flat if k not in shown))
    varying = [k for k in keys if len({_key(flat.get(k)) for flat in flats}) > 1]
    short = Counter(k.rsplit(".", 1)[1] for k in varying)
    taken = {"run", "n", "seeds", "seed", "status", *RUN_METRICS, *KEY_COLUMNS}
    for k in varying:
        label = k.rsplit(".", 1)[1]
        config_cols[k if short[label] > 1 or label in taken else label] = k

    layer_cols = []
    if layers:
        names = dict.fromkeys(name for r in records for name in (r.get("layers") or {}))
        layer_cols = [f"{name}.{m}" for name in names for m in LAYER_METRICS
                      if any(_layer_value(r, name, m) is not None for r in records)]

    if group:
        groups = seed_groups([r["name"] for r in records], [r["config"] for r in records])
        for g in groups:
            for i in g.repeated:
                notes.append(f"{records[i]['name']}: seed {flats[i].get('run.seed')} of "
                             f"{g.name} is already counted; not counted again")
        member_lists = [g.members for g in groups]
    else:
        member_lists = [[i] for i in range(len(records))]

    seed_cols = ["n", "seeds"] if group else ["seed"]
    slurm_cols = ["slurm_job"] if any(r.get("slurm_job") for r in records) else []
    table = Table(["run", *config_cols, *seed_cols, "status", *slurm_cols, *RUN_METRICS,
                   *layer_cols], notes=notes)
    for members in member_lists:
        recs = [records[i] for i in members]
        first = flats[members[0]]
        row: dict[str, Any] = {"run": _group_name([r["name"] for r in recs]) if group
                               else recs[0]["name"]}
        row.update({col: first.get(key) for col, key in config_cols.items()})
        seeds = [flats[i].get("run.seed") for i in members]
        if group:
            row.update(n=len(recs), seeds=",".join(str(s) for s in seeds),
                       runs=[r["name"] for r in recs])
        else:
            row["seed"] = seeds[0]
        row["status"] = _states([r["status"] for r in recs])
        if slurm_cols:
            row["slurm_job"] = ",".join(r["slurm_job"] or "local" for r in recs)
        for m in RUN_METRICS:
            row[m] = Stat.of(r.get(m) for r in recs) if group else recs[0].get(m)
        for col in layer_cols:
            name, m = col.rsplit(".", 1)
            vals = [_layer_value(r, name, m) for r in recs]
            row[col] = Stat.of(vals) if group else vals[0]
        table.rows.append(row)
    return table


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _layer_value(rec: dict, layer: str, metric: str) -> float | None:
    return ((rec.get("layers") or {}).get(layer) or {}).get(metric)


def _group_name(names: list[str]) -> str:
    """The members' common name once their seed label is removed, else the first name."""
    stripped = {sweep_name(n) for n in names}
    return stripped.pop() if len(stripped) == 1 else names[0]


def _states(states: list[str]) -> str:
    counts = Counter(states)
    if len(counts) == 1:
        return states[0]
    return ", ".join(f"{s} {n}" for s, n in counts.most_common())


# --- curves ---------------------------------------------------------------------------------
def with_x(events: Sequence[dict], axis: str) -> list[tuple[dict, float | None]]:
    """Every event with its x value on `axis` (X_AXES); None where it has none (before the
    first validation for val_acc, an event without a time for wall)."""
    if axis not in X_AXES:
        raise ExportError(f"unknown x-axis '{axis}': expected one of {', '.join(X_AXES)}")
    start = next((e for e in events if e.get("type") == "start"), {})
    per_epoch = start.get("steps_per_epoch")
    t0 = next((e["t"] for e in events if isinstance(e.get("t"), (int, float))), None)
    val: float | None = None
    out = []
    for e in events:
        if e.get("type") == "eval" and e.get("split", "val") == "val":
            val = e.get("acc")
        step = e.get("step")
        if axis == "step":
            x = step
        elif axis == "epoch":
            x = step / per_epoch if per_epoch and isinstance(step, (int, float)) else e.get("epoch")
        elif axis == "wall":
            t = e.get("t")
            x = t - t0 if isinstance(t, (int, float)) and t0 is not None else None
        else:
            x = val
        out.append((e, x))
    return out


def curve_table(runs: Sequence[RunDir], x: str = "step") -> Table:
    """One row per train/eval/diag/test event of every run, in order; a diag event's layers
    become `layer.metric` columns, `x` is the event's value on the chosen axis (X_AXES). A
    resumed run reads as one uninterrupted history."""
    table = Table(["run", "type", "x", "step", "epoch", "t"])
    seen = set(table.columns)
    for run in runs:
        for event, xv in with_x(run.read_events(), x):
            if event.get("type") not in CURVE_EVENTS:
                continue
            row = {"run": run.name, "x": xv}
            for k, v in event.items():
                if k == "layers" and isinstance(v, dict):
                    for layer, metrics in v.items():
                        row.update({f"{layer}.{m}": x for m, x in metrics.items()})
                elif k != "v":
                    row[k] = v
            for col in row:
                if col not in seen:
                    seen.add(col)
                    table.columns.append(col)
            table.rows.append(row)
    return table


# --- rendering ------------------------------------------------------------------------------
def render(table: Table, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format '{fmt}': expected one of {', '.join(FORMATS)}")
    return {"json": _json, "csv": _csv, "md": _markdown, "tex": _latex}[fmt](table)


def _json(table: Table) -> str:
    def plain(v: Any) -> Any:
        if isinstance(v, Stat):
            return {"mean": v.mean, "std": v.std, "n": v.n}
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v
    rows = [{k: plain(v) for k, v in row.items()} for row in table.rows]
    return json.dumps(rows, indent=1, allow_nan=False, default=str) + "\n"


def _csv(table: Table) -> str:
    """A Stat column becomes `col` (the mean) and `col_std`."""
    stats = {c for c in table.columns if any(isinstance(r.get(c), Stat) for r in table.rows)}
    header = [h for c in table.columns for h in ((c, f"{c}_std") if c in stats else (c,))]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        cells = []
        for c in table.columns:
            v = row.get(c)
            if c in stats:
                cells += [_raw(v.mean), _raw(v.std)] if isinstance(v, Stat) else [_raw(v), ""]
            else:
                cells.append(_raw(v))
        writer.writerow(cells)
    return buf.getvalue()


def _raw(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return ",".join(_raw(x) for x in v)
    return str(v)


def _markdown(table: Table) -> str:
    numeric = _numeric_columns(table)
    lines = ["| " + " | ".join(_header(c) for c in table.columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in table.columns) + "|"]
    for row in table.rows:
        cells = [_shown(c, row.get(c), "md").replace("|", "\\|") for c in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex(table: Table) -> str:
    numeric = _numeric_columns(table)
    spec = "".join("r" if c in numeric else "l" for c in table.columns)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(_tex_escape(_header(c)) for c in table.columns) + " \\\\", "\\midrule"]
    for row in table.rows:
        lines.append(" & ".join(_shown(c, row.get(c), "tex") for c in table.columns) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _numeric_columns(table: Table) -> set[str]:
    return {c for c in table.columns
            if any(isinstance(r.get(c), (int, float, Stat)) and not isinstance(r.get(c), bool)
                   for r in table.rows)}


def _header(col: str) -> str:
    return f"{col} (%)" if _is_acc(col) else col


def _is_acc(col: str) -> bool:
    return col.rsplit(".", 1)[-1].endswith("acc")


def _number(col: str, x: float | None) -> str:
    """Accuracies in percent (2 decimals), angles in degrees (1), ranks (2), else 4 digits."""
    if x is None:
        return "–"
    metric = col.rsplit(".", 1)[-1]
    if _is_acc(col):
        return f"{100 * x:.2f}"
    if metric.startswith("angle"):
        return f"{x:.1f}"
    if metric.startswith(("erank", "pr_")):
        return f"{x:.2f}"
    return f"{x:.4g}"


def _shown(col: str, v: Any, fmt: str) -> str:
    if isinstance(v, Stat):
        if v.mean is None:
            return "–"
        if v.std is None:
            return _number(col, v.mean)
        mean, std = _number(col, v.mean), _number(col, v.std)
        return f"${mean} \\pm {std}$" if fmt == "tex" else f"{mean} ± {std}"
    if isinstance(v, float):
        return _number(col, v)
    text = "–" if v is None else _raw(v)
    return _tex_escape(text) if fmt == "tex" else text


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


# --- plot ---------------------------------------------------------------------------------
def _diag_curve(events: list[dict], layer: str, metric: str) -> tuple[list[float], list[float]]:
    pts = [(e["step"], (e.get("layers") or {}).get(layer, {}).get(metric))
           for e in events if e.get("type") == "diag" and isinstance(e.get("step"), (int, float))
           and isinstance((e.get("layers") or {}).get(layer), dict)]
    pts = [(x, y) for x, y in pts if isinstance(y, (int, float))]
    return [x for x, _ in pts], [y for _, y in pts]


def plot(runs: Sequence[RunDir], path: Path, x: str = "step", rank_metric: str = "erank_err",
         group: bool = True) -> None:
    """Accuracy (%), per-layer `rank_metric` (e.g. erank_sent_traj; solid) with its BP twin on
    the same batch where one is recorded (`<metric>_bp`, dashed), and per-layer angle to the
    BP error, against `x` (step, epoch, wall, val_acc: fa_tui.core.xaxis). With `group`, runs that differ only in seed (fa_tui.core.bands) are
    one mean line with a ± std band. One colour per run or group (per layer when there is
    one); with several, deeper layers are drawn more opaque. matplotlib is an optional
    extra, imported only here."""
    from fa_tui.core.bands import band, seed_groups
    from fa_tui.core.xaxis import X_AXES, remap, x_axis
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise ExportError(f"--plot {path}: the file name must end in "
                          f"{', '.join(PLOT_SUFFIXES)}")
    if x not in X_AXES:
        raise ExportError(f"unknown x axis '{x}': expected one of {', '.join(X_AXES)}")
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ExportError("--plot needs matplotlib, an optional extra: "
                          "pip install 'fa-tui[plot]'") from None
    events = {run.name: run.read_events() for run in runs}
    configs = {}
    for run in runs:            # what can be read (never raises): a broken run is its own group
        config, _ = run.config_or_problem()
        configs[run.name] = config or {"run": {"name": run.name}}
    groups = seed_groups(configs) if group else [(r.name, [r.name]) for r in runs]
    axes = {name: x_axis(evs, x) for name, evs in events.items()}

    def draw(ax, curves, scale=1.0, **style):
        curves = [remap(xs, [scale * y for y in ys], axes[n]) for n, (xs, ys) in curves]
        curves = [c for c in curves if c[0]]
        if not curves:
            return
        if len(curves) == 1:
            ax.plot(*curves[0], **style)
            return
        b = band(curves)
        ax.plot(b.xs, b.mean, **style)
        ax.fill_between(b.xs, b.lo, b.hi, color=style.get("color"), alpha=0.18, linewidth=0)

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    acc_ax, rank_ax, angle_ax = fig.subplots(1, 3)
    run_colors = matplotlib.colormaps["tab10"]
    layer_colors = matplotlib.colormaps["viridis"]
    for i, (label, members) in enumerate(groups):
        color = run_colors(i % 10)
        tag = f"{label} (n={len(members)}, mean ± std)" if len(members) > 1 else label
        draw(acc_ax, [(n, iter_metric(events[n], "eval", "acc")) for n in members], 100.0,
             color=color, marker=".", label=f"{tag} val")
        draw(acc_ax, [(n, iter_metric(events[n], "train", "acc")) for n in members], 100.0,
             color=color, alpha=0.5, linestyle=":", label=f"{label} train")
        names = list(dict.fromkeys(name for n in members for e in events[n]
                                   if e.get("type") == "diag" for name in (e.get("layers") or {})))
        for j, layer in enumerate(names):
            depth = (j + 1) / len(names)
            style = ({"color": layer_colors(j / max(len(names) - 1, 1)), "label": layer}
                     if len(groups) == 1 else
                     {"color": color, "alpha": 0.25 + 0.75 * depth,
                      "label": tag if j == len(names) - 1 else None})
            for ax, metric in ((rank_ax, rank_metric), (angle_ax, "angle_delta")):
                draw(ax, [(n, _diag_curve(events[n], layer, metric)) for n in members], **style)
            bp_style = {**style, "linestyle": "--", "label": None}
            draw(rank_ax, [(n, _diag_curve(events[n], layer, f"{rank_metric}_bp"))
                           for n in members], **bp_style)
    xlabel = X_AXES[x]
    acc_ax.set(title="accuracy", xlabel=xlabel, ylabel="%")
    rank_ax.set(title=f"effective rank ({rank_metric}; dashed: BP where recorded)",
                xlabel=xlabel)
    angle_ax.set(title="angle to the BP error (angle_delta)", xlabel=xlabel, ylabel="degrees")
    for ax in (acc_ax, rank_ax, angle_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    from fa_contract.rundir import write_atomic
    buf = io.BytesIO()          # rendered in memory, then written atomically: no partial file
    fig.savefig(buf, dpi=150, format=Path(path).suffix.lstrip(".") or "png")
    write_atomic(path, buf.getvalue())


def free_name(path: Path) -> Path:
    """`path`, or `stem-2.suffix`, `stem-3.suffix`… : the first name not taken."""
    path = Path(path)
    k = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


def check_overwrite(paths: Iterable[Path], force: bool) -> None:
    """Refuse to replace an existing file unless `force`: an export never silently
    overwrites a table or figure that may already be in a paper's folder."""
    taken = [str(p) for p in paths if p is not None and Path(p).exists()]
    if taken and not force:
        raise ExportError(f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}: "
                          f"pass --force to overwrite, or choose another name (e.g. "
                          f"{free_name(Path(taken[0]))})")
