"""Low-dimensional feedback alignment (Hanut & Kadmon 2025): the feedback of each weight layer
is rank r, stored as two buffers

    P: out × r,   Q: r × fan_in (fan_in = in·kh·kw / groups),   feedback = (P @ Q) in W's shape,

so the error sent down crosses an r-dimensional bottleneck: grad_input = (δ P) Q. Linear layers
compute exactly that (never forming PQ); conv layers use PQ as the kernel of the transposed
convolution. r = `rank`, clipped to min(out, fan_in). Weight gradients stay the true local ones.

Initialisation. `fixed` and `oja`: P has orthonormal columns (QR of a Gaussian draw, the point
Oja's rule keeps P near) and Q is drawn in the forward init's family with std
s·sqrt(out/r)·scale, s the std of W, so E‖PQ‖ = ‖W‖ like an FA matrix. `fit`: truncated SVD of
W, P = U_r√S_r, Q = √S_r V_rᵀ (the best rank-r fit; `scale` is not applied, the fit would undo it).

Adaptation (`adapt`), only in `after_backward`, i.e. only in training passes, with rate
`feedback_lr`; δ is the layer's output error as rows (N·H·W × out for conv) and h its input:

- `fixed`: never changes — the failure case the paper's theory predicts.
- `oja`: Q descends like W does, Q -= lr·(δP)ᵀh = lr·Pᵀ ΔW_true (ΔW_true the true local weight
  gradient, which is what a conv uses), so Q tracks Pᵀ W as W learns. P follows Oja's subspace
  rule P += lr·(I − PPᵀ) C P on the error covariance C = δᵀδ/N, divided by its trace: δ carries
  the loss's 1/N and shrinks as training converges, so the raw C would freeze P; normalised, the
  fixed points (P spanning C's top-r eigenvectors) are unchanged and lr is scale-free and stable
  below 1.
- `fit`: one gradient step on ½‖PQ − W‖² for P and Q per training step.

`fit_scale` (fit only). The truncated SVD keeps only the top r singular values, so ‖PQ‖/‖W‖
is small at low rank (0.18 at r = 2 on a 256-wide layer), and comparing `fit` with `fixed` /
`oja` (‖PQ‖ ≈ ‖W‖ by construction) at equal r would confound scale with direction. With
`weight` (the default) the feedback used is s·PQ, s = ‖W‖/‖PQ‖ recomputed at every use from
r × r matrices (‖PQ‖² = Σ (PᵀP) ⊙ (QQᵀ)), so the fit sets the direction and W the norm, at
init and throughout; P and Q themselves still follow ½‖PQ − W‖². `raw` uses PQ as fitted.
"""
import math

import torch
from torch import Tensor, nn

from engine.rules.base import Rule, draw_like

_conv_backward = torch.ops.aten.convolution_backward


