"""Injecting adapters into any PyTorch model, freezing, and optimizer parameter groups."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from torch import nn

from .config import AdapterConfig, DeepLoRAConfig, LoRAConfig
from .layers import AdapterLayer, DeepLoRALinear, LoRALinear

__all__ = [
    "match_modules",
    "inject_adapters",
    "freeze_for_adapters",
    "adapter_layers",
    "param_groups",
    "prepare_model",
    "trainable_parameter_names",
]


def _matches(name: str, patterns: tuple[str, ...] | str) -> bool:
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def match_modules(model: nn.Module, patterns: tuple[str, ...] | str) -> list[str]:
    """Qualified names of the modules of ``model`` matched by ``patterns``.

    A list/tuple matches a module whose name equals an entry or ends with ``"." + entry`` (the PEFT
    convention); a single string is a regular expression matched against the whole name.
    """
    return [name for name, _ in model.named_modules() if name and _matches(name, patterns)]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_adapters(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Replace every targeted ``nn.Linear`` of ``model`` by an adapter wrapper, in place.

    Parameters
    ----------
    model : torch.nn.Module
        Any model (e.g. a Hugging Face ``transformers`` model).
    config : LoRAConfig or DeepLoRAConfig
        Which adapter, its rank and the target modules.

    Returns
    -------
    list of str
        Names of the adapted modules.

    Raises
    ------
    ValueError
        If the targets match nothing, match a module that is not ``nn.Linear`` (or is already
        adapted), or the rank is too large for a matched layer.
    """
    names = [
        n for n in match_modules(model, config.target_modules)
        if not _inside_adapter(model, n)
    ]
    if not names:
        raise ValueError(
            f"target_modules {config.target_modules!r} match no module of {type(model).__name__}"
        )
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, AdapterLayer):
            raise ValueError(f"module {name!r} already has an adapter")
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"target {name!r} is a {type(module).__name__}; only torch.nn.Linear can be adapted "
                "(narrow target_modules, e.g. to 'attention.self.query')"
            )
    wrapped = []
    for name in names:
        base = model.get_submodule(name)
        try:
            if isinstance(config, DeepLoRAConfig):
                layer: AdapterLayer = DeepLoRALinear(
                    base, rank=config.rank, depth=config.depth, init_scale=config.init_scale,
                    dropout=config.dropout,
                )
            elif isinstance(config, LoRAConfig):
                layer = LoRALinear(base, rank=config.rank, alpha=config.alpha, dropout=config.dropout)
            else:
                raise ValueError(f"unsupported adapter config {type(config).__name__}")
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        _set_submodule(model, name, layer)
        wrapped.append(name)
    return wrapped


def _inside_adapter(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), AdapterLayer):
            return True
    return False


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    """``(name, layer)`` for every adapter layer of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            yield name, module


def freeze_for_adapters(model: nn.Module, modules_to_save: Iterable[str] | str = ()) -> list[str]:
    """Freeze every parameter except adapter parameters (``lora_*``) and ``modules_to_save``.

    Returns the names of the parameters left trainable.  Raises ``ValueError`` if a
    ``modules_to_save`` entry matches nothing.
    """
    patterns = modules_to_save if isinstance(modules_to_save, str) else tuple(modules_to_save)
    keep = match_modules(model, patterns) if patterns else []
    if patterns and not keep:
        raise ValueError(f"modules_to_save {patterns!r} match no module")
    trainable = []
    for name, param in model.named_parameters():
        is_adapter = ".lora_" in name or name.startswith("lora_")
        in_kept = any(name.startswith(k + ".") for k in keep)
        param.requires_grad_(is_adapter or in_kept)
        if is_adapter or in_kept:
            trainable.append(name)
    return trainable


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of parameters with ``requires_grad``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def param_groups(
    model: nn.Module,
    lr: float,
    *,
    gamma: float = 1e-2,
    weight_decay: float = 0.0,
    head_lr: float | None = None,
) -> list[dict]:
    """Optimizer parameter groups with the discrepant ratio γ on Deep LoRA's outer bases (eq. 11).

    Groups (empty ones omitted), each a dict with ``"name"``, ``"params"``, ``"lr"``,
    ``"weight_decay"``:

    ``"lora_outer"``
        ``lora_left``/``lora_right`` of Deep LoRA layers, learning rate ``gamma * lr``
        (``gamma = 0`` freezes them: they are then left out and set ``requires_grad=False``).
    ``"lora"``
        Deep LoRA cores and vanilla LoRA ``lora_A``/``lora_B``, learning rate ``lr``.
    ``"head"``
        Other trainable parameters (``modules_to_save``), learning rate ``head_lr or lr``.
    """
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr!r}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    outer, inner, head = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("lora_left", "lora_right"):
            if gamma == 0:
                param.requires_grad_(False)
            else:
                outer.append(param)
        elif ".lora_" in name or name.startswith("lora_"):
            inner.append(param)
        else:
            head.append(param)
    groups = []
    if outer:
        groups.append({"name": "lora_outer", "params": outer, "lr": gamma * lr, "weight_decay": weight_decay})
    if inner:
        groups.append({"name": "lora", "params": inner, "lr": lr, "weight_decay": weight_decay})
    if head:
        groups.append({"name": "head", "params": head, "lr": head_lr or lr, "weight_decay": weight_decay})
    if not groups:
        raise ValueError("model has no trainable parameters; inject adapters first")
    return groups


def prepare_model(model: nn.Module, config: AdapterConfig) -> list[str]:
    """:func:`inject_adapters` then :func:`freeze_for_adapters` with ``config.modules_to_save``."""
    names = inject_adapters(model, config)
    freeze_for_adapters(model, config.modules_to_save)
    return names
