"""metrics.every = "auto": the run's probes are planned from the measured probe and step
times to fit metrics.budget, with warm-up probes early (engine.train.auto_cadence)."""
from __future__ import annotations

import pytest

from fa_contract.config import Config
from engine.train import Trainer, auto_cadence, warm_steps


def plan(total: int, affordable: int, epoch: int | None = None) -> list[int]:
    every, warm = auto_cadence(total, affordable, epoch)
    early = warm_steps(every, warm, epoch)
    return [s for s in range(1, total + 1) if s % every == 0 or s in early]


@pytest.mark.parametrize("epoch", [None, 1, 7, 430, 5000])
@pytest.mark.parametrize("total, affordable", [(430, 0), (430, 1), (430, 3), (4300, 6),
                                               (4300, 100), (100, 50), (5, 40), (12, 3)])
def test_the_plan_stays_within_the_affordable_probes(total, affordable, epoch):
    steps = plan(total, affordable, epoch)
    assert 1 <= len(steps) <= max(affordable, 1)
    assert steps == sorted(set(steps)) and steps[-1] <= total


def test_a_ten_epoch_run_gets_several_probes_in_its_first_epoch():
    # 430 steps per epoch, 6 probes affordable over 10 epochs (a probe = 35 steps at 5 %):
    # the three warm-up probes land in the first epoch (its quarter, half and end), beside
    # the step-0 probe; the other three are spread over the run
    steps = plan(4300, 6, 430)
    assert steps == [107, 215, 430, 1076, 2152, 3228]
    assert len([s for s in steps if s <= 430]) == 3


def test_when_the_cadence_is_shorter_than_an_epoch_warm_up_halves_it():
    # 100 probes affordable: every 44 steps, warm-up at 22, 11 and 5, all in epoch 1
    every, warm = auto_cadence(4300, 100, 430)
    assert every < 430 and warm_steps(every, warm, 430) == {every // 2, every // 4, every // 8}


def test_auto_runs_plan_their_probes_and_report_the_cadence():
    cfg = Config.model_validate({
        "run": {"device": "cpu", "seed": 0},
        "data": {"name": "synthetic", "shape": [20], "classes": 4, "train_size": 400,
                 "val_size": 64, "test_size": 64},
        "model": {"name": "mlp", "width": 16, "depth": 1},
        "train": {"epochs": 3, "batch_size": 16, "log_every": 50},
        "metrics": {"budget": 0.5, "probe_size": 16, "window": 2}})
    assert cfg.metrics.every == "auto"
    tr = Trainer(cfg)
    diags = [e for e in tr.events() if e["type"] == "diag"]
    assert diags[0]["step"] == 0
    every, warm = tr.probe_every, tr.probe_warm
    assert isinstance(every, int) and every >= 1
    later = [d["step"] for d in diags[1:]]
    assert later                                   # the plan ran probes after step 0
    early = warm_steps(every, warm, tr.steps_per_epoch)
    assert all(s % every == 0 or s in early for s in later)
    assert all(d["every"] == every for d in diags[1:])
