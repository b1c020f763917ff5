"""The PEFT-style wrapper: wrap, report, save/load (all-or-nothing, validated), merge/unload, disable."""

from __future__ import annotations

import json

import pytest
import torch

from lowdim.lora import (
    DeepLoRAConfig,
    DeepLoRALinear,
    DeepLoRAModel,
    LoRAConfig,
    adapter_layers,
    get_deep_lora_model,
    prepare_model,
)
from lowdim.lora.io import CONFIG_NAME, WEIGHTS_NAME, export_peft, load_adapter, save_adapter

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def tiny_bert(seed: int = 0, num_labels: int = 2, hidden: int = 32):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=60, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32, num_labels=num_labels,
    )
    return transformers.BertForSequenceClassification(cfg).eval()


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=60, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_labels=2, pad_token_id=0
    )
    return transformers.GPT2ForSequenceClassification(cfg).eval()


INPUTS = {"input_ids": torch.randint(1, 60, (3, 7), generator=torch.Generator().manual_seed(5))}


def logits(model):
    with torch.no_grad():
        return model(**INPUTS).logits


def trained(model_fn=tiny_bert, config=None):
    """A wrapped model whose adapters and head are clearly non-trivial."""
    model = get_deep_lora_model(model_fn(), config or DeepLoRAConfig(rank=4, target_modules="all-linear"))
    model.train()
    model.compress(lambda m: m(**INPUTS, labels=torch.tensor([0, 1, 1])).loss)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def state(model):
    """Everything a load could change: parameters, module types, requires_grad."""
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m).__name__) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


def assert_same_state(a, b):
    assert a[1] == b[1] and a[2] == b[2]
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


def test_wrap_heads_all_linear_and_report(capsys):
    model = get_deep_lora_model(tiny_bert(), DeepLoRAConfig(rank=4, target_modules="all-linear"))
    assert isinstance(model, DeepLoRAModel) and model.config.num_labels == 2  # attributes fall through
    assert model.adapter_config.modules_to_save == ("classifier",)  # SEQ_CLS head trains, as in PEFT
    names = [n for n, _ in adapter_layers(model.base_model)]
    assert "bert.pooler.dense" in names and len(names) == 2 * 6 + 1 and "classifier" not in names
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()
    heads = sum(p.numel() for p in model.base_model.classifier.parameters())
    layers = [layer for _, layer in adapter_layers(model.base_model)]
    assert trainable == heads + sum(p.numel() for layer in layers for _, p in layer.adapter_parameters())
    assert capsys.readouterr().out.startswith(f"trainable params: {trainable:,d} || all params: {total:,d}")
    import inspect  # Trainer reads labels and columns from the forward signature

    assert "labels" in inspect.signature(model.forward).parameters
    with pytest.raises(ValueError, match="modules_to_save entry 'nope'"):
        get_deep_lora_model(tiny_bert(), DeepLoRAConfig(rank=4, modules_to_save=("nope",)))


def test_save_from_pretrained_and_merged_model_round_trips(tmp_path):
    model = trained()
    expected = logits(model)
    model.save_pretrained(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = DeepLoRAModel.from_pretrained(tiny_bert(), tmp_path / "a")
    assert torch.equal(logits(loaded), expected)
    assert not any(p.requires_grad for p in loaded.parameters())  # is_trainable=False (PEFT's default)
    again = DeepLoRAModel.from_pretrained(tiny_bert(), tmp_path / "a", is_trainable=True)
    assert again.get_nb_trainable_parameters()[0] == model.get_nb_trainable_parameters()[0]

    plain = model.merge_and_unload()
    assert type(plain) is transformers.BertForSequenceClassification
    assert not any(isinstance(m, DeepLoRALinear) for m in plain.modules())
    plain.save_pretrained(tmp_path / "merged")
    reloaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert torch.allclose(logits(reloaded), expected, atol=1e-5, rtol=1e-5)


def test_unload_and_disable_adapter():
    model = trained()
    adapted, base = logits(model), logits(tiny_bert())
    with model.disable_adapter():
        assert torch.allclose(logits(model), base, atol=1e-6)  # adapters off, head as it was
    assert torch.equal(logits(model), adapted)
    plain = model.unload()
    assert not any(isinstance(m, DeepLoRALinear) for m in plain.modules())
    with torch.no_grad():
        plain.classifier.load_state_dict(tiny_bert().classifier.state_dict())
    assert torch.allclose(logits(plain), base, atol=1e-6)


def test_gpt2_conv1d_all_linear_merge_and_peft_export(tmp_path):
    model = trained(tiny_gpt2)
    names = [n for n, _ in adapter_layers(model.base_model)]
    assert len(names) == 2 * 4 and "score" not in names and model.adapter_config.modules_to_save == ("score",)
    layer = model.base_model.transformer.h[0].attn.c_attn
    assert layer.fan_in_fan_out and (layer.in_features, layer.out_features) == (32, 96)
    expected = logits(model)
    export_peft(model, tmp_path / "peft", model.adapter_config)
    peft_model = peft.PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "peft").eval()
    assert torch.allclose(logits(peft_model), expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits(model.merge_and_unload()), expected, atol=1e-5, rtol=1e-5)


