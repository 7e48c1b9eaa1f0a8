"""Run directories for the TUI tests and the snapshots, written through the contract's writers
(fa_contract: the ones the launcher and the worker use, which check every event against its
record): fixed timestamps and closed-form metrics, so every rendering is reproducible."""
from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

from fa_contract.config import Config
from fa_contract.events import append_event
from fa_contract.rundir import EVENTS, RunDir, Status
from fa_contract.version import FORMAT_VERSION

T0 = 1_750_000_000.0      # every timestamp is T0 + something; the app's clock is frozen at NOW
NOW = T0 + 3600.0
LAYERS = ("fc1", "fc2", "head")


def _config(name: str, rule: str, model: dict, optim: str = "sgd", seed: int = 0,
            **rule_kw) -> dict:
    cfg = Config.model_validate({
        "run": {"name": name, "device": "cpu", "seed": seed}, "rule": {"name": rule, **rule_kw},
        "model": model, "optim": {"name": optim, "lr": 0.05},
        "data": {"name": "synthetic", "shape": [1, 8, 8] if model["name"] == "cnn" else [32],
                 "train_size": 1024, "val_size": 128},     # a cnn needs C×H×W input
        "train": {"epochs": 3, "batch_size": 32, "log_every": 5}, "metrics": {"every": 5}})
    return cfg.model_dump(mode="json", exclude_none=True)


