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


class _RuleFn(torch.autograd.Function):
    """The forward op of a weight layer with the rule's backward. The layer supplies both
    halves (`native` and `rule_grads`); this class only does the bookkeeping shared by all."""

    @staticmethod
    @custom_fwd(device_type="cuda")
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: nn.Module) -> Tensor:
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return layer.native(x, weight, bias)

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        layer, rule = ctx.layer, ctx.layer.rule
        if rule.recorder is not None:
            rule.recorder.error(layer, grad_out)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grads = layer.rule_grads(x, weight, grad_out, need_x, need_w, ctx.has_bias and need_b)
        if rule.recorder is not None and grads[0] is not None:
            rule.recorder.sent(layer, grads[0])
        if rule.adapting:
            rule.after_backward(layer, x, grad_out)
        return (*grads, None)


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

    def forward(self, x: Tensor) -> Tensor:
        rule = self.rule
        if rule.exact_rule and rule.recorder is None and not rule.exact:
            return self.native(x, self.weight, self.bias)
        if rule.recorder is not None:
            rule.recorder.input(self, x)
        return _RuleFn.apply(x, self.weight, self.bias, self)


class RuleLinear(RuleLayer, nn.Linear):
    def native(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def rule_grads(self, x: Tensor, weight: Tensor, grad_out: Tensor, need_x: bool,
                   need_w: bool, need_b: bool) -> tuple[Tensor | None, ...]:
        grad_x = grad_w = grad_b = None
        if need_x:
            b = _feedback_for(self, weight)
            grad_x = (self.rule.input_error(self, grad_out, x.shape) if b is None
                      else grad_out @ b.to(grad_out.dtype))
        g = grad_out.reshape(-1, grad_out.shape[-1])
        if need_w:
            grad_w = (g.t() @ x.reshape(-1, x.shape[-1]).to(g.dtype)).to(weight.dtype)
        if need_b:
            grad_b = g.sum(0).to(weight.dtype)
        return grad_x, grad_w, grad_b


class RuleConv2d(RuleLayer, nn.Conv2d):
    def native(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def rule_grads(self, x: Tensor, weight: Tensor, grad_out: Tensor, need_x: bool,
                   need_w: bool, need_b: bool) -> tuple[Tensor | None, ...]:
        b = _feedback_for(self, weight) if need_x else weight
        # One fused call: grad_input uses the feedback tensor, grad_weight depends only on
        # x and grad_out (the weight argument only supplies its shape there).
        dt = grad_out.dtype
        grad_x, grad_w, grad_b = _conv_backward(
            grad_out, x.to(dt), (weight if b is None else b).to(dt),
            [weight.shape[0]] if need_b else None,
            self.stride, self.padding, self.dilation, False, [0, 0], self.groups,
            [need_x and b is not None, need_w, need_b])
        if need_x and b is None:
            grad_x = self.rule.input_error(self, grad_out, x.shape)
        return (grad_x, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(weight.dtype))


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
