"""Optimisers, Muon routing, the LR schedule and gradient clipping behind one small object.

`build_optimizer(cfg, model, layers, total_steps, steps_per_epoch)` returns an `Optimizer`;
the trainer only ever calls `zero_grad()` and `step()`, and `step()` does, in order:

    1. clip the global gradient norm over every trained parameter to `optim.clip` (if set);
    2. update every parameter (one torch optimiser, or Muon + AdamW);
    3. advance the LR schedule by one step.

Muon (science.md §2) orthogonalises the update of hidden weight matrices only; the first layer,
the head (both configurable by `optim.muon_exclude`), biases, norm gains, ViT position
embeddings and anything else that is not a Linear/Conv2d weight go to AdamW. `torch.optim.Muon`
accepts 2-D tensors only, so a conv weight (out, in, kh, kw) is handed to it as a 2-D
`nn.Parameter` that is a *view* of the conv weight's storage (out × in·kh·kw): Muon's in-place
update lands in the model's own tensor, nothing is copied per step, and only the gradient is
reshaped (a view too when its layout matches). Because the proxy shares storage, the model must
not be moved (`.to(device)`, `.to(memory_format=...)`, `load_state_dict(assign=True)`) after
the optimiser is built; `step()` checks this and raises rather than train a stale copy.

Under a non-BP rule the `.grad` that reaches the optimiser is the rule's pseudo-gradient; the
optimiser neither knows nor cares (science.md §2: Muon orthogonalises the pseudo-gradient).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from engine import lazy_dynamo
from fa_contract.config import OptimCfg


# --- the LR schedule ---------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimCfg) -> float:
    """The multiplier of every parameter group's initial lr for optimiser step `step` (0-based).

    Warm-up: linear, `(step + 1) / warmup` over the first `warmup` steps, so the first step
    already moves (lr/warmup, never 0) and step `warmup - 1` runs at the full lr. It multiplies
    the decay below, which for cosine and onecycle starts only after the warm-up.

    - constant: 1.
    - cosine:   `½(1 + cos(π·p))`, p = (step − warmup)/(total_steps − warmup): from 1 after
                the warm-up down to 0 at `total_steps`.
    - onecycle: cosine with a ramp of `warmup` steps, or 30 % of `total_steps` when warmup is 0
                (the ramp of torch's OneCycleLR, but from ~0 to 1 and back to 0 rather than
                between max_lr/25 and max_lr/1e4, so lr keeps meaning the peak lr).
    - step:     `gamma ** (epoch // step_every)`, epoch = step // steps_per_epoch.
    """
    warm = cfg.warmup
    if cfg.schedule == "onecycle" and warm == 0:
        warm = round(0.3 * total_steps)
    ramp = (step + 1) / warm if step < warm else 1.0
    if cfg.schedule == "constant":
        return ramp
    if cfg.schedule == "step":
        return ramp * cfg.gamma ** (step // steps_per_epoch // cfg.step_every)
    progress = min(1.0, max(0.0, (step - warm) / max(1, total_steps - warm)))
    return ramp * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- Muon's 2-D view of a conv weight ----------------------------------------------------------
@dataclass
class _MatrixProxy:
    """A conv weight as the 2-D matrix Muon needs, sharing the weight's storage.

    A contiguous (out, in, kh, kw) weight is `.view(out, -1)`: columns in (in, kh, kw) order.
    A channels_last weight is stored as (out, kh, kw, in), which cannot be viewed that way;
    `permute(0, 2, 3, 1).view(out, -1)` can, with columns in (kh, kw, in) order. That is the
    same matrix up to a column permutation P, and Newton–Schulz is equivariant under it: the
    Frobenius norm ignores P, each iteration is X ↦ q(XXᵀ)X (or X q(XᵀX) for a tall X) and
    (XP)(XP)ᵀ = XXᵀ, so NS(GP) = NS(G)P and the update written back through the view is the
    one of the standard flattening (up to float summation order). Muon's lr adjustment sees
    the proxy's shape (out, in·kh·kw), the flattening science.md prescribes."""

    weight: nn.Parameter   # the model's own 4-D conv weight
    matrix: nn.Parameter   # 2-D view of its storage; what Muon updates
    permuted: bool         # channels_last: columns in (kh, kw, in) order

    @classmethod
    def of(cls, weight: nn.Parameter) -> "_MatrixProxy":
        w = weight.detach()
        permuted = not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
        if permuted:
            w = w.permute(0, 2, 3, 1)
        try:
            matrix = w.view(w.shape[0], -1)
        except RuntimeError as e:
            raise ValueError(f"Muon needs a contiguous or channels_last conv weight, got strides "
                             f"{tuple(weight.stride())}") from e
        return cls(weight, nn.Parameter(matrix), permuted)

    def load_grad(self) -> None:
        """Point the matrix's .grad at the weight's gradient laid out like the matrix."""
        if self.matrix.data_ptr() != self.weight.data_ptr():
            raise RuntimeError("a conv weight was moved or replaced after build_optimizer; "
                               "build the optimiser after .to(device / memory_format)")
        g = self.weight.grad
        if g is not None and self.permuted:
            g = g.permute(0, 2, 3, 1)
        self.matrix.grad = None if g is None else g.reshape(self.matrix.shape)


