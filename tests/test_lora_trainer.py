"""γ everywhere: transformers.Trainer's default optimizer and accelerate keep Deep LoRA's rates (eq. 11)."""

from __future__ import annotations

import pytest
import torch

from lowdim.lora import DeepLoRAConfig, adapter_layers, get_deep_lora_model, param_groups

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from test_lora_model import tiny_bert  # noqa: E402

from lowdim.lora.trainer import (  # noqa: E402  (needs transformers)
    DeepLoRATrainer,
    check_learning_rates,
    optimizer_cls_and_kwargs,
)

LR, GAMMA, STEPS = 1e-2, 1e-2, 4


def dataset(n: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 60, (n, 9), generator=g)
    labels = torch.rand(n, generator=g) * 5
    return [{"input_ids": ids[i], "attention_mask": torch.ones(9, dtype=torch.long), "labels": labels[i]}
            for i in range(n)]


def wrapped_model():
    # ε = 0.3: the bases get gradients well above Adam's ε from the first step (at ε = 1e-3 they are
    # O(ε³) and Adam barely moves them either way for the first steps)
    model = get_deep_lora_model(tiny_bert(num_labels=1), DeepLoRAConfig(rank=4, gamma=GAMMA, init_scale=0.3))
    batch = {k: torch.stack([row[k] for row in dataset()]) for k in ("input_ids", "attention_mask", "labels")}
    model.train()
    model.compress(lambda m: m(**batch).loss)
    return model


def args(tmp_path, **kw):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), learning_rate=LR, max_steps=STEPS, per_device_train_batch_size=4,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, **kw,
    )


def base_moves(model, before) -> tuple[float, float]:
    """Largest entry change of the outer bases and of the cores since ``before``."""
    outer = core = 0.0
    for (_, layer), old in zip(adapter_layers(model), before, strict=True):
        for i, (p, q) in enumerate(zip(layer.lora_factors.factors, old, strict=True)):
            move = float((p.detach() - q).abs().max())
            if i in (0, len(old) - 1):
                outer = max(outer, move)
            else:
                core = max(core, move)
    return outer, core


def snapshot(model):
    return [[p.detach().clone() for p in layer.lora_factors.factors] for _, layer in adapter_layers(model)]


def train_with(trainer_cls, tmp_path, kw):
    model = wrapped_model()
    before = snapshot(model)
    trainer = trainer_cls(model=model, args=args(tmp_path), train_dataset=dataset(), **kw(model))
    trainer.train()
    return model, trainer, base_moves(model, before)


def test_trainer_default_optimizer_keeps_gamma(tmp_path):
    """AdamW moves an entry by at most ~lr per step: the bases stay within γ·lr·steps, cores do not."""
    model, trainer, (outer, core) = train_with(DeepLoRATrainer, tmp_path, kw=lambda m: {})
    assert 0 < outer <= 2 * GAMMA * LR * STEPS, outer
    assert core > 10 * GAMMA * LR * STEPS  # the cores move lr-sized steps
    check_learning_rates(trainer.optimizer, model)
    names = {g["name"] for g in trainer.optimizer.param_groups}
    assert {"lora_outer", "lora", "head"} <= names  # the classifier head trains (SEQ_CLS default)
    head = model.base_model.classifier.weight
    assert head.requires_grad


def test_plain_trainer_with_helper_keeps_gamma_and_without_loses_it(tmp_path):
    helper = lambda m: {"optimizer_cls_and_kwargs": optimizer_cls_and_kwargs(m, args(tmp_path))}  # noqa: E731
    _, _, (outer, _) = train_with(transformers.Trainer, tmp_path, kw=helper)
    assert 0 < outer <= 2 * GAMMA * LR * STEPS
    cls, kwargs = optimizer_cls_and_kwargs(wrapped_model(), args(tmp_path, weight_decay=0.1))
    decay = {g["name"]: g["weight_decay"] for g in kwargs["params"]}  # Trainer's habit: no decay on
    assert decay == {"lora_outer": 0.1, "lora": 0.1, "head": 0.1, "head_no_decay": 0.0}  # biases
    assert cls is torch.optim.AdamW and kwargs["lr"] == LR
    model, trainer, (lost, _) = train_with(transformers.Trainer, tmp_path, kw=lambda m: {})
    assert lost > 10 * GAMMA * LR * STEPS  # the failure this library guards against
    with pytest.raises(ValueError, match="param_groups"):
        check_learning_rates(trainer.optimizer, model)


def test_accelerate_prepare_keeps_param_groups():
    from accelerate import Accelerator

    model = wrapped_model()
    accelerator = Accelerator(cpu=True)
    prepared, opt = accelerator.prepare(model, torch.optim.AdamW(param_groups(model, lr=LR)))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["lora_outer"] == pytest.approx(GAMMA * LR) and lrs["lora"] == pytest.approx(LR)
    check_learning_rates(opt, prepared)
    before = snapshot(model)
    batch = {k: torch.stack([row[k] for row in dataset()]) for k in ("input_ids", "attention_mask", "labels")}
    accelerator.backward(prepared(**batch).loss)
    opt.step()
    outer, core = base_moves(model, before)
    assert outer == pytest.approx(GAMMA * LR, rel=1e-3) and core == pytest.approx(LR, rel=1e-3)
