"""Implicit feedback and side information: the augmented factorization ``F_u W F_iᵀ`` against
dense references (blocks, loss, gradients, surrogate), and what it buys on grouped ratings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch

from lowdim import DeepFactorization
from lowdim.completion import DeepMatrixCompletion, SparseEntryObservation
from lowdim.completion.side_information import (
    FeatureEntryObservation,
    feature_matrix,
    implicit_block,
    one_hot_block,
)


def _entries(m=12, n=9, k=40, seed=0):
    rng = np.random.default_rng(seed)
    flat = rng.choice(m * n, size=k, replace=False)
    return flat // n, flat % n, rng.normal(size=k)


def test_implicit_block_is_the_symmetric_normalization_with_norm_one():
    rows, cols, _ = _entries()
    nbar = implicit_block(rows, cols, (12, 9)).toarray()
    dense = np.zeros((12, 9))
    dense[rows, cols] = 1
    du, di = dense.sum(1), dense.sum(0)
    ref = dense / np.sqrt(np.outer(np.where(du > 0, du, 1), np.where(di > 0, di, 1)))
    np.testing.assert_allclose(nbar, ref, rtol=0, atol=1e-15)
    assert abs(np.linalg.norm(nbar, 2) - 1) < 1e-12  # top singular vector ∝ (√du, √di)


def test_one_hot_block_encodes_categories_flags_and_quantiles():
    frame = pd.DataFrame({"g": ["M", "F", "M", None], "flag": [1, 0, 1, 1],
                          "age": [10, 20, 30, 40]})
    block = one_hot_block(frame).toarray()
    # columns: flag (0/1 kept), g=F, g=M, age quintiles (4 distinct values -> 4 indicators)
    assert block.shape == (4, 1 + 2 + 4)
    assert ((block > 0).sum(1) == [3, 2, 3, 2]).all()  # the missing gender gives no indicator
    assert abs(np.linalg.norm(block, 2) - 1) < 1e-12
    fu = feature_matrix(4, (2.0, scipy.sparse.csr_matrix(block)), (0.0, None)).toarray()
    np.testing.assert_allclose(fu, np.hstack([np.eye(4), 2 * block]), atol=1e-15)


def test_feature_loss_gradients_and_surrogate_match_dense_references():
    m, n = 12, 9
    rows, cols, vals = _entries(m, n)
    rng = np.random.default_rng(1)
    fu = feature_matrix(m, (3.0, implicit_block(rows, cols, (m, n))))
    fi = feature_matrix(n, (3.0, implicit_block(cols, rows, (n, m))),
                        (2.0, scipy.sparse.csr_matrix(rng.integers(0, 2, (n, 3)).astype(float))))
    base = SparseEntryObservation(rows, cols, vals, (m, n), weight=2.5)
    op = FeatureEntryObservation(base, fu, fi)
    assert op.shape == (m + n, n + m + 3)
    model = DeepFactorization.from_factors(
        [torch.tensor(rng.normal(size=s)) for s in ((4, op.shape[1]), (4, 4), (op.shape[0], 4))])
    loss = op.loss(model)
    loss.backward()
    grads = [f.grad.clone() for f in model.factors]
    # dense reference: ½ w Σ_Ω ((F_u W F_iᵀ)_ij − y)² by autograd
    ws = [f.detach().clone().requires_grad_(True) for f in model.factors]
    full = torch.tensor(fu.toarray()) @ (ws[2] @ ws[1] @ ws[0]) @ torch.tensor(fi.toarray()).T
    ref = 0.5 * 2.5 * (full[rows, cols] - torch.tensor(vals)).square().sum()
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-10 * ref.item()
    for g, w in zip(grads, ws):
        assert torch.allclose(g, w.grad, rtol=0, atol=1e-10)
    # the spectral initialization reads F_uᵀ (Ω⊙Y/p) F_i
    surr = np.zeros((m, n))
    surr[rows, cols] = vals / (rows.size / (m * n))
    np.testing.assert_allclose(op.surrogate().numpy(), fu.T @ surr @ fi, atol=1e-10)
    u, s, vt = op.top_singular(3)
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(fu.T @ surr @ fi)[1][:3], rtol=1e-10)


def _grouped_ratings(seed=0):
    """Ratings driven by a user group × item genre table plus a weak personal taste; few ratings
    per user, so the groups (side information) carry what the ratings alone cannot."""
    rng = np.random.default_rng(seed)
    m, n, groups, genres = 150, 120, 3, 4
    g, h = rng.integers(0, groups, m), rng.integers(0, genres, n)
    table = rng.normal(0, 1.2, (groups, genres))
    taste = 0.2 * rng.normal(size=(m, 2)) @ rng.normal(size=(2, n))
    truth = 3 + table[g][:, h] + taste
    obs = rng.random((m, n)) < 0.12
    r, c = np.nonzero(obs)
    stars = np.clip(np.round(truth[r, c] + rng.normal(0, 0.5, r.size)), 1, 5)
    test = ~obs
    tr, tc = np.nonzero(test)
    users = pd.DataFrame({"group": [f"g{k}" for k in g]})
    items = pd.DataFrame({f"genre{k}": (h == k).astype(int) for k in range(genres)})
    return (pd.DataFrame({"user": r, "item": c, "rating": stars}), (tr, tc, truth[tr, tc]),
            users, items)


def test_side_information_and_implicit_feedback_improve_grouped_ratings():
    train, (tr, tc, truth), users, items = _grouped_ratings()
    kw = dict(random_state=0, rank=10)

    def err(est):
        return float(np.sqrt(np.mean((est.predict(tr, tc) - np.clip(truth, 1, 5)) ** 2)))

    plain = DeepMatrixCompletion(implicit=0.0, **kw).fit(train)
    side = DeepMatrixCompletion(implicit=0.0, side_weight=3.0, **kw).fit(
        train, row_features=users, col_features=items)
    both = DeepMatrixCompletion(**kw).fit(train, row_features=users, col_features=items)
    assert err(side) < 0.9 * err(plain)
    assert err(both) < 0.9 * err(plain)
    # predictions use the effective factors F_u·left and right·F_iᵀ of the trained W
    op_left, op_right = both.left_, both.right_
    assert op_left.shape[0] == 150 and op_right.shape[1] == 120
    with pytest.raises(ValueError, match="method='spectral' or 'narrow'"):
        DeepMatrixCompletion(method="compressed", rank=4, implicit=1.0).fit(train)
    with pytest.raises(ValueError, match="run on the CPU"):
        DeepMatrixCompletion(device="meta", implicit=5.0).fit(train)
    with pytest.raises(TypeError, match="row_features must be a pandas DataFrame"):
        DeepMatrixCompletion(**kw).fit(train, row_features=np.zeros((150, 2)))
