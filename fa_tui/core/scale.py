"""Axes of a chart as plain numbers: what a metric's unit and natural bounds are, a y range
fitted to the data (not to 0), a zoom around a point, and "nice" tick values.

Kept apart from the renderer so that the choices a reader relies on — accuracy in percent on
[0, 100], an angle axis that does not start at 0 when every layer sits near 90° — are tested
as arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Unit:
    """How a metric is shown: axis `label`, `suffix` after a value, a `factor` applied to the
    stored value (fractions -> percent) and the bounds no value can cross."""
    label: str
    suffix: str = ""
    factor: float = 1.0
    lo: float | None = None
    hi: float | None = None


UNITS = {
    "acc": Unit("accuracy (%)", "%", 100.0, 0.0, 100.0),
    "loss": Unit("loss", "", 1.0, 0.0, None),
    "angle": Unit("angle (°)", "°", 1.0, 0.0, 180.0),
    "rank": Unit("effective rank", "", 1.0, 0.0, None),
    "pr": Unit("participation ratio", "", 1.0, 0.0, None),
}


def unit_of(metric: str) -> Unit:
    """The unit of a metric name: `acc`, `val_acc`, `probe_acc` are accuracies; `angle_*`
    angles; `erank_*` ranks; `pr_*` participation ratios; anything else is unitless."""
    if metric.endswith("acc"):
        return UNITS["acc"]
    if metric.startswith("angle"):
        return UNITS["angle"]
    if metric.startswith("erank"):
        return UNITS["rank"]
    if metric.startswith("pr_"):
        return UNITS["pr"]
    if metric.endswith("loss"):
        return UNITS["loss"]
    return Unit(metric)


def fit_range(values: Iterable[float], *, lo: float | None = None, hi: float | None = None,
              pad: float = 0.05) -> tuple[float, float]:
    """(y0, y1) around the finite `values` with `pad` of the span added on each side, kept
    inside the bounds [lo, hi]. A single value (or a flat curve) gets a span of 10 % of its
    size (at least 1e-3), so it sits mid-axis instead of on a made-up range. No data: the
    bounds, else (0, 1)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return (lo if lo is not None else 0.0,
                hi if hi is not None else (lo if lo is not None else 0.0) + 1.0)
    v0, v1 = min(vals), max(vals)
    span = v1 - v0
    if span <= 0:
        span = max(abs(v0) * 0.1, 1e-3)
        v0, v1 = v0 - span / 2, v1 + span / 2
    y0, y1 = v0 - pad * span, v1 + pad * span
    if lo is not None:
        y0 = max(y0, lo)
    if hi is not None:
        y1 = min(y1, hi)
    if y1 <= y0:                               # everything on a bound: open towards the inside
        y0, y1 = (y0, y0 + span) if lo is not None and y0 <= lo else (y1 - span, y1)
    return y0, y1


def zoom(y0: float, y1: float, factor: float, centre: float | None = None) -> tuple[float, float]:
    """The range shrunk `factor` times (>1 zooms in) around `centre` (default the middle),
    kept where it was when `centre` lies outside it."""
    if factor <= 0:
        raise ValueError(f"zoom factor must be positive, not {factor}")
    c = (y0 + y1) / 2 if centre is None else min(max(centre, y0), y1)
    half = (y1 - y0) / 2 / factor
    return c - half, c + half


def nice_step(span: float, n: int) -> float:
    """The step of about `n` ticks over `span`: 1, 2 or 5 times a power of ten."""
    raw = span / max(n, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def ticks(y0: float, y1: float, n: int = 3) -> list[float]:
    """Round values inside [y0, y1], about `n` of them; finer steps are tried until at least
    two fall inside (the two ends only when even that fails)."""
    if y1 <= y0:
        return [y0]
    for k in range(max(n, 1), max(n, 1) + 8):
        step = nice_step(y1 - y0, k)
        first = math.ceil(y0 / step - 1e-9) * step
        out = []
        while first + len(out) * step <= y1 + 1e-9 * step:
            out.append(round(first + len(out) * step, 12))
        if len(out) >= 2:
            return out
    return [y0, y1]


def fmt(v: float, suffix: str = "") -> str:
    """A value in at most 6 characters (plus `suffix`)."""
    if v == 0:
        return "0" + suffix
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-") + suffix
    if abs(v) >= 1e3:        # .4g would switch to 8.651e+04 and the cut leave "8.651e"
        return f"{v:.0f}" + suffix
    return f"{v:.4g}"[:6].rstrip(".") + suffix
