"""engine/metrics.py against the math: known spectra, known angles, and the conservation law
checked by actually training small nets with feedback alignment."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_contract.config import RuleCfg
from engine.layers import attach
from engine.metrics import (angle, conservation, conservation_drift, erank, erank_from_sv,
                            participation_ratio, per_sample_angle, product_singular_values,
                            singular_values, spectrum_stats)
from engine.rules import build_rule


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _rank_k(rows: int, cols: int, k: int) -> torch.Tensor:
    return torch.randn(rows, k) @ torch.randn(k, cols)


# --- spectra ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 5, 32])
def test_identity_has_full_erank_and_pr(n):
    assert erank(torch.eye(n)) == pytest.approx(n, rel=1e-5)
    assert participation_ratio(torch.eye(n)) == pytest.approx(n, rel=1e-5)


@pytest.mark.parametrize("shape", [(7, 7), (3, 40), (60, 4)])
def test_rank_one_gives_one(shape):
    m = _rank_k(*shape, 1)
    assert erank(m) == pytest.approx(1.0, abs=1e-4)
    assert participation_ratio(m) == pytest.approx(1.0, abs=1e-5)


def test_known_spectrum_by_hand():
    # σ = [3, 1]: p = [.75, .25]; PR = (9 + 1)² / (81 + 1)
    m = torch.diag(torch.tensor([3.0, 1.0]))
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    er, pr = spectrum_stats(m)
    assert er == pytest.approx(expected, rel=1e-6)
    assert pr == pytest.approx(100 / 82, rel=1e-6)
    # σ = [2, 1, 1, 0]: p = [.5, .25, .25, 0] (0·log 0 = 0) → exp(1.5 ln 2)
    m = torch.diag(torch.tensor([2.0, -1.0, 1.0, 0.0]))
    assert erank(m) == pytest.approx(2 ** 1.5, rel=1e-6)
    assert participation_ratio(m) == pytest.approx(36 / 18, rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_erank_and_pr_are_bounded_by_rank(k):
    m = _rank_k(30, 20, k)
    er, pr = spectrum_stats(m)
    assert 1.0 - 1e-5 <= er <= k + 1e-3
    assert 1.0 - 1e-5 <= pr <= er + 1e-5  # PR never exceeds erank (Rényi-2 vs Shannon)


def test_invariant_to_orthogonal_transforms():
    m = torch.randn(12, 8) * torch.linspace(0.1, 3, 8)
    u = torch.linalg.qr(torch.randn(12, 12)).Q
    v = torch.linalg.qr(torch.randn(8, 8)).Q
    er, pr = spectrum_stats(m)
    er2, pr2 = spectrum_stats(u @ m @ v)
    assert er2 == pytest.approx(er, rel=1e-5)
    assert pr2 == pytest.approx(pr, rel=1e-5)
    assert erank(3.7 * m) == pytest.approx(er, rel=1e-5)  # and to scale, however small
    assert spectrum_stats(1e-12 * m) == pytest.approx((er, pr), rel=1e-5)


@pytest.mark.parametrize("shape", [(16, 700), (700, 16), (9, 17), (30, 31)])
def test_qr_reduced_singular_values_match_svdvals(shape):
    # decaying spectrum, so the small singular values (which erank sums over) are checked too
    m = torch.randn(*shape) @ torch.diag(torch.logspace(0, -4, shape[1]))
    s = singular_values(m)
    ref = torch.linalg.svdvals(m.double()).float()
    assert s.shape == ref.shape
    assert torch.allclose(s, ref, rtol=1e-4, atol=1e-6 * float(ref[0]))


def test_rank_deficient_wide_matrix_stays_exact():
    # 8 × 4000 of rank 2: a Gram matrix in fp32 would leak ~sqrt(eps) into the null space
    m = _rank_k(8, 4000, 2)
    s = singular_values(m)
    assert float(s[2:].max()) < 1e-5 * float(s[0])


def test_zero_and_non_finite_matrices():
    assert erank(torch.zeros(4, 6)) == 0.0
    assert participation_ratio(torch.zeros(4, 6)) == 0.0
    bad = torch.ones(3, 3)
    bad[1, 1] = math.nan
    assert math.isnan(erank(bad))
    bad[1, 1] = math.inf
    assert math.isnan(participation_ratio(bad))


def test_inputs_are_cast_to_fp32():
    m = torch.randn(10, 6)
    assert erank(m.to(torch.bfloat16)) == pytest.approx(erank(m.to(torch.bfloat16).float()))
    assert erank(m.double()) == pytest.approx(erank(m), rel=1e-5)


# --- angles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("v, expected", [
    ([2.0, 0.0], 0.0), ([0.0, 5.0], 90.0), ([-1.0, 0.0], 180.0),
    ([0.5, math.sqrt(3) / 2], 60.0), ([1.0, 1.0], 45.0), ([-1.0, 1.0], 135.0)])
def test_angles_of_known_vectors(v, expected):
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor(v)) == pytest.approx(expected, abs=1e-4)


def test_angle_flattens_and_matches_arccos():
    u, v = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    uf, vf = u.flatten().double(), v.flatten().double()
    ref = math.degrees(math.acos(float(uf @ vf / (uf.norm() * vf.norm()))))
    assert angle(u, v) == pytest.approx(ref, abs=1e-3)
    assert angle(u, u) == 0.0  # exact, not arccos(1 − ε)
    assert angle(u, -u) == pytest.approx(180.0, abs=1e-4)


def test_angle_with_zero_vector_is_nan():
    assert math.isnan(angle(torch.zeros(3), torch.ones(3)))


def test_per_sample_angle_is_the_mean_over_rows():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.5, math.sqrt(3) / 2]])
    assert per_sample_angle(a, b) == pytest.approx((0 + 90 + 60) / 3, abs=1e-4)
    # not the flattened angle: rows of very different size weigh the same
    a, b = torch.tensor([[100.0, 0.0], [0.0, 1.0]]), torch.tensor([[100.0, 0.0], [1.0, 0.0]])
    assert per_sample_angle(a, b) == pytest.approx(45.0, abs=1e-4)
    assert angle(a, b) < 1.0
    # per-sample tensors are flattened; a sample with a zero error is left out
    a, b = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    b[1] = 0
    expected = (angle(a[0], b[0]) + angle(a[2], b[2])) / 2
    assert per_sample_angle(a, b) == pytest.approx(expected, abs=1e-4)


# --- conservation ----------------------------------------------------------------------------

def test_conservation_by_hand():
    w_i = torch.tensor([[1.0, 2.0], [0.0, 3.0], [1.0, 1.0]])     # 3 neurons, 2 inputs
    b_i = torch.tensor([1.0, 0.0, -2.0])
    w_next = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])    # 2 outputs, 3 inputs
    fb = torch.tensor([[2.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    c = conservation(w_i, b_i, fb, w_next)
    # ½‖W_i[k]‖² + ½b² − ⟨FB[:,k], W_next[:,k]⟩
    assert torch.allclose(c, torch.tensor([2.5 + 0.5 - 2.0, 4.5 + 0 + 1.0, 1.0 + 2.0 - 1.0]))
    c_bp = conservation(w_i, None, None, w_next, bp=True)
    assert torch.allclose(c_bp, torch.tensor([2.5 - 1.0, 4.5 - 0.5, 1.0 - 2.5]))
    assert conservation_drift(c, c) == 0.0
    assert conservation_drift(2 * c, c) == pytest.approx(1.0)


def _train_drift(act: type[nn.Module], lr: float, rule_name: str, fa_form: bool = True,
                 steps: int = 60) -> list[float]:
    """Drift of c for both hidden layers of a biased 10-16-16-4 net after plain SGD steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 4))
    x, y = torch.randn(64, 10), torch.randint(0, 4, (64,))
    rule = build_rule(RuleCfg(name=rule_name), seed=0)
    layers = attach(model, rule, x[:2])

    def c() -> list[torch.Tensor]:
        fb = (lambda m: m.feedback) if rule_name == "fa" else (lambda m: m.weight)
        return [conservation(a.weight, a.bias, fb(b), b.weight, bp=not fa_form)
                for a, b in zip(layers, layers[1:])]

    c0 = c()
    for _ in range(steps):  # plain SGD, by hand
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return [conservation_drift(now, start) for now, start in zip(c(), c0)]


