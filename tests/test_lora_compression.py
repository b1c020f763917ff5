"""Deep LoRA compression (engine driver) equals the paper's explicit full-width construction (Sec. 2.3).

The reference below is computed independently of :mod:`lowdim.compression`: dense full-width
factors, ``G_1`` by autograd, full SVDs and the ``U_l`` recursion.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdim import DeepFactorization
from lowdim.lora import DeepLoRAConfig, compress_deep_lora, param_groups, prepare_model, widen_deep_lora
from lowdim.lora.compression import layer_init
from lowdim.lora.layers import DeepLoRALinear


class TwoLayer(nn.Module):
    def __init__(self, d_in: int, d_mid: int, d_out: int):
        super().__init__()
        self.a = nn.Linear(d_in, d_mid)
        self.b = nn.Linear(d_mid, d_out)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _explicit_grad(model, layer, factors, x, y):
    """∇_{W_1} of the loss of the full-width model ``W0 + W_L···W_1`` (autograd, dense factors)."""
    params = [nn.Parameter(f.clone()) for f in factors]

    def full_forward(inp):
        prod = params[0]
        for w in params[1:]:
            prod = w @ prod
        return layer.base(inp) + inp @ prod.T

    layer_forward = layer.forward
    layer.forward = full_forward
    try:
        ((model(x) - y) ** 2).sum().backward()
    finally:
        layer.forward = layer_forward
    return params[0].grad


def _explicit_bases(factors, grad_w1, rank):
    """Seed 003 Sec. 2.3 per block: V_{1,1} = orth[top-(r/2) right sing. vectors of G_1,
    top-(r/2) left sing. vectors of W_1(0)ᵀG_1]; then U_l = orth(W_l(0) V_l), V_{l+1} = U_l."""
    h = rank // 2
    _, _, vh = torch.linalg.svd(grad_w1)  # G_1 is k × d_in
    u2, _, _ = torch.linalg.svd(factors[0].T @ grad_w1)  # d_in × d_in
    v11, _ = torch.linalg.qr(torch.cat([vh[:h].T, u2[:, :h]], 1))
    v = v11
    for w in factors:
        v, _ = torch.linalg.qr(w @ v)
    return v11, v


def _haar_factors(d_in, d_out, depth, eps, gen):
    k = max(d_in, d_out)
    qs = [torch.linalg.qr(torch.randn(k, k, dtype=torch.float64, generator=gen))[0] for _ in range(depth)]
    factors = [eps * q for q in qs]
    factors[0] = factors[0][:, :d_in]
    factors[-1] = factors[-1][:d_out]
    return factors


SHAPES = [  # (d_in, d_out) of the adapted layer, rank r (adapter width), depth
    pytest.param(12, 12, 4, 3, id="square-12"),
    pytest.param(9, 14, 4, 3, id="wide-9to14"),
    pytest.param(48, 192, 8, 3, id="wide-48to192"),
    pytest.param(14, 9, 4, 3, id="tall-14to9"),
    pytest.param(192, 48, 8, 3, id="tall-192to48"),
    pytest.param(16, 10, 6, 4, id="tall-16to10-depth4"),
]
GAPS: dict[str, float] = {}


@pytest.mark.parametrize("kind", ["structured", "haar"])
@pytest.mark.parametrize(("d_in", "d_out", "rank", "depth"), SHAPES)
def test_compression_equals_explicit_paper_rule(d_in, d_out, rank, depth, kind):
    eps = 0.3
    torch.manual_seed(0)
    model = TwoLayer(d_in, d_out, 5).double()
    model.a = DeepLoRALinear(model.a, rank=rank, depth=depth, init_scale=eps)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(60, d_in, dtype=torch.float64)
    y = torch.randn(60, 5, dtype=torch.float64)
    if kind == "structured":
        init = layer_init(model.a, seed=3, name="a", block_size=4)  # several structured rounds
        factors = [init.factor(i) for i in range(depth)]
        assert len(init.q[0]._rounds) > 1
    else:
        factors = _haar_factors(d_in, d_out, depth, eps, torch.Generator().manual_seed(1))
        init = DeepFactorization.from_factors(factors)
    # the full-width factors really are (semi-)orthogonal with scale ε (eq. 3)
    for w in factors:
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        assert torch.allclose(gram, eps**2 * torch.eye(min(w.shape), dtype=w.dtype), atol=1e-13)

    grad_w1 = _explicit_grad(model, model.a, factors, x, y)
    v_exp, u_exp = _explicit_bases(factors, grad_w1, rank)
    e2e_exp = torch.linalg.multi_dot(factors[::-1]) @ v_exp @ v_exp.T  # U W̃_L⋯W̃_1 Vᵀ at t = 0

    compress_deep_lora(
        model, lambda m: ((m(x) - y) ** 2).sum(), include_initial_delta=True, inits={"a": init}
    )
    layer = model.a
    u, v = layer.left.detach(), layer.right.detach().T
    eye = torch.eye(rank, dtype=torch.float64)
    assert torch.linalg.norm(u.T @ u - eye) < 1e-12
    assert torch.linalg.norm(v.T @ v - eye) < 1e-12
    gaps = {
        "V": float(torch.linalg.norm(v @ v.T - v_exp @ v_exp.T)),
        "U": float(torch.linalg.norm(u @ u.T - u_exp @ u_exp.T)),
        "e2e": float(torch.linalg.norm(layer.delta_weight().detach() - e2e_exp)),
    }
    GAPS[f"{kind}-{d_in}to{d_out}"] = max(gaps.values())
    assert max(gaps.values()) < 1e-10, gaps
    # the cores are ε·I wherever the full-width factor is (semi-)orthogonal on the subspace:
    # all of them, except the last one of a tall layer (W_L(0) is then a row-truncated ε Q)
    square_cores = layer.cores if d_out >= d_in else layer.cores[:-1]
    for core in square_cores:
        assert torch.allclose(core.detach(), eps * eye, atol=1e-14)


def test_default_init_is_the_seeded_implicit_one():
    """Without ``inits`` each layer uses ``layer_init(layer, seed, name)`` (block size 32)."""
    torch.manual_seed(0)
    d_in, d_out, rank, eps = 40, 70, 6, 0.4
    model = TwoLayer(d_in, d_out, 3).double()
    cfg = DeepLoRAConfig(rank=rank, init_scale=eps, target_modules=("a",), seed=11,
                         include_initial_delta=True)
    prepare_model(model, cfg)
    x = torch.randn(50, d_in, dtype=torch.float64)
    y = torch.randn(50, 3, dtype=torch.float64)
    factors = [layer_init(model.a, 11, "a").factor(i) for i in range(3)]
    v_exp, u_exp = _explicit_bases(factors, _explicit_grad(model, model.a, factors, x, y), rank)
    compress_deep_lora(model, lambda m: ((m(x) - y) ** 2).sum(), config=cfg)
    v = model.a.right.detach().T
    u = model.a.left.detach()
    assert torch.linalg.norm(v @ v.T - v_exp @ v_exp.T) < 1e-10
    assert torch.linalg.norm(u @ u.T - u_exp @ u_exp.T) < 1e-10


def test_compression_memory_is_thin():
    """The implicit initialization of a 1536×384 layer stores O(k·b) numbers, not k² per factor."""
    layer = DeepLoRALinear(nn.Linear(384, 1536), rank=8)
    init = layer_init(layer, seed=0, name="x")
    stored = sum(
        full.numel() + (last.numel() if last is not None else 0) + perm.numel() * 2
        for q in init.q
        for perm, _, full, last in q._rounds
    )
    assert stored < 0.1 * 3 * 1536**2


def test_compression_is_seeded_and_reads_config():
    x = torch.randn(20, 10, dtype=torch.float64)
    bases = []
    for seed in (5, 5, 6):
        torch.manual_seed(0)
        model = TwoLayer(10, 12, 4).double()
        cfg = DeepLoRAConfig(rank=4, target_modules=("a",), seed=seed)
        prepare_model(model, cfg)
        report = compress_deep_lora(model, lambda m: m(x).pow(2).sum(), config=cfg)
        assert report.layers == ["a"] and report.seconds > 0
        bases.append(model.a.left.detach().clone())
    assert torch.equal(bases[0], bases[1])
    assert not torch.allclose(bases[0], bases[2])
    # no gradient is left behind, and the adapters are switched on again
    assert all(p.grad is None for p in model.parameters())
    assert model.a.adapter_enabled and model.a.compressed


def test_second_compression_refuses_to_wipe_training():
    torch.manual_seed(1)
    model = TwoLayer(10, 12, 6)
    cfg = DeepLoRAConfig(rank=4, init_scale=0.1, target_modules=("a", "b"))
    prepare_model(model, cfg)
    x, y = torch.randn(16, 10), torch.randn(16, 6)

    def loss(m):
        return ((m(x) - y) ** 2).mean()

    compress_deep_lora(model, loss)
    compress_deep_lora(model, loss)  # nothing trained yet: recompressing is harmless
    opt = torch.optim.SGD(param_groups(model, lr=0.5))
    loss(model).backward()
    opt.step()
    trained = [p.detach().clone() for p in model.a.lora_factors.factors]
    with pytest.raises(ValueError, match="force=True"):
        compress_deep_lora(model, loss)
    assert all(torch.equal(p, q) for p, q in zip(model.a.lora_factors.factors, trained, strict=True))
    compress_deep_lora(model, loss, force=True)
    assert not model.a.changed_since_set()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_layer_compresses_in_float32(dtype):
    torch.manual_seed(2)
    model = TwoLayer(24, 32, 6).to(dtype)
    cfg = DeepLoRAConfig(rank=4, target_modules=("a", "b"), include_initial_delta=True)
    prepare_model(model, cfg)
    x, y = torch.randn(30, 24, dtype=dtype), torch.randn(30, 6, dtype=dtype)
    compress_deep_lora(model, lambda m: ((m(x) - y) ** 2).float().mean(), config=cfg)
    assert isinstance(model.a.numerical_rank(), int)
    for layer in (model.a, model.b):
        assert layer.left.dtype == dtype and layer.compressed
        u = layer.left.detach().float()
        assert torch.linalg.norm(u.T @ u - torch.eye(4)) < 2e-2  # orthonormal up to bf16 rounding
    assert torch.isfinite(model(x)).all()
    assert all(s >= 0 for s in model.a.singular_values().tolist())


def test_errors():
    model = TwoLayer(10, 12, 6)
    prepare_model(model, DeepLoRAConfig(rank=4, target_modules=("a", "b")))
    with pytest.raises(ValueError, match="no gradient"):  # b's output does not reach the loss
        compress_deep_lora(model, lambda m: m.a(torch.randn(3, 10)).sum())
    with pytest.raises(ValueError, match="scalar"):
        compress_deep_lora(model, lambda m: m(torch.randn(3, 10)))
    model.a.merge()
    with pytest.raises(ValueError, match="merged"):
        compress_deep_lora(model, lambda m: m(torch.randn(3, 10)).sum())
    model.a.unmerge()
    with pytest.raises(ValueError, match=r"is \(5, 10\)"):
        bad = DeepFactorization([10, 12, 5], scale=0.1)
        compress_deep_lora(model, lambda m: m(torch.randn(3, 10)).sum(), inits={"a": bad})
    assert model.a.adapter_enabled and model.b.adapter_enabled
    assert not model.a._forward_hooks and not model.b._forward_hooks


def test_widen_installs_the_full_width_init_that_compression_starts_from():
    """App. D.2's original: ΔW(0) is exactly the product of the layer's ``layer_init`` factors (the
    Θ(0) compression reads), every factor trains at the full η, and the factored singular values of
    the k × k chain match a dense SVD."""
    torch.manual_seed(0)
    model = TwoLayer(10, 14, 8).double()
    cfg = DeepLoRAConfig(rank=4, init_scale=0.5, target_modules=("a", "b"), seed=3)
    prepare_model(model, cfg)
    assert widen_deep_lora(model, config=cfg) == ["a", "b"]
    for name, layer in (("a", model.a), ("b", model.b)):
        expected = layer_init(layer, 3, name).product()
        assert [tuple(f.shape) for f in layer.lora_factors.factors][1] == (14, 14)
        assert torch.linalg.norm(layer.delta_weight() - expected) < 1e-12 * torch.linalg.norm(expected)
        x = torch.randn(6, layer.in_features, dtype=torch.float64)
        assert torch.allclose(layer(x), layer.base(x) + x @ expected.T, atol=1e-12)
        layer.lora_factors.factors[1].data.add_(0.1 * torch.randn(14, 14, dtype=torch.float64))
        dense = torch.linalg.svdvals(layer.delta_weight())
        assert torch.allclose(layer.singular_values(), dense, atol=1e-12)
        assert not layer.compressed
    groups = param_groups(model, 1e-2)
    assert {g["lr"] for g in groups if g["name"].startswith("lora")} == {1e-2}  # no γ at full width
    with pytest.raises(ValueError, match="maps 10 -> 3"):
        model.a.set_chain(DeepFactorization([10, 12, 12, 3], scale=0.1))
    with pytest.raises(ValueError, match="no DeepLoRALinear"):
        widen_deep_lora(TwoLayer(4, 4, 2))
