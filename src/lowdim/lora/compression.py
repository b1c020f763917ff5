r"""Deep LoRA's compression driver (seed 003, Sec. 2.3, 3 and 4.1) on lowdim's one engine.

The paper starts every adapted layer as a *full-width* depth-L factorization
``ΔW = W^(L)···W^(1)`` with ε-orthogonal factors (eq. 3; width ``k = max(d_in, d_out)``), takes the
gradient ``G_1 = ∇_{W_1} ℓ(Θ(0))`` on one batch and compresses onto the invariant subspace
(Sec. 2.3). By the chain rule ``G_1 = W_{L:2}(0)ᵀ E`` with ``E = ∇_{ΔW} ℓ = δᵀX`` the layer's batch
gradient (inputs ``X``, output gradients ``δ``), so per layer this module only

1. captures ``E`` as a thin product (:func:`lowdim.gradients.capture_layer_gradients`, one
   forward/backward pass with the adapters switched off, optionally adding the full-width
   ``ΔW(0) x``),
2. calls :func:`lowdim.invariant_subspace_compression` on the layer's implicit full-width
   initialization (:class:`lowdim.ImplicitOrthogonalInit`, never formed) with ``rank = r/2``
   (compressed width ``r``, the adapter width), and
3. installs the resulting factors ``[V_{1,1}ᵀ, W̃_1, …, W̃_L, U_{L,1}]`` into the layer
   (:meth:`DeepLoRALinear.set_factors`).

All the linear algebra lives in the engine (:mod:`lowdim.compression`, :mod:`lowdim.linalg`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..compression import invariant_subspace_compression
from ..factorization import DeepFactorization
from ..gradients import calibration_pass
from ..initialization import FullWidthInit, ImplicitOrthogonalInit, as_init
from ..linalg import LinearMap, compute_dtype
from .layers import DeepLoRALinear

__all__ = ["CompressionReport", "compress_deep_lora", "layer_init", "widen_deep_lora"]


@dataclass
class CompressionReport:
    """What :func:`compress_deep_lora` did.

    Attributes
    ----------
    seconds : float
        Wall time (forward, backward and the per-layer compressions).
    loss : float
        Loss of the calibration batch.
    layers : list of str
        Names of the compressed layers.
    """

    seconds: float
    loss: float
    layers: list[str] = field(default_factory=list)


def _layer_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def layer_init(layer: DeepLoRALinear, seed: int, name: str, block_size: int = 32) -> ImplicitOrthogonalInit:
    """The implicit full-width initialization of ``layer`` (a deterministic function of ``seed, name``)."""
    return ImplicitOrthogonalInit(
        (layer.out_features, layer.in_features), layer.depth, layer.init_scale,
        block_size=block_size, random_state=_layer_generator(seed, name),
    )


def _full_width_inits(
    layers: Mapping[str, DeepLoRALinear], seed: int, chosen: Mapping, force: bool
) -> dict[str, FullWidthInit]:
    """Each layer's full-width Θ(0) (given, or :func:`layer_init`), after checking it may compress."""
    init_of: dict[str, FullWidthInit] = {}
    for name, layer in layers.items():
        if layer.merged:
            raise ValueError(f"layer {name!r} is merged; unmerge before compressing")
        if not force and layer.changed_since_set():
            raise ValueError(
                f"layer {name!r} was already compressed and its factors have changed since (trained "
                "or loaded); compressing again would discard them. Pass force=True to recompress."
            )
        init_of[name] = as_init(chosen[name]) if name in chosen else layer_init(layer, seed, name)
        if tuple(init_of[name].shape) != (layer.out_features, layer.in_features):
            raise ValueError(
                f"the initialization given for {name!r} is {init_of[name].shape}, the layer is "
                f"{(layer.out_features, layer.in_features)} (out, in)"
            )
    return init_of


