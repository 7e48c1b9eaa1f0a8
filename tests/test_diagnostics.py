"""engine/diagnostics.py: the probe measures what science.md §3 says, on real tiny models, and
never perturbs training."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_contract.config import RuleCfg
from engine.diagnostics import Diagnostics
from engine.layers import attach
from engine.metrics import angle, erank, spectrum_stats
from engine.rules import RULES, build_rule

N = 24


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _mlp(dropout: float = 0.0, batchnorm: bool = False) -> nn.Sequential:
    norm = (lambda w: nn.BatchNorm1d(w)) if batchnorm else (lambda w: nn.Identity())
    return nn.Sequential(nn.Linear(12, 20), norm(20), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(20, 16), norm(16), nn.ReLU(), nn.Linear(16, 5))


def _cnn(batchnorm: bool = False, dropout: float = 0.0) -> nn.Sequential:
    norm = nn.BatchNorm2d(4) if batchnorm else nn.Identity()
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm, nn.ReLU(), nn.Dropout(dropout),
                         nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 3 * 3, 5))


def _setup(model: nn.Module, rule_name: str, x: torch.Tensor, layout: str = "sample"):
    y = torch.randint(0, 5, (len(x),))
    rule = build_rule(RuleCfg(name=rule_name), seed=0)
    attach(model, rule, x[:2])
    return rule, Diagnostics(model, rule, x, y, F.cross_entropy, conv_layout=layout), y


def _sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
    """Plain SGD by hand (torch.optim's first step imports the compiler: seconds of test time)."""
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad


def _mlp_setup(rule_name: str, **kw):
    x = torch.randn(N, 12)
    return (*_setup(_mlp(**kw), rule_name, x), x)


# --- exactness -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_bp_shadow_equals_bp(make):
    x = torch.randn(N, 12) if make is _mlp else torch.randn(N, 3, 6, 6)
    rule, diag, _ = _setup(make(), "bp", x)
    out = diag.measure()
    assert out["probe_n"] == N and list(out["layers"]) == [m.layer_name for m in rule.layers]
    for r in out["layers"].values():
        assert r["angle_delta"] == pytest.approx(0.0, abs=1e-3)
        assert r["angle_delta_sample"] == pytest.approx(0.0, abs=1e-3)
        assert r["angle_grad"] == pytest.approx(0.0, abs=1e-3)
        assert r["erank_err"] == r["erank_err_bp"] and r["erank_grad"] == r["erank_grad_bp"]
        assert r["angle_weight"] is None and r["fb_ratio"] is None
        assert r["erank_step"] is None and r["angle_step"] is None


@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_fa_with_feedback_equal_to_weight_is_bp(make):
    x = torch.randn(N, 12) if make is _mlp else torch.randn(N, 3, 6, 6)
    rule, diag, _ = _setup(make(), "fa", x)
    with torch.no_grad():
        for m in rule.layers:
            m.feedback.copy_(m.weight)
    for r in diag.measure()["layers"].values():
        assert r["angle_delta"] == pytest.approx(0.0, abs=1e-3)
        assert r["angle_delta_sample"] == pytest.approx(0.0, abs=1e-3)
        assert r["angle_grad"] == pytest.approx(0.0, abs=1e-3)
        assert r["erank_err"] == r["erank_err_bp"] and r["pr_err"] == r["pr_err_bp"]
        assert r["erank_grad"] == pytest.approx(r["erank_grad_bp"], rel=1e-5)
    for r in list(diag.measure()["layers"].values())[1:]:   # the first layer's B is unused
        assert r["angle_weight"] == pytest.approx(0.0, abs=1e-3)
        assert r["fb_ratio"] == pytest.approx(1.0, rel=1e-6)


def test_fa_random_feedback_at_init():
    x = torch.randn(N, 12)
    model = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(),
                          nn.Linear(48, 5))
    rule, diag, _ = _setup(model, "fa", x)
    layers = diag.measure()["layers"]
    assert layers[rule.layers[0].layer_name]["angle_weight"] is None
    for r in list(layers.values())[1:]:
        assert abs(r["angle_weight"] - 90.0) < 10.0
        assert 0.8 < r["fb_ratio"] < 1.25
    head = layers[rule.layers[-1].layer_name]
    assert head["angle_delta"] == pytest.approx(0.0, abs=1e-3)  # the output error is exact
    hidden = layers[rule.layers[0].layer_name]
    assert hidden["angle_delta"] > 30.0 and hidden["erank_err"] != hidden["erank_err_bp"]


