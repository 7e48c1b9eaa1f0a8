"""Optimisers (science.md §2): Muon routing, conv weights through 2-D storage views (also
channels_last), the orthogonalised update's spectrum, exact checkpoint resume, every optimiser
lowering a regression loss, gradient clipping, and the LR schedules at known points."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_contract.config import ModelCfg, NormCfg, OptimCfg, RuleCfg
from engine.layers import attach
from engine.models import build_model
from engine.optim import build_optimizer, lr_factor
from engine.rules import build_rule

CNN_SHAPE = (2, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny: on a shared 2-core machine intra-op threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def attached(model_cfg: ModelCfg, shape: tuple[int, ...], norm: str = "none",
             classes: int = 3, seed: int = 0) -> tuple[nn.Module, list[nn.Module]]:
    torch.manual_seed(seed)
    model = build_model(model_cfg, NormCfg(name=norm), shape, classes)
    layers = attach(model, build_rule(RuleCfg(name="bp"), 1), torch.randn(2, *shape))
    return model, layers


def mlp(depth: int = 3, norm: str = "none", seed: int = 0):
    return attached(ModelCfg(name="mlp", width=12, depth=depth), (6,), norm, seed=seed)


def cnn(norm: str = "none", seed: int = 0):
    return attached(ModelCfg(name="cnn", widths=[3, 4, 5, 5]), CNN_SHAPE, norm, seed=seed)


def backward(model: nn.Module, shape: tuple[int, ...], seed: int = 1, device: str = "cpu") -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, *shape, generator=g)
    y = torch.randint(0, 3, (4,), generator=g)
    F.cross_entropy(model(x.to(device)), y.to(device)).backward()


def build(model, layers, total_steps: int = 10, steps_per_epoch: int = 5, **kw):
    return build_optimizer(OptimCfg(**kw), model, layers, total_steps, steps_per_epoch)


# --- routing -----------------------------------------------------------------------------------
def test_muon_routing_mlp_depth3():
    model, layers = mlp(depth=3, norm="layernorm")
    opt = build(model, layers, name="muon")
    assert set(opt.routing["muon"]) == {"fc2.weight", "fc3.weight"}
    adamw = opt.routing["adamw"]
    assert adamw["fc1.weight"].startswith("first layer")
    assert adamw["head.weight"].startswith("head")
    biases_and_gains = {n for n, p in model.named_parameters() if p.dim() == 1}
    assert {n for n in biases_and_gains if "norm" in n} and {n for n in biases_and_gains
                                                          if n.endswith("bias")}
    assert biases_and_gains <= set(adamw)
    assert set(adamw) | set(opt.routing["muon"]) == {n for n, _ in model.named_parameters()}
    assert set(opt.optimizers) == {"muon", "adamw"}


def test_muon_routing_cnn_convs_and_batchnorm():
    model, layers = cnn(norm="batchnorm")
    opt = build(model, layers, name="muon")
    assert set(opt.routing["muon"]) == {"conv2.weight", "conv3.weight", "conv4.weight"}
    assert "4×27" in opt.routing["muon"]["conv2.weight"]     # out × in·kh·kw = 4 × 3·3·3
    assert {"conv1.weight", "head.weight", "norm1.weight", "norm1.bias", "conv3.bias"} <= set(
        opt.routing["adamw"])
    # Muon holds 2-D matrices only, one per hidden conv, each sharing its conv's storage
    muon_params = opt.optimizers["muon"].param_groups[0]["params"]
    assert [p.dim() for p in muon_params] == [2, 2, 2]
    assert [p.data_ptr() for p in muon_params] == [m.weight.data_ptr() for m in layers[1:4]]


@pytest.mark.parametrize("exclude, muon", [
    ([], {"fc1.weight", "fc2.weight", "fc3.weight", "head.weight"}),
    (["first"], {"fc2.weight", "fc3.weight", "head.weight"}),
    (["head"], {"fc1.weight", "fc2.weight", "fc3.weight"}),
])
def test_muon_exclude_variants(exclude, muon):
    model, layers = mlp(depth=3)
    opt = build(model, layers, name="muon", muon_exclude=exclude)
    assert set(opt.routing["muon"]) == muon
    names = {n for n, _ in model.named_parameters()}
    assert set(opt.routing["adamw"]) == names - muon        # biases always among them


def test_muon_routing_vit_pos_embedding_to_adamw():
    model, layers = attached(ModelCfg(name="vit", width=8, depth=1, heads=2, patch=4),
                             (3, 8, 8), norm="layernorm")
    opt = build(model, layers, name="muon")
    assert opt.routing["adamw"]["pos"].startswith("not a Linear/Conv2d weight")
    assert {"patch.weight", "head.weight"} <= set(opt.routing["adamw"])
    assert "blocks.0.attn.qkv.weight" in opt.routing["muon"]


def test_linear_classifier_has_no_muon_group():
    model, layers = mlp(depth=0)
    opt = build(model, layers, name="muon")
    assert set(opt.optimizers) == {"adamw"} and opt.routing["muon"] == {}


def test_plain_optimisers_route_everything():
    model, layers = cnn()
    for name in ("sgd", "adam", "adamw"):
        opt = build(model, layers, name=name)
        assert set(opt.routing) == {name}
        assert set(opt.routing[name]) == {n for n, _ in model.named_parameters()}


# --- conv weights through Muon -----------------------------------------------------------------
def reference_muon_update(weight: torch.Tensor, grad: torch.Tensor, cfg: OptimCfg) -> torch.Tensor:
    """What torch's Muon does to a standalone (out, in·kh·kw) copy of the weight."""
    w = nn.Parameter(weight.detach().reshape(weight.shape[0], -1).clone())
    w.grad = grad.reshape(w.shape).clone()
    torch.optim.Muon([w], lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
                     adjust_lr_fn=cfg.muon_adjust_lr).step()
    return w.detach().reshape(weight.shape)


