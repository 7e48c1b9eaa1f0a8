"""Feedback scale at init (issue 8): DFA with Launay et al.'s normalisation sends errors of
about BP's size, and ldfa's `fit` feedback has the norm of W.

The error compared is the one arriving at each weight layer's output (δ_l, after φ' and
pooling), recorded by a plain recorder object on the rule, for the rule's pass and the exact-BP
pass on the same weights and batch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fa_contract.config import Config
from engine.layers import attach
from engine.models import build_model
from engine.rules import build_rule


class Recorder:
    """Receives each layer's input, output error and sent error (the interface
    engine.layers calls)."""

    def __init__(self) -> None:
        self.phase = "rule"
        self.errors: dict[str, dict[str, Tensor]] = {"rule": {}, "bp": {}}

    def input(self, layer: nn.Module, x: Tensor) -> None:
        pass

    def error(self, layer: nn.Module, grad_out: Tensor) -> None:
        self.errors[self.phase][layer.layer_name] = grad_out.detach()

    def sent(self, layer: nn.Module, grad_input: Tensor) -> None:
        pass


def error_norm_ratios(model_cfg: dict, rule_cfg: dict) -> dict[str, float]:
    cfg = Config.model_validate({"model": model_cfg, "rule": rule_cfg})
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    rule = build_rule(cfg.rule, 1000)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    attach(model, rule, x[:2])
    rec = Recorder()
    rule.recorder = rec
    loss = F.cross_entropy(model(x), y)
    weights = [m.weight for m in rule.layers]
    torch.autograd.grad(loss, weights, retain_graph=True)
    rec.phase = "bp"
    with rule.exact_backward():
        torch.autograd.grad(loss, weights)
    return {name: float(e.norm() / rec.errors["bp"][name].norm())
            for name, e in rec.errors["rule"].items()}


def test_dfa_error_norms_match_bp_in_an_mlp():
    # 784-256x3-10 ReLU MLP. Measured: fc1 3.3, fc2 1.3, fc3 0.53 (the old 1/sqrt(n_L)
    # scale gave 53, 22 and 8.5, and the MLP diverged at SGD lr 0.01)
    ratios = error_norm_ratios({"name": "mlp", "depth": 3, "width": 256}, {"name": "dfa"})
    assert ratios["head"] == pytest.approx(1.0)            # the head's error is e itself
    assert all(0.25 <= r <= 4 for r in ratios.values()), ratios
    old = error_norm_ratios({"name": "mlp", "depth": 3, "width": 256},
                            {"name": "dfa", "feedback_norm": "fan_out"})
    assert old["fc1"] > 20                                  # the scale issue 8 reported


def test_dfa_error_norms_match_bp_in_a_cnn():
    """At PyTorch's default init: every hidden conv layer's δ within [1/4, 4] of BP's, except
    conv1 where BP's own error has shrunk ~5x from the head (the DFA signal keeps about ‖e‖
    at every depth by construction): measured 4.9 (widths 16-32-32-32). conv1 is held to the
    looser [1/4, 8] here; under kaiming_out every layer is inside [1/4, 4] (below)."""
    ratios = error_norm_ratios({"name": "cnn", "widths": [16, 32, 32, 32]}, {"name": "dfa"})
    inner = {k: v for k, v in ratios.items() if k != "conv1"}
    assert all(0.25 <= r <= 4 for r in inner.values()), ratios
    assert 0.25 <= ratios["conv1"] <= 8, ratios


@pytest.mark.parametrize("model_cfg", [{"name": "mlp", "depth": 3, "width": 256},
                                       {"name": "cnn", "widths": [8, 16, 16, 16]},
                                       {"name": "cnn", "widths": [16, 32, 32, 32]},
                                       {"name": "cnn", "widths": [32, 64, 64, 128]}],
                         ids=["mlp", "cnn8", "cnn16", "cnn32"])
def test_dfa_error_norms_within_a_factor_4_of_bp_at_every_layer(model_cfg):
    """Issue 8's bound, for an MLP and CNNs, at every layer: under the init that keeps BP's
    error scale with depth also where layers widen (model.init = "kaiming_out": He normal,
    fan_out, as torchvision's convs), DFA / BP is about 1/sqrt(n_L) everywhere. Measured
    0.30-0.32 (MLP) and 0.26-0.44 (CNNs). Under fan_in He init the CNN's conv1 is 0.22 (BP's
    error grows by sqrt(2) where 16 channels become 32), under PyTorch's default 4.9."""
    ratios = error_norm_ratios({**model_cfg, "init": "kaiming_out"}, {"name": "dfa"})
    assert ratios.pop("head") == pytest.approx(1.0)
    assert all(0.25 <= r <= 4 for r in ratios.values()), ratios
    assert all(0.5 / 10 ** 0.5 <= r <= 1.5 / 10 ** 0.5 for r in ratios.values()), ratios
    if model_cfg["name"] == "cnn" and model_cfg["widths"][0] == 16:
        fan_in = error_norm_ratios({**model_cfg, "init": "kaiming"}, {"name": "dfa"})
        assert fan_in["conv1"] < 0.25 < fan_in["conv2"], fan_in   # why fan_out is needed


