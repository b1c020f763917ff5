"""Sparse compressed training equals the dense construction (seed 003 Sec. 2.3 / eq. 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdim.completion.sparse import (
    SignedPermutationInit,
    SparseEntryObservation,
    implicit_invariant_compression,
    observed_loss,
)
from lowdim.compression import invariant_subspace_compression
from lowdim.datasets import completion_problem
from lowdim.factorization import DeepFactorization
from lowdim.operators import EntryObservation
from lowdim.training import recovery_error, train


def _rel(a, b):
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


@pytest.mark.parametrize("shape", [(30, 45), (45, 30)])
def test_implicit_compression_follows_dense_trajectory(shape):
    """Virtual full-width init: implicit (svds on the sparse residual) = dense construction,
    and GD from both stays within 1e-8 relative through the learning phase."""
    m, n = shape
    pb = completion_problem(m, n, 2, 0.4, random_state=1)
    op = pb.operator()
    init = SignedPermutationInit((m, n), depth=3, scale=1e-2, random_state=3)
    dense = invariant_subspace_compression(init.to_model(), op, 4, gamma=0.15)
    sparse = implicit_invariant_compression(
        op, 4, 3, scale=1e-2, gamma=0.15, init=init, svd_solver="arpack"
    )
    assert sparse.dims == dense.dims == [n, 8, 8, 8, 8, m]
    assert sparse.lr_multipliers == [0.15, 1.0, 1.0, 1.0, 0.15]
    with torch.no_grad():
        assert _rel(sparse.product(), dense.product()) < 1e-12
    sop = SparseEntryObservation.from_operator(op)
    h_dense = train(dense, op, lr=1.0, max_iter=600)
    h_sparse = train(sparse, sop, lr=1.0, max_iter=600)
    # learning happened (the loss left the initial plateau) ...
    assert h_dense.loss[-1] < 0.25 * h_dense.loss[0]
    # ... and both trajectories agree
    np.testing.assert_allclose(h_sparse.loss, h_dense.loss, rtol=1e-8)
    with torch.no_grad():
        assert _rel(sparse.product(), dense.product()) < 1e-8


def test_implicit_compression_with_explicit_model_matches_dense():
    """A given (random orthogonal) full-width model: only matrix-vector products are used."""
    pb = completion_problem(24, 36, 2, 0.5, random_state=2)
    op = pb.operator()
    full = DeepFactorization([36, 36, 36, 24], scale=1e-3, random_state=5)
    dense = invariant_subspace_compression(full, op, 3, gamma=0.1)
    for solver in ("arpack", "dense"):
        sparse = implicit_invariant_compression(op, 3, init=full, gamma=0.1, svd_solver=solver)
        with torch.no_grad():
            assert _rel(sparse.product(), dense.product()) < 1e-10
            # same subspaces (the bases may differ by a rotation inside them)
            pv = sparse.factors[0].T @ sparse.factors[0]
            dv = dense.factors[0].T @ dense.factors[0]
            assert torch.allclose(pv, dv, atol=1e-10)


def test_signed_permutation_init_is_epsilon_orthogonal():
    for shape in [(5, 8), (8, 5)]:
        init = SignedPermutationInit(shape, depth=3, scale=[0.1, 0.2, 0.3], random_state=0)
        model = init.to_model()
        for w, eps in zip(model.factors, [0.1, 0.2, 0.3]):
            w = w.detach()
            gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
            assert torch.allclose(gram, eps**2 * torch.eye(gram.shape[0], dtype=w.dtype))
        rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        q = init.q_entries(rows.ravel(), cols.ravel()).reshape(shape)
        np.testing.assert_array_equal(q, init.q_dense())
        x = np.random.default_rng(0).standard_normal((shape[1], 3))
        np.testing.assert_allclose(init.q_matmul(x), init.q_dense() @ x)


@pytest.mark.parametrize("use_pattern", [True, False])
def test_observed_loss_gradients_equal_dense_autograd(use_pattern):
    rng = np.random.default_rng(0)
    m, n, k = 17, 23, 4
    flat = rng.choice(m * n, size=120, replace=False)
    sop = SparseEntryObservation(flat // n, flat % n, rng.standard_normal(120), (m, n), weight=2.5)
    a = torch.randn(m, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(k, n, dtype=torch.float64, requires_grad=True)
    pattern = sop._pattern if use_pattern else None
    loss = observed_loss(a, b, sop.rows, sop.cols, sop.y, 2.5, pattern)
    ga, gb = torch.autograd.grad(loss, [a, b])
    dense = (a @ b)[sop.rows, sop.cols]
    ref = 0.5 * 2.5 * ((dense - sop.y) ** 2).sum()
    ra, rb = torch.autograd.grad(ref, [a, b])
    assert abs(float(loss.detach()) - float(ref.detach())) < 1e-12 * float(ref.detach())
    assert torch.allclose(ga, ra, rtol=1e-12, atol=1e-12)
    assert torch.allclose(gb, rb, rtol=1e-12, atol=1e-12)


def test_sparse_operator_matches_entry_observation_loss():
    pb = completion_problem(20, 30, 2, 0.3, random_state=0)
    op = pb.operator()
    sop = SparseEntryObservation(pb.rows, pb.cols, pb.values, pb.shape)
    model = DeepFactorization([30, 6, 6, 20], scale=0.5, random_state=0)
    assert abs(float(sop.loss(model)) - float(op.loss(model))) < 1e-12 * float(op.loss(model))


def test_factored_recovery_error_equals_dense():
    rng = np.random.default_rng(0)
    p, q = torch.as_tensor(rng.standard_normal((40, 3))), torch.as_tensor(rng.standard_normal((50, 3)))
    model = DeepFactorization([50, 5, 5, 40], scale=0.7, random_state=1)
    dense = recovery_error(model, p @ q.T)
    assert abs(recovery_error(model, (p, q)) - dense) < 1e-10


def test_implicit_compression_rejects_bad_input():
    pb = completion_problem(10, 12, 2, 0.5, random_state=0)
    op = pb.operator()
    with pytest.raises(ValueError, match="d - 4r > 0|d - 2r > 0"):
        implicit_invariant_compression(op, 5)
    with pytest.raises(TypeError, match="EntryObservation"):
        implicit_invariant_compression(object(), 2)
    with pytest.raises(ValueError, match="gamma"):
        implicit_invariant_compression(op, 2, gamma=-1.0)
    with pytest.raises(ValueError, match="scales"):
        SignedPermutationInit((10, 12), 3, scale=0.0)
    assert isinstance(op, EntryObservation)
