"""Saving, loading and exporting adapters (safetensors + JSON, no pickle).

``save_adapter`` / ``load_adapter``
    lowdim's own format, under lowdim's own file names: ``lowdim_adapter_config.json`` (the
    adapter config and the adapted layers with their ``metadata()``) and
    ``lowdim_adapter_model.safetensors`` (every adapter parameter — each layer's
    ``adapter_parameters()`` — and the ``modules_to_save`` parameters, keyed by their names in the
    model). The config is checked against the model when saving and against the model and the
    tensors when loading; loading is all-or-nothing (on any error the model is left as it was) and
    refuses non-finite tensors. Errors name the file.
``export_peft``
    An ordinary rank-r LoRA adapter folder under PEFT's names (``adapter_config.json``,
    ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained`` loads:
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
    _set_submodule,
    _under,
    adapter_layers,
    adapter_parameter_names,
    freeze_for_adapters,
    saved_modules,
    target_names,
)
from .layers import AdapterLayer, adapter_class

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PEFT_CONFIG_NAME",
    "PEFT_WEIGHTS_NAME",
    "adapter_state_dict",
    "check_config",
    "save_adapter",
    "load_adapter",
    "load_adapter_weights",
    "read_adapter",
    "export_peft",
    "numerical_ranks",
    "low_rank_factors",
]

CONFIG_NAME = "lowdim_adapter_config.json"
WEIGHTS_NAME = "lowdim_adapter_model.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"  # only for folders PEFT loads (export_peft)
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "lowdim-adapter/3"  # /3: lowdim's own file names (/2 used PEFT's)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a :class:`~lowdim.lora.DeepLoRAModel` (names in files are relative to it)."""
    from .model import DeepLoRAModel

    return model.base_model if isinstance(model, DeepLoRAModel) else model


def _layers_for(
    model: nn.Module, action: str, *, unmerged: bool = False
) -> tuple[nn.Module, dict[str, AdapterLayer]]:
    """``(model, its adapter layers by name)``, the model unwrapped; ``ValueError`` if there are none
    (or, with ``unmerged``, if one is merged)."""
    model = _unwrap(model)
    layers = dict(adapter_layers(model))
    if not layers:
        raise ValueError(f"model has no adapter layers to {action}; inject adapters first")
    merged = [n for n, layer in layers.items() if layer.merged] if unmerged else []
    if merged:
        raise ValueError(f"unmerge adapters before you {action} them (merged: {merged[:3]})")
    return model, layers


def adapter_state_dict(model: nn.Module, config: AdapterConfig) -> dict[str, torch.Tensor]:
    """Adapter parameters and ``config.modules_to_save`` parameters of ``model``, by name."""
    keep = saved_modules(model, config.modules_to_save)
    adapter = set(adapter_parameter_names(model))
    return {
        name: param.detach()
        for name, param in model.named_parameters()
        if name in adapter or _under(name, keep)
    }


def check_config(model: nn.Module, config: AdapterConfig) -> dict[str, AdapterLayer]:
    """Check that ``config`` describes the adapters of ``model``; return its adapter layers.

    Every adapter layer must be of the config's kind with its rank (and depth, γ for Deep LoRA or
    α for LoRA), ``config.target_modules`` must select exactly the adapted layers, every
    ``modules_to_save`` entry must match a module and every trainable parameter outside the
    adapters must lie in ``modules_to_save`` (else it would not be saved).

    Raises
    ------
    ValueError
        Naming the first difference and the argument to change.
    """
    model, layers = _layers_for(model, "describe")
    for name, layer in layers.items():
        diff = layer.config_mismatch(config)
        if diff:
            raise ValueError(
                f"config does not describe adapter layer {name!r}: {', '.join(diff)}; pass the config "
                "the model was prepared with"
            )
    selected = set(target_names(model, config))
    if selected != set(layers):
        extra, lacking = sorted(selected - set(layers)), sorted(set(layers) - selected)
        raise ValueError(
            f"config target_modules {config.target_modules!r} do not select the adapted layers "
            f"(selected but not adapted: {extra[:3]}; adapted but not selected: {lacking[:3]})"
        )
    heads = saved_modules(model, config.modules_to_save)
    adapter = set(adapter_parameter_names(model))
    unsaved = [
        n for n, p in model.named_parameters()
        if p.requires_grad and n not in adapter and not _under(n, heads)
    ]
    if unsaved:
        raise ValueError(
            f"parameters {unsaved[:3]} train but are outside the config's modules_to_save "
            f"{config.modules_to_save!r}, so they would not be saved; add their module to "
            "modules_to_save (or freeze them)"
        )
    return layers


