"""Deep LoRA's discrepant learning rates under ``transformers.Trainer`` and ``accelerate`` (seed 003, Sec. 3).

Deep LoRA trains its outer bases ``U``, ``V`` at ``γ·η`` and its cores at ``η`` (eq. 11; γ = 1e-2,
App. B). An optimizer built from ``model.parameters()`` — ``transformers.Trainer``'s default —
trains every factor at ``η`` and silently loses γ. Three ways keep it:

``DeepLoRATrainer``
    a ``transformers.Trainer`` whose default optimizer (``args.optim``, ``args.learning_rate``,
    ``args.weight_decay``, the scheduler) is built from :func:`lowdim.lora.param_groups`; it checks
    the optimizer with :func:`check_learning_rates` and saves adapters (``save_model``, checkpoints)
    with :meth:`DeepLoRAModel.save_pretrained`, once, from the main process.
``optimizer_cls_and_kwargs(model, args)``
    for a plain ``Trainer(..., optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, args))``.
``param_groups``
    for your own loop, ``accelerate`` included: ``accelerator.prepare(model, AdamW(param_groups(...)))``
    keeps the groups and their learning rates.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .inject import adapter_layers, param_groups

__all__ = ["DeepLoRATrainer", "check_learning_rates", "optimizer_cls_and_kwargs"]


def _split_decay(groups: list[dict]) -> list[dict]:
    """``transformers``' habit: no weight decay on biases and norm weights (1-D parameters)."""
    out = []
    for g in groups:
        flat = [p for p in g["params"] if p.ndim < 2]
        if not flat or not g.get("weight_decay"):
            out.append(g)
            continue
        rest = [p for p in g["params"] if p.ndim >= 2]
        out += [{**g, "params": rest}] if rest else []
        out.append({**g, "name": g["name"] + "_no_decay", "params": flat, "weight_decay": 0.0})
    return out


def optimizer_cls_and_kwargs(
    model: nn.Module, args=None, *, lr: float | None = None, head_lr: float | None = None
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """``(optimizer class, kwargs)`` for ``transformers.Trainer(optimizer_cls_and_kwargs=...)``, γ kept.

    The class and its settings come from ``args`` (``transformers.TrainingArguments``: ``optim``,
    betas, ε) as ``Trainer`` would choose them (AdamW when ``args`` is None); ``kwargs["params"]``
    holds :func:`lowdim.lora.param_groups` at ``lr`` (default ``args.learning_rate``) with
    ``args.weight_decay`` (not on biases and norms), so the outer bases train at ``γ·lr`` (eq. 11).

    Raises
    ------
    ValueError
        If neither ``args`` nor ``lr`` is given.
    """
    if args is None:
        if lr is None:
            raise ValueError("give args (TrainingArguments) or lr")
        cls, kwargs, weight_decay = torch.optim.AdamW, {"lr": lr}, 0.0
    else:
        from transformers import Trainer

        cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        lr, weight_decay = lr or args.learning_rate, args.weight_decay
    groups = param_groups(model, lr, weight_decay=weight_decay, head_lr=head_lr)
    return cls, {**kwargs, "lr": lr, "params": _split_decay(groups)}


def check_learning_rates(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Check that ``optimizer`` trains every adapter parameter at its layer's relative rate.

    For each adapter layer, the learning rate of every parameter in ``layer.param_groups(1.0)``
    divided by its relative rate (γ for Deep LoRA's bases, 1 for the cores) must be the same.

    Raises
    ------
    ValueError
        Naming the layer, when the optimizer lost the ratio (e.g. built from
        ``model.parameters()``): build it from :func:`lowdim.lora.param_groups` or use
        :class:`DeepLoRATrainer`.
    """
    # a scheduler scales every group's lr alike; "initial_lr" is the rate it started from
    lr_of = {id(p): g.get("initial_lr", g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    for name, layer in adapter_layers(model):
        scaled = {
            lr_of[id(p)] / g["lr"]
            for g in layer.param_groups(1.0) if g["lr"] > 0
            for p in g["params"] if p.requires_grad and id(p) in lr_of
        }
        if len(scaled) > 1 and max(scaled) > min(scaled) * (1 + 1e-9):
            raise ValueError(
                f"the optimizer trains adapter layer {name!r} at learning rates that do not keep its "
                f"ratios (γ = {getattr(layer, 'gamma', None)}; seed 003 eq. 11); build it from "
                "lowdim.lora.param_groups(model, lr) or train with lowdim.lora.DeepLoRATrainer"
            )


def _trainer_base():
    from transformers import Trainer

    return Trainer


class DeepLoRATrainer(_trainer_base()):
    """``transformers.Trainer`` that keeps Deep LoRA's discrepant learning rates (seed 003, eq. 11).

    Use it exactly like ``Trainer``; ``head_lr`` (keyword) sets the learning rate of the
    ``modules_to_save`` (default ``args.learning_rate``). Its default optimizer is
    :func:`optimizer_cls_and_kwargs` (``args.optim`` honoured), so the outer bases train at
    ``γ·args.learning_rate``; any optimizer it ends up with is checked by
    :func:`check_learning_rates`. With a :class:`~lowdim.lora.DeepLoRAModel`, ``save_model`` and
    checkpoints write the adapter (lowdim's format) from the main process only, and
    ``resume_from_checkpoint`` reads it back.
    """

    def __init__(self, *args, head_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.head_lr = head_lr

    def create_optimizer(self, model=None):
        if self.optimizer is None and getattr(self, "optimizer_cls_and_kwargs", None) is None:
            cls, kwargs = optimizer_cls_and_kwargs(model or self.model, self.args, head_lr=self.head_lr)
            self.optimizer = cls(kwargs.pop("params"), **kwargs)
        optimizer = super().create_optimizer(model)
        check_learning_rates(optimizer, model or self.model)
        return optimizer

    def _adapter_model(self):
        from .model import DeepLoRAModel

        model = self.accelerator.unwrap_model(self.model)
        return model if isinstance(model, DeepLoRAModel) else None

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self._adapter_model()
        if model is None:
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        model.save_pretrained(output_dir, is_main_process=self.args.should_save)
        processor = getattr(self, "processing_class", None)  # "tokenizer" before transformers 4.46
        if self.args.should_save and processor is not None:
            processor.save_pretrained(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        adapter = self._adapter_model()
        if adapter is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        adapter.load_adapter_weights(resume_from_checkpoint)
