"""The models, one short module each, built by name (`model.name`).

Every weight layer is a plain nn.Linear or nn.Conv2d, so `engine.layers.attach` can hand all of
them to the learning rule; the first weight layer executed in forward is the input layer and the
last is the classifier head. Layers whose init is Gaussian carry `init_dist = "normal"` (the
default is "uniform") so that feedback can be drawn from the same family. The normalisation
switch is `engine.norm`. Nothing here is device- or dtype-specific: the models run under
channels_last and bf16 autocast as they are.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from fa_contract.config import ModelCfg, NormCfg
from engine.models.cnn import build_cnn
from engine.models.mlp import build_mlp
from engine.models.resnet import build_resnet18
from engine.models.vit import ViT

Builder = Callable[[ModelCfg, str, tuple[int, ...], int], nn.Module]
BUILDERS: dict[str, Builder] = {
    "mlp": build_mlp, "cnn": build_cnn, "resnet18": build_resnet18, "vit": ViT,
}


def build_model(model: ModelCfg, norm: NormCfg, input_shape: tuple[int, ...],
                classes: int) -> nn.Module:
    """The network `model.name` for per-sample inputs of `input_shape` ((C, H, W), or any
    shape for mlp, which flattens), with `norm.name` at its normalisation slots, returning
    N × classes logits."""
    return BUILDERS[model.name](model, norm.name, tuple(input_shape), classes)
