"""The launch-time memory estimate (fa_contract/estimate.py): its parameter count is exact — checked
against the real torch module of every model — and its parts add up as documented."""
from __future__ import annotations

import math

import pytest

from fa_contract.config import Config
from fa_contract.estimate import F32, estimate, param_count

MODELS = {
    "mlp": {"model": {"name": "mlp", "width": 64, "depth": 3}},
    "mlp_bottleneck_nobias": {"model": {"name": "mlp", "width": 32, "depth": 2, "bottleneck": 5,
                                        "bias": False}, "norm": {"name": "batchnorm"}},
    "mlp_linear": {"model": {"name": "mlp", "depth": 0}, "data": {"shape": [30]}},
    "cnn": {"model": {"name": "cnn", "widths": [4, 8, 8, 16]}, "norm": {"name": "layernorm"},
            "data": {"shape": [3, 30, 26]}},
    "cnn_activity": {"model": {"name": "cnn", "widths": [2, 3, 4, 5]},
                     "norm": {"name": "activity"}},
    "vit": {"model": {"name": "vit", "width": 32, "depth": 2, "heads": 4, "patch": 7},
            "norm": {"name": "layernorm"}},
    "vit_batchnorm": {"model": {"name": "vit", "width": 24, "depth": 1, "heads": 2, "patch": 4,
                                "mlp_ratio": 1.5}, "norm": {"name": "batchnorm"},
                      "data": {"shape": [3, 32, 32]}},
    "resnet18": {"model": {"name": "resnet18"}, "norm": {"name": "batchnorm"},
                 "data": {"shape": [3, 32, 32], "classes": 100}},
    "resnet18_none": {"model": {"name": "resnet18"}, "data": {"shape": [1, 28, 28]}},
    "subset": {"model": {"name": "mlp", "width": 16, "depth": 1}, "data": {"subset": [1, 3, 5]}},
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_parameter_count_matches_the_torch_model(case):
    torch = pytest.importorskip("torch")
    from engine.models import build_model
    cfg = Config.model_validate(MODELS[case])
    shape = tuple(cfg.data.shape)
    k = len(cfg.data.subset) if cfg.data.subset else cfg.data.classes
    model = build_model(cfg.model, cfg.norm, shape, k)
    assert param_count(cfg) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    del torch


def test_parts_follow_the_documented_arithmetic():
    cfg = Config.model_validate({"model": {"width": 100, "depth": 1}, "data": {"shape": [10]},
                                 "optim": {"name": "adam"}, "rule": {"name": "fa"},
                                 "metrics": {"every": 0}})
    est = estimate(cfg)
    p = 10 * 100 + 100 + 100 * 10 + 10
    assert est.params == p
    assert est.parts["parameters"] == est.parts["gradients"] == p * F32
    assert est.parts["optimiser state"] == 2 * p * F32          # Adam: two moments
    assert est.parts["feedback"] == (10 * 100 + 100 * 10) * F32  # one copy of each weight
    assert est.parts["probe"] == 0
    assert est.parts["dataset"] == (8192 + 2048) * (10 * F32 + 8)
    assert est.total == sum(est.parts.values())
    assert est.checkpoint == (p + 2 * p + 2000) * F32


def test_the_bottleneck_that_ate_the_machine_is_estimated_in_hundreds_of_gigabytes():
    cfg = Config.model_validate({"model": {"bottleneck": 100_000_000}})
    est = estimate(cfg)
    assert est.params == 784 * 256 + 256 + 256 * 100_000_000 + 100_000_000 + 100_000_000 * 10 + 10
    assert est.total > 100 * 2 ** 30
    assert math.isfinite(est.total)
