"""engine/train.py: every rule trains every model; a run is a pure function of its config
(seed, diagnostics on or off, stop and resume); the event stream follows
docs/run-directory.md; divergence and max_steps end a run cleanly.

Everything runs on the CPU on tiny synthetic tasks (3×8×8 Gaussian inputs, 4 classes, the cnn
pools twice and resnet18 halves three times, so 8×8 is about the least they take)."""
from __future__ import annotations

import io
import re

import pytest
import torch

from fa_contract.config import Config
from engine.train import Trainer, pick_device

TIMING_KEYS = {"wall_s", "step_s", "samples_per_s", "diag_s"}

MODELS = {
    "mlp": {"name": "mlp", "width": 16, "depth": 2},
    "cnn": {"name": "cnn", "widths": [4, 4, 8, 8]},
    "resnet18": {"name": "resnet18"},
    "vit": {"name": "vit", "width": 16, "depth": 1, "heads": 2, "patch": 4},
}
RULES = {
    "bp": {"name": "bp"}, "fa": {"name": "fa"}, "usf": {"name": "usf"},
    "brsf": {"name": "brsf"}, "frsf": {"name": "frsf"}, "dfa": {"name": "dfa"},
    "ldfa-oja": {"name": "ldfa", "adapt": "oja"},
    "ldfa-fixed": {"name": "ldfa", "adapt": "fixed"},
    "ldfa-fit": {"name": "ldfa", "adapt": "fit"},
}
# Overfitting one fixed batch, per model: (optimiser, steps, norm, batch size). Chosen so that
# every rule lowers the loss by far more than the test asks on seeds 0-3. resnet18 costs one
# pass over its 11M parameters per step whatever the batch, so it gets the fewest steps; it
# and the cnn need batchnorm for the random-feedback rules (without it dfa diverges on
# resnet18 and ldfa barely moves the cnn).
OVERFIT = {
    "mlp": ({"name": "adam", "lr": 1e-2}, 30, "none", 8),
    "cnn": ({"name": "adam", "lr": 1e-2}, 30, "batchnorm", 8),
    "resnet18": ({"name": "sgd", "lr": 1e-2, "momentum": 0.9}, 6, "batchnorm", 4),
    "vit": ({"name": "adam", "lr": 1e-2}, 15, "none", 8),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**sections: dict) -> Config:
    """A tiny synthetic run: 80 training examples in 5 batches of 16 per epoch, 2 epochs;
    `sections` override keys per section."""
    cfg = {"run": {"device": "cpu", "seed": 0},
           "data": {"name": "synthetic", "shape": [3, 8, 8], "classes": 4, "train_size": 112,
                    "val_size": 32, "test_size": 32},
           "model": dict(MODELS["mlp"]),
           "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
           "train": {"epochs": 2, "batch_size": 16, "log_every": 2},
           "metrics": {"every": 0, "probe_size": 32}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return Config.model_validate(cfg)


def train(cfg: Config, should_stop=lambda: False) -> tuple[Trainer, list[dict]]:
    trainer = Trainer(cfg)
    return trainer, list(trainer.events(should_stop))


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every parameter and buffer: feedback matrices and norm statistics included."""
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"not bit-identical: {differ}"


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def untimed(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in events]


# --- every rule × every model learns ----------------------------------------------------------
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", MODELS)
def test_every_rule_lowers_the_loss_on_every_model(model, rule):
    """Overfit one fixed batch: the training set is exactly one batch, so every step sees the
    same examples, and the last step's loss must be well below the first step's (at init)."""
    optim, steps, norm, batch = OVERFIT[model]
    cfg = tiny(data={"train_size": batch + 16, "val_size": 16, "test_size": 16},
               model=MODELS[model], rule=RULES[rule], norm={"name": norm}, optim=optim,
               train={"epochs": steps, "batch_size": batch, "log_every": 1, "eval_every": steps})
    trainer, events = train(cfg)
    losses = [e["loss"] for e in of_type(events, "train")]
    assert events[-1]["status"] == "done" and len(losses) == steps == trainer.step
    assert losses[-1] < 0.7 * losses[0], losses


# --- reproducibility ---------------------------------------------------------------------------
REPRO = {"model": {"dropout": 0.2}, "metrics": {"every": 0}}


@pytest.mark.parametrize("rule", ["fa", "brsf", "ldfa-oja"])
def test_same_seed_same_weights_other_seed_other_weights(rule):
    """Dropout draws from the training RNG, brsf redraws its feedback every step and ldfa
    adapts it: all of it follows from the seed."""
    cfg = tiny(rule=RULES[rule], **REPRO)
    first, second = train(cfg)[0], train(cfg)[0]
    assert_identical(weights(first), weights(second))
    other = train(tiny(rule=RULES[rule], run={"seed": 1}, **REPRO))[0]
    a, b = weights(first), weights(other)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# --- diagnostics never perturb training --------------------------------------------------------
@pytest.mark.parametrize("rule, optim", [
    ("bp", "sgd"), ("fa", "sgd"), ("dfa", "sgd"), ("ldfa-oja", "sgd"), ("brsf", "sgd"),
    ("fa", "muon"), ("brsf", "muon"),
])
def test_diagnostics_leave_the_weights_bit_identical(rule, optim):
    """BatchNorm running statistics and dropout's RNG are the ways a probe could leak into
    training; Muon keeps momentum that a probe must not touch."""
    sections = {"rule": RULES[rule], "norm": {"name": "batchnorm"},
                "model": {"dropout": 0.2}, "optim": {"name": optim, "lr": 0.02}}
    off = train(tiny(metrics={"every": 0}, **sections))[0]
    # the trajectory window on (and small, so that it fills and rolls over)
    on, events = train(tiny(metrics={"every": 2, "window": 3}, **sections))
    assert len(of_type(events, "diag")) == 1 + on.step // 2   # probes did run
    assert_identical(weights(off), weights(on))


# --- the event stream --------------------------------------------------------------------------
DIAG_KEYS = {
    "erank_err", "pr_err", "erank_err_bp", "pr_err_bp", "erank_grad", "pr_grad",
    "erank_grad_bp", "pr_grad_bp", "erank_step", "pr_step", "erank_act", "pr_act", "rows",
    "angle_delta", "angle_delta_sample", "angle_grad", "angle_step", "angle_weight",
    "fb_ratio", "cons_drift", "erank_err_rn", "erank_sent", "erank_sent_bp", "erank_sent_rn",
    "erank_sent_traj", "erank_sent_traj_bp", "erank_grad_traj", "erank_grad_traj_bp",
    "erank_disp", "step_noise", "erank_err_rn_bp", "erank_sent_rn_bp",
}


@pytest.fixture(scope="module")
def fa_run() -> tuple[Trainer, list[dict]]:
    """fa on the mlp: 5 steps per epoch, 2 epochs, train events every 2 steps, diagnostics
    every 3."""
    return train(tiny(rule=RULES["fa"], metrics={"every": 3}))


def test_event_sequence(fa_run):
    trainer, events = fa_run
    assert [(e["type"], e["step"]) for e in events] == [
        ("start", 0), ("diag", 0), ("train", 2), ("diag", 3), ("train", 4),
        ("eval", 5), ("epoch", 5), ("diag", 6), ("train", 6), ("train", 8), ("diag", 9),
        ("train", 10), ("eval", 10), ("epoch", 10), ("test", 10), ("end", 10)]
    assert events[-1]["status"] == "done" and events[-1]["reason"] is None
    assert [e["epoch"] for e in of_type(events, "epoch")] == [1, 2]
    assert [e["epoch"] for e in of_type(events, "train")] == [0, 0, 1, 1, 1]
    assert all(e["split"] == "val" for e in of_type(events, "eval"))
    assert trainer.step == trainer.total_steps == events[0]["total_steps"] == 10
    assert events[0]["steps_per_epoch"] == 5


def test_start_event_lists_the_weight_layers(fa_run):
    trainer, events = fa_run
    start = events[0]
    assert [layer["name"] for layer in start["layers"]] == ["fc1", "fc2", "head"]
    assert [layer["shape"] for layer in start["layers"]] == [[16, 192], [16, 16], [4, 16]]
    assert {layer["kind"] for layer in start["layers"]} == {"Linear"}
    assert start["params"] == sum(p.numel() for p in trainer.model.parameters())
    assert start["config"] == trainer.cfg.model_dump(mode="json")


def test_diag_events_report_every_layer_with_the_documented_keys(fa_run):
    _, events = fa_run
    names = [layer["name"] for layer in events[0]["layers"]]
    diags = of_type(events, "diag")
    for d in diags:
        assert list(d["layers"]) == names
        assert d["probe_n"] == 32 and 0 <= d["probe_acc"] <= 1 and d["probe_loss"] > 0
        for metrics in d["layers"].values():
            assert set(metrics) == DIAG_KEYS
            assert metrics["rows"] == 32
            assert 0 <= metrics["angle_grad"] <= 180
        # the first layer's feedback is never used: no angle_weight there
        assert d["layers"]["fc1"]["angle_weight"] is None
        assert all(d["layers"][n]["angle_weight"] is not None for n in names[1:])
    # no step has been applied at step 0; every later probe follows a step
    assert all(m["erank_step"] is None for m in diags[0]["layers"].values())
    assert all(m["angle_step"] is not None for d in diags[1:] for m in d["layers"].values())


def test_train_events_report_the_window(fa_run):
    _, events = fa_run
    for e in of_type(events, "train"):
        assert e["loss"] > 0 and 0 <= e["acc"] <= 1 and e["lr"] == pytest.approx(0.05)
        assert e["step_s"] > 0


def test_summary_matches_the_events(fa_run):
    trainer, events = fa_run
    summary = trainer.summary()
    test, evals = of_type(events, "test")[0], of_type(events, "eval")
    assert summary["test_acc"] == test["acc"] and summary["test_loss"] == test["loss"]
    assert summary["best_val_acc"] == max(e["acc"] for e in evals)
    assert summary["final_val_acc"] == evals[-1]["acc"]
    assert summary["final_train_loss"] == of_type(events, "train")[-1]["loss"]
    assert summary["layers"] == of_type(events, "diag")[-1]["layers"]
    assert (summary["steps"], summary["epochs"]) == (10, 2)
    probes = [e["diag_s"] for e in of_type(events, "diag")]     # each rounded to 0.1 ms
    assert summary["diag_s"] == pytest.approx(sum(probes), abs=1e-4 * len(probes))
    assert 0 < summary["diag_s"] < summary["wall_s"]


# --- stop and resume ---------------------------------------------------------------------------
def test_should_stop_ends_the_run_before_the_next_step():
    trainer = Trainer(tiny(train={"log_every": 1}))
    stop = False
    events = []
    for e in trainer.events(lambda: stop):
        events.append(e)
        stop = stop or (e["type"] == "train" and e["step"] == 3)
    assert events[-2]["type"] == "train" and events[-2]["step"] == 3
    assert events[-1] == {"type": "end", "step": 3, "status": "stopped",
                          "reason": "stop requested"}
    assert trainer.step == 3 and trainer.test is None


RESUME = {"optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"},
          "model": {"dropout": 0.1}, "metrics": {"every": 3}}


#: a channels_last CNN with batchnorm and Muon: the optimiser's state and the running
#: statistics come back in the layout they were saved from
CNN_MUON = {"model": MODELS["cnn"], "norm": {"name": "batchnorm"},
            "optim": {"name": "muon", "lr": 0.02}, "metrics": {"every": 3}}


@pytest.mark.parametrize("rule, stop_at, sections", [
    ("fa", 7, RESUME), ("brsf", 7, RESUME), ("ldfa-oja", 7, RESUME), ("fa", 0, RESUME),
    ("fa", 7, CNN_MUON)])
def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(rule, stop_at, sections):
    """Stopped after 7 of 10 steps (mid-epoch 2, mid-window of the 2-step train events), or
    before the first step, the state goes through torch.save/torch.load like a checkpoint into
    a fresh Trainer. The two attempts' events, less their start and end, are the
    uninterrupted run's: nothing recomputed differs, nothing is doubled (the step-0 probe)."""
    cfg = tiny(rule=RULES[rule], **sections)
    whole, whole_events = train(cfg)

    first = Trainer(cfg)
    stopped = list(first.events(lambda: first.step >= stop_at))
    assert stopped[-1]["status"] == "stopped" and first.step == stop_at
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)  # whatever the RNG holds now, the checkpoint's state wins
    second = Trainer(cfg)
    second.load_state_dict(torch.load(buf, weights_only=True))
    resumed = list(second.events())

    assert resumed[0]["type"] == "start" and resumed[0]["step"] == stop_at
    assert untimed(stopped[1:-1] + resumed[1:]) == untimed(whole_events[1:])
    assert_identical(weights(whole), weights(second))
    assert second.summary()["best_val_acc"] == whole.summary()["best_val_acc"]
    assert second.diag_s > first.diag_s        # the probes' time goes on from the checkpoint's


