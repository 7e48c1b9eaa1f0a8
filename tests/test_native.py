"""The C++ backward of fa-style rules (engine/native) trains exactly as the Python one does.

- Bit-identical weights after several SGD steps, C++ against Python backward, for every rule
  with a fixed feedback tensor, on Linear (flat and token-shaped inputs) and Conv2d (bias or
  not, stride, groups) layers, on the CPU and, when there is one, on a GPU.
- Where the ops cannot be built (no working compiler) a run says so once on stderr and trains
  with the Python backward; FA_TUI_NATIVE=0 never builds them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_contract.config import RuleCfg
from engine import native
from engine.layers import attach
from engine.rules import build_rule
from fa_tui.launch import ROOT

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                 reason="no C++ compiler to build engine/native")]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Tokens(nn.Module):
    """Linear layers on (N, T, D) inputs, as a ViT's are."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.b(torch.relu(self.a(x.reshape(len(x), 4, 6)))))
        return self.head(h.mean(1))


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                                  nn.Linear(16, 3)), (24,)),
    "tokens": (Tokens, (24,)),
    "cnn": (lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1,
                                                             bias=False),
        nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 3)), (2, 8, 8)),
}


def train(rule: str, model: str, use_native: bool, device: str, steps: int = 4) -> list:
    make, shape = MODELS[model]
    torch.manual_seed(0)
    net = make().to(device)
    r = build_rule(RuleCfg(name=rule), seed=1)
    attach(net, r, torch.randn(2, *shape, device=device))
    assert (r.native_ops is not None) == native.enabled()
    if not use_native:
        r.native_ops = None
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps):
        r.before_step()
        x = torch.randn(16, *shape, generator=gen).to(device)
        y = torch.randint(0, 3, (16,), generator=gen).to(device)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return [p.detach().cpu() for p in net.parameters()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "brsf"])
def test_the_cpp_backward_trains_bit_identically_to_the_python_one(rule, model, device):
    if not native.enabled():
        pytest.skip("FA_TUI_NATIVE=0")
    got = train(rule, model, True, device)
    want = train(rule, model, False, device)
    start = train(rule, model, True, device, steps=0)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert not all(torch.equal(a, b) for a, b in zip(got, start))     # training moved them


def test_the_ops_take_the_place_of_the_python_function_in_training_only():
    """A training forward of fa builds a C++ node; a probe pass (recorder set) and dfa keep
    the Python function, which the diagnostics need."""
    if not native.enabled():
        pytest.skip("FA_TUI_NATIVE=0")
    names = {}
    for rule in ("fa", "dfa"):
        torch.manual_seed(0)
        net, shape = MODELS["mlp"][0](), MODELS["mlp"][1]
        r = build_rule(RuleCfg(name=rule), seed=1)
        attach(net, r, torch.randn(2, *shape))
        out = net(torch.randn(4, *shape))
        names[rule] = out.grad_fn.name()     # the head's node
        r.recorder = type("Recorder", (), {"input": lambda *a: None})()
        names[rule + " probe"] = net(torch.randn(4, *shape)).grad_fn.name()
        r.recorder = None
    assert "FeedbackLinear" in names["fa"], names
    assert names["fa probe"] == names["dfa"] == names["dfa probe"] == "_RuleFnBackward"


def _fresh_python(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = textwrap.dedent("""
        import torch
        from fa_contract.config import RuleCfg
        from engine.layers import attach
        from engine.rules import build_rule
        net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        rule = build_rule(RuleCfg(name="fa"), seed=0)
        attach(net, rule, torch.randn(2, 5))
        net(torch.randn(3, 5)).sum().backward()
        print(rule.native_ops is None, net[2].weight.grad is not None)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


def test_workers_starting_together_on_an_empty_cache_all_get_the_ops(tmp_path):
    """Two processes build at once (a sweep's first workers on a fresh machine): each builds
    in its own folder and renames the result into place, so both train with the ops, no
    half-written library is ever loaded, and no build folder is left behind."""
    env = {**os.environ, "FA_TUI_CACHE": str(tmp_path), "FA_TUI_NATIVE": "1"}
    code = "from engine import native; import sys; sys.exit(native.ops() is None)"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    [folder] = (tmp_path / "native").iterdir()
    assert [f.name for f in folder.iterdir()] == [f"{native.NAME}.so"]


def test_without_a_working_compiler_a_run_says_so_once_and_trains(tmp_path):
    out = _fresh_python({"FA_TUI_CACHE": str(tmp_path), "CXX": "false", "FA_TUI_NATIVE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
    assert out.stderr.count("the C++ fa ops are unavailable") == 1
    assert "python -m engine.native" in out.stderr


def test_fa_tui_native_0_never_builds(tmp_path):
    out = _fresh_python({"FA_TUI_CACHE": str(tmp_path), "FA_TUI_NATIVE": "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
    assert not (tmp_path / "native").exists() and out.stderr == ""
