r"""``DeepLinear``: an ``nn.Linear`` overparameterized by a depth-L linear factorization.

Seed 000 Sec. 2.3 and 4.2 (after Huh et al. 2023): replace one linear layer ``W`` of a nonlinear
network by a deep linear network ``W_L ⋯ W_1`` (``ψ = W₆ ρ(W̃₅W̃₄W̃₃ ρ(W₂ ρ(W₁x))))`` for the
penultimate layer of an MLP). Three modes, all a :class:`~lowdim.DeepFactorization` plus the bias:

``"full"``
    The DLN of seed 000 Table 1: dims ``[d_in, k, …, k, d_out]`` with ``k = max(d_in, d_out)``
    (or ``width``), ε-orthogonal factors.
``"compressed"``
    The C-DLN (seed 000 Algorithm 1 carried to a layer, Sec. 2.3): dims ``[d_in, r̂, …, r̂, d_out]``,
    outer factors ``ε V̂ᵀ`` and ``ε Û`` with orthonormal ``V̂``, ``Û``, inner factors ``ε I_r̂``,
    learning-rate multipliers ``[α, 1, …, 1, α]``. Built alone, ``Û, V̂`` are random subspaces (the
    paper's fallback); :func:`lowdim.nonlinear.compress_network` sets them from data (the
    cross-correlation ``Y Xᵀ`` or the gradient at initialization).
``"narrow"``
    A width-``r̂`` factorization with small random initialization (the baseline).

:meth:`DeepLinear.fold` returns the equivalent single ``nn.Linear`` for inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_int, check_positive, fail
from ..compression import narrow_factorization
from ..defaults import DEPTH, NETWORK_INIT_SCALE
from ..factorization import DeepFactorization, _as_generator, init_factor

__all__ = ["MODES", "DeepLinear", "default_rank"]

MODES = ("full", "compressed", "narrow")
#: r̂ = 4 d_y (seed 000 Sec. 4.2, "we choose r̂ = 4 d_y" with d_y the number of classes).
RANK_PER_OUTPUT = 4


def default_rank(num_outputs: int) -> int:
    """The paper's width ``r̂ = 4·d_y`` for ``d_y`` outputs (classes) of the network (seed 000 Sec. 4.2)."""
    return RANK_PER_OUTPUT * check_int("num_outputs", num_outputs, 1)


def check_layer_rank(rank: int, in_features: int, out_features: int) -> int:
    """``r̂`` with ``1 <= r̂ < min(d_in, d_out)`` (a narrower chain than the layer, else nothing is saved)."""
    rank = check_int("rank", rank, 1)
    small = min(in_features, out_features)
    if rank >= small:
        raise fail(
            "rank", f"smaller than min(in_features, out_features) = {small}", rank,
            f"a width-r̂ chain of a {out_features}×{in_features} layer needs r̂ < {small}: pass a "
            "smaller rank (the paper's r̂ = 4·(number of classes) suits hidden layers wider than "
            "that), or use mode='full'",
        )
    return rank


def _compressed_factors(
    in_features: int, out_features: int, rank: int, depth: int, scale: float,
    generator: torch.Generator, dtype: torch.dtype,
) -> list[torch.Tensor]:
    """C-DLN factors with random orthonormal subspaces: ``[ε V̂ᵀ, ε I, …, ε I, ε Û]``."""
    right = init_factor(rank, in_features, scale, "orthogonal", generator=generator, dtype=dtype)
    left = init_factor(out_features, rank, scale, "orthogonal", generator=generator, dtype=dtype)
    eye = scale * torch.eye(rank, dtype=dtype)
    return [right] + [eye] * (depth - 2) + [left]


