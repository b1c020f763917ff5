"""A PEFT-style wrapper around a model with (Deep) LoRA adapters (seed 003, Sec. 4).

``get_deep_lora_model(model, config)`` injects the adapters, freezes the rest, trains the task head
of a sequence-classification model by default (as PEFT's ``task_type="SEQ_CLS"``) and returns a
:class:`DeepLoRAModel` that behaves like the wrapped model (same ``forward`` signature, attribute
access falls through to it) and adds PEFT's everyday methods: ``print_trainable_parameters``,
``save_pretrained`` / ``from_pretrained`` (lowdim's adapter format, config validated against the
model), ``merge_and_unload`` / ``unload`` (a plain model again), ``disable_adapter()`` and
``compress`` (Deep LoRA's one-batch compression, Sec. 4.1).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .compression import CompressionReport, compress_deep_lora
from .config import AdapterConfig
from .inject import (
    HEAD_NAMES,
    _set_submodule,
    _under,
    adapter_layers,
    freeze_for_adapters,
    match_modules,
    prepare_model,
    saved_modules,
)
from .io import check_config, load_adapter, load_adapter_weights, read_adapter, save_adapter

__all__ = ["DeepLoRAModel", "get_deep_lora_model", "with_task_heads"]


def with_task_heads(model: nn.Module, config: AdapterConfig) -> AdapterConfig:
    """``config`` with the task heads of a sequence-classification model added to ``modules_to_save``.

    For a ``transformers`` ``*ForSequenceClassification`` model the new head (``classifier`` or
    ``score``, :data:`lowdim.lora.inject.HEAD_NAMES`) starts random and must train, as PEFT does for
    ``task_type="SEQ_CLS"``; other models get ``config`` unchanged.
    """
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return config
    heads = [h for h in HEAD_NAMES if h not in config.modules_to_save and match_modules(model, (h,))]
    if not heads:
        return config
    return dataclasses.replace(config, modules_to_save=tuple(config.modules_to_save) + tuple(heads))


class DeepLoRAModel(nn.Module):
    """A model with adapters, used like the model itself and like a ``peft.PeftModel``.

    Build one with :func:`get_deep_lora_model` or :meth:`from_pretrained`. ``base_model`` is the
    wrapped model (with the active adapter's layers), ``peft_config`` maps adapter names to configs
    and ``active_adapter`` names the one in use. Several named adapters (:meth:`add_adapter`,
    :meth:`load_adapter`) share the base model, as in PEFT; :meth:`set_adapter` swaps their layers
    and their own copies of the ``modules_to_save`` in (build the optimizer after switching).
    """

    def __init__(
        self, model: nn.Module, config: AdapterConfig, heads: dict[str, torch.Tensor],
        adapter_name: str = "default",
    ):
        super().__init__()
        self.base_model = model
        self.peft_config = {adapter_name: config}
        self.active_adapter = adapter_name
        self._original_heads = heads  # modules_to_save as they were before training (disable_adapter)
        self._inactive: dict[str, tuple[dict[str, nn.Module], dict[str, torch.Tensor]]] = {}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    @property
    def adapter_config(self) -> AdapterConfig:
        """The active adapter's config (``peft_config[active_adapter]``)."""
        return self.peft_config[self.active_adapter]

    def get_base_model(self) -> nn.Module:
        """The wrapped model (with its adapter layers in place)."""
        return self.base_model

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    # ------------------------------------------------------------------ inspection
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` numbers of parameters (adapters and heads included in the total)."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: … || all params: … || trainable%: …`` (PEFT's line)."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    # ------------------------------------------------------------------ training
    def compress(self, loss_fn: Callable[[nn.Module], torch.Tensor], **kwargs) -> CompressionReport:
        """:func:`lowdim.lora.compress_deep_lora` on the wrapped model with this config (Sec. 4.1)."""
        return compress_deep_lora(self.base_model, loss_fn, config=self.adapter_config, **kwargs)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | Path, *, is_main_process: bool = True) -> Path:
        """Save every adapter and its config (:func:`lowdim.lora.io.save_adapter`).

        ``"default"`` goes into ``save_directory``, any other adapter into
        ``save_directory/<name>`` (PEFT's layout). Only the main process writes
        (``is_main_process=False`` returns without writing).
        """
        folder = Path(save_directory)
        if not is_main_process:
            return folder
        active = self.active_adapter
        with _same_requires_grad(self.base_model):
            try:
                for name in self.peft_config:
                    self.set_adapter(name)
                    save_adapter(self.base_model, folder if name == "default" else folder / name,
                                 self.adapter_config)
            finally:
                self.set_adapter(active)
        return folder

    @classmethod
    def from_pretrained(
        cls, model: nn.Module, path: str | Path, adapter_name: str = "default", *,
        is_trainable: bool = False,
    ) -> DeepLoRAModel:
        """Load the adapter saved in ``path`` into ``model`` (a fresh base model) and wrap it.

        Loading is all-or-nothing (:func:`lowdim.lora.io.load_adapter`). With
        ``is_trainable=False`` (PEFT's default) every parameter is frozen, for inference.
        """
        saved = read_adapter(path)
        heads = _snapshot(model, saved[1].modules_to_save)
        config = load_adapter(model, path, freeze=True, saved=saved)
        if not is_trainable:
            model.requires_grad_(False)
        return _wrapper_class(type(model))(model, config, heads, adapter_name)

    # ------------------------------------------------------------------ named adapters
    def _stash_active(self) -> None:
        """Take the active adapter's layers out (original modules back), keep them and its heads."""
        self._check_unmerged()
        layers = dict(adapter_layers(self.base_model))
        for name, layer in layers.items():
            _set_submodule(self.base_model, name, layer.base)
        heads = _snapshot(self.base_model, self.adapter_config.modules_to_save)
        _restore(self.base_model, {k: v for k, v in self._original_heads.items() if k in heads})
        self._inactive[self.active_adapter] = (layers, heads)

    def _activate(self, adapter_name: str) -> None:
        layers, heads = self._inactive.pop(adapter_name)
        for name, layer in layers.items():
            _set_submodule(self.base_model, name, layer.to(device=layer.base.weight.device))
        _restore(self.base_model, heads)
        self.active_adapter = adapter_name
        freeze_for_adapters(self.base_model, self.adapter_config.modules_to_save)

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the active (and trainable, as in PEFT) adapter."""
        if adapter_name not in self.peft_config:
            raise ValueError(
                f"adapter_name {adapter_name!r} is unknown; adapters: {sorted(self.peft_config)}"
            )
        if adapter_name != self.active_adapter:
            self._stash_active()
            self._activate(adapter_name)

    def _add(self, adapter_name: str, build: Callable[[], AdapterConfig]) -> AdapterConfig:
        """Run ``build()`` (inject one adapter into the bare model) and register it, inactive."""
        if adapter_name in self.peft_config:
            raise ValueError(f"adapter_name {adapter_name!r} exists already; pick another name")
        active = self.active_adapter
        with _same_requires_grad(self.base_model):  # the active adapter stays frozen or trainable
            self._stash_active()
            try:
                config = build()
                self.peft_config[adapter_name], self.active_adapter = config, adapter_name
                self._stash_active()
            finally:
                self._activate(active)
        return config

    def add_adapter(self, adapter_name: str, config: AdapterConfig) -> None:
        """Add a new adapter (``config``, task heads added as in :func:`get_deep_lora_model`), inactive."""
        config = with_task_heads(self.base_model, config)
        saved_modules(self.base_model, config.modules_to_save)

        def build() -> AdapterConfig:
            fresh = _snapshot(self.base_model, config.modules_to_save)
            self._original_heads = {**fresh, **self._original_heads}
            prepare_model(self.base_model, config)
            return config

        self._add(adapter_name, build)

    def load_adapter(self, path: str | Path, adapter_name: str, *, is_trainable: bool = False) -> None:
        """Load a saved adapter as ``adapter_name`` (inactive; all-or-nothing, as :meth:`from_pretrained`)."""

        def build() -> AdapterConfig:
            saved = read_adapter(path)
            fresh = _snapshot(self.base_model, saved[1].modules_to_save)
            config = load_adapter(self.base_model, path, saved=saved)
            self._original_heads = {**fresh, **self._original_heads}
            return config

        self._add(adapter_name, build)
        if not is_trainable:
            for layer in self._inactive[adapter_name][0].values():
                layer.requires_grad_(False)

    def delete_adapter(self, adapter_name: str) -> None:
        """Forget an inactive adapter."""
        if adapter_name == self.active_adapter or adapter_name not in self.peft_config:
            raise ValueError(f"adapter_name {adapter_name!r} must be an inactive adapter, one of "
                             f"{sorted(set(self.peft_config) - {self.active_adapter})}")
        del self.peft_config[adapter_name], self._inactive[adapter_name]

    def load_adapter_weights(self, path: str | Path) -> AdapterConfig:
        """Copy a saved adapter's tensors into this model's adapters (same config; e.g. resuming)."""
        return load_adapter_weights(self.base_model, path)

    # ------------------------------------------------------------------ merging
    def _check_unmerged(self) -> None:
        if any(layer.merged for _, layer in adapter_layers(self.base_model)):
            raise ValueError("some adapters are merged; call unmerge_adapter() first")

    def merge_adapter(self) -> None:
        """Add every ``ΔW`` into its frozen weight (undo with :meth:`unmerge_adapter`)."""
        self._check_unmerged()
        for _, layer in adapter_layers(self.base_model):
            layer.merge()

    def unmerge_adapter(self) -> None:
        """Subtract every merged ``ΔW`` again."""
        for _, layer in adapter_layers(self.base_model):
            if layer.merged:
                layer.unmerge()

    def _unload(self, merge: bool) -> nn.Module:
        for name, layer in list(adapter_layers(self.base_model)):
            if merge and not layer.merged:
                layer.merge()
            elif not merge and layer.merged:
                layer.unmerge()
            _set_submodule(self.base_model, name, layer.base)
        return self.base_model

    def merge_and_unload(self) -> nn.Module:
        """Merge every adapter into its weight and return the plain wrapped model.

        The result has the original module types and parameter names (its ``save_pretrained`` /
        ``from_pretrained`` round-trips) and keeps the trained ``modules_to_save``.
        """
        return self._unload(merge=True)

    def unload(self) -> nn.Module:
        """Remove the adapters without merging and return the plain wrapped model."""
        return self._unload(merge=False)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model: adapters bypassed, ``modules_to_save`` at their original values."""
        self._check_unmerged()
        layers = [layer for _, layer in adapter_layers(self.base_model)]
        trained = {
            n: p.detach().clone() for n, p in self.base_model.named_parameters() if n in self._original_heads
        }
        try:
            for layer in layers:
                layer.adapter_enabled = False
            _restore(self.base_model, self._original_heads)
            yield
        finally:
            for layer in layers:
                layer.adapter_enabled = True
            _restore(self.base_model, trained)


@contextmanager
def _same_requires_grad(model: nn.Module) -> Iterator[None]:
    """Restore the ``requires_grad`` flags of ``model``'s parameters on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _snapshot(model: nn.Module, patterns) -> dict[str, torch.Tensor]:
    """Copies of the parameters under the modules matched by ``patterns``."""
    roots = match_modules(model, tuple(patterns)) if patterns else []
    return {n: p.detach().clone() for n, p in model.named_parameters() if _under(n, roots)}


@torch.no_grad()
def _restore(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, value in values.items():
        params[name].copy_(value)


@functools.cache
def _wrapper_class(model_cls: type) -> type[DeepLoRAModel]:
    """A :class:`DeepLoRAModel` subclass whose ``forward`` has ``model_cls.forward``'s signature.

    ``transformers.Trainer`` reads the label names and the dataset columns to keep from the
    model's ``forward`` signature, so the wrapper shows the wrapped model's.
    """

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    functools.update_wrapper(forward, model_cls.forward)
    name = f"DeepLoRA{model_cls.__name__}"
    return type(name, (DeepLoRAModel,), {"forward": forward, "__module__": __name__, "__qualname__": name})


def get_deep_lora_model(model: nn.Module, config: AdapterConfig, *, task_heads: bool = True) -> DeepLoRAModel:
    """Inject ``config``'s adapters into ``model``, freeze the rest and wrap it (PEFT's ``get_peft_model``).

    Parameters
    ----------
    model : torch.nn.Module
        Any model, typically a ``transformers`` model; changed in place.
    config : AdapterConfig
        :class:`~lowdim.lora.DeepLoRAConfig` (Deep LoRA, seed 003 eq. 12) or
        :class:`~lowdim.lora.LoRAConfig`. ``target_modules="all-linear"`` adapts every linear layer
        (``nn.Linear`` and GPT-2 ``Conv1D``) but the output layer and the task heads.
    task_heads : bool, default=True
        For a sequence-classification model, train its head (``classifier`` / ``score``) by adding it
        to ``modules_to_save`` (:func:`with_task_heads`), as PEFT does.

    Returns
    -------
    DeepLoRAModel
        Call :meth:`DeepLoRAModel.compress` on one batch before training Deep LoRA (Sec. 4.1), and
        train with :class:`lowdim.lora.DeepLoRATrainer` or :func:`lowdim.lora.param_groups` so that
        the outer bases use ``γ·lr`` (eq. 11).
    """
    if isinstance(model, DeepLoRAModel):
        raise ValueError("model is already a DeepLoRAModel; pass the base model")
    if task_heads:
        config = with_task_heads(model, config)
    saved_modules(model, config.modules_to_save)  # unmatched entries: refused before any change
    heads = _snapshot(model, config.modules_to_save)
    prepare_model(model, config)
    check_config(model, config)
    return _wrapper_class(type(model))(model, config, heads)
