"""LoRA / Deep LoRA layers: merging, injection, freezing, parameter groups, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdim.lora import (
    ADAPTERS,
    AdapterConfig,
    AdapterLayer,
    DeepLoRAConfig,
    DeepLoRALinear,
    LoRAConfig,
    LoRALinear,
    adapter_class,
    adapter_layers,
    compress_deep_lora,
    freeze_for_adapters,
    inject_adapters,
    param_groups,
    prepare_model,
    register_adapter,
)
from lowdim.lora.inject import adapter_parameter_names


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(12, 12)
        self.value = nn.Linear(12, 12)
        self.norm = nn.LayerNorm(12)
        self.up = nn.Linear(12, 20)
        self.classifier = nn.Linear(20, 3)

    def forward(self, x):
        h = self.norm(self.query(x) + self.value(x))
        return self.classifier(torch.relu(self.up(h)))


def _trained_like(layer):
    """Give the adapter non-trivial values so that merging is a real test."""
    with torch.no_grad():
        for _, p in layer.adapter_parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("kind", ["lora", "deep"])
def test_merge_unmerge_exact_float64(kind):
    torch.manual_seed(0)
    base = nn.Linear(10, 7).double()
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, rank=3, alpha=6) if kind == "lora" else DeepLoRALinear(base, rank=4, depth=3)
    _trained_like(layer)
    x = torch.randn(5, 10, dtype=torch.float64)
    y = layer(x)
    expected = x @ (w0 + layer.delta_weight()).T + base.bias
    assert torch.allclose(y, expected, atol=1e-12, rtol=0)
    layer.merge()
    assert torch.allclose(layer(x), y, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    layer.unmerge()
    assert torch.max(torch.abs(base.weight - w0)) < 1e-12
    assert torch.allclose(layer(x), y, atol=1e-12, rtol=0)


def test_deep_lora_forward_is_compressed_product():
    torch.manual_seed(1)
    layer = DeepLoRALinear(nn.Linear(9, 6).double(), rank=4, depth=3, init_scale=0.5)
    _trained_like(layer)
    u, v_t = layer.left, layer.right
    c1, c2, c3 = layer.cores
    assert [tuple(f.shape) for f in layer.lora_factors.factors] == [(4, 9), (4, 4), (4, 4), (4, 4), (6, 4)]
    assert layer.lora_factors.lr_multipliers == [1e-2, 1.0, 1.0, 1.0, 1e-2]
    delta = u @ c3 @ c2 @ c1 @ v_t  # ΔW = U W̃_3 W̃_2 W̃_1 Vᵀ (eq. 8)
    x = torch.randn(4, 9, dtype=torch.float64)
    assert torch.allclose(layer(x) - layer.base(x), x @ delta.T, atol=1e-13)
    s = layer.singular_values()
    assert torch.allclose(s, torch.linalg.svdvals(delta)[:4], atol=1e-12)
    assert layer.numerical_rank() == 4


def test_inject_freeze_and_only_adapter_and_head_get_grads():
    torch.manual_seed(2)
    model = Block()
    cfg = DeepLoRAConfig(rank=4, target_modules=("query", "value", "up"), modules_to_save=("classifier",))
    names = prepare_model(model, cfg)
    assert names == ["query", "value", "up"]
    x = torch.randn(8, 12)
    compress_deep_lora(model, lambda m: m(x).pow(2).sum())
    assert all(layer.compressed for _, layer in adapter_layers(model))
    model(x).pow(2).sum().backward()
    adapter = set(adapter_parameter_names(model))
    assert len(adapter) == 3 * 5 and all(".lora_factors.factors." in n for n in adapter)
    for name, p in model.named_parameters():
        should = name in adapter or name.startswith("classifier.")
        assert p.requires_grad == should, name
        assert (p.grad is not None and p.grad.abs().sum() > 0) == should, name


def test_param_groups_carry_gamma():
    model = Block()
    cfg = DeepLoRAConfig(rank=4, gamma=1e-2, target_modules=("query", "up"), modules_to_save=("classifier",))
    prepare_model(model, cfg)
    groups = param_groups(model, lr=1e-2, weight_decay=0.1)
    opt = torch.optim.AdamW(groups)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["lora_outer"]["lr"] == pytest.approx(1e-4)
    assert by_name["lora"]["lr"] == pytest.approx(1e-2)
    assert by_name["head"]["lr"] == pytest.approx(1e-2)
    assert all(g["weight_decay"] == 0.1 for g in opt.param_groups)
    outer_ids = {id(p) for p in by_name["lora_outer"]["params"]}
    expected = {id(getattr(getattr(model, m), side)) for m in ("query", "up") for side in ("left", "right")}
    assert outer_ids == expected
    assert len(by_name["lora"]["params"]) == 2 * 3  # cores of two depth-3 layers
    # the layer's own groups are the DeepFactorization's: bases at γ·lr
    own = model.query.param_groups(2.0)
    assert [(g["name"], g["lr"]) for g in own] == [("lora_outer", 0.02)] + [("lora", 2.0)] * 3 + [
        ("lora_outer", 0.02)
    ]
    # gamma = 0 freezes the outer bases (eq. 11 with γ = 0), and freezing does not thaw them
    model2 = Block()
    prepare_model(model2, DeepLoRAConfig(rank=4, gamma=0.0, target_modules=("query",)))
    freeze_for_adapters(model2)
    groups0 = param_groups(model2, lr=1e-2)
    assert [g["name"] for g in groups0] == ["lora"]
    assert not model2.query.left.requires_grad and not model2.query.right.requires_grad
    assert all(c.requires_grad for c in model2.query.cores)


def test_gamma_ratio_is_applied_by_the_optimizer():
    """One SGD step moves the outer bases γ times as far as with γ = 1."""
    torch.manual_seed(3)
    x = torch.randn(6, 12, dtype=torch.float64)
    moves = {}
    for gamma in (1.0, 0.01):
        torch.manual_seed(4)
        model = Block().double()
        prepare_model(model, DeepLoRAConfig(rank=4, init_scale=0.5, gamma=gamma, target_modules=("query",)))
        before = model.query.left.detach().clone()
        opt = torch.optim.SGD(param_groups(model, lr=0.1))
        model(x).pow(2).sum().backward()
        opt.step()
        moves[gamma] = (model.query.left.detach() - before).norm()
    assert moves[0.01] / moves[1.0] == pytest.approx(0.01, rel=1e-5)


def test_lora_scaling_alpha_differs_from_rank():
    """r = 4, α = 16: the output changes by (α/r)·B A x, computed by hand."""
    torch.manual_seed(6)
    base = nn.Linear(10, 8).double()
    layer = LoRALinear(base, rank=4, alpha=16)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(8, 4, dtype=torch.float64))
    x = torch.randn(5, 10, dtype=torch.float64)
    b, a = layer.lora_B.detach(), layer.lora_A.detach()
    expected = (16 / 4) * torch.einsum("or,ri,ni->no", b, a, x)
    assert torch.allclose(layer(x) - base(x), expected, atol=1e-12, rtol=0)
    assert torch.allclose(layer.delta_weight(), 4.0 * b @ a, atol=1e-12, rtol=0)


def test_deep_lora_rank_is_the_even_adapter_width():
    with pytest.raises(ValueError, match=r"DeepLoRAConfig.rank.*even.*rank=6"):
        DeepLoRAConfig(rank=5)
    with pytest.raises(ValueError, match=r"rank=2"):
        DeepLoRAConfig(rank=1)
    with pytest.raises(ValueError, match="even"):
        DeepLoRALinear(nn.Linear(10, 10), rank=3)
    layer = DeepLoRALinear(nn.Linear(10, 7), rank=6)  # width 6 = 2·3 < min(10, 7)
    assert layer.left.shape == (7, 6) and layer.right.shape == (6, 10)


def test_registry_one_place_per_kind(tmp_path):
    """Every dispatch goes through the registry: a new kind plugs in with one class."""
    from dataclasses import dataclass

    from lowdim.lora.io import load_adapter, save_adapter

    assert adapter_class(LoRAConfig()) is LoRALinear and adapter_class("deep_lora") is DeepLoRALinear
    assert AdapterConfig.from_dict(DeepLoRAConfig(rank=6).to_dict()) == DeepLoRAConfig(rank=6)
    with pytest.raises(ValueError, match="unknown adapter_type"):
        AdapterConfig.from_dict({"adapter_type": "nope"})

    @dataclass
    class ScaleConfig(AdapterConfig):
        adapter_type = "test_scale"

    @register_adapter
    class ScaleLinear(AdapterLayer):  # ΔW = u·v, parameters not named lora_*
        config_class = ScaleConfig

        def __init__(self, base, rank, dropout):
            super().__init__(base, dropout)
            self.u = nn.Parameter(torch.randn(base.out_features, rank))
            self.v = nn.Parameter(torch.randn(rank, base.in_features))

        @classmethod
        def from_config(cls, base, config):
            return cls(base, config.rank, config.dropout)

        def factors(self):
            return self.u, torch.eye(self.u.shape[1]), self.v

        def adapter_forward(self, x):
            return x @ self.v.T @ self.u.T

    try:
        torch.manual_seed(7)
        model = Block()
        cfg = ScaleConfig(rank=2, target_modules=("query",), modules_to_save=("classifier",))
        prepare_model(model, cfg)
        assert sorted(adapter_parameter_names(model)) == ["query.u", "query.v"]
        assert [g["name"] for g in param_groups(model, lr=1.0)] == ["lora", "head"]
        x = torch.randn(3, 12)
        expected = model(x)
        save_adapter(model, tmp_path / "s", cfg)
        torch.manual_seed(7)
        fresh = Block()
        assert load_adapter(fresh, tmp_path / "s") == cfg
        assert torch.equal(fresh(x), expected)
    finally:
        ADAPTERS.pop("test_scale")


def test_clear_errors():
    model = Block()
    with pytest.raises(ValueError, match="match no module"):
        inject_adapters(model, LoRAConfig(target_modules=("nope",)))
    with pytest.raises(ValueError, match="only torch.nn.Linear"):
        inject_adapters(model, LoRAConfig(rank=2, target_modules=("norm",)))
    with pytest.raises(ValueError, match="too large"):
        inject_adapters(model, DeepLoRAConfig(rank=12, target_modules=("query",)))
    with pytest.raises(ValueError, match="too large"):
        inject_adapters(model, LoRAConfig(rank=13, target_modules=("query",)))
    with pytest.raises(ValueError, match="rank"):
        DeepLoRAConfig(rank=0)
    with pytest.raises(ValueError, match="depth"):
        DeepLoRAConfig(depth=1)
    with pytest.raises(ValueError, match="gamma"):
        DeepLoRAConfig(gamma=-1.0)
    with pytest.raises(ValueError, match="rank"):
        DeepLoRAConfig(rank=7)
    inject_adapters(model, LoRAConfig(rank=2, target_modules=("query",)))
    with pytest.raises(ValueError, match="already has an adapter"):
        inject_adapters(model, LoRAConfig(rank=2, target_modules=("query",)))
    with pytest.raises(ValueError, match="no DeepLoRALinear"):
        compress_deep_lora(model, lambda m: m(torch.randn(2, 12)).sum())


def test_regex_targets_and_calibration_requires_single_call():
    model = Block()
    names = inject_adapters(model, DeepLoRAConfig(rank=2, target_modules=r"(query|value)"))
    assert names == ["query", "value"]

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 6)

        def forward(self, x):
            return self.lin(self.lin(x))

    twice = Twice()
    inject_adapters(twice, DeepLoRAConfig(rank=2, target_modules=("lin",)))
    with pytest.raises(ValueError, match="more than once"):
        compress_deep_lora(twice, lambda m: m(torch.randn(3, 6)).sum())
    # the calibration hooks are removed and the adapter switched on again after the error
    assert not twice.lin._forward_hooks and twice.lin.adapter_enabled


def test_lora_init_matches_paper_baseline():
    torch.manual_seed(5)
    layer = LoRALinear(nn.Linear(400, 300), rank=8, alpha=8)
    assert torch.count_nonzero(layer.lora_B) == 0
    assert layer.lora_A.std().item() == pytest.approx(1.0, abs=0.03)
    assert layer.scaling == 1.0
