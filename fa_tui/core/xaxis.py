"""What a curve is plotted against: optimiser step, epoch, wall time or validation accuracy.

Every metric is recorded at a step; an x axis is a map from a run's steps to another clock,
built from the same run's events. Validation accuracy as x is how ranks and angles of rules
that learn at different speeds are compared at matched accuracy: the x of a step is the best
val accuracy reached by then (monotone, so a curve never folds back on itself).

Pure functions of the event list (no Textual), shared by the Monitor, the comparison view and
`fa-tui export --plot`.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

#: axis name -> label (with unit) under the chart
X_AXES: dict[str, str] = {"step": "step", "epoch": "epoch", "wall": "wall time (min)",
                          "val_acc": "best val accuracy so far (%)"}


@dataclass(frozen=True)
class XAxis:
    """A step -> x map: piecewise linear through (`steps`, `xs`), constant past the last
    point; `hold` makes it a step function instead (x of the latest point at or before a
    step; None before the first), which is what "accuracy reached so far" means."""
    name: str
    steps: Sequence[float] = field(default_factory=list)
    xs: Sequence[float] = field(default_factory=list)
    hold: bool = False

    @property
    def label(self) -> str:
        return X_AXES[self.name]

    def __call__(self, step: float) -> float | None:
        if self.name == "step":
            return float(step)
        if not self.steps:
            return None
        i = bisect.bisect_right(self.steps, step)
        if self.hold:
            return self.xs[i - 1] if i else None
        if i == 0:
            return self.xs[0] if step >= self.steps[0] else None
        if i == len(self.steps):
            return self.xs[-1] if step == self.steps[-1] else None
        s0, s1, x0, x1 = self.steps[i - 1], self.steps[i], self.xs[i - 1], self.xs[i]
        return x0 + (x1 - x0) * (step - s0) / (s1 - s0) if s1 > s0 else x1


def _epoch_axis(events: Sequence[dict]) -> XAxis:
    start = next((e for e in events if e.get("type") == "start"), None) or {}
    per = start.get("steps_per_epoch")
    last = max((e.get("step", 0) for e in events if isinstance(e.get("step"), (int, float))),
               default=0)
    if isinstance(per, (int, float)) and per > 0:
        return XAxis("epoch", [0.0, float(max(last, per))], [0.0, max(last, per) / per])
    pts = [(0.0, 0.0)] + [(float(e["step"]), float(e["epoch"])) for e in events
                          if e.get("type") == "epoch" and isinstance(e.get("step"), (int, float))
                          and isinstance(e.get("epoch"), (int, float))]
    pts = sorted(dict(pts).items())
    return XAxis("epoch", [s for s, _ in pts], [x for _, x in pts])


def _wall_axis(events: Sequence[dict]) -> XAxis:
    """Minutes of training: time since the first event, minus the gaps between an attempt's
    last event and the `resume` event that continued it (time spent stopped)."""
    t0 = prev = None
    paused = 0.0
    pts: dict[float, float] = {}
    for e in events:
        t = e.get("t")
        if not isinstance(t, (int, float)):
            continue
        if t0 is None:
            t0 = prev = t
        if e.get("type") == "resume" and prev is not None:
            paused += max(t - prev, 0.0)
        prev = t
        step = e.get("step")
        if isinstance(step, (int, float)):
            pts[float(step)] = (t - t0 - paused) / 60.0
    pts_sorted = sorted(pts.items())
    # a resume recomputes steps: keep wall time monotone in the step
    steps, xs = [], []
    for s, x in pts_sorted:
        steps.append(s)
        xs.append(max(x, xs[-1]) if xs else x)
    return XAxis("wall", steps, xs)


def _val_acc_axis(events: Sequence[dict]) -> XAxis:
    best = None
    pts: dict[float, float] = {}
    for e in sorted((e for e in events if e.get("type") == "eval"
                     and e.get("split", "val") == "val"
                     and isinstance(e.get("acc"), (int, float))
                     and isinstance(e.get("step"), (int, float))), key=lambda e: e["step"]):
        best = e["acc"] if best is None else max(best, e["acc"])
        pts[float(e["step"])] = 100.0 * best
    items = sorted(pts.items())
    return XAxis("val_acc", [s for s, _ in items], [x for _, x in items], hold=True)


def x_axis(events: Sequence[dict], name: str) -> XAxis:
    """The step -> x map of one run for axis `name` (one of X_AXES)."""
    if name not in X_AXES:
        raise ValueError(f"unknown x axis {name!r}: expected one of {', '.join(X_AXES)}")
    if name == "step":
        return XAxis("step")
    return {"epoch": _epoch_axis, "wall": _wall_axis, "val_acc": _val_acc_axis}[name](events)


def remap(steps: Sequence[float], ys: Sequence[float], axis: XAxis
          ) -> tuple[list[float], list[float]]:
    """(xs, ys) on `axis`, dropping the points it cannot place (before the first val eval)."""
    out_x, out_y = [], []
    for s, y in zip(steps, ys):
        x = axis(s)
        if x is not None:
            out_x.append(x)
            out_y.append(y)
    return out_x, out_y
