"""The 4-conv-layer CNN of the rank-collapse analysis (Boeshertz, Pascanu & Clopath 2026).

Exact architecture, with c1..c4 = `model.widths` and an input C×H×W:

    conv1: Conv2d(C,  c1, 3, padding=1) → norm1 → act1                     H × W
    conv2: Conv2d(c1, c2, 3, padding=1) → norm2 → act2 → pool2: MaxPool 2×2  H/2 × W/2
    conv3: Conv2d(c2, c3, 3, padding=1) → norm3 → act3
    conv4: Conv2d(c3, c4, 3, padding=1) → norm4 → act4 → pool4: MaxPool 2×2  H/4 × W/4
    flatten (→ drop: Dropout if model.dropout > 0) → head: Linear(c4·⌊H/4⌋·⌊W/4⌋, classes)

So 32×32 inputs give 8×8 maps before the head, 28×28 inputs 7×7. Five weight layers. Conv
biases follow `model.bias`; weights keep PyTorch's default (uniform) init.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from fa_contract.config import ModelCfg
from engine.models.activations import activation
from engine.norm import norm_2d


def build_cnn(cfg: ModelCfg, norm: str, input_shape: tuple[int, ...], classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs C×H×W inputs, got shape {input_shape}")
    c, h, w = input_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, out in enumerate(cfg.widths, start=1):
        layers[f"conv{i}"] = nn.Conv2d(c, out, 3, padding=1, bias=cfg.bias)
        layers[f"norm{i}"] = norm_2d(norm, out)
        layers[f"act{i}"] = activation(cfg.activation)
        if i in (2, 4):
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            h, w = h // 2, w // 2
        c = out
    layers["flatten"] = nn.Flatten()
    if cfg.dropout > 0:
        layers["drop"] = nn.Dropout(cfg.dropout)
    layers["head"] = nn.Linear(c * h * w, classes, bias=cfg.bias)
    return nn.Sequential(layers)
