"""The learning rules against exact identities (science.md §1, "Exactness facts"): feedback set to
the forward weight must reproduce backprop, DFA must send exactly e @ B, low-rank feedback at
full rank with PQ = W must be backprop, and the sign family's init angles have closed forms."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fa_contract.config import ModelCfg, NormCfg, RuleCfg
from engine.layers import attach
from engine.rules import RULES, build_rule

TOL = dict(atol=1e-6, rtol=1e-5)


# --- helpers ----------------------------------------------------------------------------------
def with_rule(model: nn.Module, example: Tensor, name: str, seed: int = 1, **cfg) -> tuple:
    """An untouched deepcopy of `model` (native autograd), and `model` attached to the rule."""
    reference = copy.deepcopy(model)
    rule = build_rule(RuleCfg(name=name, **cfg), seed)
    attach(model, rule, example)
    return reference, rule


def grads(model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Input gradient and every parameter gradient of a fixed scalar of the model's output."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    (model(x) * target).sum().backward()
    return x.grad, {n: p.grad for n, p in model.named_parameters()}


def assert_same_grads(model: nn.Module, reference: nn.Module, x: Tensor, **tol) -> None:
    target = torch.randn_like(reference(x))
    gx, gp = grads(model, x, target)
    rx, rp = grads(reference, x, target)
    torch.testing.assert_close(gx, rx, **(tol or TOL))
    assert gp.keys() == rp.keys()
    for n in rp:
        torch.testing.assert_close(gp[n], rp[n], **(tol or TOL), msg=lambda m: f"{n}: {m}")


def angle(u: Tensor, v: Tensor) -> float:
    cos = F.cosine_similarity(u.detach().flatten().double(), v.detach().flatten().double(), dim=0)
    return math.degrees(math.acos(float(cos)))


class SmallNet(nn.Module):
    """conv → relu → pool → linear, the small whole model of the exactness tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class MixedNet(nn.Module):
    """conv → conv → tokens → token linear → mean → head: every kind of layer DFA reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.tok = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.relu(self.tok(h.flatten(2).transpose(1, 2)))    # N × T × D tokens
        return self.head(h.mean(1))


LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (4, 7)),
    "linear_tokens": (lambda: nn.Linear(7, 5), (3, 6, 7)),
    "conv": (lambda: nn.Conv2d(3, 4, 3), (2, 3, 7, 7)),
    "conv_stride_pad_dil": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2),
                            (2, 3, 9, 8)),
    "conv_groups2": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 6, 6)),
    "conv_depthwise": (lambda: nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), (2, 4, 7, 7)),
    "conv_1x1_nobias": (lambda: nn.Conv2d(3, 5, 1, bias=False), (2, 3, 5, 5)),
    "small_model": (SmallNet, (3, 3, 6, 6)),
}


# --- fa with B := W is backprop -----------------------------------------------------------------
@pytest.mark.parametrize("kind", LAYERS)
def test_fa_with_feedback_equal_to_weight_is_bp(kind: str) -> None:
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    model, x = make(), torch.randn(shape)
    reference, rule = with_rule(model, x, "fa")
    for layer in rule.layers:
        layer.feedback.copy_(layer.weight)
    assert_same_grads(model, reference, x)


def test_fa_random_feedback_is_not_bp() -> None:
    """Guards the identity tests against a backward that ignores the feedback altogether."""
    torch.manual_seed(0)
    model, x = nn.Linear(7, 5), torch.randn(4, 7)
    reference, _ = with_rule(model, x, "fa")
    target = torch.randn(4, 5)
    assert not torch.allclose(grads(model, x, target)[0], grads(reference, x, target)[0])


WHOLE_MODELS = {
    "mlp": (dict(name="mlp", width=12, depth=2), "batchnorm", (1, 4, 4)),
    "cnn": (dict(name="cnn", widths=[3, 4, 4, 5]), "layernorm", (2, 8, 8)),
    "resnet18": (dict(name="resnet18"), "batchnorm", (3, 8, 8)),
    "vit": (dict(name="vit", width=8, depth=1, patch=4, heads=2), "layernorm", (3, 8, 8)),
}


@pytest.mark.parametrize("name", WHOLE_MODELS)
def test_fa_with_feedback_equal_to_weight_is_bp_on_whole_models(name: str) -> None:
    from engine.models import build_model
    torch.manual_seed(0)
    model_cfg, norm, shape = WHOLE_MODELS[name]
    model = build_model(ModelCfg(**model_cfg), NormCfg(name=norm), shape, 3)
    x = torch.randn(4, *shape)
    reference, rule = with_rule(model, x, "fa")
    for layer in rule.layers:
        layer.feedback.copy_(layer.weight)
    assert_same_grads(model, reference, x, atol=1e-5, rtol=1e-4)


# --- dfa ----------------------------------------------------------------------------------------
def test_dfa_sends_the_output_error_through_fixed_projections() -> None:
    torch.manual_seed(0)
    model, x = MixedNet(), torch.randn(3, 2, 6, 6)
    reference, rule = with_rule(model, x, "dfa")
    inputs: dict[str, Tensor] = {}

    def keep_input(layer: nn.Module, args: tuple) -> None:
        if args[0].requires_grad:
            args[0].retain_grad()
        inputs[layer.layer_name] = args[0]

    for layer in rule.layers:
        layer.register_forward_pre_hook(keep_input)
    logits = model(x)
    logits.retain_grad()
    target = torch.randn_like(logits)
    (logits * target).sum().backward()
    e = logits.grad                                        # ∂ℒ/∂a_L
    for layer in rule.layers[1:]:
        assert layer.dfa_feedback.shape == (3, math.prod(layer.in_shape))
        expected = (e @ layer.dfa_feedback).reshape(inputs[layer.layer_name].shape)
        torch.testing.assert_close(inputs[layer.layer_name].grad, expected, **TOL)
    # the head's weight gradient is backprop's, hidden ones are not
    (reference(x) * target).sum().backward()
    torch.testing.assert_close(model.head.weight.grad, reference.head.weight.grad, **TOL)
    torch.testing.assert_close(model.head.bias.grad, reference.head.bias.grad, **TOL)
    assert not torch.allclose(model.conv1.weight.grad, reference.conv1.weight.grad)


def test_dfa_first_layer_sends_no_input_error() -> None:
    torch.manual_seed(0)
    model, x = SmallNet(), torch.randn(2, 3, 6, 6)
    _, rule = with_rule(model, x, "dfa")
    assert not hasattr(rule.layers[0], "dfa_feedback")
    x = x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is None
    assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0
    assert rule.effective_feedback(rule.layers[1]) is None


@pytest.mark.parametrize("norm", ["launay", "fan_out", "off", True, False])
def test_dfa_feedback_scale(norm) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 300), nn.ReLU(), nn.Linear(300, 10))
    x = torch.randn(2, 400)
    _, rule = with_rule(model, x, "dfa", feedback_norm=norm)
    b = model[2].dfa_feedback
    # Launay et al.'s code: std 1/sqrt(n_L * dim_l), dim_l = 300 the size of the signal sent;
    # old configs' `true` reads as launay, `false` as off
    expected = {"launay": 1 / math.sqrt(10 * 300), True: 1 / math.sqrt(10 * 300),
                "fan_out": 1 / math.sqrt(10)}.get(norm, float(model[2].weight.detach().std()))
    assert float(b.std()) == pytest.approx(expected, rel=0.05)
    assert float(b.abs().max()) <= expected * math.sqrt(3) * 1.0001   # uniform, like the init


# --- ldfa ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", LAYERS)
def test_ldfa_full_rank_fit_is_bp(kind: str) -> None:
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    model, x = make(), torch.randn(shape)
    reference, rule = with_rule(model, x, "ldfa", rank=10_000, adapt="fit", feedback_lr=0.0)
    for layer in rule.layers:
        torch.testing.assert_close(rule.effective_feedback(layer), layer.weight, **TOL)
    assert_same_grads(model, reference, x, atol=1e-5, rtol=1e-4)


def test_ldfa_hand_set_feedback_is_bp() -> None:
    torch.manual_seed(0)
    model, x = nn.Linear(9, 6), torch.randn(4, 9)
    reference, rule = with_rule(model, x, "ldfa", rank=6, adapt="fixed")
    model.feedback_p.copy_(torch.eye(6))
    model.feedback_q.copy_(model.weight)
    assert_same_grads(model, reference, x)


def test_ldfa_rank_is_clipped_and_bounds_the_feedback() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 20), nn.ReLU(), nn.Linear(20, 4))
    _, rule = with_rule(model, torch.randn(2, 8), "ldfa", rank=6)
    assert model[0].feedback_p.shape == (20, 6) and model[0].feedback_q.shape == (6, 8)
    assert model[2].feedback_p.shape == (4, 4) and model[2].feedback_q.shape == (4, 20)
    p = model[0].feedback_p
    torch.testing.assert_close(p.t() @ p, torch.eye(6), atol=1e-5, rtol=0)
    assert torch.linalg.matrix_rank(rule.effective_feedback(model[0])) == 6


@pytest.mark.parametrize("kind", ["linear_tokens", "conv_stride_pad_dil", "conv_groups2"])
def test_ldfa_oja_q_descends_like_w(kind: str) -> None:
    """Q -= lr · Pᵀ ΔW_true with ΔW_true the layer's true weight gradient (as autograd gives it)."""
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    model, x = make(), torch.randn(shape)
    _, rule = with_rule(model, x, "ldfa", rank=2, adapt="oja", feedback_lr=0.1)
    p0, q0 = model.feedback_p.clone(), model.feedback_q.clone()
    out = model(x)
    (out * torch.randn_like(out)).sum().backward()
    expected = q0 - 0.1 * p0.t() @ model.weight.grad.flatten(1)
    torch.testing.assert_close(model.feedback_q, expected, atol=1e-5, rtol=1e-4)
    assert not torch.equal(model.feedback_p, p0)


