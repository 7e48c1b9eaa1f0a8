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
    net = BUILDERS[model.name](model, norm.name, tuple(input_shape), classes)
    if model.init in ("kaiming", "kaiming_out"):
        he_init(net, model.activation, "fan_out" if model.init == "kaiming_out" else "fan_in")
    return net


def he_init(net: nn.Module, activation: str, mode: str = "fan_in") -> None:
    """He et al. (2015) normal init on every weight layer, zero biases; `mode` fan_in
    (`kaiming`) or fan_out (`kaiming_out`) for the hidden layers.

    PyTorch's default (kaiming_uniform with a = √5) has weight variance 1/(3·fan_in), so in a
    ReLU stack of equal widths BP's error shrinks by about √6 ≈ 2.4 per layer: four convs
    below the head leave conv1 ~5x under the head's error, while DFA's Launay-scaled signal
    keeps ‖e‖/√n_L at every depth. With the gain for the activation, forward activations
    and (for fan_in ≈ fan_out) BP's errors keep their scale, which is the regime in which
    Launay et al.'s normalisation matches BP. Where a layer widens (a CNN's 16 → 32
    channels) fan_in lets BP's error grow by sqrt(fan_out / fan_in) going down; fan_out (He
    et al.'s backward case, torchvision's conv init) keeps its scale there too, so DFA / BP
    stays near 1/sqrt(n_L) at every layer (0.26-0.44 in tests/test_dfa_scale.py). The head
    gets the linear gain and fan_in in both modes: it feeds the loss, not an activation."""
    gain_name = activation if activation in ("relu", "tanh", "sigmoid", "leaky_relu") else "linear"
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for m in layers:
        head = m is layers[-1]
        nn.init.kaiming_normal_(m.weight, mode="fan_in" if head else mode,
                                nonlinearity="linear" if head else gain_name)
        m.init_dist = "normal"
        if m.bias is not None:
            nn.init.zeros_(m.bias)
