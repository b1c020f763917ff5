"""The shared linear-algebra kernels against LAPACK on materialized matrices."""

from __future__ import annotations

import pytest
import torch

from lowdim.gradients import dense_gradient, observed_gradient
from lowdim.linalg import factored_svd, orthonormal_columns, qr_positive, top_singular


def _matrix(m=300, n=260, seed=0):
    g = torch.Generator().manual_seed(seed)
    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return randn(m, 6) @ randn(6, n) + 0.01 * randn(m, n)


@pytest.mark.parametrize("method, tol", [("arpack", 1e-10), ("randomized", 1e-6)])
def test_top_singular_methods_agree_with_lapack(method, tol):
    a = _matrix()
    u, s, v = top_singular(dense_gradient(a), 4, method=method, generator=torch.Generator().manual_seed(1))
    u0, s0, vh0 = torch.linalg.svd(a)
    assert torch.allclose(s, s0[:4], rtol=tol)
    assert torch.linalg.norm(u @ u.T - u0[:, :4] @ u0[:, :4].T) < 10 * tol
    assert torch.linalg.norm(v @ v.T - vh0[:4].T @ vh0[:4]) < 10 * tol


def test_top_singular_of_a_zero_operator_does_not_fail():
    rows, cols = torch.arange(400) % 300, torch.arange(400) // 2
    op = observed_gradient(rows, cols, torch.zeros(400, dtype=torch.float64), (300, 300))
    _, s, v = top_singular(op, 2, method="arpack")
    assert torch.equal(s, torch.zeros(2, dtype=torch.float64)) and v.shape == (300, 2)
    with pytest.raises(ValueError, match="svd method"):
        top_singular(op, 2, method="lanczos")


def test_factored_svd_and_qr():
    g = torch.Generator().manual_seed(2)
    left, core, right = (
        torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((30, 5), (5, 5), (5, 20))
    )
    u, s, vt = factored_svd(left, core, right)
    assert torch.allclose(u * s @ vt, left @ core @ right, atol=1e-12)
    assert torch.allclose(s, torch.linalg.svdvals(left @ core @ right)[:5], atol=1e-12)
    q, r = qr_positive(left)
    assert torch.all(torch.diagonal(r) >= 0) and torch.allclose(q @ r, left, atol=1e-13)
    dependent = torch.cat([left[:, :3], left[:, :1] + left[:, 1:2]], 1)  # 4 columns, rank 3
    basis = orthonormal_columns(dependent, torch.Generator().manual_seed(0))
    assert torch.allclose(basis.T @ basis, torch.eye(4, dtype=torch.float64), atol=1e-12)
