"""Sparse compressed training equals the dense construction (seed 003 Sec. 2.3 / eq. 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowdim.completion.sparse import SparseEntryObservation, observed_loss
from lowdim.compression import invariant_subspace_compression
from lowdim.datasets import completion_problem
from lowdim.factorization import DeepFactorization
from lowdim.initialization import ImplicitOrthogonalInit
from lowdim.training import recovery_error, train


def _rel(a, b):
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


@pytest.mark.parametrize("shape", [(30, 45), (45, 30)])
def test_virtual_init_compression_follows_explicit_trajectory(shape):
    """Virtual full-width init (signed permutations, observed entries only) = the same init made
    explicit and compressed densely; GD from both stays within 1e-8 relative through learning."""
    m, n = shape
    pb = completion_problem(m, n, 2, 0.4, random_state=1)
    op = pb.operator()
    init = ImplicitOrthogonalInit((m, n), 3, 1e-2, block_size=1, random_state=3)
    sop = SparseEntryObservation.from_operator(op)
    dense = invariant_subspace_compression(init.to_model(), op, 4, gamma=0.15, svd="dense")
    sparse = invariant_subspace_compression(init, sop, 4, gamma=0.15, svd="arpack")
    assert sparse.dims == dense.dims == [n, 8, 8, 8, 8, m]
    assert sparse.lr_multipliers == [0.15, 1.0, 1.0, 1.0, 0.15]
    with torch.no_grad():
        assert _rel(sparse.product(), dense.product()) < 1e-12
    h_dense = train(dense, op, lr=1.0, max_iter=600)
    h_sparse = train(sparse, sop, lr=1.0, max_iter=600)
    # learning happened (the loss left the initial plateau) ...
    assert h_dense.loss[-1] < 0.25 * h_dense.loss[0]
    # ... and both trajectories agree
    np.testing.assert_allclose(h_sparse.loss, h_dense.loss, rtol=1e-8)
    with torch.no_grad():
        assert _rel(sparse.product(), dense.product()) < 1e-8


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