# --- the numbers are the math's -------------------------------------------------------------

def test_metrics_match_direct_computation():
    rule, diag, y, x = _mlp_setup("fa")
    out = diag.measure()
    logits = diag.model(x)
    loss = F.cross_entropy(logits, y)
    assert out["probe_loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert out["probe_acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    first, head = rule.layers[0], rule.layers[-1]
    # the head's error is (softmax − onehot) / N for a mean cross-entropy
    delta = (logits.softmax(1) - F.one_hot(y, 5)) / N
    r = out["layers"][head.layer_name]
    assert (r["erank_err"], r["pr_err"]) == pytest.approx(spectrum_stats(delta.detach()),
                                                          rel=1e-4)
    assert r["rows"] == N
    assert out["layers"][first.layer_name]["erank_act"] == pytest.approx(erank(x), rel=1e-5)
    # the rule's pseudo-gradient and the BP gradient, from independent autograd passes
    g_rule = torch.autograd.grad(loss, first.weight)[0]
    with rule.exact_backward():
        g_bp = torch.autograd.grad(F.cross_entropy(diag.model(x), y), first.weight)[0]
    r = out["layers"][first.layer_name]
    assert r["angle_grad"] == pytest.approx(angle(g_rule, g_bp), abs=1e-3)
    assert r["erank_grad"] == pytest.approx(erank(g_rule), rel=1e-5)
    assert r["erank_grad_bp"] == pytest.approx(erank(g_bp), rel=1e-5)


def test_applied_step_metrics():
    rule, diag, y, x = _mlp_setup("fa")
    with rule.exact_backward():
        g_bp = torch.autograd.grad(F.cross_entropy(diag.model(x), y),
                                   [m.weight for m in rule.layers])
    step = {m.layer_name: -0.1 * g for m, g in zip(rule.layers, g_bp)}
    for m, g in zip(rule.layers, g_bp):
        r = diag.measure(step)["layers"][m.layer_name]
        assert r["angle_step"] == pytest.approx(0.0, abs=1e-3)
        assert r["erank_step"] == pytest.approx(r["erank_grad_bp"], rel=1e-5)
        assert r["pr_step"] == pytest.approx(r["pr_grad_bp"], rel=1e-5)
    partial = diag.measure({rule.layers[0].layer_name: torch.randn_like(rule.layers[0].weight)})
    assert partial["layers"][rule.layers[1].layer_name]["erank_step"] is None
    assert partial["layers"][rule.layers[0].layer_name]["erank_step"] > 1.0


# --- layouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["sample", "pixel"])
def test_conv_rows_follow_the_layout(layout):
    x = torch.randn(N, 3, 6, 6)
    rule, diag, _ = _setup(_cnn(), "fa", x, layout)
    layers = diag.measure()["layers"]
    conv1, conv2, head = (layers[m.layer_name] for m in rule.layers)
    if layout == "sample":
        assert (conv1["rows"], conv2["rows"]) == (N, N)
    else:
        assert (conv1["rows"], conv2["rows"]) == (N * 6 * 6, N * 3 * 3)
        assert conv1["erank_err"] <= 4 + 1e-4 and conv1["erank_act"] <= 3 + 1e-4  # ≤ channels
    assert head["rows"] == N
    for r in layers.values():
        assert 1.0 <= r["erank_err"] <= min(r["rows"], 6 * 6 * 4) + 1e-4


@pytest.mark.parametrize("layout", ["sample", "pixel"])
def test_channels_last_measures_what_contiguous_measures(layout):
    """A channels_last model's errors are flattened in storage order (no copy): every metric,
    the angles and the trajectory window's included, equals the contiguous model's to fp32
    round-off, over probes taken between SGD steps. The window stacks rows in logical order,
    so the two runs' windows hold the same numbers."""
    x, y = torch.randn(N, 3, 6, 6), torch.randint(0, 5, (N,))
    base = _cnn(batchnorm=True)
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        model = copy.deepcopy(base)
        rule = build_rule(RuleCfg(name="fa"), seed=0)
        attach(model, rule, x[:2])
        xi = x
        if fmt == "channels_last":
            model.to(memory_format=torch.channels_last)
            xi = x.contiguous(memory_format=torch.channels_last)
            assert not rule.layers[0].weight.is_contiguous()
        diag = Diagnostics(model, rule, xi, y, F.cross_entropy, conv_layout=layout, window=3)
        out = []
        for _ in range(3):
            _sgd_step(model, xi, y, lr=0.05)
            out.append(diag.measure()["layers"])
        runs[fmt] = (out, diag.window.state_dict())
    (a, wa), (b, wb) = runs["contiguous"], runs["channels_last"]
    assert a[-1]["0"]["erank_sent_traj"] is None and a[-1]["4"]["erank_sent_traj"] is not None
    for la, lb in zip(a, b):
        for name in la:
            for k, v in la[name].items():
                if v is None:
                    assert lb[name][k] is None, (name, k)
                else:
                    assert lb[name][k] == pytest.approx(v, rel=2e-4, abs=2e-3), (name, k)
    for name in wa:
        for signal, blocks in wa[name].items():
            for u, v in zip(blocks, wb[name][signal]):
                torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_token_linear_pixel_layout_has_one_row_per_token():
    x = torch.randn(N, 7, 12)  # (N, T, D) tokens through a per-token MLP
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 5), nn.Flatten(),
                          nn.Linear(35, 5))
    rule, diag, _ = _setup(model, "fa", x, "pixel")
    rows = [diag.measure()["layers"][m.layer_name]["rows"] for m in rule.layers]
    assert rows == [N * 7, N * 7, N]


