"""The speed paths of the hot loop and of start-up do exactly what the slow paths did.

- The trainer's window figures (loss, accuracy, the first non-finite step), now folded from
  per-step device tensors once per window, equal a bare loop's figures computed step by step.
- The optimiser step without `torch._dynamo` (engine/lazy_dynamo.py) gives bit-identical
  weights to torch's own `step()`, and a whole training run never imports `torch._dynamo`;
  once something else imports it, torch's own disable wrappers are used again.
- following a run returns when its status changes, not after its polling interval.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

from fa_contract.config import Config
from engine.data import Batches
from engine.models import build_model
from engine.train import Trainer
from fa_tui.launch import ROOT, _wait_for_change


pytestmark = pytest.mark.usefixtures("one_thread")


def config(lr: float = 0.05, log_every: int = 3, epochs: int = 2) -> Config:
    return Config.model_validate({
        "run": {"device": "cpu", "seed": 3},
        "data": {"name": "synthetic", "shape": [12], "classes": 5, "train_size": 160,
                 "val_size": 32, "test_size": 32},
        "model": {"name": "mlp", "width": 16, "depth": 2},
        "rule": {"name": "bp"},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9},
        "train": {"epochs": epochs, "batch_size": 16, "log_every": log_every},
        "metrics": {"every": 0}})


def bare_windows(cfg: Config) -> tuple[list[tuple[int, float, float]], int | None]:
    """(step, mean loss, accuracy) at every log_every-th step of a bare loop on the same model
    and batches, accumulated step by step with a read-back per step; and the first step
    (1-based) with a non-finite loss, if any."""
    tr = Trainer(cfg)                                   # for its data only
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, cfg.norm, tr.data.input_shape, tr.data.classes)
    # the engine's SGD is torch's fused kernel (engine/optim.py), whose rounding differs
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          fused=True)
    batches = Batches(tr.data, cfg.train.batch_size, cfg.run.seed, False, "cpu")
    out, first_bad, step = [], None, 0
    loss_sum, correct, seen = 0.0, 0, 0
    for epoch in range(cfg.train.epochs):
        for x, y in batches.epoch(epoch):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = loss.item()
            if first_bad is None and not math.isfinite(value):
                first_bad = step
            loss_sum += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if step % cfg.train.log_every == 0 or step == tr.total_steps:
                out.append((step, loss_sum / seen, correct / seen))
                loss_sum, correct, seen = 0.0, 0, 0
    return out, first_bad


def test_train_events_equal_a_bare_loop_read_back_every_step():
    cfg = config()
    events = list(Trainer(cfg).events())
    got = [(e["step"], e["loss"], e["acc"]) for e in events if e["type"] == "train"]
    want, _ = bare_windows(cfg)
    assert got == want          # exact: the same losses, summed in the same order in float64


def test_windows_longer_than_the_fold_interval_are_exact(monkeypatch):
    """A window is folded in pieces when it outlasts FOLD_EVERY steps; the sums are the same."""
    import engine.train
    monkeypatch.setattr(engine.train, "FOLD_EVERY", 4)
    cfg = config(log_every=7)
    got = [(e["step"], e["loss"], e["acc"]) for e in Trainer(cfg).events()
           if e["type"] == "train"]
    assert got == bare_windows(cfg)[0]


def test_the_first_non_finite_step_is_the_bare_loops():
    cfg = config(lr=1e5, log_every=4, epochs=4)
    _, first_bad = bare_windows(cfg)
    assert first_bad is not None
    end = list(Trainer(cfg).events())[-1]
    assert end["status"] == "diverged"
    assert end["reason"] == f"non-finite loss at step {first_bad}"


def test_checkpointed_window_sums_keep_their_format():
    """state_dict's window holds tensors as before (float64 loss sum), after folding."""
    tr = Trainer(config(log_every=100))
    assert list(tr.events(lambda: tr.step >= 5))[-1]["status"] == "stopped"
    window = tr.state_dict()["window"]
    assert window["loss_sum"].dtype == torch.float64 and int(window["seen"]) == 5 * 16
    assert window["steps"] == 5 and int(window["bad_step"]) == -1


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_eager_step_is_bit_identical_to_torchs_step_and_imports_no_dynamo():
    """The eager steps run first (torch's own step imports dynamo on its first call, after
    which eager_step hands over to it), then torch's steps on copies of the same start."""
    out = _python("""
        import json, sys, torch
        from engine import lazy_dynamo
        torch.manual_seed(0)
        make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
                "adam": lambda p: torch.optim.Adam(p, lr=0.1),
                "adamw": lambda p: torch.optim.AdamW(p, lr=0.1)}
        xs = [torch.randn(5, 6) for _ in range(3)]
        starts = {name: torch.nn.Linear(6, 4).state_dict() for name in make}

        def train(name, eager):
            m = torch.nn.Linear(6, 4)
            m.load_state_dict(starts[name])
            lazy_dynamo.defer()             # before the constructor's add_param_group
            opt = make[name](m.parameters())
            step = lazy_dynamo.eager_step(opt) if eager else opt.step
            for x in xs:
                opt.zero_grad()
                m(x).square().sum().backward()
                step()
            opt.load_state_dict(opt.state_dict())
            return list(m.parameters())

        eager = {name: train(name, True) for name in make}
        dynamo_after_eager = "torch._dynamo" in sys.modules
        equal = {name: all(torch.equal(p, q) for p, q in zip(eager[name], train(name, False)))
                 for name in make}
        print(json.dumps({"equal": equal, "dynamo": dynamo_after_eager,
                          "dynamo_after_torch_step": "torch._dynamo" in sys.modules}))
    """)
    got = json.loads(out)
    assert got == {"equal": {"sgd": True, "adam": True, "adamw": True}, "dynamo": False,
                   "dynamo_after_torch_step": True}


