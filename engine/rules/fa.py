"""Feedback alignment (Lillicrap et al. 2016): a fixed random B of W's shape, drawn from the
same distribution as the forward init; a buffer, never trained, saved in checkpoints."""
from torch import Tensor, nn

from engine.rules.base import Rule, draw_like


class FA(Rule):
    name = "fa"

    def init_feedback(self, layer: nn.Module) -> None:
        g = self.generator(layer.weight.device)
        layer.register_buffer("feedback", draw_like(layer.weight, self.cfg.init, layer.init_dist,
                                                    g, self.cfg.scale))

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor:
        return layer.feedback
