"""The one compression engine equals the explicit full-width construction for every gradient provider.

The reference below is computed independently of the engine: materialize the full-width factors
``W_l(0)``, differentiate the loss of the full-width model with autograd to get ``G_1``, and apply
the recipe of seed 003 Sec. 2.3 with dense LAPACK SVDs — block 1 = top-r right singular vectors of
``G_1``, block 2 = top-r left singular vectors of ``W_1(0)ᵀ G_1``, ``V_{1,1} = orth[block 1, block 2]``,
``U_{l,1} = orth(W_l(0) V_{l,1})``. Shapes: square, wide (``d_out > d_in``), tall (``d_out < d_in``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdim import (
    DeepFactorization,
    FullObservation,
    ImplicitOrthogonalInit,
    Regression,
    invariant_subspace_compression,
)
from lowdim.completion import SparseEntryObservation
from lowdim.datasets import completion_problem, low_rank_matrix
from lowdim.gradients import capture_layer_gradients, layer_gradient

SHAPES = [(12, 12), (14, 9), (9, 14)]  # (m, n) = (d_out, d_in): square, wide, tall
RANK, DEPTH = 2, 3


def _explicit(factors: list[torch.Tensor], loss_of_product, rank: int):
    """``(V_{1,1}, U_{L,1})`` by the paper's recipe on the materialized full-width model."""
    ws = [f.clone().requires_grad_(True) for f in factors]
    prod = ws[0]
    for w in ws[1:]:
        prod = w @ prod
    (g1,) = torch.autograd.grad(loss_of_product(prod), ws[0])
    _, _, vh = torch.linalg.svd(g1)
    u2, _, _ = torch.linalg.svd(factors[0].T @ g1)
    v11, _ = torch.linalg.qr(torch.cat([vh[:rank].T, u2[:, :rank]], 1))
    v = v11
    for w in factors:
        v, _ = torch.linalg.qr(w @ v)
    return v11, v


def _product(factors):
    out = factors[0]
    for w in factors[1:]:
        out = w @ out
    return out


def _assert_matches(small: DeepFactorization, factors, v_ref, u_ref):
    v = small.factors[0].detach().T
    u = small.factors[-1].detach()
    eye = torch.eye(v.shape[1], dtype=v.dtype)
    assert torch.linalg.norm(v.T @ v - eye) < 1e-12
    assert torch.linalg.norm(u.T @ u - eye) < 1e-12
    assert torch.linalg.norm(v @ v.T - v_ref @ v_ref.T) < 1e-10
    assert torch.linalg.norm(u @ u.T - u_ref @ u_ref.T) < 1e-10
    # f_C(0) = W_{L:1}(0) V_{1,1} V_{1,1}ᵀ (thin QR: W_l V_l = U_l R_l)
    w0 = _product(factors)
    expected = w0 @ v_ref @ v_ref.T
    assert torch.linalg.norm(small.product().detach() - expected) < 1e-10 * max(1.0, float(w0.norm()))


