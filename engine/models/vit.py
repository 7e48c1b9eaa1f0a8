"""A small Vision Transformer, written here so that every projection is a plain nn.Linear the
learning rules can reach (torchvision's ViT uses nn.MultiheadAttention, whose in-projection
bypasses the Linear modules' forward).

    patch: Conv2d(C, D, p, stride=p)  → (N, T, D) tokens, T = (H/p)·(W/p), + pos (learned)
    depth × Block:  x = x + proj(attention(qkv(norm1(x))))
                    x = x + fc2(GELU(fc1(norm2(x))))          fc1: D → mlp_ratio·D
    norm → mean over tokens → head: Linear(D, classes)

D = `model.width`, p = `model.patch`, `model.heads` heads of D/heads dims, attention by
F.scaled_dot_product_attention (no dropout, no mask). Pooling is the mean over tokens, not a
cls token: one token fewer, and the token batch norms see only patch tokens. Weight layers:
patch (first), 4 per block, head (last).

Init: every Linear N(0, 0.02²) with zero bias (the ViT/GPT convention; marked `init_dist =
"normal"`), the pos-embedding N(0, 0.02²), the patch conv PyTorch's default (uniform). No
weight layer is zero-initialised: feedback is drawn with the std of its weight.
`model.bias` applies to every Linear and the patch conv; `model.activation` and `dropout` do
not apply.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fa_contract.config import ModelCfg
from engine.norm import norm_tokens


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, hidden: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.norm1 = norm_tokens(norm, dim)
        self.attn = Attention(dim, heads, bias)
        self.norm2 = norm_tokens(norm, dim)
        self.mlp = MLP(dim, hidden, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, cfg: ModelCfg, norm: str, input_shape: tuple[int, ...],
                 classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"vit needs C×H×W inputs, got shape {input_shape}")
        c, h, w = input_shape
        p, dim = cfg.patch, cfg.width
        if h % p or w % p:
            raise ValueError(f"vit: patch {p} does not divide the {h}×{w} input")
        if dim % cfg.heads:
            raise ValueError(f"vit: {cfg.heads} heads do not divide width {dim}")
        self.patch = nn.Conv2d(c, dim, p, stride=p, bias=cfg.bias)
        self.pos = nn.Parameter(torch.randn(1, (h // p) * (w // p), dim) * 0.02)
        hidden = max(1, round(cfg.mlp_ratio * dim))
        self.blocks = nn.ModuleList(Block(dim, cfg.heads, hidden, norm, cfg.bias)
                                    for _ in range(cfg.depth))
        self.norm = norm_tokens(norm, dim)
        self.head = nn.Linear(dim, classes, bias=cfg.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
                m.init_dist = "normal"

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))
