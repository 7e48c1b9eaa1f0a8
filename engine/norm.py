"""The normalisation switch (`norm.name`), one switch for every model.

Each model asks for a norm module at each of its normalisation slots through one of three
helpers, by the shape of what is normalised there:

| name        | norm_1d(F): N×F   | norm_2d(C): N×C×H×W     | norm_tokens(D): N×T×D     |
|-------------|-------------------|-------------------------|---------------------------|
| `none`      | Identity          | Identity                | Identity                  |
| `batchnorm` | BatchNorm1d(F)    | BatchNorm2d(C)          | TokenBatchNorm(D)         |
| `layernorm` | LayerNorm(F)      | GroupNorm(1, C)         | LayerNorm(D)              |
| `activity`  | ActivityNorm(F)   | ActivityNorm(C)         | TokenActivityNorm(D)      |

Statistics are taken over: batchnorm / activity — each unit over the batch (vectors), each
channel over N,H,W (maps), each feature over batch × tokens (tokens); layernorm — each sample
over its F features, its C,H,W values (GroupNorm with one group), or each token's D features.

Where the slots are, per model (the model modules say the same):
- mlp: after every hidden Linear, before the activation.
- cnn: after every conv, before the activation.
- resnet18: torchvision's `norm_layer` slots: after the stem conv, after both convs of every
  BasicBlock and after every 1×1 projection-shortcut conv. `none` gives a norm-free ResNet.
- vit: the two pre-norms of every block and the final norm before pooling.

`activity` is the hidden-activity normalisation of Boeshertz et al. 2026: every unit
(channel for conv maps, feature for tokens) is standardised over the batch (and space / tokens)
with no learned gain or bias, so the rule's error signals are not re-scaled by trainable
parameters. Like BatchNorm it tracks running statistics for eval mode. It is its own class, not
BatchNorm(affine=False), because torchvision's ResNet initialiser writes to every BatchNorm2d's
weight and would fail on a norm that has none.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ActivityNorm(nn.Module):
    """Per-unit standardisation over the batch (dim 1 holds the units; every other dim is
    averaged over), no affine; running statistics for eval, updated like BatchNorm's."""

    def __init__(self, features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.features, self.eps, self.momentum = features, eps, momentum
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, None,
                            self.training, self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.features}, eps={self.eps}, momentum={self.momentum}"


class _OverTokens:
    """Mixin for a per-feature batch norm: (N, T, D) tokens become N·T rows of D features, so
    each feature is normalised over batch × tokens."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class TokenBatchNorm(_OverTokens, nn.BatchNorm1d):
    pass


class TokenActivityNorm(_OverTokens, ActivityNorm):
    pass


def norm_1d(name: str, features: int) -> nn.Module:
    """Norm for N×F hidden vectors (mlp)."""
    return _pick(name, none=nn.Identity, batchnorm=lambda: nn.BatchNorm1d(features),
                 layernorm=lambda: nn.LayerNorm(features),
                 activity=lambda: ActivityNorm(features))


def norm_2d(name: str, channels: int) -> nn.Module:
    """Norm for N×C×H×W feature maps (cnn, resnet18)."""
    return _pick(name, none=nn.Identity, batchnorm=lambda: nn.BatchNorm2d(channels),
                 layernorm=lambda: nn.GroupNorm(1, channels),
                 activity=lambda: ActivityNorm(channels))


def norm_tokens(name: str, dim: int) -> nn.Module:
    """Norm for N×T×D token sequences (vit)."""
    return _pick(name, none=nn.Identity, batchnorm=lambda: TokenBatchNorm(dim),
                 layernorm=lambda: nn.LayerNorm(dim),
                 activity=lambda: TokenActivityNorm(dim))


def _pick(name: str, **choices) -> nn.Module:
    if name not in choices:
        raise ValueError(f"unknown norm {name!r}; choose from {sorted(choices)}")
    return choices[name]()