def _events(cfg: dict, steps: int, collapse: float, end: str | None, reason: str | None = None):
    """train and diag every 5 steps, eval and epoch every 10, then test and end. Closed
    forms: bp learns faster than the other rules; the rule's error rank collapses with depth
    at rate `collapse` while BP's stays high; angles to BP fall as training goes on."""
    bp = cfg["rule"]["name"] == "bp"
    jitter = 0.03 * cfg["run"].get("seed", 0)      # seeds of one condition differ a little
    out = [start_event(cfg)]
    for step in range(5, steps + 1, 5):
        f = step / 30 * (1.0 if bp else 0.7)
        out.append({"type": "train", "step": step, "epoch": step // 10,
                    "loss": 2.3 * math.exp(-2 * f) + 0.05 * math.sin(step),
                    "acc": 0.1 + 0.8 * (1 - math.exp(-3 * f)) - jitter, "lr": 0.05, "step_s": 0.01,
                    "samples_per_s": 3200.0})
        layers = {}
        for i, name in enumerate(LAYERS):
            bp_rank = 15 - 3 * f
            rank = bp_rank if bp else 1 + 14 * math.exp(-collapse * step / 30 * (i + 1))
            layers[name] = {"erank_err": rank, "erank_err_bp": bp_rank, "pr_err": rank / 2,
                            "pr_err_bp": bp_rank / 2,
                            "angle_delta": 0.0 if bp else 85 - 40 * f + 5 * i,
                            "angle_grad": 0.0 if bp else 80 - 35 * f + 5 * i,
                            "angle_weight": None if bp else 90 - 30 * f - 3 * i}
        out.append({"type": "diag", "step": step, "epoch": step // 10, "probe_n": 64,
                    "probe_loss": 1.0, "probe_acc": 0.5, "diag_s": 0.01, "layers": layers})
        if step % 10 == 0:
            out.append({"type": "eval", "step": step, "epoch": step // 10, "split": "val",
                        "loss": 2.0 * math.exp(-1.5 * f) + 0.1,
                        "acc": 0.1 + 0.7 * (1 - math.exp(-2.5 * f)) - jitter})
            out.append({"type": "epoch", "step": step, "epoch": step // 10, "wall_s": 4.0 * step})
    if end == "done":
        out.append({"type": "test", "step": steps, "loss": 0.6, "acc": 0.71})
    if end:
        out.append({"type": "end", "step": steps, "status": end, "reason": reason})
    for i, e in enumerate(out):         # as written (write_run stamps the same t)
        e.update(v=FORMAT_VERSION, t=T0 + i)
    return out


def start_event(cfg: dict, total_steps: int = 30, layers: tuple[str, ...] = LAYERS,
                steps_per_epoch: int = 10) -> dict:
    """A start event as the Trainer writes it (every key its record requires)."""
    return {"type": "start", "step": 0, "config": cfg, "device": "cpu", "host": "fixture",
            "params": 4242, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "layers": [{"name": n, "kind": "Linear", "shape": [16, 16]} for n in layers],
            "amp": False, "channels_last": False, "cuda_graph": False}


def write_run(root: Path, name: str, cfg: dict, state: str, steps: int, *, collapse: float = 2.0,
              reason: str | None = None, started: float = T0, corrupt: bool = False,
              live: bool = False) -> Path:
    """One run directory. `live` makes a running run whose worker is this very process (so
    it is not stale); otherwise statuses are final and no process is involved."""
    path = root / name
    path.mkdir(parents=True)
    run = RunDir(path)
    run.write_config(cfg)
    end = state if state in ("done", "stopped", "diverged", "failed") else None
    events = _events(cfg, steps, collapse, end, reason) if state != "queued" else []
    with open(run.file(EVENTS), "w", encoding="utf-8") as f:
        for i, event in enumerate(events):
            if corrupt and i == 3:      # a line cut short (a crash mid-write), then more
                f.write('{"type": "train", "step": 7, "loss": 0.\n')
            append_event(f, event, t=T0 + i)
    run.write_status(Status(state=state, pid=os.getpid() if live else None,
                            host=socket.gethostname(),
                            heartbeat=time.time() if live else T0 + 100,
                            started=None if state == "queued" else started, reason=reason,
                            step=steps, total_steps=30, device="cpu"), beat=False)
    if end:
        best = max((e["acc"] for e in events if e["type"] == "eval"), default=None)
        run.write_summary({"status": state, "reason": reason, "best_val_acc": best,
                           "wall_s": steps * 4.0, "steps": steps,
                           "test_acc": 0.71 if state == "done" else None})
    (path / "worker.log").write_text("".join(f"step {s}: ok\n" for s in range(5, steps + 1, 5))
                                     + (f"{reason}\n" if reason else ""))
    return path


def write_fixture_runs(root: Path) -> list[str]:
    """Six runs, one per state, with distinct start times (newest first in the table)."""
    mlp = {"name": "mlp", "width": 64, "depth": 2}
    specs = [
        ("bp-mlp", _config("bp-mlp", "bp", mlp), "done", 30, {}),
        ("fa-mlp", _config("fa-mlp", "fa", mlp), "done", 30, {"corrupt": True}),
        ("ldfa-cnn", _config("ldfa-cnn", "ldfa", {"name": "cnn", "widths": [8, 8, 16, 16]},
                             "muon", rank=10, adapt="oja"), "running", 15, {"live": True}),
        ("dfa-mlp", _config("dfa-mlp", "dfa", mlp), "diverged", 20,
         {"reason": "non-finite loss at step 17"}),
        ("usf-mlp", _config("usf-mlp", "usf", mlp, "adam"), "failed", 10,
         {"reason": "RuntimeError: CUDA out of memory"}),
        ("frsf-mlp", _config("frsf-mlp", "frsf", mlp), "queued", 0, {}),
    ]
    for i, (name, cfg, state, steps, kw) in enumerate(specs):
        path = write_run(root, name, cfg, state, steps, started=T0 + 60 * i, **kw)
        os.utime(path / "config.toml", (T0 + 60 * i, T0 + 60 * i))
    return [s[0] for s in specs]


def write_seed_runs(root: Path, seeds: int = 3) -> list[str]:
    """A sweep over seeds of fa and of bp (`fa-sweep-seed=N`, `bp-sweep-seed=N`): two
    conditions of `seeds` runs each, whose curves differ by a seed-dependent offset."""
    mlp = {"name": "mlp", "width": 64, "depth": 2}
    names = []
    for r, rule in enumerate(("fa", "bp")):
        for seed in range(seeds):
            name = f"{rule}-sweep-seed={seed}"
            write_run(root, name, _config(name, rule, mlp, seed=seed), "done", 30,
                      started=T0 + 600 + 60 * (r * seeds + seed))
            names.append(name)
    return names
