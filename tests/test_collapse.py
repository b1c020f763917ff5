"""Progressive feature collapse (seed 004 Sec. 4.2, eqs. 13–14, Theorem 2; the talk's S_l)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowdim import DeepFactorization, Regression
from lowdim.collapse import (
    class_separation,
    collapse_profile,
    feature_collapse,
    layer_features,
    log_linear_fit,
    theorem2_bound,
)
from lowdim.factorization import init_factor
from lowdim.nonlinear import deep_network


def _direct_d(z, y):
    """Eqs. (13)–(14) written out with loops."""
    classes = sorted(set(y.tolist()))
    means = {k: z[y == k].mean(axis=0) for k in classes}
    glob = np.mean([means[k] for k in classes], axis=0)
    sw = sum(np.outer(z[i] - means[y[i]], z[i] - means[y[i]]) for i in range(len(y))) / len(y)
    sb = sum(np.outer(means[k] - glob, means[k] - glob) for k in classes) / len(classes)
    return np.trace(sw) / np.trace(sb)


def _direct_s(z, y):
    classes = sorted(set(y.tolist()))
    means = [z[y == k].mean(axis=0) for k in classes]
    glob = np.mean(means, axis=0)
    mu = [m - glob for m in means]
    worst = max(abs(mu[a] @ mu[b]) / (np.linalg.norm(mu[a]) * np.linalg.norm(mu[b]))
                for a in range(len(mu)) for b in range(len(mu)) if a != b)
    return 1 - worst


def test_d_and_s_match_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    y[:8] = np.repeat(np.arange(4), 2)                                  # every class twice at least
    z = rng.normal(size=(60, 7)) + 3 * np.eye(7)[y]                     # unbalanced classes
    assert feature_collapse(z, y) == pytest.approx(_direct_d(z, y), rel=1e-12)
    s = class_separation(torch.as_tensor(z), torch.as_tensor(y))
    assert s == pytest.approx(_direct_s(z, y), rel=1e-12)


def test_refusals():
    z = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match="at least two samples per class"):
        feature_collapse(z, [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="at least two classes"):
        class_separation(z, [0] * 5)
    with pytest.raises(ValueError, match="5 rows but labels has 4"):
        feature_collapse(z, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="modules must name the layers"):
        layer_features(torch.nn.Identity(), torch.zeros(2, 2))


def test_log_linear_fit_recovers_a_geometric_decay():
    fit = log_linear_fit([5 * 0.3**k for k in range(6)])
    assert fit.decay_ratio == pytest.approx(0.3, rel=1e-12) and fit.r2 == pytest.approx(1.0)
    assert math.exp(fit.intercept) == pytest.approx(5, rel=1e-12)


def test_layer_features_of_sequential_hooks_and_factorizations():
    net = deep_network([6, 5, 5, 3], activation="relu", scale=1.0, random_state=0)
    x = torch.randn(4, 6, dtype=torch.float64)
    feats = layer_features(net, x)                                     # x, ρ(W1x), ρ(W2ρ(W1x)), W3(…)
    assert [tuple(f.shape) for f in feats] == [(4, 6), (4, 5), (4, 5), (4, 3)]
    assert torch.equal(feats[1], torch.relu(net[0](x))) and torch.equal(feats[-1], net(x))
    hooked = layer_features(net, x, modules=["1", "3"])
    assert torch.equal(hooked[1], feats[1]) and torch.equal(hooked[2], feats[2])
    fac = DeepFactorization([6, 5, 3], random_state=0)
    z = layer_features(fac, x)
    assert torch.allclose(z[2], x @ fac.product().detach().T)


@pytest.mark.parametrize("depth", [3, 4])
def test_theorem2_ratio_bound_on_a_trained_dln(depth):
    """Seed 004 Theorem 2: a DLN trained from Corollary 1's initialization meets (i)–(iii), and
    ``D_{l+1}/D_l ≤ 2(√K + 1)ε²`` at every layer (float64)."""
    k, n, eps = 3, 6, 0.05
    d = n * k                                                           # X square and orthogonal
    assert eps <= min(n ** (1 / (2 * depth)) / (math.sqrt(30 * depth) * (d - k) ** 0.25),
                      (n / 2) ** (1 / (4 * depth)) / (d - k) ** 0.25, 1 / math.sqrt(2 * (math.sqrt(k) + 1)))
    x = init_factor(d, d, 1.0, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(k).repeat_interleave(n)
    op = Regression(x, torch.nn.functional.one_hot(labels, k).double().T)
    model = DeepFactorization([d] * depth + [k], scale=eps, random_state=1)   # W_L(0) = ε[U_L 0]
    opt = torch.optim.SGD(model.parameters(), lr=0.03)
    for _ in range(20_000):
        opt.zero_grad()
        loss = op.loss(model)
        if loss.item() < 1e-14:
            break
        loss.backward()
        opt.step()
    w = [f.detach() for f in model.factors]
    assert loss.item() < 1e-14                                                  # (i)
    for a, b in zip(w[:-2], w[1:-1]):                                           # (ii), up to GD's O(η²)
        assert float(torch.linalg.matrix_norm(b.T @ b - a @ a.T)) < 1e-3
    assert float(torch.linalg.matrix_norm(w[-1].T @ w[-1] - w[-2] @ w[-2].T)) <= eps**2 * math.sqrt(d - k)
    for f in w[:-1]:                                                            # (iii)
        unchanged = (torch.linalg.svdvals(f) - eps).abs() < 1e-8
        assert int(unchanged.sum()) >= d - 2 * k
    prof = collapse_profile(model, x.T, labels)
    bound = theorem2_bound(k, eps)
    worst = float(prof.ratios.max())
    print(f"L={depth}: largest D_(l+1)/D_l = {worst:.2e}, bound 2(√K+1)ε² = {bound:.2e}")
    assert len(prof.ratios) == depth - 1 and worst <= bound
    assert prof.fit.r2 > 0.99 and prof.fit.decay_ratio < bound