def _saved(tmp_path):
    model = trained()
    model.save_pretrained(tmp_path / "a")
    return model, tmp_path / "a"


def _edit_config(folder, **changes):
    meta = json.loads((folder / CONFIG_NAME).read_text())
    meta["config"].update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(meta))


def _edit_tensor(folder, fn):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / WEIGHTS_NAME)
    fn(tensors)
    save_file(tensors, folder / WEIGHTS_NAME)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: _edit_tensor(f, lambda t: t[sorted(t)[-1]].fill_(float("nan"))), "non-finite"),
        (lambda f: _edit_config(f, rank=6), "shape"),
        (lambda f: _edit_config(f, modules_to_save=[]), "unexpected tensors"),
        (lambda f: _edit_config(f, target_modules=["query"]), "select"),
        (lambda f: (f / WEIGHTS_NAME).write_bytes((f / WEIGHTS_NAME).read_bytes()[:100]), "safetensors"),
        (lambda f: (f / CONFIG_NAME).write_text("{"), "not a valid"),
    ],
    ids=["nan", "rank", "modules_to_save", "targets", "truncated", "bad-json"],
)
def test_failed_load_leaves_model_unchanged(tmp_path, damage, message):
    _, folder = _saved(tmp_path)
    damage(folder)
    fresh = tiny_bert()
    before = state(fresh)
    with pytest.raises(ValueError, match=message) as err:
        load_adapter(fresh, folder)
    assert str(folder) in str(err.value)  # the message names the file
    assert_same_state(before, state(fresh))


def test_save_refuses_a_config_that_does_not_describe_the_model(tmp_path):
    model = tiny_bert()
    prepare_model(model, DeepLoRAConfig(rank=4, modules_to_save=("classifier",)))
    for wrong, message in [
        (DeepLoRAConfig(rank=6, modules_to_save=("classifier",)), "rank=6"),
        (DeepLoRAConfig(rank=4), "outside the config's modules_to_save"),
        (DeepLoRAConfig(rank=4, target_modules=("query",), modules_to_save=("classifier",)), "select"),
        (LoRAConfig(rank=4, modules_to_save=("classifier",)), "adapter_type"),
    ]:
        with pytest.raises(ValueError, match=message):
            save_adapter(model, tmp_path / "x", wrong)
    assert not (tmp_path / "x").exists()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.cores[0].fill_(float("inf"))
    with pytest.raises(ValueError, match="non-finite"):
        save_adapter(model, tmp_path / "x", DeepLoRAConfig(rank=4, modules_to_save=("classifier",)))


def test_trainer_saves_the_adapter_and_resumes(tmp_path):
    from lowdim.lora import DeepLoRATrainer

    model = trained()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    DeepLoRATrainer(model=model, args=args).save_model(str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    other = get_deep_lora_model(tiny_bert(), DeepLoRAConfig(rank=4, target_modules="all-linear"))
    other.load_adapter_weights(tmp_path / "out")
    assert torch.equal(logits(other.eval()), logits(model))


def test_named_adapters_switch_save_and_load(tmp_path):
    model = trained()
    first = logits(model)
    model.add_adapter("other", LoRAConfig(rank=2, target_modules=("query", "value")))
    assert model.active_adapter == "default" and torch.equal(logits(model), first)
    model.set_adapter("other")
    assert model.adapter_config.modules_to_save == ("classifier",)  # its own copy of the head
    assert torch.allclose(logits(model), logits(tiny_bert()), atol=1e-6)  # B = 0, head untouched
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    second = logits(model)
    model.set_adapter("default")
    assert torch.equal(logits(model), first)
    model.save_pretrained(tmp_path / "s")
    assert (tmp_path / "s" / CONFIG_NAME).is_file() and (tmp_path / "s" / "other" / WEIGHTS_NAME).is_file()
    loaded = DeepLoRAModel.from_pretrained(tiny_bert(), tmp_path / "s")
    loaded.load_adapter(tmp_path / "s" / "other", "other")
    assert torch.equal(logits(loaded), first)
    loaded.set_adapter("other")
    assert torch.equal(logits(loaded), second)
    with pytest.raises(ValueError, match="exists already"):
        loaded.add_adapter("default", LoRAConfig(rank=2, target_modules=("query",)))
    with pytest.raises(ValueError, match="unknown"):
        loaded.set_adapter("nope")
    loaded.set_adapter("default")
    loaded.requires_grad_(False)
    before = state(loaded)
    with pytest.raises(ValueError, match="non-finite"):  # a failed load changes nothing
        _edit_tensor(tmp_path / "s", lambda t: t[sorted(t)[0]].fill_(float("nan")))
        loaded.load_adapter(tmp_path / "s", "third")
    assert_same_state(before, state(loaded))
    assert set(loaded.peft_config) == {"default", "other"} and loaded.active_adapter == "default"