class LDFA(Rule):
    name = "ldfa"

    def init_feedback(self, layer: nn.Module) -> None:
        w = layer.weight.detach().float().flatten(1)
        out, fan_in = w.shape
        r = min(self.cfg.rank, out, fan_in)
        if self.cfg.adapt == "fit":
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            root = s[:r].sqrt()
            p, q = u[:, :r] * root, root[:, None] * vh[:r]
        else:
            g = self.init_generator
            a, tri = torch.linalg.qr(torch.randn(out, r, generator=g))
            p = a * torch.sign(torch.diagonal(tri))
            std = float(w.std()) * math.sqrt(out / r)
            q = draw_like(torch.empty(r, fan_in, device="meta"), self.cfg.init, layer.init_dist,
                          g, self.cfg.scale, std=std)
        layer.register_buffer("feedback_p", p.contiguous().to(w.device))
        layer.register_buffer("feedback_q", q.contiguous().to(w.device))

    # --- the backward pass ------------------------------------------------------------------
    def _scale(self, layer: nn.Module) -> Tensor | None:
        """s = ‖W‖/‖PQ‖ under fit with fit_scale = 'weight' (see the module docstring), else
        None. Computed on the device, without a sync."""
        if self.cfg.adapt != "fit" or self.cfg.fit_scale != "weight":
            return None
        p, q = layer.feedback_p.float(), layer.feedback_q.float()
        pq_sq = ((p.t() @ p) * (q @ q.t())).sum().clamp_min(1e-30)
        return torch.linalg.vector_norm(layer.weight.detach().float()) / pq_sq.sqrt()

    def backward_weight(self, layer: nn.Module, weight: Tensor) -> Tensor | None:
        if isinstance(layer, nn.Conv2d):
            return self.effective_feedback(layer).to(weight.dtype)
        return None  # Linear: input_error sends (δP)Q through the bottleneck

    def input_error(self, layer: nn.Module, grad_out: Tensor, x_shape: torch.Size) -> Tensor:
        dt = grad_out.dtype
        out = (grad_out @ layer.feedback_p.to(dt)) @ layer.feedback_q.to(dt)
        s = self._scale(layer)
        return out if s is None else out * s.to(dt)

    def effective_feedback(self, layer: nn.Module) -> Tensor:
        fb = (layer.feedback_p @ layer.feedback_q).view(layer.weight.shape)
        s = self._scale(layer)
        return fb if s is None else fb * s

    # --- adaptation -------------------------------------------------------------------------
    def after_backward(self, layer: nn.Module, x: Tensor, grad_out: Tensor) -> None:
        lr = self.cfg.feedback_lr
        if self.cfg.adapt == "fixed" or lr == 0:
            return
        p, q = layer.feedback_p, layer.feedback_q
        # Backward re-enters the forward's autocast; the feedback learns in fp32.
        with torch.no_grad(), torch.autocast(grad_out.device.type, enabled=False):
            if self.cfg.adapt == "fit":
                resid = p @ q - layer.weight.detach().float().flatten(1)
                gp, gq = resid @ q.t(), p.t() @ resid
                p.sub_(lr * gp)
                q.sub_(lr * gq)
                return
            delta = _error_rows(grad_out).float()
            dp = delta @ p                                       # the r-dim error δP
            dq = _projected_weight_grad(layer, x, grad_out, dp, p, q)
            cp = delta.t() @ dp / delta.square().sum().clamp_min(1e-30)   # (C / tr C) P
            p.add_(lr * (cp - p @ (p.t() @ cp)))
            q.sub_(lr * dq)


def _error_rows(grad_out: Tensor) -> Tensor:
    """The output error as rows of output units: (N·…, out), conv pixels as extra rows."""
    if grad_out.dim() == 4:
        return grad_out.movedim(1, -1).reshape(-1, grad_out.shape[1])
    return grad_out.reshape(-1, grad_out.shape[-1])


def _projected_weight_grad(layer: nn.Module, x: Tensor, grad_out: Tensor, dp: Tensor,
                           p: Tensor, q: Tensor) -> Tensor:
    """Pᵀ ΔW_true (r × fan_in), ΔW_true = δᵀh the layer's true weight gradient, as (δP)ᵀh.

    For an ungrouped conv that is the weight gradient of a conv with r output channels fed the
    projected error map, r/out of the cost of the full one; a grouped conv's projected channels
    mix groups, so there the full gradient is formed and projected."""
    if not isinstance(layer, nn.Conv2d):
        return dp.t() @ x.reshape(-1, x.shape[-1]).float()
    args = (layer.stride, layer.padding, layer.dilation, False, [0, 0])
    if layer.groups == 1:
        n, _, h, w = grad_out.shape
        dp_map = dp.view(n, h, w, -1).permute(0, 3, 1, 2)
        kernel = q.view(q.shape[0], *layer.weight.shape[1:])   # supplies the shape only
        return _conv_backward(dp_map, x.float(), kernel, None, *args, 1,
                              [False, True, False])[1].flatten(1)
    dw = _conv_backward(grad_out.float(), x.float(), layer.weight.float(), None, *args,
                        layer.groups, [False, True, False])[1]
    return p.t() @ dw.flatten(1)
