"""ResNet-18, CIFAR variant, from torchvision's building blocks (the ResNet-18 / CIFAR-100
ablation of Boeshertz et al. 2026).

torchvision.models.resnet18 with two changes for small images: the stem is a 3×3 stride-1 conv
(in_channels from the input, 64 out, no bias) and the 3×3 max-pool is removed. fc maps 512 →
classes. Feature maps: 32×32 → layer1 32 → layer2 16 → layer3 8 → layer4 4 → global average
pool. Weight layers, 21: the stem, 16 block convs, 3 1×1 projection-shortcut convs (layer2-4,
first block) and fc.

Every `norm_layer` slot of torchvision (after the stem, after each block conv and after each
shortcut conv) takes the norm switch. `model.width/depth/activation/dropout/bias` do not apply:
the blocks are torchvision's (ReLU, bias-free convs). torchvision's init is kept: convs
kaiming-normal (fan_out) — marked `init_dist = "normal"` — and fc PyTorch's uniform default.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from fa_contract.config import ModelCfg
from engine.norm import norm_2d


def build_resnet18(cfg: ModelCfg, norm: str, input_shape: tuple[int, ...],
                   classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs C×H×W inputs, got shape {input_shape}")
    from torchvision.models import resnet18  # here, not at the top: torchvision doubles start-up

    model = resnet18(weights=None, num_classes=classes, norm_layer=partial(norm_2d, norm))
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.init_dist = "normal"
    return model
