"""Seeds as bands: which runs are repeats of one condition, and their curves as mean ± std.

A result is reported as mean ± standard deviation over seeds, so a sweep over seeds is drawn
as one line with a band rather than N lines. Two runs are seeds of one condition when they
belong to the same sweep (their names agree once the `seed=N` tag is removed) and their
configs agree on everything but the seed and the keys that do not define an experiment
(name, device, data location). Pure functions: used by the Monitor, the comparison view and
`fa-tui export --plot`.
"""
from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fa_tui.core import grouping


def sweep_name(run_name: str) -> str:
    """`fa-lr=0.1-seed=3` -> `fa-lr=0.1`: the name shared by the seeds of one condition."""
    return grouping.sweep_name(run_name) or run_name


def seed_groups(configs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """(label, run names) per condition, in the order runs first appear, by the one grouping
    rule (fa_tui/core/grouping.py, which export's tables use too). A run alone in its
    condition is a group of one, labelled with its own name; a group's label is the shared
    sweep name. A seed that appears twice in a group is drawn once (not counted twice)."""
    names = list(configs)
    out = []
    for g in grouping.seed_groups(names, [configs[n] for n in names]):
        members = [names[i] for i in g.members]
        out.append((sweep_name(members[0]) if len(members) > 1 else members[0], members))
    return out


@dataclass(frozen=True)
class Band:
    """mean ± sample std at each x of the union of the members' xs; `n` is how many members
    cover that x (a seed that has not got that far yet does not count)."""
    xs: list[float]
    mean: list[float]
    std: list[float]
    n: list[int]

    @property
    def lo(self) -> list[float]:
        return [m - s for m, s in zip(self.mean, self.std)]

    @property
    def hi(self) -> list[float]:
        return [m + s for m, s in zip(self.mean, self.std)]


def _interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """ys at x, linear between neighbours; None outside [xs[0], xs[-1]]."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def band(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Band:
    """mean ± std of `curves` ((xs, ys) each, xs increasing). Seeds of one condition log at
    the same steps, so on the step axis this is the plain per-step statistic; on other axes
    the members are interpolated onto the union of their xs."""
    clean = []
    for xs, ys in curves:
        pts = sorted({x: y for x, y in zip(xs, ys) if y is not None and y == y}.items())
        if pts:
            clean.append(([x for x, _ in pts], [y for _, y in pts]))
    grid = sorted({x for xs, _ in clean for x in xs})
    out = Band([], [], [], [])
    for x in grid:
        vals = [v for xs, ys in clean if (v := _interp(xs, ys, x)) is not None]
        if not vals:
            continue
        out.xs.append(x)
        out.mean.append(statistics.fmean(vals))
        out.std.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        out.n.append(len(vals))
    return out
