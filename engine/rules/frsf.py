"""Fixed random-magnitude sign-concordant feedback: B = |R| ⊙ sign(W) with R fixed.

Alignment is measured on this effective B, not on |R| (a known bug in another library)."""
import torch
from torch import Tensor, nn

from engine.rules.base import Rule, draw_like


class FRSF(Rule):
    name = "frsf"

    def init_feedback(self, layer: nn.Module) -> None:
        r = draw_like(layer.weight, self.cfg.init, layer.init_dist, self.init_generator,
                      self.cfg.scale)
        layer.register_buffer("feedback_magnitude", r.abs().to(layer.weight.device))

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor:
        return layer.feedback_magnitude.to(weight.dtype) * torch.sign(weight)