def test_ldfa_oja_finds_the_planted_error_subspace() -> None:
    torch.manual_seed(0)
    out, r = 16, 3
    layer = nn.Linear(5, out)
    _, rule = with_rule(layer, torch.randn(2, 5), "ldfa", rank=r, adapt="oja", feedback_lr=0.3)
    basis, _ = torch.linalg.qr(torch.randn(out, out))
    spread = torch.tensor([3.0, 2.5, 2.0] + [0.3] * (out - r))   # planted error std per direction
    top = basis[:, :r]

    def overlap() -> float:   # 1 when span(P) = the top-r eigenspace of C
        return float((top.t() @ layer.feedback_p).square().sum() / r)

    start = overlap()
    for _ in range(300):
        delta = (torch.randn(64, out) * spread) @ basis.t() * 1e-3   # tiny, like a mean-loss grad
        layer(torch.randn(64, 5)).backward(delta)
    p = layer.feedback_p
    assert start < 0.5
    assert overlap() > 0.97
    torch.testing.assert_close(p.t() @ p, torch.eye(r), atol=0.02, rtol=0)


def test_ldfa_fit_tracks_the_weight_and_fixed_never_moves() -> None:
    torch.manual_seed(0)
    fit, fixed = nn.Linear(6, 8), nn.Linear(6, 8)
    x = torch.randn(4, 6)
    _, fit_rule = with_rule(fit, x, "ldfa", rank=3, adapt="fit", feedback_lr=0.2)
    with_rule(fixed, x, "ldfa", rank=3, adapt="fixed", feedback_lr=0.2)
    with torch.no_grad():
        fit.weight.add_(0.3 * torch.randn_like(fit.weight))
    best = torch.linalg.svdvals(fit.weight.detach())[3:].square().sum().sqrt()   # rank-3 optimum

    def gap() -> float:
        return float(torch.linalg.norm(fit_rule.effective_feedback(fit) - fit.weight.detach()))

    start, q0 = gap(), fixed.feedback_q.clone()
    for _ in range(200):
        fit(x).sum().backward()
        fixed(x).sum().backward()
    assert gap() < start and gap() == pytest.approx(float(best), rel=0.05)
    assert torch.equal(fixed.feedback_q, q0)


