"""Adapter layers around a frozen linear layer (``nn.Linear``, GPT-2 ``Conv1D``); the adapter registry.

``LoRALinear``
    ``y = W0 x + (α/r)·B A x`` (Hu et al. 2021; seed 003 Sec. 4.1, the baseline), ``A`` Gaussian
    with standard deviation 1 and ``B = 0`` (seed 003 App. B). Parameters ``lora_A``, ``lora_B``.
``DeepLoRALinear``
    ``y = W0 x + U W̃_L ··· W̃_1 Vᵀ x`` — the compressed form (eq. 8/11) of the deep overparameterized
    update ``ΔW = W^(L)···W^(1)`` of eq. (12). The chain ``[Vᵀ, W̃_1, …, W̃_L, U]`` is a
    :class:`~lowdim.DeepFactorization` held as ``lora_factors`` (parameters
    ``lora_factors.factors.{i}``) with learning-rate multipliers ``[γ, 1, …, 1, γ]``.

Every adapter kind is one :class:`AdapterLayer` subclass registered with :func:`register_adapter`
for its config class (``config_class``): injection, freezing, optimizer groups, saving, loading
and PEFT export all go through the hooks below, so adding a kind touches one place.

Hooks of an adapter layer
-------------------------
``from_config(base, config)``
    Build the adapter around a frozen linear layer from its config.
``adapter_parameters()``
    ``(name, parameter)`` of every adapter parameter (saved and loaded; names relative to the layer).
``param_groups(lr)``
    ``torch.optim`` groups of the parameters that train, each with ``"name"`` and ``"lr"``
    (Deep LoRA: the outer bases at ``γ·lr``); a parameter in no group stays frozen.
``factors()``
    ``(left, core, right)`` with ``ΔW = left @ core @ right`` (merge, export, singular values).
``metadata()`` / ``load_metadata(info)``
    JSON-serialisable per-layer state saved next to the tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import DEPTH, INIT_SCALE, LORA_ALPHA, LORA_GAMMA, LORA_RANK
from ..dynamics import rank_from_singular_values
from ..factorization import DeepFactorization, init_factor
from ..linalg import factored_svd
from .config import AdapterConfig, DeepLoRAConfig, LoRAConfig

__all__ = [
    "ADAPTERS",
    "AdapterLayer",
    "DeepLoRALinear",
    "LoRALinear",
    "adapter_class",
    "register_adapter",
    "singular_values",
]


def singular_values(left: torch.Tensor, core: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Singular values of ``left @ core @ right`` without forming the d_out×d_in product.

    ``left`` is d_out×r, ``core`` r×r, ``right`` r×d_in; cost O((d_in + d_out)·r²). Low-precision
    inputs are handled in float32.
    """
    return factored_svd(left, core, right)[1]


def linear_shape(base: nn.Module) -> tuple[int, int, bool] | None:
    """``(in_features, out_features, transposed)`` of a linear layer, None if ``base`` is not one.

    ``torch.nn.Linear`` stores its weight ``out×in``; GPT-2's
    ``transformers.pytorch_utils.Conv1D`` (``y = x W + b``) stores it ``in×out`` (``transposed``,
    PEFT's ``fan_in_fan_out``).
    """
    if isinstance(base, nn.Linear):
        return base.in_features, base.out_features, False
    if type(base).__name__ == "Conv1D" and hasattr(base, "nf") and hasattr(base, "nx"):
        return int(base.nx), int(base.nf), True
    return None


def _check_linear(base: nn.Module, rank: int, strict: bool) -> None:
    shape = linear_shape(base)
    if shape is None:
        raise ValueError(
            f"adapters wrap torch.nn.Linear and transformers Conv1D modules only, got {type(base).__name__}"
        )
    limit = min(shape[0], shape[1])
    if rank > limit or (strict and rank >= limit):
        need = "<" if strict else "<="
        raise ValueError(
            f"rank {rank} is too large for a {type(base).__name__}({shape[0]}, {shape[1]}) layer: "
            f"need rank {need} min(in_features, out_features) = {limit}"
        )