# --- memory format ----------------------------------------------------------------------------
@pytest.mark.parametrize("model, norm", [("mlp", "none"), ("cnn", "batchnorm"),
                                         ("resnet18", "none")])
def test_auto_channels_last_on_the_cpu_is_for_conv_models_and_trains_the_same(model, norm):
    """`train.channels_last = "auto"` turns it on for the conv models on the CPU too (it is
    faster there; docs/benchmarks.md). It reorders the convolutions' sums, nothing else: the
    weights after three steps of fa agree with a contiguous run to fp32 round-off, not bit
    for bit. (resnet18 without batchnorm: with it, a bias that starts at zero is a sum over
    16 samples that nearly cancels, so its round-off is 0.5 % of it after one step under bp
    as well, and it grows from there.)"""
    sections = {"model": MODELS[model], "rule": RULES["fa"], "norm": {"name": norm}}
    auto, auto_events = train(tiny(**sections, train={"max_steps": 3}))
    conv = model != "mlp"
    assert auto_events[0]["channels_last"] is conv
    convs = [m.weight for m in auto.layers if m.weight.dim() == 4]
    assert bool(convs) is conv
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    off, off_events = train(tiny(**sections, train={"max_steps": 3, "channels_last": "off"}))
    assert off_events[0]["channels_last"] is False
    assert all(m.weight.is_contiguous() for m in off.layers)
    a, b = weights(auto), weights(off)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


