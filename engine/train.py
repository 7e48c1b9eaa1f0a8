"""One training run as a stream of events.

`Trainer(cfg)` builds data, model, rule, optimiser and diagnostics from a resolved Config;
`Trainer.events()` trains and yields plain dicts (start, train, diag, eval, epoch, test, end).
It never prints and never touches files: the worker (engine/worker.py) writes the events to
the run directory and checkpoints `state_dict()` after every `epoch` event.

The hot loop keeps the GPU busy and the host quiet: a step records its loss and its predicted
classes as device tensors (two small ops, no sync) and the window's sums, accuracy and first
non-finite loss are worked out from those once per `train.log_every` steps (or every
`FOLD_EVERY` steps, which bounds the memory they hold) with one read-back; diagnostics run only
every `metrics.every` steps (see engine/diagnostics.py).

Length: the Trainer's build, hot loop, evaluation and checkpoint state share its fields; the
rules, models, optimiser and diagnostics it drives are already modules of their own.
"""
from __future__ import annotations

import contextlib
import functools
import math
import socket
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from fa_contract.config import Config
from engine.data import Batches, eval_batches, load_data, normalise
from engine.diagnostics import Diagnostics
from engine.layers import attach
from engine.models import build_model
from engine.optim import build_optimizer
from engine.rules import build_rule

EVAL_BATCH = 1024
#: steps whose per-step figures may wait on the device before they are folded into the window
FOLD_EVERY = 256


def pick_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu. A CUDA device always comes back with its index
    (`cuda` -> `cuda:0`, the current one): torch.cuda.set_device rejects an index-less device
    on some torch versions, and the start event should say which GPU a run used."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeError(
                f"run.device = {name!r}, but torch sees no CUDA GPU here (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}): set run.device = "
                f"'auto' or 'cpu', or run on a machine with a GPU")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= count:
            raise RuntimeError(f"run.device = {name!r}, but torch sees {count} CUDA GPU(s), "
                               f"numbered from 0 (CUDA_VISIBLE_DEVICES renumbers them)")
    return device


