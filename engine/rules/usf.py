"""Uniform sign-concordant feedback: B = sign(W)·s, recomputed every step from the current W;
s is the std of the forward init, so ‖B‖ matches ‖W‖ at init."""
import torch
from torch import Tensor, nn

from engine.rules.base import Rule


class USF(Rule):
    name = "usf"

    def init_feedback(self, layer: nn.Module) -> None:
        std = layer.weight.detach().float().std() * self.cfg.scale
        layer.register_buffer("feedback_scale", std.reshape(()))

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor:
        return torch.sign(weight) * layer.feedback_scale.to(weight.dtype)