def test_a_training_run_never_imports_dynamo_and_dynamo_still_takes_over_later():
    out = _python("""
        import json, sys, torch
        from fa_contract.config import Config
        from engine.train import Trainer
        cfg = Config.model_validate({
            "run": {"device": "cpu"},
            "data": {"name": "synthetic", "shape": [8], "classes": 3, "train_size": 96,
                     "val_size": 16, "test_size": 16},
            "model": {"name": "mlp", "width": 8, "depth": 1}, "rule": {"name": "fa"},
            "optim": {"name": "adam", "lr": 0.01},
            "train": {"epochs": 1, "batch_size": 16}, "metrics": {"every": 2, "probe_size": 16}})
        tr = Trainer(cfg)
        events = list(tr.events())
        tr.opt.load_state_dict(tr.opt.state_dict())
        before = "torch._dynamo" in sys.modules
        import torch._dynamo
        opt = tr.opt.optimizers["adam"]
        opt.zero_grad()                     # now through torch._dynamo.disable, as torch does
        fn = torch.optim.Optimizer.zero_grad.__wrapped__
        cells = dict(zip(fn.__dynamo_disable.__code__.co_freevars,
                         (c.cell_contents for c in fn.__dynamo_disable.__closure__)))
        print(json.dumps({"end": events[-1]["status"], "dynamo_before": before,
                          "real_disable_used": cells["real"] is not None}))
    """)
    assert json.loads(out) == {"end": "done", "dynamo_before": False, "real_disable_used": True}


def test_following_returns_when_a_status_changes_not_at_its_timeout(tmp_path):
    """`fa-tui run` follows status files, not its own children (the scheduler owns the
    workers): a status rewritten by another process wakes it within a tick."""
    status = tmp_path / "status.json"
    status.write_text("{}")
    writer = subprocess.Popen([sys.executable, "-c", "import time, pathlib; time.sleep(0.3); "
                               f"pathlib.Path({str(status)!r}).write_text('{{\"state\": 1}}')"])
    try:
        t0 = time.monotonic()
        _wait_for_change([status], timeout=300)
        assert status.read_text() != "{}"
        assert time.monotonic() - t0 < 300      # it returned on the change, not the timeout
        _wait_for_change([status], timeout=0.05)  # nothing changes: back after the timeout
    finally:
        writer.kill()
        writer.wait()
