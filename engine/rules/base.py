"""What every learning rule shares.

A rule differs from backprop only in the error a weight layer sends to its input: the weight
gradient stays the true local one (δ_l h_{l-1}ᵀ). So a rule is a small object with two jobs —
build a layer's feedback when the rule is attached, and turn the error arriving at a layer's
output into the error it sends back. `engine.layers` calls it from the backward pass of every
Linear and Conv2d; nothing else in the model changes.

Feedback tensors are stored in the forward weight's shape (out, in[, kh, kw]), i.e. as the
transpose of the B in science.md §1, so that "B := W" means literally `feedback.copy_(weight)`
and `angle_weight` compares tensors of the same shape.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from fa_contract.config import RuleCfg


class Rule:
    """Base class. Subclasses override `init_feedback` and `backward_weight` (or `input_error`)."""

    name = "base"
    #: True when the training backward is exactly backprop, so layers may use native autograd.
    exact_rule = False
    #: True when the rule has a feedback tensor to compare with W (angle_weight, ‖B‖/‖W‖).
    has_feedback = True

    def __init__(self, cfg: "RuleCfg", seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.layers: list[nn.Module] = []
        #: while True every layer backpropagates exactly (the BP shadow pass of diagnostics).
        self.exact = False
        #: set by diagnostics: receives each layer's input and output error.
        self.recorder: Any = None
        #: torch.ops.fa_tui when the C++ backward serves this rule (set by attach)
        self.native_ops: Any = None
        #: fixed feedback is drawn on the CPU from the rule seed and then moved, so a run's
        #: feedback matrices are the same on every device (a CPU and a GPU run of one config
        #: start from the same B); redraws during training use `generator(device)` instead.
        self.init_generator = torch.Generator().manual_seed(seed)
        self._generator: torch.Generator | None = None
        #: whether after_backward does anything (ldfa): the backward skips the call otherwise
        self.learns_in_backward = type(self).after_backward is not Rule.after_backward

    # --- set-up -----------------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        """The rule's per-step RNG stream on the training device (brsf's redraws), apart from
        the training stream and from `init_generator` (seeded by one LCG step of the seed)."""
        if self._generator is None or self._generator.device != device:
            seed = (self.seed * 6364136223846793005 + 1442695040888963407) % 2**63
            self._generator = torch.Generator(device=device).manual_seed(seed)
        return self._generator

    def init_feedback(self, layer: nn.Module) -> None:
        """Create the layer's feedback buffers. Called once per layer by `engine.layers.attach`."""

    # --- the backward pass ------------------------------------------------------------------
    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor | None:
        """The tensor used in place of W when the error is sent back (W's shape).

        None means the rule does not use a transposed weight and `input_error` decides."""
        return weight

    def input_error(self, layer: nn.Module, grad_out: Tensor, x_shape: torch.Size) -> Tensor:
        """The error sent to the layer's input when `backward_weight` is None (DFA)."""
        raise TypeError(f"rule {self.name} defines neither backward_weight nor input_error")

    def after_backward(self, layer: nn.Module, x: Tensor, grad_out: Tensor) -> None:
        """Called after each training backward of a layer (not during diagnostics): adaptive
        feedback (ldfa) learns here."""

    def before_step(self) -> None:
        """Called once before each training forward: per-step redraws (brsf) happen here."""

    # --- diagnostics ------------------------------------------------------------------------
    def effective_feedback(self, layer: nn.Module) -> Tensor | None:
        """The feedback in W's shape that the layer currently uses, for angle_weight."""
        if not self.has_feedback:
            return None
        return self.backward_weight(layer, layer.weight)

    @property
    def adapting(self) -> bool:
        """Feedback learns and records only in training passes, never in a probe pass."""
        return self.recorder is None and not self.exact

    @contextmanager
    def exact_backward(self) -> Iterator[None]:
        """Every layer backpropagates exactly inside this block (the BP shadow)."""
        old, self.exact = self.exact, True
        try:
            yield
        finally:
            self.exact = old

    def extra_state(self) -> dict:
        """Rule state outside the model's buffers (RNG streams), for checkpoints."""
        g = self._generator
        return {"generator": g.get_state() if g is not None else None}

    def load_extra_state(self, state: dict) -> None:
        if state.get("generator") is not None:
            device = self.layers[0].weight.device if self.layers else torch.device("cpu")
            self.generator(device).set_state(state["generator"])


# --- feedback initialisation ----------------------------------------------------------------
def draw_like(weight: Tensor, init: str, dist: str, generator: torch.Generator,
              scale: float = 1.0, std: float | None = None) -> Tensor:
    """A random tensor of `weight`'s shape, from the forward init's family (`dist`: 'uniform' or
    'normal') when `init == 'same'`, else from `init`; always with the forward init's std (the
    std of `weight` unless given), times `scale`. Drawn on `generator`'s device, in fp32."""
    std = float(weight.detach().float().std()) if std is None else std
    family = dist if init == "same" else init
    shape, device = weight.shape, generator.device
    if family in ("uniform",):
        bound = std * math.sqrt(3.0)
        out = (torch.rand(shape, generator=generator, device=device) * 2 - 1) * bound
    elif family in ("normal", "gaussian"):
        out = torch.randn(shape, generator=generator, device=device) * std
    elif family == "orthogonal":
        flat = torch.randn(shape[0], math.prod(shape[1:]), generator=generator, device=device)
        q = _orthogonal(flat)
        out = (q * (std / q.std())).reshape(shape)
    else:
        raise ValueError(f"unknown feedback init {family!r}")
    return out * scale


def _orthogonal(a: Tensor) -> Tensor:
    """A (semi-)orthogonal matrix of a's shape from the QR of a Gaussian matrix."""
    transpose = a.shape[0] < a.shape[1]
    m = a.t() if transpose else a
    q, r = torch.linalg.qr(m)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.t() if transpose else q
