"""Deep LoRA: compressed deep low-rank adapters for PyTorch / Hugging Face models (seed 003, Sec. 4).

Quick start (PEFT style)::

    from lowdim.lora import DeepLoRAConfig, DeepLoRATrainer, get_deep_lora_model
    model = get_deep_lora_model(model, DeepLoRAConfig(rank=8))  # inject, freeze, train the head
    model.compress(lambda m: m(**batch).loss)                   # one batch's gradient (Sec. 4.1)
    DeepLoRATrainer(model=model, args=args, train_dataset=ds).train()  # U, V at γ·lr (eq. 11)
    model.save_pretrained("adapter"); plain = model.merge_and_unload()

Or by hand: ``prepare_model``, ``compress_deep_lora``, ``torch.optim.AdamW(param_groups(model, lr))``.
``DeepLoRATrainer`` (and :mod:`lowdim.lora.trainer`) import ``transformers`` on first use.

See ``docs/deep_lora.md``.
"""

from .compression import CompressionReport, compress_deep_lora, widen_deep_lora
from .config import BERT_TARGETS, AdapterConfig, DeepLoRAConfig, LoRAConfig
from .inject import (
    adapter_layers,
    freeze_for_adapters,
    inject_adapters,
    match_modules,
    param_groups,
    prepare_model,
    trainable_parameter_names,
)
from .io import export_peft, load_adapter, numerical_ranks, save_adapter
from .layers import ADAPTERS, AdapterLayer, DeepLoRALinear, LoRALinear, adapter_class, register_adapter
from .model import DeepLoRAModel, get_deep_lora_model


def __getattr__(name: str):
    if name in ("DeepLoRATrainer", "check_learning_rates", "optimizer_cls_and_kwargs"):
        from . import trainer  # imports transformers.Trainer: only when asked for

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterLayer",
    "BERT_TARGETS",
    "CompressionReport",
    "DeepLoRAConfig",
    "DeepLoRALinear",
    "DeepLoRAModel",
    "DeepLoRATrainer",
    "LoRAConfig",
    "LoRALinear",
    "adapter_class",
    "adapter_layers",
    "compress_deep_lora",
    "check_learning_rates",
    "export_peft",
    "get_deep_lora_model",
    "freeze_for_adapters",
    "inject_adapters",
    "load_adapter",
    "match_modules",
    "numerical_ranks",
    "optimizer_cls_and_kwargs",
    "param_groups",
    "prepare_model",
    "register_adapter",
    "save_adapter",
    "trainable_parameter_names",
    "widen_deep_lora",
]
