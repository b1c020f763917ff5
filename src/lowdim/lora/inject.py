"""Injecting adapters into any PyTorch model, freezing, and optimizer parameter groups."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from torch import nn

from .._validation import check_positive
from .config import AdapterConfig
from .layers import AdapterLayer, adapter_class, linear_shape

__all__ = [
    "ALL_LINEAR",
    "HEAD_NAMES",
    "match_modules",
    "target_names",
    "inject_adapters",
    "freeze_for_adapters",
    "adapter_layers",
    "adapter_parameter_names",
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


#: ``target_modules`` value adapting every linear layer except the output and task heads (PEFT's).
ALL_LINEAR = "all-linear"
#: Task heads of ``transformers`` sequence-classification models (BERT ``classifier``, GPT-2/Llama
#: ``score``): PEFT trains them fully (its ``modules_to_save``) for ``task_type="SEQ_CLS"``.
HEAD_NAMES: tuple[str, ...] = ("classifier", "score")


def _under(name: str, roots: Iterable[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def target_names(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Qualified names of the modules that ``config.target_modules`` selects for adapters.

    ``"all-linear"`` selects every ``nn.Linear``/``Conv1D`` except the output embeddings
    (``model.get_output_embeddings()``), the task heads :data:`HEAD_NAMES` and
    ``config.modules_to_save``, as PEFT does (an adapter layer counts as the linear layer it wraps).
    Modules inside an adapter are never selected.
    """
    if config.target_modules == ALL_LINEAR:
        out = getattr(model, "get_output_embeddings", lambda: None)()
        skip = {n for n, m in model.named_modules() if m is out and out is not None}
        skip.update(match_modules(model, HEAD_NAMES + tuple(config.modules_to_save)))
        names = [
            n for n, m in model.named_modules()
            if n and (linear_shape(m) is not None or isinstance(m, AdapterLayer)) and not _under(n, skip)
        ]
    else:
        names = match_modules(model, config.target_modules)
    return [n for n in names if not _inside_adapter(model, n)]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_adapters(model: nn.Module, config: AdapterConfig) -> list[str]:
    """Replace every targeted linear layer of ``model`` by an adapter wrapper, in place.

    Targets are ``nn.Linear`` and GPT-2's ``Conv1D`` (weight stored transposed) modules selected by
    :func:`target_names`.

    Parameters
    ----------
    model : torch.nn.Module
        Any model (e.g. a Hugging Face ``transformers`` model).
    config : AdapterConfig
        Which adapter (its ``adapter_type`` picks the registered layer class), its rank and the
        target modules.

    Returns
    -------
    list of str
        Names of the adapted modules.

    Raises
    ------
    ValueError
        If the targets match nothing, match a module that is not linear (or is already adapted),
        or the rank is too large for a matched layer.
    """
    names = target_names(model, config)
    if not names:
        raise ValueError(
            f"target_modules {config.target_modules!r} match no module of {type(model).__name__}"
        )
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, AdapterLayer):
            raise ValueError(f"module {name!r} already has an adapter")
        if linear_shape(module) is None:
            raise ValueError(
                f"target {name!r} is a {type(module).__name__}; only torch.nn.Linear and "
                "transformers Conv1D can be adapted (narrow target_modules, e.g. to "
                "'attention.self.query', or use target_modules='all-linear')"
            )
    layer_cls = adapter_class(config)
    layers = {}
    for name in names:  # build every layer first: a refused layer leaves the model unchanged
        try:
            layers[name] = layer_cls.from_config(model.get_submodule(name), config)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    for name, layer in layers.items():
        _set_submodule(model, name, layer)
    return names


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


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of every adapter parameter (each layer's ``adapter_parameters()``)."""
    return [
        f"{layer_name}.{name}" if layer_name else name
        for layer_name, layer in adapter_layers(model)
        for name, _ in layer.adapter_parameters()
    ]


def saved_modules(model: nn.Module, modules_to_save: Iterable[str] | str) -> list[str]:
    """Names of the modules ``modules_to_save`` matches (entries as in :func:`match_modules`).

    Raises ``ValueError`` naming an entry that matches no module of ``model``.
    """
    entries = [modules_to_save] if isinstance(modules_to_save, str) else list(modules_to_save)
    names = []
    for entry in entries:
        found = match_modules(model, entry if isinstance(modules_to_save, str) else (entry,))
        if not found:
            raise ValueError(
                f"modules_to_save entry {entry!r} matches no module of {type(model).__name__}; "
                "remove it from the config"
            )
        names += found
    return names


def freeze_for_adapters(model: nn.Module, modules_to_save: Iterable[str] | str = ()) -> list[str]:
    """Freeze every parameter except the trained adapter parameters and ``modules_to_save``.

    An adapter parameter trains when its layer's ``param_groups`` lists it (Deep LoRA with γ = 0
    keeps its bases frozen). Returns the names of the parameters left trainable. Raises
    ``ValueError`` if a ``modules_to_save`` entry matches nothing.
    """
    keep = saved_modules(model, modules_to_save)
    trained = {
        id(p) for _, layer in adapter_layers(model) for g in layer.param_groups(1.0) for p in g["params"]
    }
    trainable = []
    for name, param in model.named_parameters():
        on = id(param) in trained or _under(name, keep)
        param.requires_grad_(on)
        if on:
            trainable.append(name)
    return trainable


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of parameters with ``requires_grad``."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 0.0,
    head_lr: float | None = None,
) -> list[dict]:
    """Optimizer parameter groups: each adapter layer's own groups, then the head.

    Each adapter layer gives its groups (``param_groups(lr)``); groups of the same name and learning
    rate are joined. Every group is a dict with ``"name"``, ``"params"``, ``"lr"``,
    ``"weight_decay"`` (empty ones omitted; parameters with ``requires_grad=False`` left out):

    ``"lora_outer"``
        Deep LoRA's outer bases ``U``, ``Vᵀ`` at ``γ·lr``, γ from the layer's config (eq. 11;
        γ = 0: the bases are frozen and appear in no group).
    ``"lora"``
        Deep LoRA cores and vanilla LoRA ``lora_A``/``lora_B``, learning rate ``lr``.
    ``"head"``
        Other trainable parameters (``modules_to_save``), learning rate ``head_lr or lr``.
    """
    lr = check_positive("lr", lr, "the learning rate η of the cores (the bases get γ·η)")
    if head_lr is not None:
        head_lr = check_positive("head_lr", head_lr, "or None for lr")
    joined: dict[tuple[str, float], list] = {}
    adapter_ids = set()
    for _, layer in adapter_layers(model):
        adapter_ids.update(id(p) for _, p in layer.adapter_parameters())
        for g in layer.param_groups(lr):
            params = [p for p in g["params"] if p.requires_grad]
            if params:
                joined.setdefault((g["name"], g["lr"]), []).extend(params)
    groups = [
        {"name": name, "params": params, "lr": group_lr, "weight_decay": weight_decay}
        for (name, group_lr), params in joined.items()
    ]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
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
