"""The theorems of the papers, checked to machine precision in float64 on small problems."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowdim import (
    DeepFactorization,
    FullObservation,
    Regression,
    invariant_bases,
    invariant_subspace_compression,
    spectral_compression,
    train,
)
from lowdim.datasets import low_rank_matrix
from lowdim.dynamics import invariant_residuals
from lowdim.theory import (
    compression_gap_bound,
    rho_recursion,
    rho_whitened_regression,
    spectral_recursion,
)

D, R = 30, 3
SCALES = [0.6, 0.4, 0.8, 0.5]


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("weight_decay, momentum", [(0.0, 0.0), (1e-2, 0.0), (0.0, 0.5)])
def test_invariant_subspaces_theorem_2_1(depth, weight_decay, momentum):
    """Seed 003 Theorem 2.1 / seed 004 Theorem 1 Case 1: W_l(t) V_{l,2} = ρ_l(t) U_{l,2} for all t
    (and with heavy-ball momentum, seed 004 eq. 16, ρ following the momentum recursion)."""
    phi = low_rank_matrix(D, D, R, random_state=depth)
    op = FullObservation(phi)
    scales = SCALES[:depth]
    model = DeepFactorization([D] * (depth + 1), scale=scales, random_state=10 + depth)
    us, vs = invariant_bases(model, op, R)
    u2 = [u[:, 2 * R :] for u in us]
    v2 = [v[:, 2 * R :] for v in vs]
    # with momentum, depth 2's smaller ρ falls to 1e-10 by step 500, where a relative residual
    # measures rounding only: 200 steps keep it above 1e-4
    lr, steps = 0.1, 500 if momentum == 0 else 200
    rho = rho_recursion(scales, lr, steps, weight_decay, momentum)
    m = D - 2 * R
    worst_residual, worst_rho = 0.0, 0.0

    def check(t, mdl, loss):
        nonlocal worst_residual, worst_rho
        for l, (a, b) in enumerate(invariant_residuals(mdl, u2, v2, rho[t])):
            scale = rho[t, l] * math.sqrt(m)  # ‖ρ_l U_{l,2}‖_F
            worst_residual = max(worst_residual, a / scale, b / scale)
        with torch.no_grad():
            for l, w in enumerate(mdl.factors):
                measured = float(torch.trace(u2[l].T @ w @ v2[l])) / m
                worst_rho = max(worst_rho, abs(measured - rho[t, l]) / rho[t, l])

    history = train(model, op, lr=lr, max_iter=steps, weight_decay=weight_decay, momentum=momentum,
                    callback=check)
    assert history.iterations[-1] == steps
    assert history.loss[-1] < 0.5 * history.loss[0]  # it actually learned something
    assert worst_residual <= 1e-10
    assert worst_rho <= 1e-12


@pytest.mark.parametrize("weight_decay", [0.0, 5e-2])
def test_whitened_regression_case_2(weight_decay):
    """Seed 004 Theorem 1 Case 2 (d_y = r, XXᵀ = I): m singular values of W_l, l < L, equal ε(1−ηλ)^t."""
    d, dy, n_samples, eps, lr, steps = 20, 3, 50, 0.5, 0.2, 300
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((n_samples, d)))
    x = q.T  # d × N with X Xᵀ = I
    b = rng.standard_normal((dy, d))
    y = (b / np.linalg.norm(b, 2)) @ x  # cross-correlation Y Xᵀ with σ_max = 1
    op = Regression(x, y)
    model = DeepFactorization([d, d, d, dy], scale=eps, random_state=3)
    rho = rho_whitened_regression(eps, lr, steps, weight_decay)
    m = d - 2 * dy
    worst = 0.0

    def check(t, mdl, loss):
        nonlocal worst
        for w in list(mdl.factors)[:-1]:
            s = torch.linalg.svdvals(w.detach()).numpy()
            closest = np.sort(np.abs(s - rho[t]))[:m]  # the m singular values nearest to ρ(t)
            worst = max(worst, float(closest.max()) / rho[t])

    history = train(model, op, lr=lr, max_iter=steps, weight_decay=weight_decay, callback=check)
    assert history.loss[-1] < 0.1 * history.loss[0]
    assert worst <= 1e-10


@pytest.mark.parametrize("scales, steps", [([1e-3] * 3, 3000), ([0.3, 0.2, 0.25], 800)])
def test_proposition_2_2_gap_bound(scales, steps):
    """Seed 003 Prop. 2.2: ‖f(Θ(t)) − f_C(Θ̃(t))‖_F² ≤ m ∏ε_l², in fact = m ∏ρ_l(t)² (Theorem 2.1)."""
    phi = low_rank_matrix(D, D, R, random_state=7)
    op = FullObservation(phi)
    full = DeepFactorization([D] * 4, scale=scales, random_state=8)
    small = invariant_subspace_compression(full, op, R, gamma=0.0)
    assert small.num_trainable() == 4 * 3 * R * R
    lr = 0.6
    traj_full, traj_small = [], []
    train(full, op, lr=lr, max_iter=steps, callback=lambda t, m, l: traj_full.append(m.product().detach()))
    history = train(
        small, op, lr=lr, max_iter=steps, callback=lambda t, m, l: traj_small.append(m.product().detach())
    )
    bound = (D - 2 * R) * math.prod(e * e for e in scales)  # m ∏ε_l², m = d − 2r (Prop. 2.2)
    assert compression_gap_bound(D, R, scales) == pytest.approx(bound, rel=1e-12)
    rho = rho_recursion(scales, lr, steps)
    gaps = np.array([float((a - b).square().sum()) for a, b in zip(traj_full, traj_small, strict=True)])
    predicted = (D - 2 * R) * np.prod(rho**2, axis=1)
    assert history.loss[-1] < 1e-4 * history.loss[0]
    assert np.all(gaps <= bound * (1 + 1e-6))
    assert gaps[0] == pytest.approx(bound, rel=1e-6)  # the bound is attained at t = 0
    np.testing.assert_allclose(gaps, predicted, rtol=1e-6)


def test_spectral_initialization_theorem_1():
    """Seed 000 Theorem 1: singular values of the C-DLN follow λ_i(t)^L and β(t)^L (α = 1)."""
    d, r, r_hat, depth, eps, lr, steps = 25, 3, 6, 3, 0.1, 0.5, 400
    u, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((d, r)))
    v, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((d, r)))
    sigma = np.array([1.0, 0.7, 0.4])
    op = FullObservation(u @ np.diag(sigma) @ v.T)
    model = spectral_compression(op, r_hat, depth, scale=eps, alpha=1.0)
    lam, beta = spectral_recursion(sigma, r, depth, eps, lr, steps)
    worst = 0.0

    def check(t, mdl, loss):
        nonlocal worst
        measured = torch.linalg.svdvals(mdl.product().detach()).numpy()[:r_hat]
        predicted = np.sort(np.concatenate([lam[t] ** depth, np.full(r_hat - r, beta[t] ** depth)]))[::-1]
        worst = max(worst, float(np.max(np.abs(measured - predicted) / predicted)))

    train(model, op, lr=lr, max_iter=steps, callback=check)
    np.testing.assert_allclose(lam[-1] ** depth, sigma, rtol=1e-6)  # the top r are learned
    assert worst <= 1e-9


def test_compressed_factorization_reaches_1e_minus_10():
    """Compressed deep matrix factorization (L = 3, ε = 1e-3) fits a rank-5 target to loss < 1e-10."""
    d, r = 60, 5
    op = FullObservation(low_rank_matrix(d, d, r, random_state=0))
    full = DeepFactorization([d] * 4, scale=1e-3, random_state=0)
    small = invariant_subspace_compression(full, op, r)
    history = train(small, op, lr=0.6, max_iter=20000, tol=1e-12)
    assert history.stop_reason == "tol"
    assert history.loss[-1] < 1e-10
