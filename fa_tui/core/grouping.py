"""Which runs are seeds of one condition: the one grouping rule, used by export (mean ± std
over seeds) and available to the TUI (seed bands). Pure and Textual-free.

Two runs are seeds of one condition when they come from one sweep and differ only in the
seed: same run name once its `seed=N` label is removed (a sweep names each run after its swept
values, so this is the sweep and its point; a relaunch gets `-2` and stays apart) and the same
config apart from run.name, run.seed and keys that do not change the experiment. A seed that
appears twice in a group (the same run exported from two copies of a runs directory) is
flagged, never counted twice.
"""
from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from fa_contract.dotted import flatten

#: config keys that do not define the experiment: seeds are grouped over, the rest ignored
NOT_CONDITIONS = ("run.name", "run.seed", "run.device", "data.root", "data.download",
                  "run.executor")
#: config sections that say where a run trained, not what: ignored like NOT_CONDITIONS
NOT_CONDITION_SECTIONS = ("slurm.",)
_SEED_LABEL = re.compile(r"[-_]?seed=\d+")


def sweep_name(name: str) -> str:
    """A run's name without its seed label: `fa-lr=0.1-seed=2` -> `fa-lr=0.1`."""
    return _SEED_LABEL.sub("", name)


def condition_key(name: str, config: Mapping[str, Any]) -> str:
    flat = {k: v for k, v in flatten(config).items()
            if k not in NOT_CONDITIONS and not k.startswith(NOT_CONDITION_SECTIONS)}
    return json.dumps([sweep_name(name), flat], sort_keys=True, default=str)


@dataclass
class Group:
    name: str                   # the shared name (sweep_name)
    members: list[int]          # indices of the runs counted, one per seed, in input order
    repeated: list[int] = field(default_factory=list)   # same seed again: shown, not counted


def seed_groups(names: Sequence[str], configs: Sequence[Mapping[str, Any]]) -> list[Group]:
    """Runs grouped by condition, in order of first appearance."""
    groups: dict[str, Group] = {}
    seeds: dict[str, set[Any]] = {}
    for i, (name, config) in enumerate(zip(names, configs)):
        key = condition_key(name, config)
        group = groups.setdefault(key, Group(sweep_name(name), []))
        seed = json.dumps(flatten(config).get("run.seed"), default=str)
        if seed in seeds.setdefault(key, set()):
            group.repeated.append(i)
        else:
            seeds[key].add(seed)
            group.members.append(i)
    return list(groups.values())


# --- what a group's metrics become (export's tables, the comparison view) ---------------------
@dataclass(frozen=True)
class Stat:
    """A metric over the seeds of one condition; `std` is the sample std (None for n < 2)."""
    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        xs = [v for v in values if v is not None]
        return cls(statistics.fmean(xs) if xs else None,
                   statistics.stdev(xs) if len(xs) > 1 else None, len(xs))


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: one line per run left out (cannot be read) or seed not counted twice, for stderr
    notes: list[str] = field(default_factory=list)
