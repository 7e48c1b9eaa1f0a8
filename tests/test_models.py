"""Models and the norm switch: shapes, architecture (weight-layer count, execution order, init
family), the norms' statistics, and the exactness fact of science.md §1: fa with B := W gives
backprop's gradients on whole models."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_contract.config import ACTIVATIONS, NORMS, ModelCfg, NormCfg, RuleCfg
from engine.layers import attach
from engine.models import build_model
from engine.models.activations import ACTIVATIONS as ACTIVATION_MODULES
from engine.norm import ActivityNorm, norm_1d, norm_2d, norm_tokens
from engine.rules import build_rule

SMALL = {
    "mlp": ModelCfg(name="mlp", width=16, depth=2),
    "cnn": ModelCfg(name="cnn", widths=[4, 6, 8, 8]),
    "resnet18": ModelCfg(name="resnet18"),
    "vit": ModelCfg(name="vit", width=32, depth=2, heads=4, patch=4),
}
MODELS = list(SMALL)
# (first executed weight layer, head) by module name
ENDS = {"mlp": ("fc1", "head"), "cnn": ("conv1", "head"), "resnet18": ("conv1", "fc"),
        "vit": ("patch", "head")}


def build(name: str, norm: str = "none", shape=(3, 32, 32), classes: int = 10, **kw) -> nn.Module:
    cfg = SMALL[name].model_copy(update=kw)
    return build_model(cfg, NormCfg(name=norm), shape, classes)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]


def execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
               for m in weight_layers(model)]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return order


# --- shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("classes", [2, 10])
def test_logits_shape(name, shape, classes):
    torch.manual_seed(0)
    model = build(name, shape=shape, classes=classes)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


def test_mlp_flat_input_and_linear_classifier():
    torch.manual_seed(0)
    model = build("mlp", shape=(30,), classes=7, depth=0)
    (layer,) = weight_layers(model)
    assert (layer.in_features, layer.out_features) == (30, 7)
    x = torch.randn(5, 30)
    assert torch.allclose(model(x), x @ layer.weight.t() + layer.bias)


def test_mlp_bottleneck_and_dropout():
    model = build("mlp", shape=(30,), depth=3, width=20, bottleneck=3, dropout=0.5)
    assert [m.out_features for m in weight_layers(model)] == [20, 20, 3, 10]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 3
    with pytest.raises(ValueError):
        build("mlp", shape=(30,), depth=0, bottleneck=3)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_switch(act):
    model = build("cnn", "batchnorm", activation=act)
    acts = [m for m in model.modules() if type(m) is ACTIVATION_MODULES[act]]
    assert len(acts) == 4


@pytest.mark.parametrize("name,shape,kw", [
    ("vit", (3, 32, 32), {"patch": 5}),        # patch does not divide 32
    ("vit", (3, 32, 32), {"heads": 3}),        # heads do not divide width 32
    ("cnn", (30,), {}),
    ("resnet18", (30,), {}),
])
def test_bad_shapes_raise(name, shape, kw):
    with pytest.raises(ValueError):
        build(name, shape=shape, **kw)


# --- norms ------------------------------------------------------------------------------------
NORM_TYPES = {"none": (), "batchnorm": (nn.BatchNorm1d, nn.BatchNorm2d),
              "layernorm": (nn.LayerNorm, nn.GroupNorm), "activity": (ActivityNorm,)}
NORM_SLOTS = {"mlp": 2, "cnn": 4, "resnet18": 20, "vit": 5}   # vit: 2 per block + final


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_builds_and_runs(name, norm):
    torch.manual_seed(0)
    model = build(name, norm)
    found = [m for m in model.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm,
                               ActivityNorm))]
    assert len(found) == (0 if norm == "none" else NORM_SLOTS[name])
    assert all(isinstance(m, NORM_TYPES[norm]) for m in found)
    x = torch.randn(4, 3, 32, 32)
    for train in (True, False):
        out = model.train(train)(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all()


def _standardised(y: torch.Tensor, dims: tuple[int, ...]) -> bool:
    mean, var = y.mean(dims), y.var(dims, unbiased=False)
    return bool(torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
                and torch.allclose(var, torch.ones_like(var), atol=1e-3))


def test_norm_2d_statistics():
    torch.manual_seed(0)
    x = torch.randn(6, 5, 4, 4) * 3 + torch.arange(5.0).view(1, 5, 1, 1)
    assert _standardised(norm_2d("activity", 5)(x), (0, 2, 3))     # per channel over N,H,W
    assert _standardised(norm_2d("batchnorm", 5)(x), (0, 2, 3))
    assert _standardised(norm_2d("layernorm", 5)(x), (1, 2, 3))     # per sample over C,H,W
    assert torch.equal(norm_2d("none", 5)(x), x)


def test_norm_1d_and_tokens_statistics():
    torch.manual_seed(0)
    v = torch.randn(8, 6) * 2 + 1
    assert _standardised(norm_1d("activity", 6)(v), (0,))
    assert _standardised(norm_1d("batchnorm", 6)(v), (0,))
    assert _standardised(norm_1d("layernorm", 6)(v), (1,))
    t = torch.randn(3, 5, 6) * 2 + torch.arange(6.0)
    for name in ("activity", "batchnorm"):                          # per feature over N×T
        assert _standardised(norm_tokens(name, 6)(t), (0, 1))
    assert _standardised(norm_tokens("layernorm", 6)(t), (2,))
    with pytest.raises(ValueError):
        norm_1d("groupnorm", 6)


def test_activity_norm_is_affine_free_batchnorm():
    """Same outputs and running statistics as BatchNorm2d(affine=False), train and eval."""
    torch.manual_seed(0)
    act, ref = ActivityNorm(5), nn.BatchNorm2d(5, affine=False)
    assert list(act.parameters()) == []
    for _ in range(3):
        x = torch.randn(4, 5, 3, 3) * 2 + 1
        assert torch.allclose(act(x), ref(x), atol=1e-6)
    assert torch.allclose(act.running_mean, ref.running_mean)
    assert torch.allclose(act.running_var, ref.running_var)
    x = torch.randn(4, 5, 3, 3)
    assert torch.allclose(act.eval()(x), ref.eval()(x), atol=1e-6)


# --- architecture -----------------------------------------------------------------------------
def test_weight_layer_counts():
    assert len(weight_layers(build("mlp", depth=3))) == 4
    assert [type(m) for m in weight_layers(build("cnn"))] == [nn.Conv2d] * 4 + [nn.Linear]
    vit = weight_layers(build("vit", depth=3))
    assert len(vit) == 1 + 4 * 3 + 1 and type(vit[0]) is nn.Conv2d
    res = weight_layers(build("resnet18"))
    convs = [m for m in res if type(m) is nn.Conv2d]
    assert len(res) == 21 and len(convs) == 20
    shortcuts = [m for m in convs if m.kernel_size == (1, 1)]
    assert len(shortcuts) == 3
    assert [m.out_channels for m in shortcuts] == [128, 256, 512]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_first_and_last_executed_layers(name, shape):
    model = build(name, shape=shape)
    order = execution_order(model, torch.randn(2, *shape))
    first, head = ENDS[name]
    assert order[0] is model.get_submodule(first)
    assert order[-1] is model.get_submodule(head)
    assert len(order) == len(set(order)) == len(weight_layers(model))   # each runs once


def test_resnet_stem_is_cifar():
    model = build("resnet18", shape=(1, 28, 28))
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def _kurtosis(w: torch.Tensor) -> float:
    z = w.detach().flatten().double()
    z = (z - z.mean()) / z.std()
    return float((z ** 4).mean())


@pytest.mark.parametrize("name", MODELS)
def test_init_dist_marks_the_actual_family(name):
    """Kurtosis is 3 for a Gaussian, 1.8 for a uniform: the mark must match the weights."""
    torch.manual_seed(0)
    wider = {"mlp": {"width": 64}, "cnn": {"widths": [8, 16, 32, 32]}}
    model = build(name, **wider.get(name, {}))
    checked = 0
    for m in weight_layers(model):
        if m.weight.numel() >= 2000:
            family = "normal" if _kurtosis(m.weight) > 2.4 else "uniform"
            assert getattr(m, "init_dist", "uniform") == family
            checked += 1
    assert checked >= 2


# --- learning rules ---------------------------------------------------------------------------
def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    out = {"input": x.grad}
    out.update({n: p.grad for n, p in model.named_parameters()})
    return out


@pytest.mark.parametrize("name,norm", [("mlp", "none"), ("mlp", "batchnorm"),
                                       ("cnn", "none"), ("cnn", "batchnorm"),
                                       ("resnet18", "batchnorm"),
                                       ("vit", "layernorm"), ("vit", "batchnorm")])
def test_fa_with_feedback_equal_to_weight_is_backprop(name, norm):
    torch.manual_seed(0)
    model = build(name, norm).train()
    reference = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    rule = build_rule(RuleCfg(name="fa"), seed=0)
    layers = attach(model, rule, x[:2])
    assert len(layers) == len(weight_layers(reference))
    expected = _grads(reference, x, y)

    random_fb = _grads(model, x, y)          # non-vacuous: random feedback changes δ
    assert not torch.allclose(random_fb["input"], expected["input"], atol=1e-5)

    with torch.no_grad():
        for layer in layers:
            layer.feedback.copy_(layer.weight)
    got = _grads(model, x, y)
    assert got.keys() == expected.keys()
    for key, g in expected.items():
        torch.testing.assert_close(got[key], g, atol=1e-5, rtol=1e-4, msg=key)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_channels_last_bf16_autocast(name, device):
    """The training setup on a GPU: rule attached, channels_last, bf16 autocast."""
    torch.manual_seed(0)
    model = build(name, "batchnorm").to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    attach(model, build_rule(RuleCfg(name="fa"), seed=0), x)
    model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(x)
        loss = F.cross_entropy(out.float(), torch.tensor([0, 1], device=device))
    loss.backward()
    assert out.shape == (2, 10)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad.dtype == p.dtype for p in model.parameters())
