"""DeepLinear and compress_network (seed 000 Sec. 2.3, 4.2): folding, the compressed initial map,
α in the optimizer, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowdim import DeepFactorization
from lowdim.nonlinear import (
    DeepLinear,
    VisionTransformer,
    compress_network,
    default_rank,
    factorize_layers,
    hidden_linears,
    mlp,
    param_groups,
)

K, HIDDEN, D_IN = 4, 24, 12


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g, dtype=torch.float64), torch.randint(0, K, (n,), generator=g)


def _net(seed=0):
    torch.manual_seed(seed)
    return mlp(D_IN, HIDDEN, K).double()


@pytest.mark.parametrize("mode", ["full", "compressed", "narrow"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_fold_is_the_same_linear_map(mode, dtype, tol):
    layer = DeepLinear(30, 20, mode=mode, rank=6, scale=0.7, random_state=0, dtype=dtype)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(7, 3, 30, dtype=dtype)
    linear = layer.fold()
    assert isinstance(linear, torch.nn.Linear) and linear.weight.dtype == dtype
    assert torch.allclose(linear(x), layer(x), atol=tol, rtol=0)
    assert layer.macs() == sum(a * b for a, b in zip(layer.factorization.dims, layer.factorization.dims[1:]))


def test_modes_have_the_papers_shapes_and_rates():
    full = DeepLinear(30, 20, depth=3)
    assert full.factorization.dims == [30, 30, 30, 20]
    c = DeepLinear(30, 20, mode="compressed", rank=8, scale=0.1, alpha=4.0, random_state=0,
                   dtype=torch.float64)
    f = [w.detach() for w in c.factorization.factors]
    assert c.factorization.dims == [30, 8, 8, 20] and c.factorization.lr_multipliers == [4.0, 1.0, 4.0]
    eye = torch.eye(8, dtype=torch.float64)
    assert torch.allclose(f[1], 0.1 * eye)                              # inner ε I
    assert torch.allclose(f[0] @ f[0].T, 0.01 * eye)                    # ε V̂ᵀ, orthonormal V̂
    assert torch.allclose(f[2].T @ f[2], 0.01 * eye)                    # ε Û
    assert default_rank(10) == 40 and DeepLinear(200, 100, mode="narrow", rank=40).rank == 40


def test_correlation_init_is_top_subspaces_of_YXt():
    """Last layer (out = K): ``W̃_{L:1}(0) = ε^L Û_r̂ V̂_r̂ᵀ`` from the SVD of ``Y Xᵀ`` (seed 000 Sec. 2.3)."""
    model, (x, y) = _net(), _data()
    feats = model[:6](x).detach().numpy()                               # the layer's inputs
    rep = compress_network(model, x, F.cross_entropy, y, layers=["6"], rank=3, scale=0.5, alpha=2.0)
    assert rep.layers == {"6": "correlation"}
    u, _, vt = np.linalg.svd(np.eye(K)[y.numpy()].T @ feats)
    expected = 0.5**3 * u[:, :3] @ vt[:3]
    got = model[6].weight.detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert model[6].factorization.lr_multipliers == [2.0, 1.0, 2.0]


def test_gradient_init_is_the_full_width_map_restricted_to_the_engines_subspaces():
    """Hidden layer: the compressed map is ``P_U W_{L:1}(0) P_V`` and ``V`` holds ``E``'s top directions."""
    model, (x, y) = _net(), _data()
    full = DeepFactorization([HIDDEN] * 4, scale=0.3, random_state=1)
    # E = ∂loss/∂W at Θ(0): the layer's weight set to W_{L:1}(0)
    probe = _net()
    w0 = full.product().detach()
    with torch.no_grad():
        probe[4].weight.copy_(w0)
    F.cross_entropy(probe(x), y).backward()
    e = probe[4].weight.grad
    r = 6
    rep = compress_network(model, x, F.cross_entropy, y, layers=["4"], rank=r, scale=0.3, inits={"4": full})
    assert rep.layers == {"4": "gradient"} and rep.rank == r
    f = [w.detach() for w in model[4].factorization.factors]
    v, _ = torch.linalg.qr(f[0].T)
    u, _ = torch.linalg.qr(f[-1])
    restricted = u @ u.T @ w0 @ v @ v.T
    assert torch.allclose(model[4].weight.detach(), restricted, atol=1e-12)
    top = torch.linalg.svd(e).Vh[: r // 2].T                            # top right singular vectors of E
    assert float(torch.linalg.matrix_norm(top - v @ (v.T @ top))) < 1e-8


def test_alpha_reaches_the_optimizer():
    model, (x, y) = _net(), _data()
    compress_network(model, x, F.cross_entropy, y, rank=8, scale=0.5, alpha=5.0)
    opt = torch.optim.SGD(param_groups(model, 0.01), lr=0.01)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"4.factors.0": 0.05, "4.factors.1": 0.01, "4.factors.2": 0.05, "4.bias": 0.01,
                   "other": 0.01}
    first = model[4].factorization.factors[0]
    before = first.detach().clone()
    F.cross_entropy(model(x), y).backward()
    grad = first.grad.clone()
    opt.step()
    assert torch.allclose(first.detach(), before - 0.05 * grad, atol=1e-15)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("mode", ["full", "compressed", "narrow"])