def _explicit_model(shape, seed=0, scale=0.3):
    m, n = shape
    k = max(m, n)
    return DeepFactorization([n] + [k] * (DEPTH - 1) + [m], scale=scale, random_state=seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("svd", ["dense", "arpack"])
def test_dense_operator_provider(shape, svd):
    phi = low_rank_matrix(*shape, RANK, random_state=1)
    full = _explicit_model(shape)
    factors = [f.detach() for f in full.factors]
    v_ref, u_ref = _explicit(factors, lambda w: 0.5 * (w - phi).square().sum(), RANK)
    small = invariant_subspace_compression(full, FullObservation(phi), RANK, svd=svd)
    assert small.dims == [shape[1]] + [2 * RANK] * (DEPTH + 1) + [shape[0]]
    _assert_matches(small, factors, v_ref, u_ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_regression_provider_with_gaussian_init(shape):
    """Any initialization (here Gaussian, not orthogonal): G_1 = W_{L:2}ᵀ E still holds."""
    m, n = shape
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 40, generator=g, dtype=torch.float64)
    y = torch.randn(m, 40, generator=g, dtype=torch.float64)
    k = max(m, n)
    full = DeepFactorization([n, k, k, m], init="normal", scale=0.5, random_state=4)
    factors = [f.detach() for f in full.factors]
    v_ref, u_ref = _explicit(factors, lambda w: 0.5 * (w @ x - y).square().sum(), RANK)
    small = invariant_subspace_compression(full, Regression(x, y), RANK)
    v = small.factors[0].detach().T
    assert torch.linalg.norm(v @ v.T - v_ref @ v_ref.T) < 1e-10
    assert torch.linalg.norm(small.factors[-1].detach() @ small.factors[-1].detach().T
                             - u_ref @ u_ref.T) < 1e-10


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block_size", [1, 3])
def test_observed_entries_provider(shape, block_size):
    """Completion: the sparse residual and a virtual init equal the dense explicit construction."""
    m, n = shape
    pb = completion_problem(m, n, RANK, 0.5, random_state=2)
    init = ImplicitOrthogonalInit(shape, DEPTH, [0.3, 0.5, 0.4], block_size=block_size, random_state=5)
    factors = [init.factor(l) for l in range(DEPTH)]
    mask = torch.zeros(shape, dtype=torch.float64)
    mask[torch.as_tensor(pb.rows), torch.as_tensor(pb.cols)] = 1.0
    truth = torch.as_tensor(pb.truth)
    v_ref, u_ref = _explicit(factors, lambda w: 0.5 * (mask * (w - truth)).square().sum(), RANK)
    for op in (pb.operator(), SparseEntryObservation(pb.rows, pb.cols, pb.values, shape)):
        for svd in ("dense", "arpack"):
            small = invariant_subspace_compression(init, op, RANK, gamma=0.1, svd=svd)
            assert small.lr_multipliers == [0.1, 1.0, 1.0, 1.0, 0.1]
            _assert_matches(small, factors, v_ref, u_ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_layer_gradient_provider(shape):
    """A layer's batch gradient δᵀX (Deep LoRA, layers of nonlinear networks)."""
    m, n = shape
    g = torch.Generator().manual_seed(6)
    x = torch.randn(30, n, generator=g, dtype=torch.float64)
    delta = torch.randn(30, m, generator=g, dtype=torch.float64)
    init = ImplicitOrthogonalInit(shape, DEPTH, 0.2, block_size=4, random_state=7)
    factors = [init.factor(l) for l in range(DEPTH)]
    # ⟨δ, X Wᵀ⟩ has gradient δᵀX in W
    v_ref, u_ref = _explicit(factors, lambda w: (delta * (x @ w.T)).sum(), RANK)
    small = invariant_subspace_compression(init, layer_gradient(x, delta), RANK)
    _assert_matches(small, factors, v_ref, u_ref)
    explicit = invariant_subspace_compression(init.to_model(), layer_gradient(x, delta), RANK)
    _assert_matches(explicit, factors, v_ref, u_ref)


def test_captured_layer_gradient_is_the_weight_gradient():
    """The temporary hooks capture E = δᵀX = ∇_W ℓ of the layer, and leave the model untouched."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 4)).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64)  # extra leading dims: tokens are flattened
    got = {}
    with capture_layer_gradients({"0": net[0], "2": net[2]}, lambda name, e: got.update({name: e.dense()})):
        net(x).square().sum().backward()
    assert not net[0]._forward_hooks and not net[2]._forward_hooks
    for name in ("0", "2"):
        assert torch.allclose(got[name], net.get_submodule(name).weight.grad, atol=1e-12)
    with pytest.raises(ValueError, match="more than once"):
        with capture_layer_gradients({"0": net[0]}, lambda *a: None):
            x6 = torch.randn(2, 6, dtype=torch.float64)
            net[0](x6)
            net[0](x6)


def test_implicit_orthogonal_init_is_epsilon_orthogonal():
    for shape in [(5, 8), (8, 5)]:
        for block_size in (1, 2, 32):
            init = ImplicitOrthogonalInit(shape, 3, [0.1, 0.2, 0.3], block_size=block_size, random_state=0)
            for l, eps in enumerate([0.1, 0.2, 0.3]):
                w = init.factor(l)
                gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
                assert torch.allclose(gram, eps**2 * torch.eye(gram.shape[0], dtype=w.dtype), atol=1e-15)
                y = torch.randn(w.shape[0], 2, dtype=torch.float64)
                assert torch.allclose(init.rmatmul(l, y), w.T @ y, atol=1e-15)
            rows, cols = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
            dense = init.to_model().product().detach()
            assert torch.allclose(init.entries(rows.ravel(), cols.ravel()).reshape(shape), dense, atol=1e-18)


def test_engine_rejects_bad_input():
    pb = completion_problem(10, 12, 2, 0.5, random_state=0)
    op = pb.operator()
    init = ImplicitOrthogonalInit((10, 12), 3, 1e-3)
    with pytest.raises(ValueError, match="d - 2r > 0"):
        invariant_subspace_compression(init, op, 5)
    with pytest.raises(TypeError, match="MeasurementOperator"):
        invariant_subspace_compression(init, object(), 2)
    with pytest.raises(TypeError, match="DeepFactorization or a FullWidthInit"):
        invariant_subspace_compression(object(), op, 2)
    with pytest.raises(ValueError, match="gamma"):
        invariant_subspace_compression(init, op, 2, gamma=-1.0)
    with pytest.raises(ValueError, match="10×12 matrices"):
        invariant_subspace_compression(ImplicitOrthogonalInit((12, 10), 3, 1e-3), op, 2)
    with pytest.raises(ValueError, match="svd method"):
        invariant_subspace_compression(init, op, 2, svd="lanczos")
    with pytest.raises(ValueError, match="scale"):
        ImplicitOrthogonalInit((10, 12), 3, scale=0.0)
