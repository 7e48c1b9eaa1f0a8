"""Weight layers whose backward pass asks a learning rule for the error sent downstream.

`attach(model, rule, example)` turns every nn.Linear and nn.Conv2d of any model into a
`RuleLinear` / `RuleConv2d` in place (same parameters, same state-dict keys, plus the rule's
feedback buffers). Their forward is the ordinary one; their backward computes

    grad_input  = transposed op with the rule's feedback in place of W   (the rule's choice)
    grad_weight = the true local gradient δ_l h_{l-1}ᵀ                   (every rule)

Everything else in the model (skips, norms, pooling, activations, attention) stays native
autograd, so it is backpropagated exactly. Under `bp` the training forward takes the native
path outright; the custom function only runs when diagnostics record a probe pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.amp import custom_bwd, custom_fwd

if TYPE_CHECKING:
    from engine.rules.base import Rule

_conv_backward = torch.ops.aten.convolution_backward


def _feedback_for(layer: nn.Module, weight: Tensor) -> Tensor | None:
    rule: Rule = layer.rule
    return weight if rule.exact else rule.backward_weight(layer, weight)


class _LinearFn(torch.autograd.Function):
    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: nn.Module) -> Tensor:
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        layer, rule = ctx.layer, ctx.layer.rule
        if rule.recorder is not None:
            rule.recorder.error(layer, grad_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            b = _feedback_for(layer, weight)
            if b is None:
                grad_x = rule.input_error(layer, grad_out, x.shape)
            else:
                grad_x = grad_out @ b.to(grad_out.dtype)
        g = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ x.reshape(-1, x.shape[-1]).to(g.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0).to(weight.dtype)
        if rule.adapting:
            rule.after_backward(layer, x, grad_out)
        return grad_x, grad_w, grad_b, None


class _Conv2dFn(torch.autograd.Function):
    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: nn.Module) -> Tensor:
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        layer, rule = ctx.layer, ctx.layer.rule
        if rule.recorder is not None:
            rule.recorder.error(layer, grad_out)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        b = _feedback_for(layer, weight) if need_x else weight
        # One fused call: grad_input uses the feedback tensor, grad_weight depends only on
        # x and grad_out (the weight argument only supplies its shape there).
        dt = grad_out.dtype
        grad_x, grad_w, grad_b = _conv_backward(
            grad_out, x.to(dt), (weight if b is None else b).to(dt),
            [weight.shape[0]] if ctx.has_bias else None,
            layer.stride, layer.padding, layer.dilation, False, [0, 0], layer.groups,
            [need_x and b is not None, need_w, ctx.has_bias and need_b])
        if need_x and b is None:
            grad_x = rule.input_error(layer, grad_out, x.shape)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(weight.dtype)
        if rule.adapting:
            rule.after_backward(layer, x, grad_out)
        return grad_x, grad_w, grad_b, None


class RuleLayer:
    """Mixin: what `attach` adds to a weight layer."""

    rule: "Rule"
    index: int          # position in forward execution order
    layer_name: str     # dotted module name, e.g. "layer1.0.conv1"
    is_first: bool
    is_head: bool
    in_shape: tuple[int, ...]    # per-sample input shape seen at attach
    out_shape: tuple[int, ...]   # per-sample output shape seen at attach
    init_dist: str      # 'uniform' or 'normal': the forward init's family

    def _native(self) -> bool:
        return self.rule.exact_rule and self.rule.recorder is None and not self.rule.exact

    def _record_input(self, x: Tensor) -> None:
        if self.rule.recorder is not None:
            self.rule.recorder.input(self, x)


class RuleLinear(RuleLayer, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        if self._native():
            return F.linear(x, self.weight, self.bias)
        self._record_input(x)
        return _LinearFn.apply(x, self.weight, self.bias, self)


class RuleConv2d(RuleLayer, nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        if self._native():
            return self._conv_forward(x, self.weight, self.bias)
        self._record_input(x)
        return _Conv2dFn.apply(x, self.weight, self.bias, self)


def attach(model: nn.Module, rule: "Rule", example: Tensor) -> list[nn.Module]:
    """Make every Linear and Conv2d of `model` send errors back through `rule`.

    A dry forward on `example` (a small batch, no grad, eval mode so no running stats move)
    finds the layers' execution order and per-sample shapes, which DFA needs for its
    projections; the first executed layer is the input layer, the last is the head.
    Returns the weight layers in execution order (also stored as `rule.layers`)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []
    shapes: dict[nn.Module, tuple] = {}

    def hook(mod: nn.Module, inp: tuple, out: Tensor) -> None:
        if mod not in shapes:
            order.append(mod)
            shapes[mod] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))

    targets = [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    for m in targets:
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ValueError(f"{names[m]}: only zero padding is supported")
    handles = [m.register_forward_hook(hook) for m in targets]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    unused = [names[m] for m in targets if m not in shapes]
    if unused:
        raise ValueError(f"weight layers never called in forward: {unused}")
    for i, m in enumerate(order):
        m.__class__ = RuleLinear if type(m) is nn.Linear else RuleConv2d
        m.rule = rule
        m.index = i
        m.layer_name = names[m]
        m.is_first = i == 0
        m.is_head = i == len(order) - 1
        m.in_shape, m.out_shape = shapes[m]
        m.init_dist = getattr(m, "init_dist", "uniform")
    rule.layers = order
    for m in order:
        rule.init_feedback(m)
    return order