def compress_deep_lora(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    *,
    config=None,
    seed: int | None = None,
    include_initial_delta: bool | None = None,
    svd: str = "auto",
    inits: Mapping[str, FullWidthInit | DeepFactorization] | None = None,
    force: bool = False,
) -> CompressionReport:
    """Compress every :class:`DeepLoRALinear` in ``model`` from one batch's gradient (Sec. 4.1).

    Runs ``loss_fn(model)`` once with the adapters switched off (the model is ``W0`` plus, with
    ``include_initial_delta``, the full-width ``ΔW(0)``), captures each layer's ``E = δᵀX`` and
    compresses it at once (only one layer's ``X``, ``δ`` are held by the compression), then installs
    the engine's factors: ``V = V_{1,1}`` and ``U = U_{L,1}`` orthonormal, cores the engine's QR cores
    (``ε·I`` for square factors). Gradients left on parameters by this pass are cleared.

    Parameters
    ----------
    model : torch.nn.Module
        Model with Deep LoRA layers (see :func:`lowdim.lora.inject_adapters`).
    loss_fn : callable
        ``loss_fn(model) -> scalar tensor`` evaluating the training loss on one batch.
    config : DeepLoRAConfig, optional
        Supplies the defaults of ``seed`` and ``include_initial_delta``.
    seed : int, optional
        Seed of the implicit full-width initializations (default ``config.seed`` or 0); each layer's
        is drawn from ``(seed, layer name)`` (:func:`layer_init`).
    include_initial_delta : bool, optional
        Add ``ΔW(0) x = W_{L:1}(0) x`` in the calibration forward (the exact construction; an
        O(ε^L) effect); default ``config.include_initial_delta`` or False.
    svd : {"auto", "dense", "arpack", "randomized"}
        How the engine finds top singular vectors (:func:`lowdim.linalg.top_singular`); ``"auto"``
        never forms ``E`` for large layers.
    inits : mapping, optional
        Layer name → full-width initialization (a :class:`~lowdim.DeepFactorization` or a
        :class:`~lowdim.FullWidthInit`) replacing the implicit one (tests pass explicit factors).
    force : bool, default=False
        Recompress layers whose factors changed since their last compression (e.g. trained or
        loaded); without it such layers are refused, so training is never wiped silently.

    Returns
    -------
    CompressionReport

    Raises
    ------
    ValueError
        If the model has no Deep LoRA layers, a layer is merged, was trained since its compression
        (without ``force``), runs more than once in the pass or receives no gradient.
    """
    start = time.perf_counter()
    if seed is None:
        seed = getattr(config, "seed", 0)
    if include_initial_delta is None:
        include_initial_delta = bool(getattr(config, "include_initial_delta", False))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, DeepLoRALinear)}
    if not layers:
        raise ValueError("model has no DeepLoRALinear layers to compress; inject adapters first")
    init_of = _full_width_inits(layers, seed, inits or {}, force)
    results: dict[str, DeepFactorization] = {}

    def on_gradient(name: str, gradient: LinearMap) -> None:
        layer = layers[name]
        results[name] = invariant_subspace_compression(
            init_of[name], gradient, layer.rank // 2, gamma=layer.gamma, svd=svd,
            random_state=_layer_generator(seed + 1, name),
        )

    def initial_delta(name: str, x: torch.Tensor) -> torch.Tensor:
        return init_of[name].chain_matmul(x.T.to(compute_dtype(x.dtype))).T

    enabled = {name: layer.adapter_enabled for name, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.adapter_enabled = False  # the narrow placeholder adapter is not part of Θ(0)
        loss = calibration_pass(
            model, layers, on_gradient, lambda: loss_fn(model),
            output_offset=initial_delta if include_initial_delta else None,
        )
    finally:
        for name, layer in layers.items():
            layer.adapter_enabled = enabled[name]
    for name, layer in layers.items():
        layer.set_factors(list(results[name].factors))
    return CompressionReport(
        seconds=time.perf_counter() - start, loss=loss, layers=list(layers)
    )


@torch.no_grad()
def widen_deep_lora(model: nn.Module, *, config=None, seed: int | None = None) -> list[str]:
    """Give every :class:`DeepLoRALinear` its *uncompressed* full-width chain (seed 003, eq. 12).

    App. D.2's "Original": ``ΔW = W^(L)···W^(1)`` with ``k × k`` factors (``k = max(d_in, d_out)``),
    the ε-orthogonal Θ(0) of :func:`layer_init` that :func:`compress_deep_lora` would compress
    (same ``seed``), every factor at the full learning rate. It costs ``O(L k²)`` parameters per
    layer, so it is a research baseline (Figs. 1 and 11), not an adapter to ship. Returns the
    names of the widened layers.
    """
    if seed is None:
        seed = getattr(config, "seed", 0)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, DeepLoRALinear)}
    if not layers:
        raise ValueError("model has no DeepLoRALinear layers to widen; inject adapters first")
    for name, layer in layers.items():
        layer.set_chain(layer_init(layer, seed, name).to_model(torch.float64))
    return list(layers)