def test_conv_weight_updated_in_place_by_muon():
    model, layers = cnn()
    cfg = OptimCfg(name="muon", lr=0.02, weight_decay=0.1)
    opt = build_optimizer(cfg, model, layers, 10, 5)
    conv = model.conv3
    weight, ptr, before = conv.weight, conv.weight.data_ptr(), conv.weight.detach().clone()
    backward(model, CNN_SHAPE)
    grad = conv.weight.grad.clone()
    expected = reference_muon_update(before, grad, cfg)
    opt.step()
    assert conv.weight is weight and conv.weight.data_ptr() == ptr
    assert not torch.equal(conv.weight, before)
    assert torch.equal(conv.weight.detach(), expected)
    assert torch.equal(conv.weight.grad, grad)      # the optimiser leaves .grad alone


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_muon_channels_last_conv_matches_contiguous(device):
    model, layers = cnn()
    model.to(device)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    layers_cl = [dict(model_cl.named_modules())[m.layer_name] for m in layers]
    assert model_cl.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model_cl.conv2.weight.is_contiguous()
    opts = [build(m, ls, name="muon", lr=0.05)
            for m, ls in ((model, layers), (model_cl, layers_cl))]
    assert [p.permuted for p in opts[1].proxies] == [True, True, True]
    ptr = model_cl.conv2.weight.data_ptr()
    for _ in range(2):
        for m, opt in zip((model, model_cl), opts):
            opt.zero_grad()
            backward(m, CNN_SHAPE, device=device)
            opt.step()
    assert model_cl.conv2.weight.data_ptr() == ptr
    assert model_cl.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    before = {n: p.detach().to(device) for n, p in cnn()[0].named_parameters()}
    for name in ("conv2.weight", "conv3.weight", "conv4.weight"):
        a = dict(model.named_parameters())[name].detach()
        b = dict(model_cl.named_parameters())[name].detach()
        step = (a - before[name]).abs().max()
        assert step > 0
        # same update up to bf16 summation order inside Newton–Schulz
        torch.testing.assert_close(b, a, atol=0.05 * float(step), rtol=0)