def test_ldfa_probe_passes_do_not_adapt() -> None:
    torch.manual_seed(0)
    model, x = nn.Linear(6, 8), torch.randn(4, 6)
    _, rule = with_rule(model, x, "ldfa", rank=3, adapt="oja", feedback_lr=0.5)
    p0, q0 = model.feedback_p.clone(), model.feedback_q.clone()
    with rule.exact_backward():
        model(x).sum().backward()
    assert torch.equal(model.feedback_p, p0) and torch.equal(model.feedback_q, q0)


# --- the sign family ------------------------------------------------------------------------------
def sign_model(name: str, seed: int = 1) -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model, x = SmallNet(), torch.randn(2, 3, 6, 6)
    return model, with_rule(model, x, name, seed=seed)[1]


@pytest.mark.parametrize("name", ["usf", "brsf", "frsf"])
def test_sign_family_is_sign_concordant_and_follows_w(name: str) -> None:
    model, rule = sign_model(name)
    for layer in rule.layers:
        assert torch.equal(torch.sign(rule.effective_feedback(layer)), torch.sign(layer.weight))
    with torch.no_grad():
        for layer in rule.layers:
            layer.weight.mul_(torch.where(torch.rand_like(layer.weight) < 0.5, -1.0, 1.0))
    rule.before_step()
    for layer in rule.layers:
        assert torch.equal(torch.sign(rule.effective_feedback(layer)), torch.sign(layer.weight))


