"""summary.json: a run's final figures, written atomically by the worker when the run ends
in any state (first, before the final status)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fa_contract.typed import doc, problem

Layers = dict[str, dict[str, float | None]]


@dataclass(kw_only=True)
class Summary:
    status: str | None = doc("the final state", None)
    reason: str | None = doc("why it ended other than `done`", None)
    test_acc: float | None = doc("test accuracy (fraction), done runs only", None)
    test_loss: float | None = doc("test loss", None)
    best_val_acc: float | None = doc("best validation accuracy", None)
    final_val_acc: float | None = doc("last validation accuracy", None)
    final_train_loss: float | None = doc("last train-window loss", None)
    wall_s: float | None = doc("training time, summed over resumed attempts; for a failed "
                               "run, up to the failure", None)
    diag_s: float | None = doc("the part of `wall_s` the diagnostics probes took, summed over "
                               "resumed attempts (`metrics.budget` is its target share)", None)
    steps: int | None = doc("optimiser steps done", None)
    epochs: int | None = doc("epochs done", None)
    device: str | None = doc("the torch device", None)
    config: dict[str, Any] | None = doc("the resolved config", None)
    layers: Layers = doc("per weight layer (forward order, keyed by name): the metrics of the "
                         "last `diag` event, `null` where a metric does not apply (docs/science.md)",
                         factory=dict)


#: keys every summary.json has, even when the trainer could not be built
KEYS = ("test_acc", "test_loss", "best_val_acc", "final_val_acc", "final_train_loss", "steps",
        "epochs", "device")


def parse_summary(data: bytes | str, where: str = "summary.json") -> tuple[dict | None, str | None]:
    """(the summary, None), or (None, why it cannot be read) for any bytes."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return None, f"{where} is not valid JSON"
    bad = problem(Summary, raw)
    return (None, f"{where}: {bad}") if bad else (raw, None)
