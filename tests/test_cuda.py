"""The CUDA path end to end, as a run on a GPU server takes it: bf16 autocast through the rule
Function, channels_last convs, Muon on channels_last weights, data stored on the GPU and
augmented there, diagnostics on the GPU agreeing with the CPU, and a worker process run.

Skipped where torch sees no GPU (CI has none); docs/benchmarks.md says where and when these
last ran on one. The CPU suite covers the same code paths' math; these check that nothing in
them assumes the CPU (devices of new tensors, index-less devices, syncs, dtypes)."""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import data
from fa_contract.config import Config
from engine.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "mlp": {"name": "mlp", "width": 32, "depth": 2},
    "cnn": {"name": "cnn", "widths": [8, 8, 16, 16]},
    "resnet18": {"name": "resnet18"},
    "vit": {"name": "vit", "width": 32, "depth": 1, "heads": 2, "patch": 4},
}
RULES = {"bp": {"name": "bp"}, "fa": {"name": "fa"}, "usf": {"name": "usf"},
         "brsf": {"name": "brsf"}, "frsf": {"name": "frsf"}, "dfa": {"name": "dfa"},
         "ldfa": {"name": "ldfa", "adapt": "oja"}}


def gpu_cfg(**sections: dict) -> Config:
    cfg = {"run": {"device": "cuda", "seed": 0},
           "data": {"name": "synthetic", "shape": [3, 32, 32], "classes": 10, "train_size": 192,
                    "val_size": 64, "test_size": 64},
           "norm": {"name": "batchnorm"},
           "optim": {"name": "muon", "lr": 0.02},
           "train": {"epochs": 1, "batch_size": 32, "log_every": 2},
           "metrics": {"every": 2, "probe_size": 64}}
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return Config.model_validate(cfg)


def finite(values) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", MODELS)
def test_every_rule_trains_every_model_on_the_gpu(model, rule):
    """bf16 autocast, channels_last for convnets and Muon: the GPU defaults."""
    tr = Trainer(gpu_cfg(model=MODELS[model], rule=RULES[rule]))
    events = list(tr.events())
    start, end = events[0], events[-1]
    assert start["device"] == f"cuda:{torch.cuda.current_device()}"
    assert start["amp"] is True
    assert start["channels_last"] is (model in ("cnn", "resnet18"))
    assert start["cuda_graph"] is True
    assert end["status"] == "done", end
    assert all(p.is_cuda and p.dtype == torch.float32 for p in tr.model.parameters())
    if start["channels_last"]:
        convs = [m.weight for m in tr.layers if m.weight.dim() == 4 and m.weight.shape[-1] > 1]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert start["routing"]["muon"] and start["routing"]["adamw"]
    trains = [e for e in events if e["type"] == "train"]
    assert trains and finite(e["loss"] for e in trains)
    # the Runs table's GPU memory column: what the caching allocator holds, in MiB
    assert all(0 < e["gpu_mem_mib"] <= torch.cuda.get_device_properties(0).total_memory / 2**20
               for e in trains)
    diags = [e for e in events if e["type"] == "diag"]
    assert len(diags) == 1 + tr.total_steps // 2
    for d in diags:
        for name, layer in d["layers"].items():
            assert finite(v for k, v in layer.items() if k != "rows"), (name, layer)


@pytest.mark.parametrize("rule", ["fa", "brsf", "dfa", "ldfa"])
def test_cuda_graph_steps_compute_what_eager_steps_compute(rule):
    """Replayed graphs against the same run launched op by op: the same weights, feedback
    (ldfa learns its feedback inside the captured backward; brsf redraws before each replay)
    and norm statistics, to float tolerance. The capture's warm-up passes leave no trace."""
    runs = {}
    for graph in ("on", "off"):
        tr = Trainer(gpu_cfg(model=MODELS["cnn"], rule=RULES[rule],
                             train={"cuda_graph": graph, "epochs": 2}, metrics={"every": 0}))
        events = list(tr.events())
        assert events[0]["cuda_graph"] is (graph == "on")
        runs[graph] = tr.model.state_dict()
    for key, value in runs["off"].items():
        torch.testing.assert_close(runs["on"][key], value, atol=2e-3, rtol=2e-2, msg=key)
    if rule == "ldfa":
        assert not torch.equal(runs["on"]["conv2.feedback_p"],
                               Trainer(gpu_cfg(model=MODELS["cnn"], rule=RULES[rule])).model
                               .state_dict()["conv2.feedback_p"])


