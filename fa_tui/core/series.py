"""Metric series out of a run's events (docs/run-directory.md): curves for the charts and
layer × time grids for the heatmaps. Pure functions of the event list, so a resumed run
(whose superseded events EventLog already dropped) plots as one history."""
from __future__ import annotations

from typing import Iterable, Sequence

from fa_contract.rundir import iter_metric

#: curve splits the Monitor can show: (label, event type, eval split or None)
SPLITS = {"train": ("train", None), "val": ("eval", "val")}


def curve(events: Iterable[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` (loss or acc) for the train stream or the val evaluations."""
    etype, which = SPLITS[split]
    if which is not None:
        events = (e for e in events if e.get("split", which) == which)
    return iter_metric(events, etype, key)


def first(events: Sequence[dict], etype: str) -> dict | None:
    return next((e for e in events if e.get("type") == etype), None)


def last(events: Sequence[dict], etype: str) -> dict | None:
    return next((e for e in reversed(events) if e.get("type") == etype), None)


def layer_names(events: Sequence[dict]) -> list[str]:
    """Weight layers in forward order: from `start`, else from the first `diag` event."""
    start = first(events, "start")
    if start and start.get("layers"):
        return [layer["name"] for layer in start["layers"]]
    diag = first(events, "diag")
    return list(diag.get("layers", {})) if diag else []


def diag_metrics(events: Iterable[dict]) -> list[str]:
    """Every per-layer metric name present in the diag events, in first-seen order."""
    seen: dict[str, None] = {}
    for e in events:
        if e.get("type") == "diag":
            for metrics in e.get("layers", {}).values():
                seen.update(dict.fromkeys(metrics))
    return list(seen)


#: the rank metrics the `v` key cycles through first (docs/science.md): the error signal, the
#: error sent down, their trajectories, the row-normalised forms, then the rest by name
RANK_ORDER = ("erank_err", "erank_sent", "erank_sent_traj", "erank_grad_traj", "erank_err_rn",
              "erank_sent_rn", "erank_disp")


def rank_variants(metrics: Sequence[str]) -> list[tuple[str, str | None]]:
    """(rule metric, its BP counterpart or None) for every rank-like metric (effective rank
    `erank_*`, participation ratio `pr_*`), the error signal first because the science asks
    about it first."""
    names = [m for m in metrics if m.startswith(("erank", "pr_")) and not m.endswith("_bp")]
    first = {m: i for i, m in enumerate(RANK_ORDER)}
    names.sort(key=lambda m: (first.get(m, len(first)), not m.startswith("erank"), m))
    return [(m, m + "_bp" if m + "_bp" in metrics else None) for m in names]


def angle_variants(metrics: Sequence[str]) -> list[str]:
    """Alignment angles, delta first, then grad, then weight, then the rest."""
    order = {"angle_delta": 0, "angle_grad": 1, "angle_weight": 2}
    return sorted((m for m in metrics if m.startswith("angle")),
                  key=lambda m: (order.get(m, 3), m))


def diag_grid(events: Iterable[dict], metric: str,
              layers: Sequence[str]) -> tuple[list[int], list[list[float | None]]]:
    """(steps, one row per layer of `metric` over time); a value that is absent or null is
    None, so the row stays aligned with the steps."""
    steps: list[int] = []
    rows: list[list[float | None]] = [[] for _ in layers]
    for e in events:
        if e.get("type") != "diag":
            continue
        steps.append(e.get("step", 0))
        per_layer = e.get("layers", {})
        for row, name in zip(rows, layers):
            v = per_layer.get(name, {}).get(metric)
            row.append(float(v) if isinstance(v, (int, float)) else None)
    return steps, rows


def layer_series(events: Iterable[dict], metric: str,
                 layers: Sequence[str]) -> dict[str, tuple[list[int], list[float]]]:
    """Per layer, (steps, values) of `metric` with missing values dropped: for line charts."""
    steps, rows = diag_grid(events, metric, layers)
    out = {}
    for name, row in zip(layers, rows):
        pts = [(s, v) for s, v in zip(steps, row) if v is not None]
        out[name] = ([s for s, _ in pts], [v for _, v in pts])
    return out
