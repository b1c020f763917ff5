"""Saving, loading and exporting adapters (safetensors + JSON, no pickle).

``save_adapter`` / ``load_adapter``
    lowdim's own format: ``adapter_config.json`` (the adapter config and the adapted layers with
    their ``metadata()``) and ``adapter_model.safetensors`` (every adapter parameter — each layer's
    ``adapter_parameters()`` — and the ``modules_to_save`` parameters, keyed by their names in the
    model).
``export_peft``
    An ordinary rank-r LoRA adapter folder that ``peft.PeftModel.from_pretrained`` loads:
    ``ΔW = U·(W̃_L···W̃_1)·Vᵀ`` is written as ``lora_B = U·W̃_{L:1}`` and ``lora_A = Vᵀ`` with
    ``lora_alpha = r`` (scaling 1).  With ``truncate=True`` each ΔW is stored at its numerical rank
    (seed 003, Fig. 7 definition) through PEFT's ``rank_pattern``/``alpha_pattern``; layers whose
    update is numerically zero are left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write_bytes
from ..dynamics import rank_from_singular_values
from ..linalg import factored_svd
from .config import AdapterConfig
from .inject import (
    adapter_layers,
    adapter_parameter_names,
    freeze_for_adapters,
    inject_adapters,
    match_modules,
)
from .layers import AdapterLayer

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "adapter_state_dict",
    "save_adapter",
    "load_adapter",
    "export_peft",
    "numerical_ranks",
    "low_rank_factors",
]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "lowdim-adapter/2"  # /2: Deep LoRA factors as lora_factors.factors.{i}


def adapter_state_dict(model: nn.Module, config: AdapterConfig) -> dict[str, torch.Tensor]:
    """Adapter parameters and ``config.modules_to_save`` parameters of ``model``, by name."""
    keep = match_modules(model, config.modules_to_save) if config.modules_to_save else []
    adapter = set(adapter_parameter_names(model))
    out = {}
    for name, param in model.named_parameters():
        if name in adapter or any(name.startswith(k + ".") for k in keep):
            out[name] = param.detach()
    return out


def save_adapter(model: nn.Module, path: str | Path, config: AdapterConfig) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into the folder ``path``.

    Raises ``ValueError`` if the model has no adapters or an adapter is merged.
    """
    from safetensors.torch import save as st_save

    layers = dict(adapter_layers(model))
    if not layers:
        raise ValueError("model has no adapter layers to save")
    merged = [n for n, layer in layers.items() if layer.merged]
    if merged:
        raise ValueError(f"unmerge adapters before saving (merged: {merged[:3]}...)")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "config": config.to_dict(),
        "layers": {
            n: {
                "type": type(layer).__name__,
                "in_features": layer.in_features,
                "out_features": layer.out_features,
                **layer.metadata(),
            }
            for n, layer in layers.items()
        },
    }
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model, config).items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, st_save(tensors, metadata={"format": FORMAT}))
    atomic_write_bytes(folder / CONFIG_NAME, json.dumps(meta, indent=2, ensure_ascii=False).encode())
    return folder


