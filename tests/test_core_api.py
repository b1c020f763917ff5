"""Factorization, operators and measurements: shapes, identities and reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from lowdim import (
    DeepFactorization,
    EntryObservation,
    FullObservation,
    GaussianSensing,
    History,
    Regression,
    TrainState,
    invariant_subspace_compression,
    narrow_factorization,
    spectral_compression,
    train,
)
from lowdim.datasets import completion_problem, low_rank_matrix
from lowdim.dynamics import (
    numerical_rank,
    singular_vector_angles,
    subspace_distance,
    top_singular_subspace,
    trajectory_pca,
)


@pytest.mark.parametrize("dims", [[8, 8, 8], [5, 9, 7, 3], [12, 4, 6]])
def test_orthogonal_init_is_scaled_semi_orthogonal(dims):
    scales = [0.5, 2e-3, 0.1][: len(dims) - 1]
    model = DeepFactorization(dims, scale=scales, random_state=0)
    for w, eps in zip(model.factors, scales, strict=True):
        w = w.detach()
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        torch.testing.assert_close(gram, eps**2 * torch.eye(gram.shape[0], dtype=w.dtype), atol=1e-14, rtol=0)


@pytest.mark.parametrize("init", ["normal", "uniform"])
def test_random_inits_match_orthogonal_frobenius_norm(init):
    d, eps = 300, 0.1
    model = DeepFactorization([d, d, 200], init=init, scale=eps, random_state=1)
    for w in model.factors:
        expected = min(w.shape) * eps**2  # ‖W‖_F² of the ε-orthogonal initialization
        assert abs(float(w.detach().square().sum()) / expected - 1) < 0.02


def test_products_entries_and_views():
    model = DeepFactorization([6, 9, 4, 7, 5], init="normal", scale=1.0, random_state=2)
    w = [f.detach() for f in model.factors]
    full = w[3] @ w[2] @ w[1] @ w[0]
    torch.testing.assert_close(model.product().detach(), full, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(model.product(2, 3).detach(), w[2] @ w[1], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(model.product(3, 2), torch.eye(4, dtype=torch.float64))  # d_2
    left, right = model.split()
    assert left.shape[1] == 4 == right.shape[0]  # the narrowest width
    rows, cols = torch.tensor([0, 4, 2, 1]), torch.tensor([5, 0, 3, 3])
    torch.testing.assert_close(model.entries(rows, cols).detach(), full[rows, cols], rtol=1e-13, atol=1e-13)
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(model(x).detach(), full @ x, rtol=1e-13, atol=1e-13)
    inner = model.view(2, 3)
    assert inner.factors[0] is model.factors[1]


def test_param_groups_carry_multipliers_and_freeze():
    model = DeepFactorization([5, 5, 5, 5], lr_multipliers=[0.0, 1.0, 0.25], random_state=0)
    groups = model.param_groups(0.2)
    assert [g["lr"] for g in groups] == [0.2, 0.05]
    assert not model.factors[0].requires_grad
    assert model.num_trainable() == 50


def test_completion_operator_surrogate_and_sparse_svd():
    prob = completion_problem(40, 50, 3, 0.3, random_state=0)
    op = prob.operator()
    p = op.fraction
    dense = torch.zeros(40, 50, dtype=torch.float64)
    dense[op.rows, op.cols] = prob.truth[op.rows, op.cols]
    torch.testing.assert_close(op.surrogate(), dense / p)
    u, s, vh = op.top_singular(3)
    s_ref = torch.linalg.svdvals(dense / p)[:3]
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=0)
    u_ref = top_singular_subspace(dense / p, 3)
    assert subspace_distance(u, u_ref) < 1e-10


def test_entry_observation_from_mask_matches_indices():
    phi = low_rank_matrix(10, 12, 2, random_state=0)
    mask = torch.rand(10, 12, generator=torch.Generator().manual_seed(0)) < 0.4
    op = EntryObservation.from_mask(mask, phi)
    assert op.y.numel() == int(mask.sum())
    model = DeepFactorization([12, 12, 10], init="normal", scale=1.0, random_state=0)
    expected = 0.5 * float(((model.product().detach() - phi) * mask).square().sum())
    assert abs(float(op.loss(model).detach()) - expected) < 1e-12


def test_sensing_surrogate_is_average_of_measured_matrices():
    phi = low_rank_matrix(6, 5, 2, random_state=1)
    op = GaussianSensing.random(phi, 40, random_state=0)
    expected = sum(float(op.y[i]) * op.matrices[i] for i in range(40)) / 40
    torch.testing.assert_close(op.surrogate(), expected)
    torch.testing.assert_close(op.apply(phi), op.y)


@pytest.mark.parametrize("kind", ["full", "regression"])
def test_restricted_operator_gives_identical_gradients(kind):
    """Folding frozen bases into the operator (the fast path of `train`) changes no gradient."""
    rng = np.random.default_rng(0)
    phi = low_rank_matrix(20, 20, 2, random_state=0)
    op = FullObservation(phi) if kind == "full" else Regression(rng.standard_normal((20, 30)),
                                                                rng.standard_normal((20, 30)))
    full = DeepFactorization([20] * 4, scale=0.3, random_state=0)
    small = invariant_subspace_compression(full, op, 2)
    lo, hi = small.product(1, 1).detach(), small.product(small.depth, small.depth).detach()
    inner_op, const = op.restrict(hi, lo)
    inner = small.view(2, small.depth - 1)
    loss_full = op.loss(small)
    loss_inner = inner_op.loss(inner) + const
    assert abs(float(loss_full) - float(loss_inner)) < 1e-12 * max(1.0, float(loss_full))
    g_full = torch.autograd.grad(loss_full, list(inner.factors))
    g_inner = torch.autograd.grad(inner_op.loss(inner), list(inner.factors))
    for a, b in zip(g_full, g_inner, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_sensing_spectral_and_narrow_train():
    phi = low_rank_matrix(12, 12, 2, random_state=3)
    op = GaussianSensing.random(phi, 200, random_state=1)
    c_dln = spectral_compression(op, 4, 3, scale=0.01, alpha=2.0)
    assert c_dln.dims == [12, 4, 4, 12] and c_dln.lr_multipliers == [2.0, 1.0, 2.0]
    hist = train(c_dln, op, lr=2e-3, max_iter=3000, truth=phi, target_error=1e-4, eval_every=50)
    assert hist.error[-1] < 1e-4
    narrow = narrow_factorization((12, 12), 4, 3, scale=0.1, random_state=0)
    assert narrow.dims == [12, 4, 4, 12]


def test_numerical_rank_definition():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 40))
    assert numerical_rank(a) == 3
    assert numerical_rank(np.zeros((5, 5))) == 0
    b = np.diag([1.0, 1e-3, 1e-9])  # 1e-9 < 1e-8: not counted
    assert numerical_rank(b) == 2
    assert numerical_rank(torch.ones(4, 4, dtype=torch.float32)) == 1


def test_subspace_distance_and_angles():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 4)))
    q = torch.as_tensor(q)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=q.dtype)
    assert abs(subspace_distance(q[:, :2], q[:, :2] @ swap)) < 1e-14  # same span, other basis
    assert abs(subspace_distance(q[:, :2], q[:, 2:]) - 2.0) < 1e-14
    w = torch.as_tensor(np.random.default_rng(1).standard_normal((6, 6)))
    au, av = singular_vector_angles(-w, w)
    assert float(au.max()) < 1e-6 and float(av.max()) < 1e-6


def test_trajectory_pca_matches_sklearn():
    rng = np.random.default_rng(0)
    traj = [rng.standard_normal((4, 5)) for _ in range(12)]
    ours = trajectory_pca(traj, components=2)
    ref = PCA(n_components=2).fit_transform(np.stack([t.ravel() for t in traj]))
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    ("optimizer", "momentum", "lr", "scale"),
    [("gd", 0.0, 0.3, 1e-2), ("gd", 0.7, 0.1, 1e-2), ("adam", 0.0, 1e-2, 0.3)],
)
def test_gd_variants_fit_and_gd_resumes_exactly(optimizer, momentum, lr, scale):
    """Momentum and Adam reach the target; a GD run split by a TrainState equals one run, bit for bit."""
    op = FullObservation(low_rank_matrix(20, 20, 2, random_state=0))

    def fresh():
        return DeepFactorization([20, 20, 20, 20], scale=scale, random_state=1)

    h = train(fresh(), op, lr=lr, momentum=momentum, optimizer=optimizer, max_iter=3000, tol=1e-8)
    assert h.stop_reason == "tol"
    if optimizer == "adam":
        return
    once = fresh()
    train(once, op, lr=lr, momentum=momentum, max_iter=300)
    split, state, hist = fresh(), TrainState(), History()
    train(split, op, lr=lr, momentum=momentum, max_iter=120, state=state, history=hist)
    assert state.iteration == 120 and (momentum == 0) == (state.buffers[0] is None)
    train(split, op, lr=lr, momentum=momentum, max_iter=300, state=state, history=hist)
    assert hist.iterations == list(range(301))
    for a, b in zip(once.factors, split.factors):
        assert torch.equal(a, b)


def test_history_and_train_state_round_trip_through_dicts():
    """History → dict → History is equal (and JSON-serializable); a GD run with momentum resumed
    from a TrainState that went through to_dict/from_dict (and safetensors) equals one run, bit for bit."""
    import json

    from safetensors.torch import load, save

    truth = low_rank_matrix(12, 12, 2, random_state=0)
    op = FullObservation(truth)

    def fresh():
        return DeepFactorization([12, 12, 12, 12], scale=1e-1, random_state=3)

    kw = dict(lr=0.2, momentum=0.6, weight_decay=1e-3)
    once = fresh()
    ref = train(once, op, max_iter=90, eval_every=10, truth=truth, **kw)

    split, state, hist = fresh(), TrainState(), History()
    train(split, op, max_iter=40, eval_every=10, truth=truth, state=state, history=hist, **kw)
    assert all(b is not None for b in state.buffers)
    hist2 = History.from_dict(json.loads(json.dumps(hist.to_dict())))
    assert hist2 == hist and hist2 is not hist
    meta, tensors = state.to_dict()
    assert set(tensors) == {f"buffer.{i}" for i in range(3)}
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    assert tensors["buffer.0"].data_ptr() != state.buffers[0].data_ptr()  # copies, not views
    state2 = TrainState.from_dict(json.loads(json.dumps(meta)), load(save(tensors)))
    assert state2.iteration == state.iteration == 40
    for a, b in zip(state2.buffers, state.buffers):
        assert torch.equal(a, b)
    train(split, op, max_iter=90, eval_every=10, truth=truth, state=state2, history=hist2, **kw)
    for a, b in zip(once.factors, split.factors):
        assert torch.equal(a, b)
    assert hist2.iterations == ref.iterations and hist2.loss == ref.loss
    assert hist2.error == ref.error and hist2.stop_reason == ref.stop_reason == "max_iter"
    # a state without buffers (plain GD, or a frozen factor) keeps its None entries
    empty = TrainState(iteration=5, buffers=[None, torch.ones(2), None])
    back = TrainState.from_dict(*empty.to_dict())
    assert back.iteration == 5 and back.buffers[0] is None and back.buffers[2] is None
    assert torch.equal(back.buffers[1], torch.ones(2))