class AdapterLayer(nn.Module):
    """Common behaviour of the adapter wrappers: merging, inspection, ``weight`` passthrough.

    Subclasses set ``config_class`` and implement :meth:`from_config`, :meth:`factors`,
    :meth:`adapter_forward` and, if not every adapter parameter trains at ``lr``,
    :meth:`param_groups` (see the module docstring).
    """

    config_class: ClassVar[type[AdapterConfig]]
    #: Attributes that must equal the config's fields of the same name (see :meth:`config_mismatch`).
    config_attrs: ClassVar[tuple[str, ...]] = ()
    base: nn.Module

    def __init__(self, base: nn.Module, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.in_features, self.out_features, self.fan_in_fan_out = linear_shape(base)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.adapter_enabled = True

    @classmethod
    def from_config(cls, base: nn.Module, config: AdapterConfig) -> AdapterLayer:
        """The adapter for ``base`` described by ``config``."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:  # lets code that reads ``module.weight`` keep working
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    # ------------------------------------------------------------------ hooks
    def adapter_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every adapter parameter (everything but the frozen ``base``)."""
        for name, param in self.named_parameters():
            if not name.startswith("base."):
                yield name, param

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups of the trained adapter parameters (default: all at ``lr``)."""
        return [{"name": "lora", "params": [p for _, p in self.adapter_parameters()], "lr": lr}]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(left, core, right)`` with ``ΔW = left @ core @ right`` (d_out×r, r×r, r×d_in)."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Per-layer state saved with the adapter (JSON-serialisable)."""
        return {}

    def load_metadata(self, info: dict[str, Any]) -> None:
        """Restore what :meth:`metadata` saved."""

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ common behaviour
    def config_mismatch(self, config: AdapterConfig) -> list[str]:
        """Differences between this layer and ``config`` (empty when the config describes it)."""
        if type(config) is not self.config_class:
            return [f"adapter_type {config.adapter_type!r} (layer is {self.config_class.adapter_type!r})"]
        return [
            f"{a}={getattr(config, a)!r} (layer has {getattr(self, a)!r})"
            for a in self.config_attrs if getattr(config, a) != getattr(self, a)
        ]

    def _weight_update(self) -> torch.Tensor:
        delta = self.delta_weight()
        return (delta.T if self.fan_in_fan_out else delta).to(self.base.weight.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The dense update ``ΔW`` (d_out×d_in)."""
        left, core, right = self.factors()
        return left @ core @ right

    def singular_values(self) -> torch.Tensor:
        """Singular values of ``ΔW`` in O((d_in + d_out)·r²), largest first."""
        with torch.no_grad():
            return singular_values(*self.factors())

    def numerical_rank(self) -> int:
        """Numerical rank of ``ΔW`` (seed 003, Fig. 7 definition)."""
        return rank_from_singular_values(
            self.singular_values(), (self.out_features, self.in_features), self.base.weight.dtype
        )

    @torch.no_grad()
    def merge(self) -> None:
        """Add ``ΔW`` into the frozen weight; the adapter path is then skipped in ``forward``."""
        if self.merged:
            raise ValueError("adapter is already merged; call unmerge() first")
        self.base.weight += self._weight_update()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``ΔW`` from the frozen weight, undoing :meth:`merge`."""
        if not self.merged:
            raise ValueError("adapter is not merged")
        self.base.weight -= self._weight_update()
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged or not self.adapter_enabled:
            return out
        return out + self.adapter_forward(self.lora_dropout(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, merged={self.merged}"


#: ``adapter_type`` → adapter layer class (its ``config_class`` gives the config).
ADAPTERS: dict[str, type[AdapterLayer]] = {}


def register_adapter(layer_cls: type[AdapterLayer]) -> type[AdapterLayer]:
    """Class decorator: make ``layer_cls`` the adapter of ``layer_cls.config_class.adapter_type``."""
    kind = layer_cls.config_class.adapter_type
    if kind in ADAPTERS and ADAPTERS[kind] is not layer_cls:
        raise ValueError(f"adapter_type {kind!r} is already registered to {ADAPTERS[kind].__name__}")
    ADAPTERS[kind] = layer_cls
    return layer_cls


def adapter_class(config: AdapterConfig | str) -> type[AdapterLayer]:
    """The layer class of a config (or of an ``adapter_type`` string)."""
    kind = config if isinstance(config, str) else getattr(config, "adapter_type", None)
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter_type {kind!r}; expected one of {sorted(ADAPTERS)}")
    return ADAPTERS[kind]


@register_adapter
class LoRALinear(AdapterLayer):
    """Vanilla LoRA: ``W0 + (α/r)·B·A`` with ``A ~ N(0, 1)`` (r×d_in) and ``B = 0`` (d_out×r).

    Parameters
    ----------
    base : torch.nn.Linear or transformers Conv1D
        The frozen layer.
    rank : int
        Rank r (at most ``min(in_features, out_features)``).
    alpha : float
        Scale α.
    dropout : float
        Dropout probability on the adapter input.
    """

    config_class = LoRAConfig
    config_attrs = ("rank", "alpha")

    def __init__(
        self, base: nn.Module, *, rank: int = LORA_RANK, alpha: float = LORA_ALPHA, dropout: float = 0.0
    ):
        _check_linear(base, rank, strict=False)
        super().__init__(base, dropout)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.randn(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))

    @classmethod
    def from_config(cls, base: nn.Module, config: LoRAConfig) -> LoRALinear:
        return cls(base, rank=config.rank, alpha=config.alpha, dropout=config.dropout)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.rank, dtype=self.lora_A.dtype, device=self.lora_A.device)
        return self.lora_B, self.scaling * eye, self.lora_A

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(F.linear(x, self.lora_A), self.lora_B)
        return out if self.scaling == 1.0 else out * self.scaling


@register_adapter
class DeepLoRALinear(AdapterLayer):
    """Deep LoRA layer in compressed form, ``W0 + U·W̃_L···W̃_1·Vᵀ`` (seed 003, eq. 8, 11, 12).

    The chain ``[Vᵀ (r×d_in), W̃_1, …, W̃_L (r×r), U (d_out×r)]`` is the
    :class:`~lowdim.DeepFactorization` ``lora_factors`` with learning-rate multipliers
    ``[γ, 1, …, 1, γ]`` (γ = 0 freezes the bases). Until factors are installed
    (:meth:`set_factors`, which :func:`lowdim.lora.compress_deep_lora` calls), ``U`` and ``V`` are
    random orthonormal bases and the cores ``ε·I`` (the "Random"/narrow variant of App. D.2). The
    layer knows nothing about how the factors are found.

    Parameters
    ----------
    base : torch.nn.Linear or transformers Conv1D
        The frozen layer.
    rank : int
        The adapter width ``r`` (as LoRA's ``r`` and the paper's "rank-r compression", Sec. 4,
        App. D.2): an even number with ``2 <= r < min(in_features, out_features)``. The invariant
        subspace compression of Sec. 2.3 takes ``r/2`` directions from each of its two gradient
        blocks (Theorem 2.1's ``2r'`` with ``r' = r/2``), and the full-width factorization keeps
        ``d − r > 0`` invariant directions.
    depth : int
        Depth L (default 3, as in the paper).
    init_scale : float
        ε of the full-width ε-orthogonal initialization; the cores start at ``ε·I_r``.
    gamma : float
        Learning-rate ratio γ of the outer bases ``U``, ``V`` (eq. 11; 0 freezes them).
    dropout : float
        Dropout probability on the adapter input.

    Notes
    -----
    Per forward pass the adapter costs O((d_in + d_out)·r + L·r²) per token and stores
    ``(d_in + d_out)·r + L·r²`` numbers — ``L·r²`` more than LoRA of the same rank (Sec. 4.1).
    """

    config_class = DeepLoRAConfig
    config_attrs = ("rank", "depth", "gamma")

    def __init__(
        self,
        base: nn.Module,
        *,
        rank: int = LORA_RANK,
        depth: int = DEPTH,
        init_scale: float = INIT_SCALE,
        gamma: float = LORA_GAMMA,
        dropout: float = 0.0,
    ):
        checked = DeepLoRAConfig.check(rank, depth, init_scale, gamma)
        _check_linear(base, rank, strict=True)
        super().__init__(base, dropout)
        self.rank = rank
        self.depth, self.init_scale, self.gamma = checked
        gen = torch.default_generator  # the global seed, as torch.nn layers use
        u = init_factor(self.out_features, rank, 1.0, "orthogonal", generator=gen)
        v = init_factor(self.in_features, rank, 1.0, "orthogonal", generator=gen)
        cores = [self.init_scale * torch.eye(rank, dtype=torch.float64) for _ in range(self.depth)]
        self.lora_factors = DeepFactorization.from_factors(
            [v.T, *cores, u], lr_multipliers=[self.gamma] + [1.0] * self.depth + [self.gamma]
        ).to(dtype=base.weight.dtype, device=base.weight.device)
        self.compressed = False
        self._installed: list[torch.Tensor] | None = None

    @classmethod
    def from_config(cls, base: nn.Module, config: DeepLoRAConfig) -> DeepLoRALinear:
        return cls(
            base, rank=config.rank, depth=config.depth, init_scale=config.init_scale,
            gamma=config.gamma, dropout=config.dropout,
        )

    # ------------------------------------------------------------------ the chain
    @property
    def right(self) -> nn.Parameter:
        """``Vᵀ`` (r×d_in)."""
        return self.lora_factors.factors[0]

    @property
    def cores(self) -> list[nn.Parameter]:
        """``[W̃_1, …, W̃_L]`` (r×r each): the factors between the outer ones."""
        return list(self.lora_factors.factors[1:-1])

    @property
    def left(self) -> nn.Parameter:
        """``U`` (d_out×r)."""
        return self.lora_factors.factors[-1]

    def core_product(self) -> torch.Tensor:
        """``W̃_L ··· W̃_1`` (r×r), the product of :attr:`cores`."""
        return self.lora_factors.product(2, self.lora_factors.depth - 1)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.left, self.core_product(), self.right

    def param_groups(self, lr: float) -> list[dict]:
        """The factorization's groups: ``"lora_outer"`` (``U``, ``Vᵀ`` at ``γ·lr``) and ``"lora"``."""
        last = self.lora_factors.depth - 1
        groups = self.lora_factors.param_groups(lr)
        for g in groups:
            index = int(g["name"].rsplit(".", 1)[-1])
            g["name"] = "lora_outer" if index in (0, last) else "lora"
        return groups

    @torch.no_grad()
    def set_factors(self, factors: Sequence[torch.Tensor]) -> None:
        """Install ``[Vᵀ, W̃_1, …, W̃_L, U]`` (copied in place, cast to the layer's dtype).

        The layer then counts as compressed; :meth:`changed_since_set` tells whether training (or
        anything else) has modified the factors since.
        """
        params = list(self.lora_factors.factors)
        if len(factors) != len(params) or any(
            tuple(f.shape) != tuple(p.shape) for f, p in zip(factors, params, strict=False)
        ):
            raise ValueError(
                f"factors of shapes {[tuple(f.shape) for f in factors]} do not fit "
                f"{[tuple(p.shape) for p in params]}"
            )
        for p, f in zip(params, factors, strict=True):
            p.copy_(f.to(p.dtype))
        self.compressed = True
        self._installed = [p.detach().clone() for p in params]

    @torch.no_grad()
    def set_chain(self, chain: DeepFactorization) -> None:
        """Replace the whole chain by ``chain`` (``d_in → … → d_out``, any widths and learning-rate
        multipliers), e.g. the uncompressed full-width factorization of eq. 12 that App. D.2 compares
        with Deep LoRA (:func:`lowdim.lora.widen_deep_lora`). The layer then counts as not compressed.
        """
        if chain.dims[0] != self.in_features or chain.dims[-1] != self.out_features or chain.depth < 3:
            raise ValueError(
                f"the chain maps {chain.dims[0]} -> {chain.dims[-1]} with {chain.depth} factors; the layer "
                f"needs {self.in_features} -> {self.out_features} with at least 3 (outer, core, outer)"
            )
        p = self.right
        self.lora_factors = chain.to(dtype=p.dtype, device=p.device)
        self.compressed = False
        self._installed = None

    def changed_since_set(self) -> bool:
        """Whether the factors differ from those :meth:`set_factors` installed (True if unknown)."""
        if self._installed is None:
            return self.compressed
        return any(
            not torch.equal(p.detach(), q)
            for p, q in zip(self.lora_factors.factors, self._installed, strict=True)
        )

    def metadata(self) -> dict[str, Any]:
        return {"compressed": self.compressed}

    def load_metadata(self, info: dict[str, Any]) -> None:
        self.compressed = bool(info.get("compressed", True))
        self._installed = None  # loaded factors count as trained

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        for w in self.lora_factors.factors:
            x = F.linear(x, w)
        return x

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", rank={self.rank}, depth={self.depth}, init_scale={self.init_scale:g}, "
            f"gamma={self.gamma:g}, compressed={self.compressed}"
        )
