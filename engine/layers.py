"""Weight layers whose backward pass asks a learning rule for the error sent downstream.

`attach(model, rule, example)` turns every nn.Linear and nn.Conv2d of any model into a
`RuleLinear` / `RuleConv2d` in place (same parameters, same state-dict keys, plus the rule's
feedback buffers). Their forward is the ordinary one; their backward computes

    grad_input  = transposed op with the rule's feedback in place of W   (the rule's choice)
    grad_weight = the true local gradient δ_l h_{l-1}ᵀ                   (every rule)

Everything else in the model (skips, norms, pooling, activations, attention) stays native
autograd, so it is backpropagated exactly. Under `bp` the training forward takes the native
path outright, and so does the first layer under every rule that learns nothing in the backward
(no error is sent to data). Rules with a fixed feedback tensor (fa, usf, frsf, brsf) train
through the same backward written in C++ (engine/native) when it is built; the Python function
below runs otherwise, for dfa and ldfa, under CUDA autocast, and whenever diagnostics record a
probe pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import native

if TYPE_CHECKING:
    from engine.rules.base import Rule

_conv_backward = torch.ops.aten.convolution_backward


def _feedback_for(layer: nn.Module, weight: Tensor) -> Tensor | None:
    rule: Rule = layer.rule
    return weight if rule.exact else rule.backward_weight(layer, weight)


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """`t.to(dtype)` without the dispatcher call when it is already that dtype (the common
    fp32 case): the backward runs once per weight layer per step, so each call counts."""
    return t if t.dtype == dtype else t.to(dtype)


class _RuleFn(torch.autograd.Function):
    """The forward op of a weight layer with the rule's backward. The layer supplies both
    halves (`native` and `rule_grads`); this class only does the bookkeeping shared by all.

    It does by hand what `torch.amp.custom_fwd` / `custom_bwd` (device "cuda") did: the
    forward records whether CUDA autocast was on, and the backward runs under that same state.
    The decorators entered an autocast context on every backward, even with autocast off,
    which was a third of the Python cost of a small layer's backward (docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: nn.Module) -> Tensor:
        ctx.layer = layer
        ctx.has_bias = bias is not None
        ctx.amp = x.is_cuda and torch.is_autocast_enabled("cuda")
        if ctx.amp:
            ctx.amp_dtype = torch.get_autocast_dtype("cuda")
        ctx.save_for_backward(x, weight)
        return layer.native(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if ctx.amp:
            with torch.autocast("cuda", dtype=ctx.amp_dtype):
                return _rule_backward(ctx, grad_out)
        if grad_out.is_cuda and torch.is_autocast_enabled("cuda"):
            with torch.autocast("cuda", enabled=False):
                return _rule_backward(ctx, grad_out)
        return _rule_backward(ctx, grad_out)


def _rule_backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
    x, weight = ctx.saved_tensors
    layer = ctx.layer
    rule = layer.rule
    if rule.recorder is not None:
        rule.recorder.error(layer, grad_out)
    need_x, need_w, need_b, _ = ctx.needs_input_grad
    grads = layer.rule_grads(x, weight, grad_out, need_x, need_w, ctx.has_bias and need_b)
    if rule.recorder is not None and grads[0] is not None:
        rule.recorder.sent(layer, grads[0])
    if rule.learns_in_backward and rule.adapting:
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
        if rule.recorder is None and not rule.exact:
            if rule.exact_rule or not (x.requires_grad or rule.learns_in_backward):
                # bp; or a layer whose input needs no error (the first layer: its input is
                # data) under a rule that learns nothing in the backward, where the rule's
                # backward would compute just the true weight and bias gradients: native
                # autograd does that without a Python backward.
                return self.native(x, self.weight, self.bias)
            ops = rule.native_ops
            if ops is not None and not (x.is_cuda and torch.is_autocast_enabled("cuda")):
                # a fixed feedback tensor (fa, usf, frsf, brsf) and nothing else to do in the
                # backward: the C++ op, same gradients without the Python (engine/native)
                return self.feedback_op(ops, x, rule.backward_weight(self, self.weight))
        if rule.recorder is not None:
            rule.recorder.input(self, x)
        return _RuleFn.apply(x, self.weight, self.bias, self)


class RuleLinear(RuleLayer, nn.Linear):
    def native(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def feedback_op(self, ops: Any, x: Tensor, feedback: Tensor) -> Tensor:
        return ops.feedback_linear(x, self.weight, self.bias, feedback)

    def rule_grads(self, x: Tensor, weight: Tensor, grad_out: Tensor, need_x: bool,
                   need_w: bool, need_b: bool) -> tuple[Tensor | None, ...]:
        grad_x = grad_w = grad_b = None
        dt = grad_out.dtype
        flat = grad_out.dim() == 2          # an MLP's (N, features); tokens are (N, T, D)
        if need_x:
            rule = self.rule
            b = weight if rule.exact else rule.backward_weight(self, weight)
            if b is None:
                grad_x = self.rule.input_error(self, grad_out, x.shape)
            else:
                grad_x = grad_out.mm(_as(b, dt)) if flat else grad_out @ _as(b, dt)
        g = grad_out if flat else grad_out.reshape(-1, grad_out.shape[-1])
        if need_w:
            h = x if flat else x.reshape(-1, x.shape[-1])
            grad_w = _as(g.t().mm(_as(h, dt)), weight.dtype)
        if need_b:
            grad_b = _as(g.sum(0), weight.dtype)
        return grad_x, grad_w, grad_b


class RuleConv2d(RuleLayer, nn.Conv2d):
    def native(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def feedback_op(self, ops: Any, x: Tensor, feedback: Tensor) -> Tensor:
        return ops.feedback_conv2d(x, self.weight, self.bias, feedback, self.stride,
                                   self.padding, self.dilation, self.groups)

    def rule_grads(self, x: Tensor, weight: Tensor, grad_out: Tensor, need_x: bool,
                   need_w: bool, need_b: bool) -> tuple[Tensor | None, ...]:
        b = _feedback_for(self, weight) if need_x else weight
        # One fused call: grad_input uses the feedback tensor, grad_weight depends only on
        # x and grad_out (the weight argument only supplies its shape there).
        dt = grad_out.dtype
        grad_x, grad_w, grad_b = _conv_backward(
            grad_out, _as(x, dt), _as(weight if b is None else b, dt),
            [weight.shape[0]] if need_b else None,
            self.stride, self.padding, self.dilation, False, [0, 0], self.groups,
            [need_x and b is not None, need_w, need_b])
        if need_x and b is None:
            grad_x = self.rule.input_error(self, grad_out, x.shape)
        return (grad_x, None if grad_w is None else _as(grad_w, weight.dtype),
                None if grad_b is None else _as(grad_b, weight.dtype))


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
    if rule.has_feedback and not (rule.exact_rule or rule.learns_in_backward):
        rule.native_ops = native.ops()
    return order