def test_gpu_diagnostics_agree_with_the_cpu():
    """The step-0 probe of the same weights and feedback on both devices, in fp32 (TF32 off:
    with it, angles between two nearly orthogonal gradients move by ~0.5°): effective ranks
    and angles agree to fp32 precision."""
    probes = {}
    for device in ("cpu", "cuda"):
        cfg = gpu_cfg(run={"device": device}, model=MODELS["cnn"], rule={"name": "fa"},
                      train={"amp": "off", "max_steps": 1}, norm={"name": "none"})
        tr = Trainer(cfg)   # on CUDA it turns TF32 on
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            probes[device] = next(e for e in tr.events() if e["type"] == "diag")
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    cpu, gpu = probes["cpu"]["layers"], probes["cuda"]["layers"]
    assert cpu.keys() == gpu.keys()
    for name in cpu:
        for key, value in cpu[name].items():
            if value is None or key == "rows":
                assert gpu[name][key] == value, (name, key)
            elif key.startswith("angle"):
                assert gpu[name][key] == pytest.approx(value, abs=0.2), (name, key)
            else:
                assert gpu[name][key] == pytest.approx(value, rel=5e-3, abs=1e-6), (name, key)


def test_cifar_files_live_on_the_gpu_and_are_augmented_there(tmp_path, monkeypatch):
    """CIFAR-10 in torchvision's format, read by the real loader: stored as uint8 on the GPU,
    every batch cropped and flipped there, and a resnet18 trains on it."""
    from datafiles import md5_checked, write_cifar10
    from torchvision import datasets
    write_cifar10(tmp_path, per_batch=64, n_test=64)
    monkeypatch.setitem(data.TORCHVISION, "cifar10", md5_checked(datasets.CIFAR10, tmp_path))
    cfg = gpu_cfg(data={"name": "cifar10", "root": str(tmp_path), "val_size": 64,
                        "download": False}, model=MODELS["resnet18"], rule={"name": "fa"})
    tr = Trainer(cfg)
    assert tr.data.train_x.is_cuda and tr.data.train_x.dtype == torch.uint8
    assert tr.batches.augment
    x, y = next(tr.batches.epoch(0))
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32
    events = list(tr.events())
    assert events[-1]["status"] == "done"


def test_a_worker_process_runs_on_the_gpu(tmp_path):
    """`fa-tui run` with run.device = "cuda": a separate process — forked by the scheduler's
    warm server, the default (engine/warm.py), so CUDA must work in a fork of a process that
    imported torch — the run directory says which GPU it used and the checkpoint loads back."""
    preset = tmp_path / "gpu.toml"
    preset.write_text('[run]\nname = "gpu"\ndevice = "cuda"\n'
                      '[data]\nshape = [3, 32, 32]\ntrain_size = 256\nval_size = 64\n'
                      '[model]\nname = "cnn"\nwidths = [8, 8, 16, 16]\n'
                      '[rule]\nname = "fa"\n[optim]\nname = "muon"\nlr = 0.02\n'
                      '[train]\nepochs = 2\nbatch_size = 32\n[metrics]\nevery = 4\n')
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "fa_tui", "run", str(preset), "--runs-dir",
                           str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = runs.iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["type"] == "start")
    assert start["device"].startswith("cuda:") and start["amp"] and start["channels_last"]
    assert any(e["type"] == "diag" for e in events)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["progress"]["step"] == status["step"] > 0


@pytest.mark.parametrize("rule", ["fa", "brsf", "ldfa"])
def test_stop_and_resume_on_the_gpu_continues_the_same_run(rule):
    """A checkpoint taken on the GPU (cuda RNG state included) resumes into a fresh Trainer
    and lands where the uninterrupted run does. Bit-identity is promised on the CPU only
    (cuDNN picks kernels per process), so weights are compared to float tolerance."""
    cfg = gpu_cfg(model=MODELS["cnn"], rule=RULES[rule], train={"epochs": 2})
    whole = Trainer(cfg)
    list(whole.events())
    first = Trainer(cfg)
    stopped = list(first.events(lambda: first.step >= 7))
    assert stopped[-1]["status"] == "stopped"
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = Trainer(cfg)
    second.load_state_dict(torch.load(buf, weights_only=True))
    assert list(second.events())[-1]["status"] == "done"
    a, b = whole.model.state_dict(), second.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-3, rtol=1e-2, msg=key)