# --- the optimiser -----------------------------------------------------------------------------
class Optimizer:
    """One or two torch optimisers, the schedule and clipping, stepped together.

    `lr` is the base lr (`optim.lr` × schedule factor) of the latest `step()` (of the first one
    before any), so a train event logged after a step reports the lr that step used; the param
    groups already hold the next step's. `routing` maps each optimiser's name to
    {parameter name: why it went there} for the run's events."""

    def __init__(self, cfg: OptimCfg, optimizers: dict[str, torch.optim.Optimizer],
                 params: list[nn.Parameter], proxies: list[_MatrixProxy],
                 routing: dict[str, dict[str, str]], total_steps: int,
                 steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.optimizers = optimizers
        self.params = params            # every trained model parameter (what clip/zero_grad see)
        self.proxies = proxies
        self.routing = routing
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.steps = 0                  # optimiser steps taken: the schedule's position
        #: each optimiser's step, without the import of torch._dynamo (engine/lazy_dynamo.py)
        self._updates = [lazy_dynamo.eager_step(opt) for opt in optimizers.values()]
        self._factor_set: float | None = None   # the factor the param groups hold now
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
        self._apply_lr()

    @property
    def lr(self) -> float:
        return self.cfg.lr * self._factor(max(self.steps - 1, 0))

    def _factor(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.steps_per_epoch, self.cfg)

    def _apply_lr(self) -> None:
        f = self._factor(self.steps)
        if f == self._factor_set:       # a constant stretch of the schedule: nothing to write
            return
        self._factor_set = f
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * f

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the model's gradients, including those of conv weights that only a Muon proxy
        (never the weight itself) belongs to; same semantics as torch's Optimizer.zero_grad."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.requires_grad_(False)
                p.grad.zero_()

    def step(self) -> None:
        # No no_grad() around the whole step: torch's optimisers and clip_grad_norm_ set it
        # themselves, and the proxies' reshapes of .grad (which has no graph) record nothing.
        if self.cfg.clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip)
        for proxy in self.proxies:
            proxy.load_grad()
        for update in self._updates:
            update()
        for proxy in self.proxies:      # drop the alias so only the model holds its gradient
            proxy.matrix.grad = None
        self.steps += 1
        self._apply_lr()

    def state_dict(self) -> dict:
        return {"steps": self.steps,
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self._factor_set = None         # the loaded groups hold the saved lr: write it again
        self._apply_lr()


def _torch_optimizer(name: str, params: list[nn.Parameter], cfg: OptimCfg,
                     lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        kwargs = dict(lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                      weight_decay=cfg.weight_decay)
        # torch's fused SGD kernel does the update in one pass over each tensor (the default
        # makes three with momentum): the same update, rounded with fused multiply-adds (so
        # the last bits differ from the default loop's), and 2-3 % less time per step for an
        # MLP whose weights do not fit in cache (docs/benchmarks.md).
        try:
            return torch.optim.SGD(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):   # a device or dtype without the fused kernel
            return torch.optim.SGD(params, **kwargs)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {name!r}")


def build_optimizer(cfg: OptimCfg, model: nn.Module, layers: list[nn.Module], total_steps: int,
                    steps_per_epoch: int) -> Optimizer:
    """The optimiser for every trainable parameter of `model`. `layers` are its weight layers
    in forward execution order (engine.layers.attach): layers[0] is the first layer and
    layers[-1] the head, which is what `optim.muon_exclude` refers to. Build it after the
    model has its final device and memory format (Muon's conv proxies share storage)."""
    lazy_dynamo.defer()     # constructing a torch optimiser would import torch._dynamo
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    params = [p for _, p in named]
    if cfg.name != "muon":
        opt = _torch_optimizer(cfg.name, params, cfg, cfg.lr)
        routing = {cfg.name: {n: "every trainable parameter" for n, _ in named}}
        return Optimizer(cfg, {cfg.name: opt}, params, [], routing, total_steps, steps_per_epoch)

    excluded: dict[int, str] = {}
    if layers and "first" in cfg.muon_exclude:
        excluded[id(layers[0].weight)] = "first layer (optim.muon_exclude)"
    if layers and "head" in cfg.muon_exclude:
        excluded.setdefault(id(layers[-1].weight), "head (optim.muon_exclude)")
    hidden = {id(m.weight) for m in layers}
    muon_params: list[nn.Parameter] = []
    adamw_params: list[nn.Parameter] = []
    proxies: list[_MatrixProxy] = []
    routing: dict[str, dict[str, str]] = {"muon": {}, "adamw": {}}
    for name, p in named:
        if id(p) in excluded:
            adamw_params.append(p)
            routing["adamw"][name] = excluded[id(p)]
        elif id(p) in hidden and p.dim() == 2:
            muon_params.append(p)
            routing["muon"][name] = "hidden weight matrix"
        elif id(p) in hidden:
            proxy = _MatrixProxy.of(p)
            proxies.append(proxy)
            muon_params.append(proxy.matrix)
            out, cols = proxy.matrix.shape
            routing["muon"][name] = f"hidden conv weight as a {out}×{cols} matrix view"
        else:
            adamw_params.append(p)
            routing["adamw"][name] = ("not a matrix (bias or norm gain)" if p.dim() < 2 else
                                      "not a Linear/Conv2d weight (e.g. position embedding)")
    optimizers: dict[str, torch.optim.Optimizer] = {}
    if muon_params:
        optimizers["muon"] = torch.optim.Muon(
            muon_params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.muon_momentum,
            nesterov=True, adjust_lr_fn=cfg.muon_adjust_lr)
    if adamw_params:
        optimizers["adamw"] = _torch_optimizer("adamw", adamw_params, cfg, cfg.adamw_lr or cfg.lr)
    return Optimizer(cfg, optimizers, params, proxies, routing, total_steps, steps_per_epoch)
