"""Multi-layer perceptron: the fully connected nets of Lillicrap (30-20-10, linear), Launay
(3072-800-800-800-10, bottleneck sweep) and Robertson & Koyejo (ReLU MLPs).

    flatten → depth × [fcI: Linear → normI → actI (→ dropI)] → head: Linear

All hidden layers have `width` units, except that `bottleneck` (if set) replaces the width of
the last hidden layer. depth=0 is a linear classifier (`head` is the only weight layer).
Weights keep PyTorch's default init (uniform, U(±1/√fan_in)), so `init_dist` stays "uniform".
"""
from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from fa_contract.config import ModelCfg
from engine.models.activations import activation
from engine.norm import norm_1d


def build_mlp(cfg: ModelCfg, norm: str, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    if cfg.bottleneck is not None and cfg.depth == 0:
        raise ValueError("mlp: a bottleneck needs depth >= 1")
    widths = [cfg.width] * cfg.depth
    if cfg.bottleneck is not None:
        widths[-1] = cfg.bottleneck
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = math.prod(input_shape)
    for i, w in enumerate(widths, start=1):
        layers[f"fc{i}"] = nn.Linear(fan_in, w, bias=cfg.bias)
        layers[f"norm{i}"] = norm_1d(norm, w)
        layers[f"act{i}"] = activation(cfg.activation)
        if cfg.dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(cfg.dropout)
        fan_in = w
    layers["head"] = nn.Linear(fan_in, classes, bias=cfg.bias)
    return nn.Sequential(layers)
