"""Deep LoRA: compressed deep low-rank adapters for PyTorch / Hugging Face models (seed 003, Sec. 4).

Quick start::

    from lowdim.lora import DeepLoRAConfig, prepare_model, compress_deep_lora, param_groups
    cfg = DeepLoRAConfig(rank=8, modules_to_save=("classifier",))
    prepare_model(model, cfg)                               # inject + freeze
    compress_deep_lora(model, lambda m: loss_on(m, batch))  # one batch's gradient (Sec. 4.1)
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2))   # γ = cfg.gamma on U, V

See ``docs/deep_lora.md``.
"""

from .compression import CompressionReport, compress_deep_lora
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

__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterLayer",
    "BERT_TARGETS",
    "CompressionReport",
    "DeepLoRAConfig",
    "DeepLoRALinear",
    "LoRAConfig",
    "LoRALinear",
    "adapter_class",
    "adapter_layers",
    "compress_deep_lora",
    "export_peft",
    "freeze_for_adapters",
    "inject_adapters",
    "load_adapter",
    "match_modules",
    "numerical_ranks",
    "param_groups",
    "prepare_model",
    "register_adapter",
    "save_adapter",
    "trainable_parameter_names",
]