# --- conservation ----------------------------------------------------------------------------

def test_conservation_drift_is_reported_for_linear_pairs():
    rule, diag, y, x = _mlp_setup("fa")
    fc1, fc2, head = rule.layers
    first = diag.measure()["layers"]
    assert first[fc1.layer_name]["cons_drift"] == 0.0
    assert first[fc2.layer_name]["cons_drift"] == 0.0
    assert first[head.layer_name]["cons_drift"] is None
    for _ in range(10):
        _sgd_step(diag.model, x, y, lr=0.02)
    later = diag.measure()["layers"]
    assert 0.0 < later[fc1.layer_name]["cons_drift"] < 1e-3
    assert 0.0 < later[fc2.layer_name]["cons_drift"] < 1e-3


def test_no_conservation_on_conv_layers():
    rule, diag, _ = _setup(_cnn(), "fa", torch.randn(N, 3, 6, 6))
    assert all(r["cons_drift"] is None for r in diag.measure()["layers"].values())


# --- must not perturb training --------------------------------------------------------------

def _state(model: nn.Module) -> dict:
    s = {f"p.{k}": v.detach().clone() for k, v in model.named_parameters()}
    s.update({f"g.{k}": v.grad.clone() for k, v in model.named_parameters()
              if v.grad is not None})
    s.update({f"b.{k}": v.clone() for k, v in model.named_buffers()})
    return s