# --- ends other than done ----------------------------------------------------------------------
def test_a_huge_learning_rate_ends_as_diverged():
    trainer, events = train(tiny(optim={"name": "sgd", "lr": 1e6}, train={"log_every": 1}))
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "diverged"
    step = int(re.search(r"at step (\d+)", end["reason"]).group(1))
    assert 1 <= step <= end["step"] == trainer.step < trainer.total_steps
    assert not of_type(events, "test")


def test_max_steps_stops_mid_epoch_and_still_evaluates():
    trainer, events = train(tiny(train={"max_steps": 3}))
    assert events[0]["total_steps"] == 3
    assert [(e["type"], e["step"]) for e in events[1:]] == [
        ("train", 2), ("train", 3), ("eval", 3), ("test", 3), ("end", 3)]
    assert events[-1]["status"] == "done"
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (3, 0, 3)
    summary = trainer.summary()
    assert summary["test_acc"] is not None and summary["final_val_acc"] is not None


# --- devices ----------------------------------------------------------------------------------
def test_pick_device_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    auto = pick_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if auto.type == "cuda":
        assert auto.index is not None     # always indexed: set_device and the start event


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a GPU-less machine")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_clear_message(name):
    with pytest.raises(RuntimeError, match=rf"run.device = '{name}'.*no CUDA GPU.*'auto' or 'cpu'"):
        pick_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_index_is_checked_and_filled_in():
    assert pick_device("cuda") == torch.device("cuda", torch.cuda.current_device())
    n = torch.cuda.device_count()
    with pytest.raises(RuntimeError, match=f"sees {n} CUDA GPU"):
        pick_device(f"cuda:{n}")
