"""Dotted keys: the one flatten/nest pair. A config (or a preset layer) `{"optim": {"lr": 0.1}}`
is `{"optim.lr": 0.1}` flattened; presets, Compose and export all go through these two."""
from __future__ import annotations

from typing import Any, Mapping


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (values that are not mappings are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested dicts (the inverse of flatten for dotted keys without clashes)."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
