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
from lowdim.operators import EntryObservation
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fraction", [0.3, 0.02])  # dense A_blk B tiles / chunked gathers
def test_fused_kernel_both_sddmm_modes_and_any_entry_order(dtype, fraction):
    """Loss and both gradients of the fused pass equal dense autograd, for entries given in a
    random order (the layout sorts them) and for both SDDMM paths."""
    from lowdim.completion import sparse

    rng = np.random.default_rng(1)
    m, n, k = 700, 300, 6
    flat = rng.choice(m * n, size=int(fraction * m * n), replace=False)  # unsorted
    y = rng.standard_normal(flat.size)
    op = EntryObservation(flat // n, flat % n, y, (m, n), dtype=dtype)
    sop = SparseEntryObservation.from_operator(op, weight=0.7)
    lay = sop.layout
    assert lay.perm is not None and lay.dense_tiles == (fraction >= sparse.DENSE_TILE_FRACTION)
    a = torch.randn(m, k, dtype=dtype, requires_grad=True)
    b = torch.randn(k, n, dtype=dtype, requires_grad=True)
    loss = observed_loss(a, b, sop.rows, sop.cols, sop.y, 0.7, lay)
    ga, gb = torch.autograd.grad(loss, [a, b])
    with torch.no_grad():
        ref_pred = (a.double() @ b.double())[op.rows, op.cols]
    ref = 0.5 * 0.7 * ((a @ b)[op.rows, op.cols] - op.y).square().sum()
    ra, rb = torch.autograd.grad(ref, [a, b])
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert abs(float(loss) - float(ref)) <= tol * float(ref)
    for g, r in ((ga, ra), (gb, rb)):
        assert float((g - r).abs().max()) <= tol * float(r.abs().max())
    model = DeepFactorization.from_factors([b.detach(), a.detach()])
    pred = sop.predict(model)  # in the caller's order
    assert float((pred.double() - ref_pred).abs().max()) <= tol * float(ref_pred.abs().max())


def test_sparse_maps_equal_the_dense_surrogate_and_gradient():
    """The compression reads Ω⊙Y/p and P_Ω(W(0) − Y) through the cached layout: same matrices as
    the parent class's (COO-built) ones."""
    pb = completion_problem(40, 30, 2, 0.3, random_state=2)
    op = pb.operator()
    sop = SparseEntryObservation(pb.rows[::-1].copy(), pb.cols[::-1].copy(), pb.values[::-1].copy(),
                                 pb.shape)
    init = ImplicitOrthogonalInit((40, 30), 3, 0.5, block_size=1, random_state=0)
    for ours, ref in ((sop.surrogate_map(), op.surrogate_map()),
                      (sop.gradient_at(init), op.gradient_at(init))):
        assert float((ours.dense() - ref.dense()).abs().max()) < 1e-12
        x = torch.randn(30, 3, dtype=torch.float64)
        assert float((ours.matmul(x) - ref.matmul(x)).abs().max()) < 1e-12
    assert abs(sop.scale() - op.scale()) < 1e-12 * op.scale()


def test_shards_are_contiguous_rows_with_balanced_entries():
    from lowdim.completion.distributed import shard_rows

    crow = np.concatenate([[0], np.cumsum([5, 0, 3, 9, 1, 0, 6, 6])])  # 30 entries, 8 rows
    parts = shard_rows(crow, 3)
    assert parts[0][0] == 0 and parts[-1][1] == 8
    assert all(parts[i][1] == parts[i + 1][0] for i in range(2))
    sizes = [int(crow[e] - crow[s]) for s, e in parts]
    assert sum(sizes) == 30 and max(sizes) <= 12