class DeepLinear(nn.Module):
    r"""A linear layer ``y = W_L ⋯ W_1 x + b`` trained through its factors (seed 000 Sec. 2.3).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the layer it replaces.
    mode : {"full", "compressed", "narrow"}, default="full"
        See the module docstring.
    depth : int, default=DEPTH (3)
        Number of factors ``L`` (≥ 2 for "compressed", which has two outer factors).
    rank : int, optional
        ``r̂`` of "compressed" and "narrow" (required there): the paper uses ``4·(number of
        classes)`` (:func:`default_rank`; seed 000 Sec. 4.2). Must be ``< min(d_in, d_out)``.
    width : int, optional
        Inner width of "full" (default ``max(d_in, d_out)``).
    scale : float, default=NETWORK_INIT_SCALE (1.0)
        Initialization scale ε of every factor (:data:`lowdim.defaults.NETWORK_INIT_SCALE`).
    alpha : float, default=1.0
        Learning-rate ratio α of the outer factors of "compressed" (Algorithm 1 of seed 000).
    bias : bool, default=True
    random_state : int or torch.Generator, optional
    dtype : torch.dtype, optional
        Default: ``torch.get_default_dtype()``.

    Examples
    --------
    >>> import torch
    >>> layer = DeepLinear(64, 32, mode="compressed", rank=8, scale=0.5, random_state=0)
    >>> layer.factorization.dims, layer.factorization.lr_multipliers
    ([64, 8, 8, 32], [1.0, 1.0, 1.0])
    >>> linear = layer.fold()
    >>> x = torch.randn(5, 64)
    >>> torch.allclose(linear(x), layer(x), atol=1e-6)
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        mode: str = "full",
        depth: int = DEPTH,
        rank: int | None = None,
        width: int | None = None,
        scale: float = NETWORK_INIT_SCALE,
        alpha: float = 1.0,
        bias: bool = True,
        random_state: int | torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.mode = check_choice("mode", mode, MODES)
        self.depth = check_int("depth", depth, 2 if mode == "compressed" else 1,
                               "a compressed layer has two outer factors and ε·I inner ones")
        self.scale = check_positive("scale", scale, "the initialization scale ε of the factors")
        self.alpha = check_positive("alpha", alpha, "the learning-rate ratio of the outer factors")
        dtype = dtype or torch.get_default_dtype()
        gen = _as_generator(random_state)
        shape = (self.out_features, self.in_features)
        if mode == "full":
            k = max(shape) if width is None else check_int("width", width, 1)
            dims = [self.in_features] + [k] * (self.depth - 1) + [self.out_features]
            self.rank = None
            self.factorization = DeepFactorization(dims, scale=scale, random_state=gen, dtype=dtype)
        else:
            if rank is None:
                raise fail("rank", "given for mode 'compressed' or 'narrow'", rank,
                           "the paper uses r̂ = 4·(number of classes) (seed 000 Sec. 4.2; "
                           "default_rank(num_classes)), which compress_network sets by default")
            self.rank = check_layer_rank(rank, *shape[::-1])
            if mode == "narrow":
                self.factorization = narrow_factorization(
                    shape, self.rank, self.depth, scale=scale, random_state=gen, dtype=dtype
                )
            else:
                factors = _compressed_factors(*shape[::-1], self.rank, self.depth, scale, gen, dtype)
                self.set_factors(factors)
        self.bias = nn.Parameter(torch.zeros(self.out_features, dtype=dtype)) if bias else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> DeepLinear:
        """A DeepLinear of ``linear``'s shape, dtype and device, with a copy of its bias.

        The weight is *not* kept: the factorization starts from its own initialization (the
        layer is overparameterized before training, seed 000 Sec. 4.2). ``kwargs`` go to the
        constructor.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear to replace, got {type(linear).__name__}")
        kwargs.setdefault("dtype", linear.weight.dtype)
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer.to(linear.weight.device)

    def set_factors(self, factors: Sequence[torch.Tensor]) -> None:
        """Install ``[W_1, …, W_L]`` (copied) with multipliers ``[α, 1, …, 1, α]`` ("compressed")."""
        dims = [factors[0].shape[1]] + [f.shape[0] for f in factors]
        if len(factors) != self.depth or dims[0] != self.in_features or dims[-1] != self.out_features:
            raise ValueError(
                f"factors chain {dims} but this layer is {self.out_features}×{self.in_features} "
                f"of depth {self.depth}"
            )
        mults = [1.0] * self.depth
        if self.mode == "compressed":
            mults[0] = mults[-1] = self.alpha
        device = None if not hasattr(self, "factorization") else self.factorization.device
        self.factorization = DeepFactorization.from_factors(
            [f.to(device) if device is not None else f for f in factors], lr_multipliers=mults
        )

    # ------------------------------------------------------------------ use
    @property
    def weight(self) -> torch.Tensor:
        """The end-to-end matrix ``W_{L:1}`` (``out × in``), differentiable."""
        return self.factorization.product()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_1ᵀ ⋯ W_Lᵀ + b`` for inputs of shape ``(..., in_features)``, one factor at a time."""
        for w in self.factorization.factors:
            x = F.linear(x, w)
        return x if self.bias is None else x + self.bias

    @torch.no_grad()
    def fold(self) -> nn.Linear:
        """The equivalent ``nn.Linear`` (product formed in float64, then cast): for inference."""
        w = self.factorization.factors[0]
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           dtype=w.dtype, device=w.device)
        product = DeepFactorization.from_factors([f.double() for f in self.factorization.factors])
        linear.weight.copy_(product.product())
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def param_groups(self, lr: float) -> list[dict]:
        """``torch.optim`` groups: one per factor at ``lr × multiplier`` (α on the outer factors of
        "compressed"), and the bias at ``lr``."""
        groups = self.factorization.param_groups(lr)
        if self.bias is not None:
            groups.append({"params": [self.bias], "lr": float(lr), "name": "bias"})
        return groups

    def num_parameters(self) -> int:
        """Trained scalars (factors and bias)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def macs(self) -> int:
        """Multiply–accumulates per example of :meth:`forward` (``Σ_l d_l d_{l−1}``)."""
        dims = self.factorization.dims
        return sum(a * b for a, b in zip(dims[:-1], dims[1:]))

    def extra_repr(self) -> str:
        rank = f", rank={self.rank}" if self.rank is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"mode={self.mode!r}, dims={self.factorization.dims}{rank}, alpha={self.alpha}")
