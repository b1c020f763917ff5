"""Implicit Deep LoRA compression equals the paper's explicit full-width construction (Sec. 2.3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdim.lora.compression import (
    DenseFullWidthInit,
    StructuredOrthogonal,
    compress_deep_lora,
    layer_init,
    top_singular_pairs,
)
from lowdim.lora.layers import DeepLoRALinear


class TwoLayer(nn.Module):
    def __init__(self, d_in: int, d_mid: int, d_out: int):
        super().__init__()
        self.a = nn.Linear(d_in, d_mid)
        self.b = nn.Linear(d_mid, d_out)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _explicit_bases(factors, scales, grad_w1, rank):
    """The paper's recipe with dense factors: S = N(G1) ∩ N(G1ᵀW1), U_l = W_l V_l/ε_l, V_{l+1} = U_l."""
    h1, h2 = (rank + 1) // 2, rank // 2
    ug, _, vgt = torch.linalg.svd(grad_w1)  # full SVD of G_1 (k × d_in)
    w1 = factors[0]
    block = torch.cat([vgt.T[:, :h1], w1.T @ ug[:, :h2] / scales[0]], 1)
    v11, _ = torch.linalg.qr(block)
    # complete V_{1,1} to an orthonormal basis V_1 of R^{d_in} and propagate through the layers
    v_full, _ = torch.linalg.qr(torch.cat([v11, torch.randn(w1.shape[1], w1.shape[1], dtype=w1.dtype)], 1))
    v_full = torch.cat([v11, v_full[:, rank:]], 1)
    v = v_full
    for w, eps in zip(factors, scales, strict=True):
        u = w @ v / eps  # U_l = W_l(0) V_l / ε_l ; V_{l+1} = U_l
        v = u
    return u[:, :rank], v11


def _explicit_grad(model, name_layer, factors, x, y):
    """∇_{W_1} of the loss of the full-width model W0 + W_L···W_1 (autograd, dense factors)."""
    params = [nn.Parameter(f.clone()) for f in factors]
    layer = dict(model.named_modules())[name_layer]
    base = layer.base if isinstance(layer, DeepLoRALinear) else layer

    def full_forward(inp):
        prod = params[0]
        for w in params[1:]:
            prod = w @ prod
        return base(inp) + inp @ prod.T

    layer_forward = layer.forward
    layer.forward = full_forward
    try:
        loss = ((model(x) - y) ** 2).sum()
        loss.backward()
    finally:
        layer.forward = layer_forward
    return params[0].grad


@pytest.mark.parametrize(
    ("d_in", "d_mid", "d_out", "rank", "depth"),
    [(12, 12, 3, 4, 3), (10, 16, 7, 4, 3), (16, 9, 5, 5, 4)],
)
def test_implicit_equals_explicit(d_in, d_mid, d_out, rank, depth):
    torch.manual_seed(0)
    model = TwoLayer(d_in, d_mid, d_out).double()
    model.a = DeepLoRALinear(model.a, rank=rank, depth=depth, init_scale=0.3)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(40, d_in, dtype=torch.float64)
    y = torch.randn(40, d_out, dtype=torch.float64)
    init = layer_init(model.a, seed=3, name="a", block_size=4)  # several structured rounds
    factors = [init.factor(i) for i in range(depth)]
    scales = [0.3] * depth
    # the implicit factors really are (semi-)orthogonal with scale ε (eq. 3)
    for w in factors:
        small = min(w.shape)
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        assert torch.allclose(gram, 0.09 * torch.eye(small, dtype=w.dtype), atol=1e-13)

    grad_w1 = _explicit_grad(model, "a", factors, x, y)
    u_exp, v_exp = _explicit_bases(factors, scales, grad_w1, rank)

    compress_deep_lora(
        model,
        lambda m: ((m(x) - y) ** 2).sum(),
        include_initial_delta=True,
        inits={"a": init},
        svd="exact",
    )
    u_imp = model.a.lora_left.detach()
    v_imp = model.a.lora_right.detach().T
    # same subspace for V_{1,1} and the same compressed end-to-end map U_{L,1} V_{1,1}ᵀ
    assert torch.linalg.norm(v_imp @ v_imp.T - v_exp @ v_exp.T) < 1e-10
    assert torch.linalg.norm(u_imp @ v_imp.T - u_exp @ v_exp.T) < 1e-10
    # cores start at ε·I
    for core in model.a.lora_cores:
        assert torch.equal(core.detach(), 0.3 * torch.eye(rank, dtype=torch.float64))