def test_fa_relu_conserves_up_to_step_size_drift():
    eta = 0.1
    big, small = _train_drift(nn.ReLU, eta, "fa"), _train_drift(nn.ReLU, eta / 10, "fa")
    for d_big, d_small in zip(big, small):
        assert d_big < 1e-2
        assert d_big / d_small > 10  # O(η²) per step: ≈ 100 in theory, > 3 asked
    # tanh breaks φ'(a)·a = φ(a): the quantity moves with the flow itself, not the step size
    tanh = _train_drift(nn.Tanh, eta / 10, "fa")
    for d_tanh, d_small in zip(tanh, small):
        assert d_tanh > 100 * d_small


def test_bp_needs_the_moving_feedback_form():
    eta = 0.1
    right = _train_drift(nn.ReLU, eta, "bp", fa_form=False)
    smaller = _train_drift(nn.ReLU, eta / 10, "bp", fa_form=False)
    wrong = _train_drift(nn.ReLU, eta / 10, "bp", fa_form=True)  # ⟨W, W⟩ instead of ½‖W‖²
    for d, d_small, d_wrong in zip(right, smaller, wrong):
        assert d < 1e-2
        assert d / d_small > 10
        assert d_wrong > 100 * d_small


@pytest.mark.parametrize("n,p,q", [(16, 40, 70), (8, 100, 30), (50, 20, 30)])
def test_product_singular_values_match_the_formed_product(n, p, q):
    """A Linear layer's gradient δᵀh has the spectrum of R_δ R_hᵀ: same values, unformed."""
    torch.manual_seed(3)
    a, b = torch.randn(n, p, dtype=torch.float64), torch.randn(n, q, dtype=torch.float64)
    want = torch.linalg.svdvals(a.t() @ b)[:min(n, p, q)]
    got = product_singular_values(a, b)[:min(n, p, q)].double()
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    assert erank_from_sv(product_singular_values(a, b)) == pytest.approx(
        erank_from_sv(want.float()), rel=1e-4)