class _Forward(nn.Module):
    """The model's forward as a module of its own, for make_graphed_callables to replace:
    the model itself keeps its eager forward for diagnostics and evaluation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Trainer:
    def __init__(self, cfg: Config, device: str | None = None) -> None:
        self.cfg = cfg
        self.device = pick_device(device or cfg.run.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        cuda = self.device.type == "cuda"
        self.amp = cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and cuda)
        conv = cfg.model.name in ("cnn", "resnet18")
        # channels_last: 7-31 % less CPU time a step for the conv models here (bp and fa, with
        # and without batchnorm; docs/benchmarks.md), and the tensor cores' layout on CUDA.
        # MPS is left as it is: not measured.
        self.channels_last = cfg.train.channels_last == "on" or (
            cfg.train.channels_last == "auto" and conv and self.device.type in ("cuda", "cpu"))
        #: None until the first step captures the graphs; then True, or the reason they failed.
        self.cuda_graph: bool | str | None = None if cuda and cfg.train.cuda_graph != "off" else False
        self._graphed: nn.Module | None = None

        self.data = load_data(cfg.data, cfg.run.seed, self.device)
        self.batches = Batches(self.data, cfg.train.batch_size, cfg.run.seed,
                               cfg.data.augment, self.device)
        self.steps_per_epoch = self.batches.steps_per_epoch
        total = cfg.train.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.train.max_steps) if cfg.train.max_steps else total

        torch.manual_seed(cfg.run.seed)
        self.model = build_model(cfg.model, cfg.norm, self.data.input_shape,
                                 self.data.classes).to(self.device)
        self.rule = build_rule(cfg.rule, cfg.feedback_seed)
        example = self._input(self.data.train_x[:2])
        self.layers = attach(self.model, self.rule, example)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = build_optimizer(cfg.optim, self.model, self.layers, self.total_steps,
                                   self.steps_per_epoch)

        self.diag: Diagnostics | None = None
        if cfg.metrics.every != 0:
            n = min(cfg.metrics.probe_size, len(self.data.train_x))
            self.diag = Diagnostics(self.model, self.rule, self._input(self.data.train_x[:n]),
                                    self.data.train_y[:n], F.cross_entropy,
                                    conv_layout=cfg.metrics.conv_layout,
                                    window=cfg.metrics.window,
                                    window_rows=cfg.metrics.window_rows,
                                    sketch=cfg.metrics.sketch)

        # progress; everything here is in state_dict()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val_acc: float | None = None
        self.final_val_acc: float | None = None
        self.final_train_loss: float | None = None
        self.test: dict | None = None
        self.last_diag: dict | None = None
        self.wall_s = 0.0
        #: seconds of diagnostics probes, summed over attempts (part of wall_s)
        self.diag_s = 0.0
        self._last_eval_step = -1
        #: steps between probes: metrics.every, or for "auto" set once by _calibrate
        self.probe_every: int | None = None if cfg.metrics.every == "auto" else cfg.metrics.every
        self._probe0_s: float | None = None
        #: auto cadence: warm-up probes at every/2, every/4, … (this many) before `every`
        self.probe_warm = 0
        self._cal_t: float | None = None
        self._cal_steps = 0
        self._reset_window()

    # --- small helpers -----------------------------------------------------------------------
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """Model input from stored data: uint8 images are normalised here, on the device."""
        if x.dtype == torch.uint8:
            x = normalise(x, self.data)
        return x.contiguous(memory_format=torch.channels_last) if (
            self.channels_last and x.dim() == 4) else x

    def _autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _reset_window(self) -> None:
        #: (step, loss, predicted classes, labels) of steps not yet folded into the sums below
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._loss_sum = 0.0      # Σ loss × batch over the window, in float64, in step order
        self._correct = 0
        self._seen = 0
        self._bad_step = -1       # the first step of the window whose loss was not finite
        self._window_steps = 0
        self._window_t = time.perf_counter()
        self._window_diag_s = 0.0

    # --- one step ----------------------------------------------------------------------------
    def _capture(self, x: torch.Tensor) -> None:
        """Record the model's training forward and backward as CUDA graphs, so that a step
        replays them instead of launching every kernel from Python.

        A rule's backward is a Python autograd Function per weight layer (21 in a ResNet-18):
        on an H100 that host work, not the GPU, set the pace of a step (fa took 1.6× bp's time
        with identical GPU time; docs/benchmarks.md). Graphs make every rule cost what its
        kernels cost. Everything a rule does inside the backward (ldfa's feedback learning,
        dfa's error broadcast) is captured with it; per-step redraws (brsf) happen before the
        forward, in place, so the graph reads the new values. The loss, the optimiser and
        diagnostics stay eager (self.model is untouched; only the wrapper is graphed).
        make_graphed_callables runs a few warm-up passes on this batch: the buffers they
        touch (norm statistics, adaptive feedback) are put back afterwards. If capture fails
        the run goes on eagerly and the start-of-training record says why."""
        buffers = list(self.model.buffers())
        saved = [b.clone() for b in buffers]
        # The capture runs on a side stream, and the parameters' gradient accumulators it
        # creates live on with the graphs; torch warns that backwards on the default stream
        # meet them. That costs a stream-event wait, not a host sync (measured: no slowdown).
        quiet = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
        if quiet is not None:
            quiet(False)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp,
                                cache_enabled=False):
                self._graphed = torch.cuda.make_graphed_callables(_Forward(self.model), (x,))
            self.cuda_graph = True
        except Exception as e:  # noqa: BLE001 - any failure means: run eagerly
            self._graphed = None
            self.cuda_graph = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda_graph is None:
            self._capture(x)
        if self._graphed is not None:
            return self._graphed(x)
        if not self.amp:
            return self.model(x)
        with self._autocast():
            return self.model(x)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.rule.before_step()
        logits = self._forward(x)
        loss = F.cross_entropy(logits if logits.dtype == torch.float32 else logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        # The bookkeeping: two ops, no sync; see _fold.
        self._pending.append((self.step, loss.detach(), logits.argmax(1), y))
        self._window_steps += 1
        if len(self._pending) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Add the pending steps to the window's sums with one read-back of their losses and
        one of their correct count. Losses are summed on the host in float64, in step order, so
        a window split by a checkpoint and a resume sums exactly like an uninterrupted one."""
        if not self._pending:
            return
        steps, losses, preds, labels = zip(*self._pending)
        self._pending = []
        values = torch.stack(losses).tolist()
        self._correct += int((torch.cat(preds) == torch.cat(labels)).sum())
        for step, value, y in zip(steps, values, labels):
            if self._bad_step < 0 and not math.isfinite(value):
                self._bad_step = step
            self._loss_sum += value * len(y)
            self._seen += len(y)

    def _measure(self, applied: dict | None) -> dict:
        t = time.perf_counter()
        with self._autocast():
            out = self.diag.measure(applied)
        dt = time.perf_counter() - t
        self._window_diag_s += dt
        self.diag_s += dt
        self.last_diag = out
        if self.step == 0:
            self._probe0_s = dt
        return {"type": "diag", "step": self.step, "epoch": self.epoch, "diag_s": round(dt, 4),
                "every": self.probe_every, **out}

    #: auto cadence: the training steps this process times, after warm-up
    CAL_FROM, CAL_TO = 3, 13

    def _calibrate(self) -> None:
        """For metrics.every = "auto": time this process's training steps CAL_FROM..CAL_TO
        (synchronised on CUDA) and plan the run's probes from the step-0 probe's time so that
        they take `metrics.budget` of the run's wall time (auto_cadence). Done once per run;
        the plan and the probe time are saved in checkpoints, and the cadence is reported in
        every diag event (`every`)."""
        if self.probe_every is not None or self._probe0_s is None:
            return
        self._cal_steps += 1
        if self._cal_steps not in (self.CAL_FROM, self.CAL_TO):
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        if self._cal_steps == self.CAL_FROM:
            self._cal_t = now
            return
        step_s = (now - self._cal_t) / (self.CAL_TO - self.CAL_FROM)
        # the step-0 probe is paid from the same budget
        affordable = int(self.cfg.metrics.budget * self.total_steps * step_s / self._probe0_s) - 1
        self.probe_every, self.probe_warm = auto_cadence(self.total_steps, affordable,
                                                         self.steps_per_epoch)

    def _probe_due(self, step: int) -> bool:
        """Whether the probe runs after training step `step` (1-based count of steps done)."""
        every = self.probe_every
        if self.diag is None or every is None:
            return False
        return step % every == 0 or step in warm_steps(every, self.probe_warm,
                                                       self.steps_per_epoch)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {m.layer_name: m.weight.detach().clone() for m in self.layers}

    def _train_event(self) -> dict:
        self._fold()
        seen = float(self._seen)
        dt = time.perf_counter() - self._window_t - self._window_diag_s
        ev = {"type": "train", "step": self.step, "epoch": self.epoch,
              "loss": self._loss_sum / max(seen, 1.0),
              "acc": self._correct / max(seen, 1.0), "lr": self.opt.lr,
              "step_s": dt / max(self._window_steps, 1),
              "samples_per_s": seen / dt if dt > 0 else None}
        if self.device.type == "cuda":       # what the caching allocator holds (no sync)
            ev["gpu_mem_mib"] = torch.cuda.memory_reserved(self.device) / 2**20
        self.final_train_loss = ev["loss"]
        return ev

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy, in eval mode, without augmentation."""
        was = self.model.training
        self.model.eval()
        loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for xb, yb in eval_batches(x, y, EVAL_BATCH):
            with self._autocast():
                logits = self.model(self._input(xb))
            loss += F.cross_entropy(logits.float(), yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
        self.model.train(was)
        n = max(len(y), 1)
        return float(loss) / n, float(correct) / n

    def _eval_event(self) -> dict:
        loss, acc = self.evaluate(self.data.val_x, self.data.val_y)
        self.final_val_acc = acc
        self._last_eval_step = self.step
        if self.best_val_acc is None or acc > self.best_val_acc:
            self.best_val_acc = acc
        return {"type": "eval", "step": self.step, "epoch": self.epoch, "split": "val",
                "loss": loss, "acc": acc}

    # --- the run -----------------------------------------------------------------------------
    def start_event(self) -> dict:
        return {"type": "start", "step": self.step, "config": self.cfg.model_dump(mode="json"),
                "device": str(self.device), "host": socket.gethostname(),
                "params": sum(p.numel() for p in self.model.parameters()),
                "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                "amp": self.amp, "channels_last": self.channels_last,
                "cuda_graph": self.cuda_graph,
                "layers": [{"name": m.layer_name, "kind": type(m).__name__.removeprefix("Rule"),
                            "shape": list(m.weight.shape)} for m in self.layers],
                "routing": self.opt.routing}

    def events(self, should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
        """Train until done, stopped or diverged, yielding events; see docs/run-directory.md."""
        cfg = self.cfg
        t0 = time.perf_counter() - self.wall_s
        self.model.train()
        if self.cuda_graph is None:   # capture before the start event, which reports it
            x, _ = next(self.batches.epoch(0))
            self._capture(self._input(x))
        yield self.start_event()
        # the step-0 probe, once: a run stopped before its first step and resumed has it
        if self.diag is not None and self.step == 0 and self.last_diag is None:
            yield self._measure(None)
        log_every, eval_every = cfg.train.log_every, cfg.train.eval_every
        while self.step < self.total_steps:
            for x, y in self.batches.epoch(self.epoch, start=self.batch_in_epoch):
                if should_stop():
                    self.wall_s = time.perf_counter() - t0
                    yield {"type": "end", "step": self.step, "status": "stopped",
                           "reason": "stop requested"}
                    return
                diag_now = self._probe_due(self.step + 1)
                before = self._snapshot() if diag_now else None
                self._train_step(self._input(x), y)
                self.step += 1
                self.batch_in_epoch += 1
                self._calibrate()
                if diag_now:
                    yield self._measure({m.layer_name: m.weight.detach() - before[m.layer_name]
                                         for m in self.layers})
                last = self.step >= self.total_steps
                if self.step % log_every == 0 or last:
                    ev = self._train_event()
                    yield ev
                    reason = self._divergence(ev)
                    if reason:
                        self.wall_s = time.perf_counter() - t0
                        yield {"type": "end", "step": self.step, "status": "diverged",
                               "reason": reason}
                        return
                    self._reset_window()
                if eval_every and self.step % eval_every == 0:
                    yield self._eval_event()
                if last:
                    break
            if self.batch_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                if not eval_every:
                    yield self._eval_event()
                self.wall_s = time.perf_counter() - t0
                yield {"type": "epoch", "step": self.step, "epoch": self.epoch,
                       "wall_s": self.wall_s}
        if self._last_eval_step != self.step:
            yield self._eval_event()
        loss, acc = self.evaluate(self.data.test_x, self.data.test_y)
        self.test = {"loss": loss, "acc": acc}
        self.wall_s = time.perf_counter() - t0
        yield {"type": "test", "step": self.step, "loss": loss, "acc": acc}
        yield {"type": "end", "step": self.step, "status": "done", "reason": None}

    def _divergence(self, ev: dict) -> str | None:
        """Why the run diverged in the last window, or None. The first non-finite loss is
        recorded per step (see _fold), so the exact step is known without a sync per step."""
        bad = self._bad_step
        if bad >= 0:
            return f"non-finite loss at step {bad + 1}"
        if ev["loss"] > self.cfg.train.diverge_loss:
            return f"loss {ev['loss']:.3g} above train.diverge_loss at step {self.step}"
        return None

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this run is (bit-identical on CPU).
        The window's sums are stored as tensors (the loss sum in float64), as they always were."""
        self._fold()
        return {
            "model": self.model.state_dict(), "optim": self.opt.state_dict(),
            "rule": self.rule.extra_state(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "progress": {"step": self.step, "epoch": self.epoch,
                         "batch_in_epoch": self.batch_in_epoch,
                         "best_val_acc": self.best_val_acc, "final_val_acc": self.final_val_acc,
                         "final_train_loss": self.final_train_loss, "wall_s": self.wall_s,
                         "diag_s": self.diag_s, "last_diag": self.last_diag,
                         "_last_eval_step": self._last_eval_step,
                         "probe_every": self.probe_every, "probe_warm": self.probe_warm,
                         "_probe0_s": self._probe0_s},
            "window": {"loss_sum": torch.tensor(self._loss_sum, dtype=torch.float64),
                       "correct": torch.tensor(self._correct), "seen": torch.tensor(self._seen),
                       "bad_step": torch.tensor(self._bad_step), "steps": self._window_steps},
            "traj": self.diag.window.state_dict() if self.diag and self.diag.window else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.rule.load_extra_state(state["rule"])
        torch.set_rng_state(state["rng"].cpu())
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        for k, v in state["progress"].items():
            setattr(self, k, v)
        w = state["window"]
        self._pending = []
        self._loss_sum = float(w["loss_sum"])
        self._correct, self._seen = int(w["correct"]), int(w["seen"])
        self._bad_step = int(w["bad_step"])
        self._window_steps = w["steps"]
        if state.get("traj") and self.diag is not None and self.diag.window is not None:
            self.diag.window.load_state_dict(state["traj"])

    def summary(self) -> dict:
        """summary.json's figures (the worker adds status, reason and wall time)."""
        layers = (self.last_diag or {}).get("layers", {})
        return {"test_acc": self.test and self.test["acc"],
                "test_loss": self.test and self.test["loss"],
                "best_val_acc": self.best_val_acc, "final_val_acc": self.final_val_acc,
                "final_train_loss": self.final_train_loss, "steps": self.step,
                "epochs": self.epoch, "device": str(self.device), "wall_s": self.wall_s,
                "diag_s": self.diag_s, "config": self.cfg.model_dump(mode="json"), "layers": layers}


def auto_cadence(total_steps: int, affordable: int, epoch_steps: int | None = None,
                 warm: int = 3) -> tuple[int, int]:
    """(every, warm-up probes) for `affordable` probes after step 0 over `total_steps`.

    The warm-up probes (at most `warm`; see warm_steps) come first — the error signal changes
    fastest early, and a researcher watches the first epoch — and then a probe at every
    multiple of `every`, the smallest cadence whose plan has at most `affordable` probes, so
    the budget holds over the run. With fewer than 2 affordable probes the run gets one probe
    at its end."""
    if affordable < 2:
        return max(total_steps, 1), 0
    m = min(warm, affordable - 1)
    every = max(1, math.ceil(total_steps / (affordable - m + 1)))
    while m + total_steps // every > affordable:
        every += 1
    return every, len(warm_steps(every, m, epoch_steps))


@functools.lru_cache(maxsize=16)
def warm_steps(every: int, warm: int, epoch_steps: int | None = None) -> frozenset[int]:
    """The steps of up to `warm` warm-up probes, all before the first multiple of `every`:
    when an epoch is shorter than `every`, inside the first epoch (its end, half, quarter…),
    else at every/2, every/4, … The two never coincide with a multiple of `every`. (Cached:
    the trainer asks at every step.)"""
    base = epoch_steps if epoch_steps and epoch_steps < every else every // 2
    return frozenset(base >> k for k in range(warm) if base >> k >= 1)


def run(cfg: Config, should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """The whole run as one call: build, then stream events."""
    yield from Trainer(cfg).events(should_stop)