def _check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{where}: tensor {key!r} has non-finite values (NaN or inf)")


def save_adapter(model: nn.Module, path: str | Path, config: AdapterConfig) -> Path:
    """Write ``lowdim_adapter_config.json`` and ``lowdim_adapter_model.safetensors`` into ``path``.

    Raises
    ------
    ValueError
        If ``config`` does not describe the model's adapters (:func:`check_config`), an adapter is
        merged, or a tensor is not finite.
    """
    from safetensors.torch import save as st_save

    model, layers = _layers_for(model, "save", unmerged=True)
    check_config(model, config)
    folder = Path(path)
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model, config).items()}
    _check_finite(tensors, f"cannot save {folder / WEIGHTS_NAME}")
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
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / WEIGHTS_NAME, st_save(tensors, metadata={"format": FORMAT}))
    atomic_write_bytes(folder / CONFIG_NAME, json.dumps(meta, indent=2, ensure_ascii=False).encode())
    return folder


def read_adapter(path: str | Path) -> tuple[dict[str, Any], AdapterConfig, dict[str, torch.Tensor]]:
    """``(metadata, config, tensors)`` of a saved adapter folder, checked for readability.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for a PEFT or
    older folder, unreadable JSON or safetensors, an invalid config or non-finite tensors.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file() and (folder / PEFT_CONFIG_NAME).is_file():
        raise ValueError(
            f"{folder} holds {PEFT_CONFIG_NAME} but no {CONFIG_NAME}: a PEFT adapter (load it with "
            "peft.PeftModel.from_pretrained) or one saved by lowdim < format /3 (rename its files "
            f"to {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r} is not {FORMAT!r}")
        config = AdapterConfig.from_dict(meta["config"])
        layers = meta["layers"]
        if not isinstance(layers, dict) or not layers:
            raise ValueError("'layers' is empty")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{config_file} is not a valid lowdim adapter config: {exc}") from None
    try:
        tensors = load_file(str(weights_file))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{weights_file} is not a readable safetensors file: {exc}") from None
    _check_finite(tensors, str(weights_file))
    return meta, config, tensors


def _stage_layers(
    model: nn.Module, config: AdapterConfig, saved: dict, where: Path
) -> dict[str, AdapterLayer]:
    """New adapter layers around the targeted modules of ``model`` (the model is not changed)."""
    if any(True for _ in adapter_layers(model)):
        raise ValueError(
            f"cannot load {where} into a model that already has adapters; use a fresh base model"
        )
    names = target_names(model, config)
    if sorted(names) != sorted(saved):
        raise ValueError(
            f"{where}: its target_modules select {len(names)} layers of {type(model).__name__} but "
            f"it holds {len(saved)} (e.g. {sorted(set(saved) ^ set(names))[:3]}): saved for another model?"
        )
    layer_cls, staged = adapter_class(config), {}
    for name in names:
        base, info = model.get_submodule(name), saved[name]
        try:
            layer = layer_cls.from_config(base, config)
        except ValueError as exc:
            raise ValueError(f"{where}: layer {name!r}: {exc}") from None
        if (layer.out_features, layer.in_features) != (info["out_features"], info["in_features"]):
            raise ValueError(
                f"{where}: layer {name!r} has shape {(layer.out_features, layer.in_features)} "
                f"(out, in) but the adapter was saved for ({info['out_features']}, {info['in_features']})"
            )
        staged[name] = layer
    return staged


def _targets_of(model: nn.Module, config: AdapterConfig, staged: dict[str, AdapterLayer]) -> dict:
    """Every tensor the adapter must hold: staged adapter parameters and ``modules_to_save`` ones."""
    out = {f"{n}.{p}": param for n, layer in staged.items() for p, param in layer.adapter_parameters()}
    keep = saved_modules(model, config.modules_to_save)
    out.update({n: p for n, p in model.named_parameters() if _under(n, keep)})
    return out


def _copy_checked(targets: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Copy ``tensors`` into ``targets`` after checking that the keys and shapes agree exactly."""
    missing, extra = sorted(set(targets) - set(tensors)), sorted(set(tensors) - set(targets))
    if missing or extra:
        raise ValueError(
            f"{where} does not fit its config and this model: missing tensors {missing[:3]}, "
            f"unexpected tensors {extra[:3]} (were target_modules or modules_to_save changed?)"
        )
    for key, param in targets.items():
        if tuple(param.shape) != tuple(tensors[key].shape):
            raise ValueError(
                f"{where}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the model expects "
                f"{tuple(param.shape)}"
            )
    with torch.no_grad():  # nothing below can fail: the targets change only now
        for key, param in targets.items():
            param.copy_(tensors[key].to(param.dtype))