@pytest.mark.parametrize("rule_name", ["bp", "fa", "brsf"])
@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_measure_leaves_everything_bit_identical(make, rule_name):
    x = torch.randn(N, 12) if make is _mlp else torch.randn(N, 3, 6, 6)
    model = make(batchnorm=True, dropout=0.3)
    rule, diag, y = _setup(model, rule_name, x)
    model.train()
    F.cross_entropy(model(x), y).backward()  # real .grad and moved running stats
    before, rng = _state(model), torch.get_rng_state()
    out = diag.measure({m.layer_name: torch.ones_like(m.weight) for m in rule.layers})
    after = _state(model)
    assert before.keys() == after.keys() and any(k.startswith("g.") for k in before)
    assert any("num_batches_tracked" in k for k in before)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and rule.recorder is None and not rule.exact
    assert all(math.isfinite(r["erank_err"]) for r in out["layers"].values())


def test_training_with_probes_equals_training_without():
    def train(probe: bool) -> dict:
        torch.manual_seed(1)
        model = _mlp(dropout=0.3, batchnorm=True)
        x = torch.randn(N, 12)
        rule, diag, y = _setup(model, "fa", x)
        for _ in range(4):
            if probe:
                diag.measure()
            _sgd_step(model, x, y, lr=0.05)
        return _state(model)

    with_probe, without = train(True), train(False)
    assert all(torch.equal(with_probe[k], without[k]) for k in without)


# --- robustness ------------------------------------------------------------------------------

def test_bf16_autocast_gives_fp32_metrics():
    rule, diag, _, _ = _mlp_setup("bp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = diag.measure()
    for r in out["layers"].values():
        assert r["angle_grad"] == pytest.approx(0.0, abs=1e-3)
        assert math.isfinite(r["erank_err"]) and math.isfinite(r["erank_act"])


def test_non_finite_weights_give_none_not_an_error():
    rule, diag, _, _ = _mlp_setup("fa")
    with torch.no_grad():
        rule.layers[1].weight[0, 0] = math.nan
    out = diag.measure()
    r = out["layers"][rule.layers[1].layer_name]
    assert out["probe_loss"] is None
    assert r["erank_err"] is None and r["angle_weight"] is None


def test_constructor_rejects_a_bad_layout():
    rule = build_rule(RuleCfg(name="bp"), seed=0)
    model = _mlp()
    attach(model, rule, torch.randn(2, 12))
    with pytest.raises(ValueError):
        Diagnostics(model, rule, torch.randn(4, 12), torch.zeros(4, dtype=torch.long),
                    F.cross_entropy, conv_layout="rows")


@pytest.mark.skipif("dfa" not in RULES, reason="engine/rules/dfa.py not written yet")
def test_dfa_last_layer_gets_the_true_gradient():
    rule, diag, _, _ = _mlp_setup("dfa")
    layers = diag.measure()["layers"]
    head = layers[rule.layers[-1].layer_name]
    assert head["angle_grad"] == pytest.approx(0.0, abs=1e-3)
    assert all(r["angle_weight"] is None and r["cons_drift"] is None for r in layers.values())


@pytest.mark.skipif("ldfa" not in RULES, reason="engine/rules/ldfa.py not written yet")
def test_ldfa_full_rank_fit_is_bp():
    x = torch.randn(N, 12)
    y = torch.randint(0, 5, (N,))
    rule = build_rule(RuleCfg(name="ldfa", rank=64, adapt="fit"), seed=0)
    model = _mlp()
    attach(model, rule, x[:2])
    out = Diagnostics(model, rule, x, y, F.cross_entropy).measure()
    for i, r in enumerate(out["layers"].values()):
        assert i == 0 or r["angle_weight"] == pytest.approx(0.0, abs=1e-2)
        assert r["angle_delta"] == pytest.approx(0.0, abs=1e-2)
        assert r["angle_grad"] == pytest.approx(0.0, abs=1e-2)
        assert i == 0 or r["fb_ratio"] == pytest.approx(1.0, rel=1e-4)