def test_zero_grad_clears_model_and_proxy_grads():
    model, layers = cnn()
    opt = build(model, layers, name="muon")
    backward(model, CNN_SHAPE)
    opt.step()
    assert model.conv2.weight.grad is not None
    assert all(p.grad is None for p in opt.optimizers["muon"].param_groups[0]["params"])
    opt.zero_grad(set_to_none=False)
    assert float(model.conv2.weight.grad.abs().sum()) == 0.0
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_model_moved_after_build_is_an_error():
    model, layers = cnn()
    opt = build(model, layers, name="muon")
    model.to(memory_format=torch.channels_last)
    backward(model, CNN_SHAPE)
    with pytest.raises(RuntimeError, match="moved or replaced"):
        opt.step()


# --- Muon's orthogonalised update --------------------------------------------------------------
@pytest.mark.parametrize("adjust, scale", [("original", 1.0),
                                           ("match_rms_adamw", 0.2 * math.sqrt(128))])
def test_muon_update_singular_values(adjust, scale):
    """A 64×128 hidden layer with a random gradient: the applied step divided by the effective
    lr (lr × Muon's shape adjustment) is Newton–Schulz-orthogonalised, its singular values
    roughly in [0.5, 1.5] (science.md §2), while the raw gradient's are spread much wider."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    layers = [model[0], model[2], model[4]]
    lr = 0.01
    opt = build(model, layers, name="muon", lr=lr, weight_decay=0.0, muon_adjust_lr=adjust)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    grad = model[2].weight.grad.clone()
    before = model[2].weight.detach().clone()
    opt.step()
    update = (before - model[2].weight.detach()) / (lr * scale)
    s = torch.linalg.svdvals(update)
    assert s.min() >= 0.5 and s.max() <= 1.5, s
    g = torch.linalg.svdvals(grad)
    assert g.max() / g.min() > 3 * (s.max() / s.min())
    # the direction is the gradient's: positive inner product with it
    assert float((update * grad).sum()) > 0


# --- checkpoint round trip ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "muon"])
def test_state_dict_round_trip_gives_identical_steps(name):
    cfg = dict(name=name, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3,
               schedule="cosine", warmup=2, clip=1.0)
    model, layers = cnn(norm="batchnorm")
    opt = build(model, layers, total_steps=8, steps_per_epoch=4, **cfg)
    for i in range(3):
        opt.zero_grad()
        backward(model, CNN_SHAPE, seed=i)
        opt.step()
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())

    other, other_layers = cnn(norm="batchnorm", seed=7)
    other_opt = build(other, other_layers, total_steps=8, steps_per_epoch=4, **cfg)
    other.load_state_dict(model_state)
    other_opt.load_state_dict(opt_state)
    assert other_opt.lr == opt.lr and other_opt.steps == 3
    for i in range(3, 6):
        for m, o in ((model, opt), (other, other_opt)):
            o.zero_grad()
            backward(m, CNN_SHAPE, seed=i)
            o.step()
    for (n, a), b in zip(model.named_parameters(), other.parameters()):
        assert torch.equal(a, b), n


# --- every optimiser trains --------------------------------------------------------------------
@pytest.mark.parametrize("name, lr", [("sgd", 0.05), ("adam", 0.01), ("adamw", 0.01),
                                      ("muon", 0.01)])
def test_each_optimiser_lowers_a_regression_loss(name, lr):
    torch.manual_seed(0)
    teacher = nn.Linear(8, 4)
    x = torch.randn(64, 8)
    with torch.no_grad():
        y = teacher(x)
    model, layers = attached(ModelCfg(name="mlp", width=16, depth=2, activation="tanh"), (8,),
                             classes=4)
    opt = build(model, layers, total_steps=60, name=name, lr=lr)
    losses = []
    for _ in range(60):
        loss = F.mse_loss(model(x), y)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.3 * losses[0], losses[::10]


# --- gradient clipping -------------------------------------------------------------------------
def test_clip_bounds_the_global_gradient_norm():
    model, layers = mlp(depth=2)
    opt = build(model, layers, name="sgd", lr=1.0, momentum=0.0, clip=0.1)
    torch.manual_seed(0)
    for p in model.parameters():
        p.grad = 10 * torch.randn_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    assert math.isclose(float(step.norm()), 0.1, rel_tol=1e-5)


def test_no_clip_when_the_norm_is_below_the_bound():
    model, layers = mlp(depth=2)
    opt = build(model, layers, name="sgd", lr=1.0, momentum=0.0, clip=100.0)
    torch.manual_seed(0)
    grads = [torch.randn_like(p) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    for b, p, g in zip(before, model.parameters(), grads):
        torch.testing.assert_close(b - p.detach(), g)


# --- LR schedules ------------------------------------------------------------------------------
def factor(step: int, total: int = 100, spe: int = 10, **kw) -> float:
    return lr_factor(step, total, spe, OptimCfg(**kw))


def test_constant_and_warmup():
    assert [factor(s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert factor(0, warmup=4) == 0.25                 # warm-up start: lr/warmup, never 0
    assert factor(1, warmup=4) == 0.5
    assert factor(3, warmup=4) == 1.0                  # warm-up end
    assert factor(50, warmup=4) == 1.0


def test_cosine():
    assert factor(0, schedule="cosine") == 1.0
    assert math.isclose(factor(50, schedule="cosine"), 0.5)        # midpoint
    assert math.isclose(factor(25, schedule="cosine"), 0.5 * (1 + math.cos(math.pi / 4)))
    assert factor(100, schedule="cosine") == 0.0
    assert factor(120, schedule="cosine") == 0.0
    # with warm-up the cosine spans the remaining steps
    assert factor(0, total=110, schedule="cosine", warmup=10) == 0.1
    assert factor(10, total=110, schedule="cosine", warmup=10) == 1.0
    assert math.isclose(factor(60, total=110, schedule="cosine", warmup=10), 0.5)


def test_onecycle():
    assert math.isclose(factor(0, schedule="onecycle"), 1 / 30)   # 30 % ramp by default
    assert factor(29, schedule="onecycle") == 1.0
    assert factor(30, schedule="onecycle") == 1.0
    assert math.isclose(factor(65, schedule="onecycle"), 0.5)
    assert factor(100, schedule="onecycle") == 0.0
    assert factor(0, schedule="onecycle", warmup=10) == 0.1       # explicit ramp
    assert math.isclose(factor(55, schedule="onecycle", warmup=10), 0.5)


def test_step_decay_boundaries():
    kw = dict(schedule="step", step_every=3, gamma=0.1)
    assert factor(29, **kw) == 1.0                      # epoch 2
    assert math.isclose(factor(30, **kw), 0.1)          # epoch 3: first decay
    assert math.isclose(factor(59, **kw), 0.1)
    assert math.isclose(factor(60, **kw), 0.01)
    assert factor(0, warmup=5, **kw) == 0.2


def test_optimizer_applies_the_schedule_to_every_group():
    model, layers = mlp(depth=3)
    opt = build(model, layers, total_steps=4, name="muon", lr=0.02, adamw_lr=0.001,
                schedule="cosine")
    expected = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(5)]
    torch.manual_seed(0)
    assert opt.lr == 0.02                               # before any step: the first step's
    for s in range(4):
        assert math.isclose(opt.optimizers["muon"].param_groups[0]["lr"], 0.02 * expected[s])
        assert math.isclose(opt.optimizers["adamw"].param_groups[0]["lr"], 0.001 * expected[s])
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        assert math.isclose(opt.lr, 0.02 * expected[s])  # the lr the step just taken used
    assert opt.optimizers["muon"].param_groups[0]["lr"] == 0.0
