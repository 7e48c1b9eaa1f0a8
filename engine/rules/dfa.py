"""Direct feedback alignment (Nøkland 2016): every weight layer sends the *output* error e
straight to its input through its own fixed random projection, instead of the error arriving
from the layer above.

    grad_input_l = (e @ B_l).reshape(x_shape),   e = ∂ℒ/∂a_L (N × n_L),   B_l: n_L × prod(in_shape)

B_l maps e to the layer's whole per-sample input, so a conv layer gets a dense projection of e
reshaped to C×H×W and a ViT token layer one reshaped to T×D. The activation derivative φ'(a)
below the layer is then applied by native autograd, giving δ = (e B) ⊙ φ'(a) as in science.md
§1. (There B_l is named by the layer whose δ it produces; here it is stored on the layer that
sends it, one above, and transposed.)

The head's backward runs first in autograd (every other weight layer feeds it), so the head
records e on the rule and the layers below read it. The head itself sends e @ B_head with B_head
of W_head's shape: for the head DFA is FA with its own B. The first layer sends nothing (its
input is data) and has no B. Weight gradients stay the true local ones.

Feedback normalisation (`feedback_norm`, Launay et al. 2019), with dim_l = prod(in_shape), the
size of the signal the layer sends (= the size of the signal the layer below receives):

- `launay` (default): B entries have std scale/sqrt(n_L · dim_l), exactly the scale of their
  code (lightonai/principled-dfa-training, dfatools: randn / sqrt(max_dim · n_L), then each
  slice times sqrt(max_dim / dim_l)). Each entry of e @ B then has rms ‖e‖/sqrt(n_L · dim_l),
  so the whole signal has norm ≈ ‖e‖/sqrt(n_L) whatever the width: at init it is within a
  small factor of BP's error (tests/test_dfa_scale.py), and a ReLU MLP trains at SGD lr 0.01.
- `fan_out`: std scale/sqrt(n_L), the scale used before; the signal then has norm
  ‖e‖·sqrt(dim_l) / sqrt(n_L), 5-50× BP's, and a ReLU MLP diverges at SGD lr 0.01 momentum 0.9.
- `off`: B uses the std of the layer's forward init.

The family (uniform or Gaussian) is always the forward init's unless `init` names another.
"""
import math

import torch
from torch import Tensor, nn

from engine.rules.base import Rule, draw_like


class DFA(Rule):
    name = "dfa"
    #: no tensor comparable to W: angle_weight is not defined for DFA.
    has_feedback = False
    #: the output error e of the current backward pass, recorded by the head.
    _error: Tensor | None = None

    def init_feedback(self, layer: nn.Module) -> None:
        if layer.is_first:
            return
        classes = math.prod(self.layers[-1].out_shape)
        shape = (classes, math.prod(layer.in_shape))
        if self.cfg.feedback_norm == "launay":
            std = 1.0 / math.sqrt(classes * shape[1])
        elif self.cfg.feedback_norm == "fan_out":
            std = 1.0 / math.sqrt(classes)
        else:
            std = float(layer.weight.detach().float().std())
        b = draw_like(torch.empty(shape, device="meta"), self.cfg.init, layer.init_dist,
                      self.init_generator, self.cfg.scale, std=std)
        layer.register_buffer("dfa_feedback", b.to(layer.weight.device))

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> None:
        return None

    def input_error(self, layer: nn.Module, grad_out: Tensor, x_shape: torch.Size) -> Tensor | None:
        if layer.is_head:
            self._error = grad_out.detach().reshape(grad_out.shape[0], -1)
        if layer.is_first:
            return None
        if self._error is None:
            raise RuntimeError(f"dfa: {layer.layer_name} got no output error (head not run first)")
        dt = grad_out.dtype
        return (self._error.to(dt) @ layer.dfa_feedback.to(dt)).reshape(x_shape)
