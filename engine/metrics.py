"""The math of the per-layer diagnostics (science.md §3): spectra, angles, the conservation law.

Pure functions on tensors, no side effects. Every input is cast to fp32 first, so the numbers
mean the same under bf16 autocast as in fp32 training. `engine/diagnostics.py` decides what
matrices they are taken on.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# --- spectra ---------------------------------------------------------------------------------


#: Solve the small symmetric eigenproblems of CUDA tensors on the host instead. On an H100
#: cuSOLVER's fp64 eigvalsh of a 256×256 Gram matrix takes ~2 ms, and the host round trip made
#: a ResNet-18 probe 1.7× slower (0.77 s against 0.44 s; docs/benchmarks.md), so it is off.
#: benchmarks/spectra_bench.py measures both ways.
EIGH_ON_HOST = False


def _for_solver(g: Tensor) -> Tensor:
    """g where its eigenproblem is to be solved (see EIGH_ON_HOST)."""
    return g.cpu() if EIGH_ON_HOST and g.device.type != "cpu" else g


def gram_singular_values(g: Tensor) -> Tensor:
    """Singular values (fp32, descending) of a matrix m from its Gram matrix g = m mᵀ or mᵀm,
    as the square roots of g's eigenvalues. A g with a NaN or inf gives NaNs, without a
    device sync or a solver error."""
    ok = torch.isfinite(g).all()
    g = torch.where(ok, g, torch.zeros_like(g))
    ev = torch.linalg.eigvalsh(_for_solver(g)).to(g.device)
    s = ev.clamp_min(0).sqrt().flip(0).float()
    return torch.where(ok, s, torch.full_like(s, math.nan))


def singular_values(m: Tensor) -> Tensor:
    """Singular values of a 2-D matrix, in fp32, descending.

    Error and activation matrices are very wide (N × C·H·W with N a few hundred) and only their
    spectrum is needed, so it comes from the small side's Gram matrix, formed in fp64: one GEMM
    and one N×N symmetric eigenproblem, several times faster than QR + SVD on a CPU and far
    faster on a GPU, where those are launch-bound. The Gram matrix squares the condition
    number, but in fp64 that still resolves singular values down to ~1e-8 of the largest,
    below the fp32 round-off of the matrix itself, so erank's small terms stay exact to fp32
    (tests compare with svdvals, also for rank-deficient matrices). A matrix with a NaN or inf
    (a diverged run) gives NaNs."""
    if m.dim() != 2:
        raise ValueError(f"singular_values needs a 2-D matrix, got shape {tuple(m.shape)}")
    m = m.detach().double()
    if min(m.shape) == 0:
        return torch.full((0,), math.nan, device=m.device)
    return gram_singular_values(m @ m.t() if m.shape[0] <= m.shape[1] else m.t() @ m)


def erank_from_sv(s: Tensor) -> float:
    """Roy & Vetterli's effective rank from singular values: p_i = σ_i / Σσ, exp(−Σ p log p)
    with 0·log 0 = 0. The zero matrix has no spectrum to spread: its erank is 0 by convention
    (every non-zero matrix has erank ≥ 1)."""
    total = s.sum()
    if not bool(total > 0):
        return math.nan if bool(torch.isnan(total)) else 0.0
    p = s / total
    entropy = -torch.special.xlogy(p, p).sum()
    return float(torch.exp(entropy))


def pr_from_sv(s: Tensor) -> float:
    """Participation ratio (Σσ²)² / Σσ⁴ from singular values; 0 for the zero matrix.
    σ is divided by its largest value first (PR is scale-free): deep layers' errors are tiny
    and σ⁴ would underflow fp32."""
    top = s.max() if s.numel() else s.new_zeros(())
    if not bool(top > 0):
        return math.nan if bool(torch.isnan(top)) else 0.0
    s2 = (s / top).square()
    return float(s2.sum().square() / s2.square().sum())


def spectrum_stats(m: Tensor) -> tuple[float, float]:
    """(erank, participation ratio) of a 2-D matrix, sharing one singular-value computation.
    Both lie in [1, rank(m)] for a non-zero matrix, so both are bounded by min(rows, cols)."""
    s = singular_values(m)
    return erank_from_sv(s), pr_from_sv(s)


def product_singular_values(a: Tensor, b: Tensor) -> Tensor:
    """Singular values of aᵀb for a: n × p, b: n × q, without forming it when n < min(p, q).

    A Linear layer's weight gradient is exactly δᵀh over the probe rows, so its rank is at most
    n, and its squared singular values are the eigenvalues of the n × n matrix Sᵀ(bbᵀ)S where
    aaᵀ = SSᵀ (S = U Λ^½ from aaᵀ's eigendecomposition): (aᵀb)ᵀ(aᵀb) = bᵀ S Sᵀ b has the
    non-zero spectrum of Sᵀ b bᵀ S. Two n × n eigenproblems instead of an SVD of the
    out × in gradient, several times cheaper for wide layers."""
    a, b = a.detach().double(), b.detach().double()
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    if n >= min(p, q):
        return singular_values(a.t() @ b)
    ga, gb = a @ a.t(), b @ b.t()
    ok = torch.isfinite(ga).all() & torch.isfinite(gb).all()
    ga = torch.where(ok, ga, torch.zeros_like(ga))
    lam, u = torch.linalg.eigh(_for_solver(ga))
    s = (u * lam.clamp_min(0).sqrt()).to(ga.device)
    sv = gram_singular_values(s.t() @ gb @ s)
    return torch.where(ok, sv, torch.full_like(sv, math.nan))


def product_spectrum_stats(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(erank, participation ratio) of aᵀb; see product_singular_values."""
    s = product_singular_values(a, b)
    return erank_from_sv(s), pr_from_sv(s)


def erank(m: Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007) of a 2-D matrix; 0 for the zero matrix."""
    return erank_from_sv(singular_values(m))


def participation_ratio(m: Tensor) -> float:
    """Participation ratio (Σσ²)² / Σσ⁴ of a 2-D matrix; 0 for the zero matrix."""
    return pr_from_sv(singular_values(m))


def spectra(m: Tensor) -> tuple[float, float, float]:
    """(erank, participation ratio, erank of row_normalised(m)) of a 2-D matrix.

    With no more rows than columns (the per-sample layout: N × features) both spectra come
    from one fp64 Gram matrix g = m mᵀ: row-normalising m is g ↦ D^-½ g D^-½ with D its
    diagonal (the squared row norms), zero rows left out. That saves the larger GEMM of the
    second spectrum, which on a conv layer's N × C·H·W error is most of its cost. Otherwise
    (N·H·W × C) the two are taken separately."""
    if m.dim() != 2:
        raise ValueError(f"spectra needs a 2-D matrix, got shape {tuple(m.shape)}")
    # A NaN or inf in m (a diverged run): nothing to measure. Told from the Gram matrix's
    # diagonal, the squared norms of m's rows (or columns), which is finite exactly when m is
    # (fp32 entries cannot overflow fp64 squares), so m itself needs no extra pass.
    nan = (math.nan, math.nan, math.nan)
    if not 0 < m.shape[0] <= m.shape[1]:
        s = singular_values(m)     # NaNs when m is not finite (gram_singular_values)
        if not bool(torch.isfinite(s).all()):
            return nan
        return erank_from_sv(s), pr_from_sv(s), erank(row_normalised(m))
    md = m.detach().double()
    g = md @ md.t()
    sq = g.diagonal()
    if not bool(torch.isfinite(sq).all()):
        return nan
    s = gram_singular_values(g)
    keep = sq > 0
    inv = sq[keep].rsqrt()
    g_rn = g[keep][:, keep] * inv[:, None] * inv[None, :]
    s_rn = gram_singular_values(g_rn) if len(inv) else g_rn.new_zeros(0)
    return erank_from_sv(s), pr_from_sv(s), erank_from_sv(s_rn)


def row_normalised(m: Tensor) -> Tensor:
    """m with every row scaled to unit norm; zero rows (a silent sample) are left out, as
    they have no direction. erank of the result does not depend on how large each sample's
    error is, only on how the directions spread, so it does not fall as the probe gets fitted."""
    norms = torch.linalg.vector_norm(m, dim=1, keepdim=True)
    keep = (norms > 0).squeeze(1)
    return m[keep] / norms[keep]


# --- the applied step ---------------------------------------------------------------------------
#: applied-step metrics are reported only where fp32 rounding is below 1 % of the step
STEP_NOISE_MAX = 0.01


def step_noise(weight: Tensor, step: Tensor) -> float:
    """Bound on the rounding in a measured step W_after − W_before, relative to the step.

    W_after = fl(W_before + Δ) is off from W_before + Δ by at most half an ulp per entry, i.e.
    ≤ ½·eps32·|W| (eps32 = 2⁻²³), so the step reads Δ plus noise of norm ≤ ½·eps32·‖W‖. The
    metrics of the step are scale-free (erank, PR and the angle do not change if the step is
    divided by the lr), so what limits them is only this ratio: with an lr factor of 1e-5 at
    the end of a cosine schedule it is above 1 and the step's spectrum is rounding noise.
    inf for a zero step."""
    s = float(torch.linalg.vector_norm(step.detach().float()))
    bound = 0.5 * torch.finfo(torch.float32).eps * float(
        torch.linalg.vector_norm(weight.detach().float()))
    return math.inf if s == 0 else bound / s


# --- angles ----------------------------------------------------------------------------------


def _unit_angles(u: Tensor, v: Tensor) -> Tensor:
    """Degrees between matching rows of u and v (2-D), by Kahan's formula
    2·atan2(‖û − v̂‖, ‖û + v̂‖). It equals arccos of the clamped cosine but stays accurate
    near 0° and 180°, where arccos turns fp32 round-off of the cosine into whole hundredths of
    a degree (so exact feedback reads 0, not 0.02). A zero row gives NaN (0/0)."""
    u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
    v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
    diff = torch.linalg.vector_norm(u - v, dim=1)
    total = torch.linalg.vector_norm(u + v, dim=1)
    return torch.rad2deg(2 * torch.atan2(diff, total))


def angle(u: Tensor, v: Tensor) -> float:
    """Angle in degrees between two tensors taken as flat vectors, arccos(⟨u,v⟩/(‖u‖‖v‖)).
    NaN when either is the zero vector: there is no direction to compare."""
    u = u.detach().float().reshape(1, -1)
    v = v.detach().float().reshape(1, -1)
    return float(_unit_angles(u, v)[0])


def per_sample_angle(a: Tensor, b: Tensor) -> float:
    """Mean over samples (dim 0) of the angle between a[i] and b[i], each flattened: the
    δ-alignment of LightOn's DFA work (Launay et al. 2019). Samples where either error is
    zero (e.g. every unit of a ReLU layer silent) have no angle and are left out of the mean;
    NaN when no sample has one."""
    n = a.shape[0]
    if n == 0:
        return math.nan
    angles = _unit_angles(a.detach().float().reshape(n, -1), b.detach().float().reshape(n, -1))
    return float(torch.nanmean(angles))


# --- conservation law ------------------------------------------------------------------------


def conservation(w_i: Tensor, b_i: Tensor | None, fb_next: Tensor | None, w_next: Tensor,
                 bp: bool = False) -> Tensor:
    """Robertson & Koyejo 2024's conserved quantity, one value per neuron k of layer i:

        c_k = ½‖W_i[k,:]‖² + ½ b_i[k]² − ⟨FB_{i+1}[:,k], W_{i+1}[:,k]⟩

    with the feedback FB stored in W's shape (out, in), so column k of FB_{i+1} is what carries
    the error back to neuron k. Derivation, for a_i = W_i h_{i−1} + b_i, h_i = φ(a_i) with ReLU φ,
    a_{i+1} = W_{i+1} h_i + …, gradient flow (small-step SGD, no weight decay) on any loss:

        d/dt W_i[k,:] = −Σ_n δ_i[n,k] h_{i−1}[n,:],   d/dt b_i[k] = −Σ_n δ_i[n,k]
        ⇒ d/dt (½‖W_i[k]‖² + ½b_i[k]²) = −Σ_n δ_i[n,k] (W_i[k]·h_{i−1}[n] + b_i[k])
                                       = −Σ_n δ_i[n,k] a_i[n,k].
        Under FA, δ_i[n,k] = φ'(a_i[n,k]) Σ_j δ_{i+1}[n,j] FB[j,k], and for ReLU φ'(a)·a = φ(a) = h:
            −Σ_n δ_i[n,k] a_i[n,k] = −Σ_n h_i[n,k] Σ_j δ_{i+1}[n,j] FB[j,k].
        d/dt W_{i+1}[j,k] = −Σ_n δ_{i+1}[n,j] h_i[n,k], so for FIXED FB
            d/dt ⟨FB[:,k], W_{i+1}[:,k]⟩ = −Σ_n h_i[n,k] Σ_j δ_{i+1}[n,j] FB[j,k]  — the same.

    So c_k has zero time derivative; without the bias term it would drift whenever b_i moves.
    Discrete SGD adds O(η²) per step: O(η) over a fixed training time η·steps, O(η²) over a
    fixed number of steps (epochs), which is how presets compare step sizes. The identity
    φ'(a)a = φ(a) holds for any positively homogeneous φ (ReLU, leaky ReLU, linear), not for
    tanh or GELU, and only if nothing (no norm layer) sits between the two layers.

    For bp (`bp=True`) the feedback is W_{i+1} itself and moves: d/dt ½‖W_{i+1}[:,k]‖² gives
    the same expression, so the conserved form is ½‖W_i[k]‖² + ½b_i[k]² − ½‖W_{i+1}[:,k]‖²
    (`fb_next` is ignored). A missing bias counts as zero."""
    w_i, w_next = w_i.detach().float(), w_next.detach().float()
    c = 0.5 * w_i.square().sum(1)
    if b_i is not None:
        c = c + 0.5 * b_i.detach().float().square()
    if bp:
        return c - 0.5 * w_next.square().sum(0)
    if fb_next is None:
        raise ValueError("conservation needs the feedback unless bp=True")
    return c - (fb_next.detach().float() * w_next).sum(0)


def conservation_drift(c_now: Tensor, c_0: Tensor) -> float:
    """Relative drift mean|c_now − c_0| / mean|c_0| of the conserved quantity."""
    c_now, c_0 = c_now.float(), c_0.float()
    return float((c_now - c_0).abs().mean() / c_0.abs().mean())