@pytest.mark.parametrize("model_cfg", [{"name": "mlp", "depth": 3, "width": 256},
                                       {"name": "cnn", "widths": [16, 32, 32, 32]}],
                         ids=["mlp", "cnn"])
def test_under_he_init_dfa_is_a_fixed_fraction_of_bp_at_every_depth(model_cfg):
    """model.init = "kaiming" keeps BP's error scale with depth, so DFA / BP is flat: about
    1/sqrt(n_L) (Launay's signal is ‖e‖/√n_L; BP carries ‖e‖). Measured 0.30-0.32 (MLP) and
    0.22-0.31 (CNN), against 0.53-3.3 and 0.55-4.9 under PyTorch's default init."""
    ratios = error_norm_ratios({**model_cfg, "init": "kaiming"}, {"name": "dfa"})
    hidden = [r for name, r in ratios.items() if name != "head"]
    assert all(0.15 <= r <= 0.5 for r in hidden), ratios
    assert max(hidden) / min(hidden) < 1.6, ratios        # flat in depth
    default = error_norm_ratios(model_cfg, {"name": "dfa"})
    spread = [r for name, r in default.items() if name != "head"]
    assert max(spread) / min(spread) > 3, default          # BP's shrinkage at PyTorch's init


def test_he_init_keeps_activations_and_errors_at_scale():
    """The init itself: hidden pre-activations of a deep ReLU MLP keep their second moment
    (He et al.'s fixed point: 2·E[x²] for unit inputs) where PyTorch's default shrinks them
    by ~1/6 per layer."""
    def moments(init: str) -> list[float]:
        cfg = Config.model_validate({"model": {"name": "mlp", "depth": 6, "width": 512,
                                               "init": init}})
        torch.manual_seed(0)
        model = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
        x = torch.randn(512, 784)
        out = []
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    x = m(x)
                    out.append(float(x.pow(2).mean()))
                    x = torch.relu(x)
        return out[:-1]
    he, default = moments("kaiming"), moments("default")
    assert all(1.5 < m < 2.7 for m in he), he
    assert default[-1] < 0.01 * default[0], default


def test_dfa_sent_signal_has_the_norm_of_e():
    """Launay's scale: E‖e B_l‖² = ‖e‖²/n_L exactly, whatever the width dim_l."""
    cfg = Config.model_validate({"model": {"name": "mlp", "depth": 2, "width": 2048},
                                 "rule": {"name": "dfa"}})
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    rule = build_rule(cfg.rule, 1000)
    attach(model, rule, torch.randn(2, 1, 28, 28))
    e = torch.randn(64, 10)
    for m in rule.layers[1:]:
        sent = e @ m.dfa_feedback
        ratio = float(sent.norm() / e.norm()) * 10 ** 0.5
        assert ratio == pytest.approx(1.0, abs=0.1), (m.layer_name, ratio)


@pytest.mark.parametrize("rank", [1, 2, 10])
@pytest.mark.parametrize("model_cfg", [{"name": "mlp", "depth": 2, "width": 256},
                                       {"name": "cnn", "widths": [8, 16, 16, 16]}])
def test_ldfa_fit_feedback_has_the_norm_of_w(rank, model_cfg):
    cfg = Config.model_validate({"model": model_cfg,
                                 "rule": {"name": "ldfa", "adapt": "fit", "rank": rank}})
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    rule = build_rule(cfg.rule, 1000)
    attach(model, rule, torch.randn(2, 1, 28, 28))
    for m in rule.layers:
        fb = rule.effective_feedback(m)
        torch.testing.assert_close(fb.norm(), m.weight.detach().norm(), rtol=1e-5, atol=0)
        raw = (m.feedback_p @ m.feedback_q).view(m.weight.shape)
        # same direction as the truncated SVD fit
        cos = F.cosine_similarity(fb.flatten(), raw.flatten(), dim=0)
        assert float(cos) == pytest.approx(1.0, abs=1e-5)
    # raw keeps the fit's smaller norm at low rank
    raw_cfg = Config.model_validate({"model": model_cfg, "rule": {
        "name": "ldfa", "adapt": "fit", "rank": rank, "fit_scale": "raw"}})
    torch.manual_seed(0)
    model = build_model(raw_cfg.model, raw_cfg.norm, (1, 28, 28), 10)
    rule = build_rule(raw_cfg.rule, 1000)
    attach(model, rule, torch.randn(2, 1, 28, 28))
    hidden = rule.layers[1]
    assert rule.effective_feedback(hidden).norm() < 0.9 * hidden.weight.norm()


def test_kaiming_out_draws_hidden_layers_by_fan_out_and_the_head_by_fan_in():
    cfg = Config.model_validate({"model": {"name": "cnn", "widths": [16, 32, 32, 32],
                                           "init": "kaiming_out"}})
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    conv2, head = layers[1], layers[-1]
    assert float(conv2.weight.detach().std()) == pytest.approx((2 / (32 * 9)) ** 0.5, rel=0.05)
    assert float(head.weight.detach().std()) == pytest.approx(head.in_features ** -0.5, rel=0.05)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in layers if m.bias is not None)
