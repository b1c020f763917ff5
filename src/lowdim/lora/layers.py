"""Adapter layers wrapping a frozen :class:`torch.nn.Linear`.

``LoRALinear``
    ``y = W0 x + (α/r)·B A x`` (Hu et al. 2021; seed 003 Sec. 4.1, the baseline), ``A`` Gaussian
    with standard deviation 1 and ``B = 0`` (seed 003 App. B).
``DeepLoRALinear``
    ``y = W0 x + U W̃_L ··· W̃_1 Vᵀ x`` — the compressed form (eq. 8/11) of the deep overparameterized
    update ``ΔW = W^(L)···W^(1)`` of eq. (12).  Parameter names: ``lora_left`` (U, d_out×r),
    ``lora_right`` (Vᵀ, r×d_in), ``lora_cores.{l}`` (W̃_{l+1}, r×r).  Until
    :func:`lowdim.lora.compression.compress_deep_lora` runs, U and V are random orthonormal bases
    (the "Random"/narrow variant of App. D.2).

All trainable adapter parameters are named with the prefix ``lora_``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..dynamics import rank_from_singular_values

__all__ = ["AdapterLayer", "LoRALinear", "DeepLoRALinear", "singular_values"]


def singular_values(left: torch.Tensor, core: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Singular values of ``left @ core @ right`` without forming the d_out×d_in product.

    ``left`` is d_out×r, ``core`` r×r, ``right`` r×d_in; cost O((d_in + d_out)·r²).
    """
    _, r_left = torch.linalg.qr(left)
    _, r_right = torch.linalg.qr(right.T)
    return torch.linalg.svdvals(r_left @ core @ r_right.T)


def _check_linear(base: nn.Module, rank: int, strict: bool) -> None:
    if not isinstance(base, nn.Linear):
        raise ValueError(
            f"adapters wrap torch.nn.Linear modules only, got {type(base).__name__}"
        )
    limit = min(base.in_features, base.out_features)
    if rank > limit or (strict and rank >= limit):
        need = "<" if strict else "<="
        raise ValueError(
            f"rank {rank} is too large for a Linear({base.in_features}, {base.out_features}) layer: "
            f"need rank {need} min(in_features, out_features) = {limit}"
        )


class AdapterLayer(nn.Module):
    """Common behaviour of the adapter wrappers: merging, inspection, ``weight`` passthrough."""

    base: nn.Linear

    def __init__(self, base: nn.Linear, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:  # lets code that reads ``module.weight`` keep working
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(left, core, right)`` with ``ΔW = left @ core @ right`` (d_out×r, r×r, r×d_in)."""
        raise NotImplementedError

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
        self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``ΔW`` from the frozen weight, undoing :meth:`merge`."""
        if not self.merged:
            raise ValueError("adapter is not merged")
        self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
        self.merged = False

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + self.adapter_forward(self.lora_dropout(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, merged={self.merged}"


class LoRALinear(AdapterLayer):
    """Vanilla LoRA: ``W0 + (α/r)·B·A`` with ``A ~ N(0, 1)`` (r×d_in) and ``B = 0`` (d_out×r).

    Parameters
    ----------
    base : torch.nn.Linear
        The frozen layer.
    rank : int
        Rank r (at most ``min(in_features, out_features)``).
    alpha : float
        Scale α.
    dropout : float
        Dropout probability on the adapter input.
    """

    def __init__(self, base: nn.Linear, *, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0):
        _check_linear(base, rank, strict=False)
        super().__init__(base, dropout)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.randn(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.rank, dtype=self.lora_A.dtype, device=self.lora_A.device)
        return self.lora_B, self.scaling * eye, self.lora_A

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(F.linear(x, self.lora_A), self.lora_B)
        return out if self.scaling == 1.0 else out * self.scaling


class DeepLoRALinear(AdapterLayer):
    """Deep LoRA layer in compressed form, ``W0 + U·W̃_L···W̃_1·Vᵀ`` (seed 003, eq. 8, 11, 12).

    Parameters
    ----------
    base : torch.nn.Linear
        The frozen layer.
    rank : int
        Width r of the compressed factorization (``2 <= r < min(in_features, out_features)``,
        so that the full-width factorization keeps ``d - r > 0`` invariant directions, Thm. 2.1).
    depth : int
        Depth L (default 3, as in the paper).
    init_scale : float
        ε of the full-width ε-orthogonal initialization; each core starts at ``ε·I_r``.
    dropout : float
        Dropout probability on the adapter input.

    Notes
    -----
    Per forward pass the adapter costs O((d_in + d_out)·r + L·r²) per token and stores
    ``(d_in + d_out)·r + L·r²`` numbers — ``L·r²`` more than LoRA of the same rank (Sec. 4.1).
    """

    def __init__(
        self,
        base: nn.Linear,
        *,
        rank: int = 8,
        depth: int = 3,
        init_scale: float = 1e-3,
        dropout: float = 0.0,
    ):
        _check_linear(base, rank, strict=True)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        super().__init__(base, dropout)
        self.rank = rank
        self.depth = depth
        self.init_scale = float(init_scale)
        w = base.weight
        kw = {"dtype": w.dtype, "device": w.device}
        self.lora_left = nn.Parameter(_random_orthonormal(self.out_features, rank, **kw))
        self.lora_right = nn.Parameter(_random_orthonormal(self.in_features, rank, **kw).T.contiguous())
        self.lora_cores = nn.ParameterList(
            [nn.Parameter(self.init_scale * torch.eye(rank, **kw)) for _ in range(depth)]
        )
        self.compressed = False
        self._calibration = None  # set by lowdim.lora.compression during the calibration pass

    def core_product(self) -> torch.Tensor:
        """``W̃_L ··· W̃_1`` (r×r)."""
        prod = self.lora_cores[0]
        for core in self.lora_cores[1:]:
            prod = core @ prod
        return prod

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.lora_left, self.core_product(), self.lora_right

    @torch.no_grad()
    def set_compressed(self, left: torch.Tensor, right: torch.Tensor) -> None:
        """Install compressed outer bases ``U`` (d_out×r), ``V`` (d_in×r) and reset cores to ``ε·I``."""
        if left.shape != self.lora_left.shape or right.shape != self.lora_right.T.shape:
            raise ValueError(
                f"compressed bases of shapes {tuple(left.shape)}, {tuple(right.shape)} do not fit "
                f"U {tuple(self.lora_left.shape)}, V {tuple(self.lora_right.T.shape)}"
            )
        self.lora_left.copy_(left)
        self.lora_right.copy_(right.T)
        for core in self.lora_cores:
            core.copy_(self.init_scale * torch.eye(self.rank, dtype=core.dtype, device=core.device))
        self.compressed = True

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.lora_right)
        for core in self.lora_cores:
            h = F.linear(h, core)
        return F.linear(h, self.lora_left)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._calibration is not None:
            return self._calibration.forward(self, x)
        return super().forward(x)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", rank={self.rank}, depth={self.depth}, init_scale={self.init_scale:g}, "
            f"compressed={self.compressed}"
        )


def _random_orthonormal(rows: int, cols: int, *, dtype: torch.dtype, device) -> torch.Tensor:
    """Haar-distributed ``rows×cols`` matrix with orthonormal columns (``cols <= rows``)."""
    g = torch.randn(rows, cols, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    return q.to(dtype=dtype, device=device)
