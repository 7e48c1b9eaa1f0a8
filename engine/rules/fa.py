"""Feedback alignment (Lillicrap et al. 2016): a fixed random B of W's shape, drawn from the
same distribution as the forward init; a buffer, never trained, saved in checkpoints."""
from torch import Tensor, nn

from engine.rules.base import Rule, draw_like


class FA(Rule):
    name = "fa"

    def init_feedback(self, layer: nn.Module) -> None:
        b = draw_like(layer.weight, self.cfg.init, layer.init_dist, self.init_generator,
                      self.cfg.scale)
        layer.register_buffer("feedback", b.to(layer.weight.device))

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor:
        return layer.feedback