def load_adapter(model: nn.Module, path: str | Path, *, freeze: bool = True) -> AdapterConfig:
    """Inject the adapters saved in ``path`` into ``model`` (a fresh base model) and load them.

    Raises
    ------
    FileNotFoundError
        If the folder lacks ``adapter_config.json`` or ``adapter_model.safetensors``.
    ValueError
        If the model's layers differ from the saved ones (names or shapes) or a tensor is missing.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing")
    meta = json.loads((folder / CONFIG_NAME).read_text())
    if str(meta.get("format", "")).startswith("lowdim-adapter/") and meta["format"] != FORMAT:
        raise ValueError(
            f"{folder / CONFIG_NAME} was written by another lowdim version (format "
            f"{meta['format']!r}; this one reads {FORMAT!r})"
        )
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{folder / CONFIG_NAME} is not a lowdim adapter (format {meta.get('format')!r}); "
            "PEFT folders load with peft.PeftModel.from_pretrained"
        )
    config = AdapterConfig.from_dict(meta["config"])
    saved_layers = meta["layers"]
    for name, info in saved_layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"saved adapter layer {name!r} does not exist in this model") from None
        shape = (getattr(module, "out_features", None), getattr(module, "in_features", None))
        if shape != (info["out_features"], info["in_features"]):
            raise ValueError(
                f"layer {name!r} has shape {shape} (out, in) but the adapter was saved for "
                f"({info['out_features']}, {info['in_features']})"
            )
    names = inject_adapters(model, config)
    if sorted(names) != sorted(saved_layers):
        raise ValueError(
            f"target modules match {len(names)} layers here but the adapter holds {len(saved_layers)}"
        )
    tensors = load_file(str(folder / WEIGHTS_NAME))
    params = dict(model.named_parameters())
    missing = [k for k in adapter_state_dict(model, config) if k not in tensors]
    if missing:
        raise ValueError(f"adapter file lacks tensors: {missing[:5]}")
    with torch.no_grad():
        for key, value in tensors.items():
            if key not in params:
                raise ValueError(f"adapter tensor {key!r} has no matching parameter in the model")
            if tuple(params[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"adapter tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(params[key].shape)}"
                )
            params[key].copy_(value.to(params[key].dtype))
    for name, layer in adapter_layers(model):
        layer.load_metadata(saved_layers[name])
    if freeze:
        freeze_for_adapters(model, config.modules_to_save)
    return config


def low_rank_factors(
    layer: AdapterLayer, truncate: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` with ``ΔW = B @ A`` for ``layer``: rank r, or its numerical rank if ``truncate``."""
    left, core, right = (t.detach() for t in layer.factors())
    if not truncate:
        return left @ core, right
    u, s, vt = factored_svd(left, core, right)
    k = rank_from_singular_values(s, (layer.out_features, layer.in_features), left.dtype)
    return (u[:, :k] * s[:k]).to(left.dtype), vt[:k].to(left.dtype)


def numerical_ranks(model: nn.Module) -> dict[str, int]:
    """Numerical rank of every adapter's ΔW (seed 003, Fig. 7), keyed by layer name."""
    return {name: layer.numerical_rank() for name, layer in adapter_layers(model)}


def export_peft(
    model: nn.Module,
    path: str | Path,
    config: AdapterConfig,
    *,
    base_model_name_or_path: str | None = None,
    truncate: bool = False,
) -> Path:
    """Write a PEFT LoRA adapter folder equivalent to the model's adapters (see module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Model with (Deep) LoRA layers, unmerged.
    path : str or Path
        Output folder.
    config : AdapterConfig
        The adapter config (its ``modules_to_save`` are exported as PEFT ``modules_to_save``).
    base_model_name_or_path : str, optional
        Recorded in ``adapter_config.json``.
    truncate : bool
        Store each ΔW at its numerical rank.
    """
    from safetensors.torch import save as st_save

    layers = dict(adapter_layers(model))
    if not layers:
        raise ValueError("model has no adapter layers to export")
    if any(layer.merged for layer in layers.values()):
        raise ValueError("unmerge adapters before exporting")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for name, layer in layers.items():
        b, a = low_rank_factors(layer, truncate)
        if b.shape[1] == 0:
            continue  # numerically zero update: leave the layer out
        ranks[name] = b.shape[1]
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.contiguous().cpu()
    if not ranks:
        raise ValueError("every adapter update is numerically zero; nothing to export")
    keep = match_modules(model, config.modules_to_save) if config.modules_to_save else []
    for name, param in model.named_parameters():
        if any(name.startswith(k + ".") for k in keep):
            tensors[f"base_model.model.{name}"] = param.detach().contiguous().cpu()
    r = max(ranks.values())
    pattern = {n: k for n, k in ranks.items() if k != r}
    peft_config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
        "modules_to_save": list(config.modules_to_save) or None,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_NAME, st_save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / CONFIG_NAME, json.dumps(peft_config, indent=2).encode())
    return folder