def test_converted_network_trains(mode):
    model, (x, y) = _net(), _data()
    compress_network(model, x, F.cross_entropy, y, mode=mode, rank=8, scale=0.7)
    opt = torch.optim.Adam(param_groups(model, 1e-2))
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_refusals():
    model, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match="rank must be smaller than min"):
        DeepLinear(30, 20, mode="compressed", rank=20)
    with pytest.raises(ValueError, match="rank must be given for mode 'compressed'"):
        DeepLinear(30, 20, mode="compressed")
    with pytest.raises(TypeError, match="not an nn.Linear"):
        compress_network(model, x, F.cross_entropy, y, layers=["5"], rank=4)
    with pytest.raises(ValueError, match="no module 'nope'"):
        compress_network(model, x, F.cross_entropy, y, layers=["nope"], rank=4)
    with pytest.raises(ValueError, match="rank must be even"):
        compress_network(_net(), x, F.cross_entropy, y, layers=["4"], rank=5)
    with pytest.raises(ValueError, match="mode must be one of"):
        DeepLinear(30, 20, mode="wide")
    with pytest.raises(ValueError, match="depth must be an integer >= 2"):
        DeepLinear(30, 20, mode="compressed", rank=4, depth=1)


def test_rank_deficient_cross_correlation():
    """Too few classes in the batch: rank(Y Xᵀ) < r̂ — refuse, or say so and fall back."""
    x, y = _data()
    keep = y < 2
    xs, ys = x[keep], y[keep]
    with pytest.raises(ValueError, match="numerical rank < r̂ = 3"):
        compress_network(_net(), xs, F.cross_entropy, ys, layers=["6"], rank=3, init_from="correlation")
    model = _net()
    with pytest.warns(UserWarning, match="using the gradient at initialization"):
        rep = compress_network(model, x[y < 1], F.cross_entropy, y[y < 1], layers=["6"], rank=2)
    assert rep.layers == {"6": "gradient"}


def test_vit_last_block_layer_becomes_a_cdln_and_folds_back():
    torch.manual_seed(0)
    vit = VisionTransformer(image=8, patch=4, dim=16, depth=2, heads=2, mlp_dim=48, num_classes=3).double()
    x, y = torch.rand(32, 64, dtype=torch.float64), torch.randint(0, 3, (32,))
    assert vit(x).shape == (32, 3) and vit.penultimate == "blocks.1.fc2"
    rep = compress_network(vit, x, F.cross_entropy, y, layers=[vit.penultimate], scale=1.0)
    layer = vit.blocks[1].fc2
    assert rep.layers == {"blocks.1.fc2": "gradient"} and layer.factorization.dims == [48, 12, 12, 16]
    out = vit(x)
    vit.blocks[1].fc2 = layer.fold()
    assert torch.allclose(vit(x), out, atol=1e-12)


def test_factorize_layers_is_the_talks_low_rank_training():
    """``W = B·A`` of rank r for the last two hidden layers, balanced, trained throughout."""
    model, (x, y) = _net(), _data()
    layers = factorize_layers(model, rank=K)
    assert sorted(layers) == ["2", "4"] == hidden_linears(_net())
    for name, layer in layers.items():
        a, b = (f.detach() for f in layer.factorization.factors)
        assert model.get_submodule(name) is layer and layer.factorization.dims == [HIDDEN, K, HIDDEN]
        assert torch.linalg.matrix_rank(layer.weight.detach()) == K
        assert torch.allclose(a @ a.T, b.T @ b, atol=1e-12)         # balanced: AAᵀ = BᵀB
        assert layer.num_parameters() == 2 * HIDDEN * K + HIDDEN
    w = torch.empty(HIDDEN, HIDDEN, dtype=torch.float64)              # spectral init: the best
    torch.nn.init.kaiming_uniform_(w, a=5**0.5, generator=torch.Generator().manual_seed(5))  # rank-K
    best = factorize_layers(_net(), rank=K, layers=["2"], random_state=5)["2"].weight.detach()  # part
    assert torch.allclose(torch.linalg.svdvals(best)[:K], torch.linalg.svdvals(w)[:K], atol=1e-12)
    orth = factorize_layers(_net(), rank=2, layers=["4"], init="orthogonal")["4"]
    a, b = (f.detach() for f in orth.factorization.factors)
    assert torch.allclose(a @ a.T, torch.eye(2, dtype=a.dtype), atol=1e-12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = F.cross_entropy(model(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="rank must be smaller than min"):
        factorize_layers(_net(), rank=HIDDEN)
    with pytest.raises(TypeError, match="not an nn.Linear"):
        factorize_layers(_net(), rank=2, layers=["1"])
    with pytest.raises(ValueError, match="none lies between the first and the last"):
        factorize_layers(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)), rank=1)
