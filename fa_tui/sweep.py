"""The one sweep expander and run namer, shared by presets (`fa-tui run`) and Compose (the
TUI builds a preset layer from its form and calls the same function), so one grid gives the
same runs, in the same order, with the same names wherever it is launched.

Order: seeds outermost, then the other axes in the order they were declared with the last one
varying fastest — every condition of seed 0 comes before any of seed 1, so the first runs of a
queue already compare all conditions. Names: `base-key=value-…-seed=N`, the seed last, each
value as the validated config holds it (so `1e-5` typed in a form and `1e-05` read from TOML
name a run alike), restricted to characters safe in a directory name.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from fa_contract.rundir import safe_name

if TYPE_CHECKING:
    from fa_contract.config import Config

SEEDS_AXIS = "run.seed"   # `seeds = [...]` in [sweep] is this axis


@dataclass(frozen=True)
class PlannedRun:
    name: str                 # also written into config.run.name
    config: Config
    point: dict[str, Any]     # this run's swept values (as validated), by dotted key


def label(value: Any) -> str:
    """A swept value as it appears in a run name."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(label(v) for v in value)
    return "none" if value is None else str(value)


def axis_labels(keys: list[str]) -> dict[str, str]:
    """rule.name -> rule, rule.rank -> rank, run.seed -> seed; the dotted key on a clash."""
    short = {k: k.split(".")[0] if k.endswith(".name") else k.split(".")[1] for k in keys}
    counts = list(short.values())
    return {k: s if counts.count(s) == 1 else k for k, s in short.items()}


def duplicate(values: list[Any]) -> str | None:
    """The label of a value listed twice in one axis (seeds in a sweep are unique), or None."""
    labels = [label(v) for v in values]
    return next((lab for lab in labels if labels.count(lab) > 1), None)


def name_order(axes: Mapping[str, list[Any]]) -> list[str]:
    """The axes in name order: as declared, seeds last."""
    return [k for k in axes if k != SEEDS_AXIS] + ([SEEDS_AXIS] if SEEDS_AXIS in axes else [])


def run_name(base: str, point: Mapping[str, Any]) -> str:
    labels = axis_labels(list(point))
    return safe_name("-".join([str(base), *(f"{labels[k]}={label(v)}" for k, v in point.items())]))


def expand(values: Mapping[str, Any], axes: Mapping[str, list[Any]], base: str,
           validate: Callable[[dict[str, Any], dict[str, Any]], Config | None]
           ) -> list[PlannedRun]:
    """Every point of the grid `axes` over the dotted `values`, in run order, validated by
    `validate(values, point)` (which raises, or returns None to leave the point out after
    recording why) and named from the validated values."""
    names = name_order(axes)
    order = ([SEEDS_AXIS] if SEEDS_AXIS in axes else []) + [k for k in names if k != SEEDS_AXIS]
    runs = []
    for combo in itertools.product(*(axes[k] for k in order)):
        chosen = dict(zip(order, combo))
        point = {k: chosen[k] for k in names}
        cfg = validate({**values, **point}, point)
        if cfg is None:
            continue
        typed = {k: _typed(cfg, k) for k in names}
        name = run_name(base, typed)
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": name})})
        runs.append(PlannedRun(name, cfg, typed))
    return runs


def _typed(cfg: Config, key: str) -> Any:
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)
