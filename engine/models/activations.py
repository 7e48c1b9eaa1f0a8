"""The `model.activation` switch, shared by mlp and cnn (resnet18 keeps torchvision's ReLU,
vit its GELU)."""
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU, "linear": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module. Never in-place: a layer's input must stay as recorded."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