def test_dense_haar_factors_match_explicit():
    """Arbitrary (Haar) orthogonal factors given densely: the implicit formula still holds."""
    torch.manual_seed(1)
    d_in, d_out, rank, depth, eps = 9, 14, 4, 3, 0.5
    model = TwoLayer(d_in, d_out, 2).double()
    model.a = DeepLoRALinear(model.a, rank=rank, depth=depth, init_scale=eps)
    for p in model.parameters():
        p.requires_grad_(False)
    k = max(d_in, d_out)
    qs = [torch.linalg.qr(torch.randn(k, k, dtype=torch.float64))[0] for _ in range(depth)]
    factors = [eps * qs[0][:, :d_in], eps * qs[1], eps * qs[2][:d_out]]
    x = torch.randn(30, d_in, dtype=torch.float64)
    y = torch.randn(30, 2, dtype=torch.float64)
    grad_w1 = _explicit_grad(model, "a", factors, x, y)
    u_exp, v_exp = _explicit_bases(factors, [eps] * depth, grad_w1, rank)
    compress_deep_lora(
        model,
        lambda m: ((m(x) - y) ** 2).sum(),
        include_initial_delta=True,
        inits={"a": DenseFullWidthInit(factors, [eps] * depth)},
    )
    u_imp, v_imp = model.a.lora_left.detach(), model.a.lora_right.detach().T
    assert torch.linalg.norm(u_imp @ v_imp.T - u_exp @ v_exp.T) < 1e-10


def test_structured_orthogonal_is_orthogonal_and_consistent():
    q = StructuredOrthogonal(50, torch.Generator().manual_seed(0), block_size=8)
    dense = q.dense()
    assert torch.allclose(dense.T @ dense, torch.eye(50, dtype=torch.float64), atol=1e-13)
    x = torch.randn(50, 3, dtype=torch.float64)
    assert torch.allclose(q.rmatmul(x), dense.T @ x, atol=1e-13)
    # mixing: no entry of the dense matrix is structurally zero after the default rounds
    assert float((dense.abs() < 1e-14).float().mean()) < 0.05


@pytest.mark.parametrize("n_tokens", [3, 40])
def test_top_singular_pairs_low_rank_and_dense_paths(n_tokens):
    torch.manual_seed(2)
    x = torch.randn(n_tokens, 9, dtype=torch.float64)
    g = torch.randn(n_tokens, 6, dtype=torch.float64)
    left, s, right = top_singular_pairs(x, g, 2)
    e = g.T @ x
    s_ref = torch.linalg.svdvals(e)[:2]
    assert torch.allclose(s, s_ref, rtol=1e-12)
    assert torch.allclose(left.T @ e @ right, torch.diag(s_ref), atol=1e-10)


def test_compression_memory_is_thin():
    """The implicit initialization of a 1536×384 layer stores O(k·b) numbers, not k² per factor."""
    layer = DeepLoRALinear(nn.Linear(384, 1536), rank=8)
    init = layer_init(layer, seed=0, name="x")
    stored = sum(
        full.numel() + (last.numel() if last is not None else 0) + perm.numel() * 2
        for q in init.factors_q
        for perm, _, full, last in q._rounds
    )
    assert stored < 0.1 * 3 * 1536**2


def test_compression_is_seeded_and_reads_config():
    from lowdim.lora import DeepLoRAConfig, prepare_model

    x = torch.randn(20, 10, dtype=torch.float64)
    bases = []
    for seed in (5, 5, 6):
        torch.manual_seed(0)
        model = TwoLayer(10, 12, 4).double()
        cfg = DeepLoRAConfig(rank=4, target_modules=("a",), seed=seed)
        prepare_model(model, cfg)
        report = compress_deep_lora(model, lambda m: m(x).pow(2).sum(), config=cfg)
        assert report.layers == ["a"] and len(report.top_singular_values["a"]) == 2
        bases.append(model.a.lora_left.detach().clone())
    assert torch.equal(bases[0], bases[1])
    assert not torch.allclose(bases[0], bases[2])
    # only the adapter/head parameters are trainable and no gradient is left behind
    assert all(p.grad is None for p in model.parameters())


def test_randomized_pairs_match_exact_without_forming_e():
    """Subspace iteration recovers the top singular pairs of a low-rank E = δᵀX to 1e-8."""
    torch.manual_seed(6)
    n, d_in, d_out = 300, 120, 90
    x = torch.randn(n, 5, dtype=torch.float64) @ torch.randn(5, d_in, dtype=torch.float64)
    g = torch.randn(n, d_out, dtype=torch.float64)
    left_e, s_e, right_e = top_singular_pairs(x, g, 4, method="exact")
    gen = torch.Generator().manual_seed(0)
    left_r, s_r, right_r = top_singular_pairs(x, g, 4, method="randomized", generator=gen)
    assert torch.allclose(s_r, s_e, rtol=1e-10)
    assert torch.allclose(left_r @ left_r.T, left_e @ left_e.T, atol=1e-8)
    assert torch.allclose(right_r @ right_r.T, right_e @ right_e.T, atol=1e-8)
    # "auto" takes the randomized path for a layer this size with many tokens
    _, s_auto, _ = top_singular_pairs(x, g, 4, method="auto", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s_auto, s_r, rtol=1e-12)
    with pytest.raises(ValueError, match="method"):
        top_singular_pairs(x, g, 4, method="lanczos")