def load_adapter_weights(model: nn.Module, path: str | Path) -> AdapterConfig:
    """Copy the tensors saved in ``path`` into the adapters ``model`` already has (e.g. a resume).

    The saved config must describe the model's adapters (:func:`check_config`); all checks run
    before any parameter changes. Returns the saved config.
    """
    model = _unwrap(model)
    meta, config, tensors = read_adapter(path)
    try:
        check_config(model, config)
    except ValueError as exc:
        raise ValueError(f"{Path(path) / CONFIG_NAME}: {exc}") from None
    _copy_checked(adapter_state_dict(model, config), tensors, Path(path) / WEIGHTS_NAME)
    for name, layer in adapter_layers(model):
        layer.load_metadata(meta["layers"][name])
    return config


def load_adapter(
    model: nn.Module, path: str | Path, *, freeze: bool = True, saved: tuple | None = None
) -> AdapterConfig:
    """Inject the adapters saved in ``path`` into ``model`` (a fresh base model) and load them.

    All-or-nothing: every check runs before the model is touched, so on an error the model is left
    exactly as it was (no adapter injected, no parameter changed, ``requires_grad`` unchanged).

    Parameters
    ----------
    model : torch.nn.Module
        The base model the adapter was trained on (without adapters).
    path : str or Path
        Folder written by :func:`save_adapter`.
    freeze : bool, default=True
        Freeze everything but the adapter and ``modules_to_save`` parameters afterwards.
    saved : tuple, optional
        ``read_adapter(path)`` when the caller has already read the folder (it is not read again).

    Returns
    -------
    AdapterConfig
        The saved config.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        Naming the file, if it cannot be read, holds non-finite tensors, or does not fit the model
        (layer names or shapes, missing, extra or misshapen tensors, unmatched ``modules_to_save``).
    """
    weights_file = Path(path) / WEIGHTS_NAME
    meta, config, tensors = saved if saved is not None else read_adapter(path)
    staged = _stage_layers(model, config, meta["layers"], Path(path) / CONFIG_NAME)
    try:
        targets = _targets_of(model, config, staged)
    except ValueError as exc:
        raise ValueError(f"{Path(path) / CONFIG_NAME}: {exc}") from None
    _copy_checked(targets, tensors, weights_file)
    for name, layer in staged.items():
        layer.load_metadata(meta["layers"][name])
        _set_submodule(model, name, layer)
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
    model = _unwrap(model)
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

    model, layers = _layers_for(model, "export", unmerged=True)
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
    keep = saved_modules(model, config.modules_to_save)
    for name, param in model.named_parameters():
        if _under(name, keep):
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
        "fan_in_fan_out": any(layer.fan_in_fan_out for layer in layers.values()),
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / PEFT_WEIGHTS_NAME, st_save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(folder / PEFT_CONFIG_NAME, json.dumps(peft_config, indent=2).encode())
    return folder
