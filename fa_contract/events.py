"""events.jsonl: the metric stream. One JSON object per line, appended and flushed per line
by the worker; every event type is a record below (docs/run-directory.md is generated from
them). The worker writes through `event_line`, which checks an event against its record, and
readers parse through `parse_event`, which drops (and counts) what does not fit.

Layer metrics are an open mapping `{layer: {metric: number | null}}`: new diagnostics add
metric names without a change to this schema.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Literal

from fa_contract.summary import Layers
from fa_contract.typed import doc, problem
from fa_contract.version import FORMAT_VERSION, version_problem


@dataclass(kw_only=True)
class Event:
    """Keys of every event."""
    type: str = doc("the event type")
    v: int = doc("format version")
    t: float = doc("unix time the line was written")
    step: int = doc("optimiser steps done so far")


@dataclass(kw_only=True)
class LayerInfo:
    name: str = doc("layer name")
    kind: str = doc("module kind")
    shape: list[int] = doc("weight shape")


@dataclass(kw_only=True)
class Start(Event):
    """The worker started (or resumed: then right after `resume`)."""
    config: dict[str, Any] = doc("the resolved config")
    device: str = doc("the torch device")
    host: str = doc("the machine")
    params: int = doc("trainable parameters")
    steps_per_epoch: int = doc("optimiser steps per epoch")
    total_steps: int = doc("steps the run will take")
    layers: list[LayerInfo] = doc("weight layers in forward order")
    routing: dict[str, dict[str, str]] | None = doc("which parameters each optimiser gets", None)
    amp: bool | None = doc("bf16 autocast on", None)
    channels_last: bool | None = doc("channels-last memory format on", None)
    cuda_graph: bool | str | None = doc("`true` when training steps replay CUDA graphs, `false` "
                                        "when not, or the error that made capture fail", None)


@dataclass(kw_only=True)
class Train(Event):
    """Every `train.log_every` steps: means since the last `train` event."""
    epoch: int = doc("epochs completed")
    loss: float | None = doc("mean train loss (null when not finite)")
    acc: float | None = doc("mean train accuracy")
    lr: float | None = doc("learning rate", None)
    step_s: float | None = doc("mean seconds per step", None)
    samples_per_s: float | None = doc("throughput", None)
    gpu_mem_mib: float | None = doc("on CUDA only: memory held by the caching allocator (MiB)",
                                    None)


@dataclass(kw_only=True)
class Diag(Event):
    """At step 0, then on the `metrics.every` cadence: diagnostics on the fixed probe batch."""
    epoch: int = doc("epochs completed")
    layers: Layers = doc("`{layer name: {metric: value}}` in forward order; the metric names "
                         "(`erank_err`, `erank_sent_traj`, `angle_delta`, ...) are in "
                         "docs/science.md")
    every: int | None = doc("the cadence in steps; under `\"auto\"` null until the trainer "
                            "has planned it", None)
    probe_n: int | None = doc("probe batch size", None)
    probe_loss: float | None = doc("loss on the probe", None)
    probe_acc: float | None = doc("accuracy on the probe", None)
    diag_s: float | None = doc("seconds the diagnostics took", None)


@dataclass(kw_only=True)
class Eval(Event):
    """End of each epoch (or every `train.eval_every` steps)."""
    epoch: int = doc("epochs completed")
    split: str = doc("`val`")
    loss: float | None = doc("mean loss")
    acc: float | None = doc("accuracy")


@dataclass(kw_only=True)
class Epoch(Event):
    """End of each epoch, right before the checkpoint."""
    epoch: int = doc("epochs completed")
    wall_s: float = doc("training time so far")


@dataclass(kw_only=True)
class Test(Event):
    """Once, at the end of a done run."""
    loss: float | None = doc("test loss")
    acc: float | None = doc("test accuracy")


@dataclass(kw_only=True)
class End(Event):
    """The worker stops."""
    status: Literal["done", "stopped", "diverged", "failed"] = doc("how the run ended")
    reason: str | None = doc("why, unless done", None)


@dataclass(kw_only=True)
class Resume(Event):
    """A resumed worker starts: `step` is the checkpoint's; later events of the interrupted
    attempt are superseded (the resume rule)."""


TYPES: dict[str, type[Event]] = {"start": Start, "train": Train, "diag": Diag, "eval": Eval,
                                  "epoch": Epoch, "test": Test, "end": End, "resume": Resume}


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf floats by None: events stay strict JSON (a diverged loss is recorded
    as null plus the `end` event saying why)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


class ContractError(ValueError):
    """A writer tried to write something the contract does not allow (a bug, not bad input)."""


def event_line(event: dict, t: float | None = None) -> str:
    """One event as the line the worker appends (with `v` and `t`), checked against its record."""
    event = {"v": FORMAT_VERSION, "t": round(time.time() if t is None else t, 3),
             **clean_json(event)}
    bad = problem(TYPES.get(str(event.get("type")), Event), event, f"{event.get('type')} event")
    if bad:
        raise ContractError(bad)
    return json.dumps(event, allow_nan=False, separators=(",", ":")) + "\n"


def append_event(f: IO[str], event: dict, t: float | None = None) -> None:
    """Append one event as a single line and flush it, so a reader sees whole lines only."""
    f.write(event_line(event, t))
    f.flush()


def parse_event(line: bytes) -> tuple[dict | None, str | None]:
    """(the event, None) or (None, why it was skipped), for any bytes. Unknown types are kept
    (a newer writer's) when their common keys fit; a newer format version is skipped."""
    try:
        ev = json.loads(line)
    except (ValueError, RecursionError):
        return None, "a line that is not JSON"
    if not isinstance(ev, dict):
        return None, "a line that is not a JSON object"
    bad = (version_problem(ev.get("v", FORMAT_VERSION), "events.jsonl")
           or problem(TYPES.get(str(ev.get("type")), Event), ev, f"{ev.get('type')!s:.20} event"))
    return (None, bad) if bad else (ev, None)


class EventLog:
    """Incremental, total reader of events.jsonl.

    `poll()` reads only what was appended since the last call; a trailing line without a
    newline is left for the next poll (it may be half-written); a line that does not fit the
    contract is counted in `skipped` (the first reason in `problem`) and ignored. A `resume`
    event at step k means the worker restarted from a checkpoint taken at step k: events after
    step k from the earlier attempt are superseded and dropped, so the history always reads as
    one uninterrupted run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict] = []
        self.skipped = 0
        self.problem: str | None = None
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        """Read newly appended events; returns them (after resume handling)."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self._offset:          # truncated or replaced: start again
                    self.__init__(self.path)     # type: ignore[misc]
                f.seek(self._offset)
                chunk = f.read()
        except (OSError, ValueError):
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        new: list[dict] = []
        for line in lines:
            if not line.strip():
                continue
            ev, why = parse_event(line)
            if ev is None:
                self.skipped += 1
                self.problem = self.problem or why
                continue
            if ev["type"] == "resume":
                k = ev["step"]
                self.events = [e for e in self.events if e["step"] <= k or e["type"] == "start"]
                new = [e for e in new if e["step"] <= k or e["type"] == "start"]
            self.events.append(ev)
            new.append(ev)
        return new


def iter_metric(events: Iterable[dict], etype: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one numeric field of one event type, skipping nulls."""
    xs, ys = [], []
    for e in events:
        v = e.get(key)
        if e.get("type") == etype and isinstance(v, (int, float)) and not isinstance(v, bool):
            xs.append(e.get("step", 0))
            ys.append(v)
    return xs, ys
