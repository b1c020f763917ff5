"""Saving/loading adapters, and exporting Deep LoRA as an ordinary PEFT LoRA adapter."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
from torch import nn

from lowdim.lora import DeepLoRAConfig, LoRAConfig, adapter_layers, compress_deep_lora, prepare_model
from lowdim.lora.io import export_peft, load_adapter, numerical_ranks, save_adapter

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import test_lora_model  # noqa: E402  (the tiny BERT of these tests)

tiny_bert = functools.partial(test_lora_model.tiny_bert, num_labels=1)


def _inputs():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 60, (4, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(4, 9, dtype=torch.long)}


@pytest.fixture(scope="module")
def trained():
    return _build_trained_deep_lora()


def _trained_deep_lora(trained):
    model, cfg = trained
    return copy.deepcopy(model), cfg


def _build_trained_deep_lora(seed=0):
    model = tiny_bert(seed)
    cfg = DeepLoRAConfig(rank=4, modules_to_save=("classifier",))
    prepare_model(model, cfg)
    batch = _inputs()
    model.train()
    compress_deep_lora(model, lambda m: m(**batch).logits.pow(2).sum())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):  # a few steps so that every parameter is non-trivial
        opt.zero_grad()
        (model(**batch).logits - 1).pow(2).sum().backward()
        opt.step()
    with torch.no_grad():  # and make the cores clearly non-identity
        for _, layer in adapter_layers(model):
            for core in layer.cores:
                core.add_(0.2 * torch.randn_like(core))
    model.eval()
    return model, cfg


@pytest.mark.parametrize("kind", ["deep", "lora"])
def test_save_load_identical_outputs(tmp_path, kind, trained):
    if kind == "deep":
        model, cfg = _trained_deep_lora(trained)
    else:
        model = tiny_bert()
        cfg = LoRAConfig(rank=3, alpha=6, modules_to_save=("classifier",))
        prepare_model(model, cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name or "classifier" in name:
                    p.add_(0.1 * torch.randn_like(p))
    batch = _inputs()
    expected = model(**batch).logits
    save_adapter(model, tmp_path / "adapter", cfg)
    meta = json.loads((tmp_path / "adapter" / "lowdim_adapter_config.json").read_text())
    assert meta["config"]["rank"] == cfg.rank and len(meta["layers"]) == 12
    fresh = tiny_bert()  # same base weights, different (fresh) head/adapters
    assert not torch.allclose(fresh(**batch).logits, expected)
    loaded_cfg = load_adapter(fresh, tmp_path / "adapter")
    fresh.eval()
    assert loaded_cfg == cfg
    assert torch.equal(fresh(**batch).logits, expected)
    if kind == "deep":  # loaded (trained) factors are not wiped by a second compression
        assert all(layer.compressed for _, layer in adapter_layers(fresh))
        with pytest.raises(ValueError, match="force=True"):
            compress_deep_lora(fresh, lambda m: m(**batch).logits.sum())


def test_load_into_different_shapes_fails(tmp_path, trained):
    model, cfg = _trained_deep_lora(trained)
    save_adapter(model, tmp_path / "a", cfg)
    with pytest.raises(ValueError, match="shape"):
        load_adapter(tiny_bert(hidden=48), tmp_path / "a")
    with pytest.raises(FileNotFoundError):
        load_adapter(tiny_bert(), tmp_path / "missing")


def test_peft_export_matches(tmp_path, trained):
    model, cfg = _trained_deep_lora(trained)
    batch = _inputs()
    expected = model(**batch).logits
    export_peft(model, tmp_path / "peft", cfg)
    peft_model = peft.PeftModel.from_pretrained(tiny_bert(), tmp_path / "peft")
    peft_model.eval()
    got = peft_model(**batch).logits
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    names = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["target_modules"]
    assert len(names) == 12


def test_peft_export_truncated_to_numerical_rank(tmp_path, trained):
    model, cfg = _trained_deep_lora(trained)
    # force two layers to low numerical rank: rank-1 and exactly zero updates
    layer = model.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():
        layer.cores[0].zero_()
        layer.cores[0][0, 0] = 0.5
    zero = model.bert.encoder.layer[1].output.dense
    with torch.no_grad():
        zero.cores[1].zero_()
    ranks = numerical_ranks(model)
    assert ranks["bert.encoder.layer.0.attention.self.query"] == 1
    assert ranks["bert.encoder.layer.1.output.dense"] == 0
    batch = _inputs()
    expected = model(**batch).logits
    export_peft(model, tmp_path / "peft", cfg, truncate=True)
    meta = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert meta["rank_pattern"]["bert.encoder.layer.0.attention.self.query"] == 1
    assert "bert.encoder.layer.1.output.dense" not in meta["target_modules"]
    peft_model = peft.PeftModel.from_pretrained(tiny_bert(), tmp_path / "peft")
    peft_model.eval()
    assert torch.allclose(peft_model(**batch).logits, expected, atol=1e-6, rtol=1e-5)


def test_export_requires_unmerged(trained):
    model, cfg = _trained_deep_lora(trained)
    layer = model.bert.encoder.layer[0].attention.self.query
    layer.merge()
    with pytest.raises(ValueError, match="unmerge"):
        export_peft(model, "/nonexistent", cfg)


def test_non_bert_model_roundtrip(tmp_path):
    """Injection works on any nn.Module, not only transformers models."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    cfg = DeepLoRAConfig(rank=2, target_modules=("0", "2"))
    prepare_model(net, cfg)
    x = torch.randn(5, 8)
    compress_deep_lora(net, lambda m: m(x).pow(2).sum())
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    save_adapter(net, tmp_path / "n", cfg)
    torch.manual_seed(0)
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    load_adapter(fresh, tmp_path / "n")
    assert torch.equal(fresh(x), net(x))
