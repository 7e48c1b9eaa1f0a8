"""Batchwise random-magnitude sign-concordant feedback: B = |R| ⊙ sign(W), with R redrawn
before every training step from the rule's own generator (never the training RNG stream)."""
import torch
from torch import Tensor, nn

from engine.rules.base import Rule, draw_like


class BRSF(Rule):
    name = "brsf"

    def init_feedback(self, layer: nn.Module) -> None:
        std = layer.weight.detach().float().std()
        layer.register_buffer("feedback_std", std.reshape(()))
        layer.feedback_std_value = float(std)   # read every step: no device sync per layer
        layer.register_buffer("feedback_magnitude", torch.empty_like(layer.weight))
        self._redraw(layer, self.init_generator)

    def _redraw(self, layer: nn.Module, g: torch.Generator | None = None) -> None:
        g = g or self.generator(layer.weight.device)
        r = draw_like(layer.weight, self.cfg.init, layer.init_dist, g, self.cfg.scale,
                      std=layer.feedback_std_value)
        layer.feedback_magnitude.copy_(r.abs())

    def before_step(self) -> None:
        with torch.no_grad():
            for layer in self.layers:
                self._redraw(layer)

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor:
        return layer.feedback_magnitude.to(weight.dtype) * torch.sign(weight)