@pytest.mark.parametrize("name,redraws", [("brsf", True), ("frsf", False)])
def test_magnitudes_redraw_only_under_brsf(name: str, redraws: bool) -> None:
    model, rule = sign_model(name)
    before = [rule.effective_feedback(layer).clone() for layer in rule.layers]
    rule.before_step()
    after = [rule.effective_feedback(layer) for layer in rule.layers]
    changed = not all(torch.equal(b, a) for b, a in zip(before, after))
    assert changed == redraws


def test_usf_feedback_is_sign_times_init_std() -> None:
    model, rule = sign_model("usf")
    for layer in rule.layers:
        std = float(layer.weight.detach().std())
        with torch.no_grad():
            layer.weight.mul_(3.0)   # a later W: feedback keeps the init's scale
        torch.testing.assert_close(rule.effective_feedback(layer),
                                   torch.sign(layer.weight) * std, **TOL)


# --- init angles between W and the effective feedback ---------------------------------------------
ARCCOS_3_4 = math.degrees(math.acos(0.75))


@pytest.mark.parametrize("name,expected", [
    ("fa", 90.0), ("usf", 30.0), ("brsf", ARCCOS_3_4), ("frsf", ARCCOS_3_4)])
def test_init_angle_uniform_weights(name: str, expected: float) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    _, rule = with_rule(layer, torch.randn(1, 512), name)
    assert angle(layer.weight, rule.effective_feedback(layer)) == pytest.approx(expected, abs=1.0)


@pytest.mark.parametrize("name,cos", [("usf", math.sqrt(2 / math.pi)), ("brsf", 2 / math.pi),
                                      ("frsf", 2 / math.pi)])
def test_init_angle_gaussian_weights(name: str, cos: float) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
    layer.init_dist = "normal"
    _, rule = with_rule(layer, torch.randn(1, 512), name, init="gaussian")
    expected = math.degrees(math.acos(cos))          # usf ≈ 37.0°, brsf/frsf ≈ 50.5°
    assert angle(layer.weight, rule.effective_feedback(layer)) == pytest.approx(expected, abs=1.0)


# --- buffers: checkpoints and seeds ---------------------------------------------------------------
FEEDBACK_RULES = ["fa", "usf", "brsf", "frsf", "dfa", "ldfa"]


def feedback_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in model.state_dict().items() if "feedback" in k}


@pytest.mark.parametrize("name", FEEDBACK_RULES)
def test_feedback_buffers_round_trip_and_follow_the_seed(name: str) -> None:
    a, _ = sign_model(name, seed=3)
    b, _ = sign_model(name, seed=3)
    c, _ = sign_model(name, seed=4)
    state = feedback_state(a)
    assert state and state.keys() == feedback_state(c).keys()
    assert all(torch.equal(v, feedback_state(b)[k]) for k, v in state.items())
    if name != "usf":   # usf's only buffer is the init std, which no seed draws
        assert not all(torch.equal(v, feedback_state(c)[k]) for k, v in state.items())
    c.load_state_dict(a.state_dict())
    assert all(torch.equal(v, feedback_state(c)[k]) for k, v in state.items())


def test_registry_has_every_rule() -> None:
    assert set(RULES) == {"bp", "fa", "usf", "brsf", "frsf", "dfa", "ldfa"}


# --- bf16 autocast ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("kind", ["linear", "conv", "small_model"])
def test_bf16_autocast_backward_runs(name: str, kind: str) -> None:
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    model, x = make(), torch.randn(shape)
    with_rule(model, x, name)
    x = x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and p.grad.shape == p.shape
        assert torch.isfinite(p.grad).all()
    if name == "dfa":   # the input layer sends no error under dfa
        assert x.grad is None
    else:
        assert x.grad is not None and x.grad.shape == x.shape and x.grad.dtype == x.dtype
