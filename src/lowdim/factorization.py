"""Deep (linear) factorizations ``W_L ⋯ W_1`` as a :class:`torch.nn.Module`.

A depth-``L`` factorization of an ``m × n`` matrix is a chain of factors
``W_l ∈ R^{d_l × d_{l-1}}`` with ``d_0 = n`` and ``d_L = m`` (seed 003 eq. 1, seed 004 eq. 1).
The same class holds the full-width model, the compressed models of
:mod:`lowdim.compression` and narrow baselines; each factor carries a learning-rate multiplier
so that the discrepant rates of the papers (γ on the outer bases, seed 003 eq. 11; α on the outer
factors, seed 000 Algorithm 1) become ``torch.optim`` parameter groups.

Initializations (``init=``):

``"orthogonal"``
    ε-scaled (semi-)orthogonal factors, ``W_lᵀW_l = ε_l² I`` or ``W_l W_lᵀ = ε_l² I`` depending on
    the shape (seed 004 eq. 3, seed 000 eq. 3–4; seed 003 eq. 3).
``"normal"``
    i.i.d. ``N(0, ε_l² / max(d_l, d_{l-1}))`` — ``N(0, ε²/d)`` for square factors (seed 004 App. A).
``"uniform"``
    i.i.d. ``U(-a, a)`` with ``a = ε_l √(3 / max(d_l, d_{l-1}))``, the same expected Frobenius
    norm ``E‖W_l‖_F² = min(d_l, d_{l-1}) ε_l²`` as the other two. (Seed 004 App. A writes the bound as
    ``3ε/d``, which does not give the norm it states; we keep the stated norm.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from ._validation import check_choice, check_int, check_nonnegative, check_positive, fail
from .defaults import INIT_SCALE
from .linalg import qr_positive

INITS = ("orthogonal", "normal", "uniform")


def _as_generator(random_state: int | torch.Generator | None) -> torch.Generator:
    if isinstance(random_state, torch.Generator):
        return random_state
    gen = torch.Generator()
    if random_state is None:
        gen.seed()
    else:
        gen.manual_seed(int(random_state))
    return gen


def per_layer(value: float | Sequence[float], depth: int, name: str, check=check_positive) -> list[float]:
    """One number per layer from a number or a sequence, each passed through ``check``."""
    values = [value] * depth if isinstance(value, numbers.Real) else list(value)
    if len(values) != depth:
        raise fail(name, f"one number or {depth} numbers (one per layer)", value)
    return [check(name, v) for v in values]


def init_factor(
    rows: int,
    cols: int,
    scale: float,
    init: str = "orthogonal",
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Draw one ``rows × cols`` factor with initialization ``init`` at scale ``scale``.

    Parameters
    ----------
    rows, cols : int
        Shape of the factor.
    scale : float
        The initialization scale ε (> 0).
    init : {"orthogonal", "normal", "uniform"}
        See the module docstring.
    generator : torch.Generator
        Source of randomness (reproducible draws).
    dtype : torch.dtype
        Floating point type of the result.

    Returns
    -------
    torch.Tensor
        The factor, shape ``(rows, cols)``.
    """
    if init == "orthogonal":
        tall = rows >= cols
        gauss = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
        q, _ = qr_positive(gauss)
        w = q if tall else q.T
        return (scale * w).to(dtype)
    std = scale / math.sqrt(max(rows, cols))
    if init == "normal":
        return (std * torch.randn(rows, cols, generator=generator, dtype=torch.float64)).to(dtype)
    if init == "uniform":
        a = std * math.sqrt(3.0)
        u = torch.rand(rows, cols, generator=generator, dtype=torch.float64)
        return ((2 * u - 1) * a).to(dtype)
    raise fail("init", f"one of {INITS}", init)


class DeepFactorization(nn.Module):
    r"""End-to-end product ``f(Θ) = W_L W_{L-1} ⋯ W_1`` of a chain of trainable factors.

    Parameters
    ----------
    dims : sequence of int
        ``[d_0, d_1, …, d_L]``: ``W_l`` has shape ``(d_l, d_{l-1})``, so the product is
        ``d_L × d_0`` (an ``m × n`` target has ``d_0 = n`` and ``d_L = m``). Depth ``L = len(dims)-1 ≥ 1``.
    init : {"orthogonal", "normal", "uniform"}, default="orthogonal"
        Initialization of every factor (module docstring).
    scale : float or sequence of float, default=1e-3
        Initialization scale ε, or one ε_l per layer (seed 003 allows different ε_l).
    lr_multipliers : sequence of float, optional
        Learning-rate multiplier of each factor (default all 1). A multiplier of 0 freezes the
        factor (``requires_grad=False``), as γ = 0 does in seed 003 Fig. 5.
    random_state : int or torch.Generator, optional
        Seed for reproducible initialization.
    dtype : torch.dtype, default=torch.float64
        float64 where theorems are checked, float32 for speed.
    device : torch.device or str, optional
        Where the factors live.

    Examples
    --------
    >>> import torch
    >>> from lowdim import DeepFactorization
    >>> model = DeepFactorization([4, 6, 6, 5], scale=0.5, random_state=0)
    >>> model.product().shape
    torch.Size([5, 4])
    >>> w = model.factors[0].detach()
    >>> torch.allclose(w.T @ w, 0.25 * torch.eye(4, dtype=w.dtype))
    True
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        init: str = "orthogonal",
        scale: float | Sequence[float] = INIT_SCALE,
        lr_multipliers: Sequence[float] | None = None,
        random_state: int | torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        dims = [check_int("dims", d, 1) for d in dims]
        if len(dims) < 2:
            raise fail("dims", "at least two sizes [d_0, …, d_L] (depth L >= 1)", dims)
        init = check_choice("init", init, INITS)
        depth = len(dims) - 1
        scales = per_layer(scale, depth, "scale")
        gen = _as_generator(random_state)
        factors = [
            init_factor(dims[l + 1], dims[l], scales[l], init, generator=gen, dtype=dtype)
            for l in range(depth)
        ]
        self._setup([f.to(device) for f in factors], lr_multipliers)
        self.init = init
        self.scales = scales

    # ------------------------------------------------------------------ construction helpers
    def _setup(self, factors: Sequence[torch.Tensor], lr_multipliers: Sequence[float] | None) -> None:
        for i in range(1, len(factors)):
            if factors[i].shape[1] != factors[i - 1].shape[0]:
                raise ValueError(
                    f"factor {i + 1} has shape {tuple(factors[i].shape)} but factor {i} has "
                    f"{tuple(factors[i - 1].shape)}: consecutive factors must chain"
                )
        mults = per_layer(1.0 if lr_multipliers is None else lr_multipliers, len(factors),
                          "lr_multipliers", check_nonnegative)
        self.factors = nn.ParameterList(
            [
                nn.Parameter(f.detach().clone(memory_format=torch.contiguous_format), requires_grad=m > 0)
                for f, m in zip(factors, mults)
            ]
        )
        self.lr_multipliers = mults

    @classmethod
    def from_factors(
        cls,
        factors: Sequence[torch.Tensor],
        *,
        lr_multipliers: Sequence[float] | None = None,
        share: bool = False,
    ) -> DeepFactorization:
        """Build a factorization from given factors ``[W_1, …, W_L]`` (copied unless ``share``).

        With ``share=True`` the given :class:`torch.nn.Parameter` objects are used as they are, so
        the new model is a view that trains the same numbers.
        """
        if len(factors) < 1:
            raise ValueError("depth must be >= 1: give at least one factor")
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        if share:
            model.factors = nn.ParameterList(list(factors))
            model.lr_multipliers = per_layer(1.0 if lr_multipliers is None else lr_multipliers,
                                             len(factors), "lr_multipliers", check_nonnegative)
        else:
            model._setup(factors, lr_multipliers)
        model.init = "given"
        with torch.no_grad():
            model.scales = [float(torch.linalg.matrix_norm(f, ord=2)) for f in model.factors]
        return model

    def view(self, start: int, stop: int) -> DeepFactorization:
        """The sub-chain ``W_stop ⋯ W_start`` (1-based, inclusive) sharing this model's parameters."""
        if not 1 <= start <= stop <= self.depth:
            raise ValueError(f"need 1 <= start <= stop <= {self.depth}, got {start}, {stop}")
        return DeepFactorization.from_factors(
            list(self.factors)[start - 1 : stop],
            lr_multipliers=self.lr_multipliers[start - 1 : stop],
            share=True,
        )

    # ------------------------------------------------------------------ properties
    @property
    def depth(self) -> int:
        """Number of factors L."""
        return len(self.factors)

    @property
    def dims(self) -> list[int]:
        """``[d_0, …, d_L]``."""
        return [self.factors[0].shape[1]] + [f.shape[0] for f in self.factors]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape ``(m, n)`` of the end-to-end product."""
        return self.factors[-1].shape[0], self.factors[0].shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.factors[0].dtype

    @property
    def device(self) -> torch.device:
        return self.factors[0].device

    def num_trainable(self) -> int:
        """Number of trained scalars (frozen factors excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ products
    def product(self, i: int = 1, j: int | None = None) -> torch.Tensor:
        """Partial product ``W_{j:i} = W_j W_{j-1} ⋯ W_i`` (1-based; the identity when ``j < i``).

        Multiplication starts at the narrow end, so ``U W̃_L ⋯ W̃_1 Vᵀ`` of a compressed model
        costs ``O((m + n) k²)`` before the final ``m × n`` product.
        """
        j = self.depth if j is None else j
        if not (1 <= i <= self.depth + 1 and 0 <= j <= self.depth):
            raise ValueError(f"product indices out of range: i={i}, j={j}, depth={self.depth}")
        if j < i:
            return torch.eye(self.dims[i - 1], dtype=self.dtype, device=self.device)
        chain = list(self.factors)[i - 1 : j]
        return torch.linalg.multi_dot(chain[::-1]) if len(chain) > 1 else chain[0]

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` with ``left @ right = W_{L:1}`` split at the narrowest width.

        ``left`` is ``m × k`` and ``right`` is ``k × n`` with ``k = min(d_0, …, d_L)``.
        """
        dims = self.dims
        s = min(range(len(dims)), key=lambda i: (dims[i], -i))
        return self.product(s + 1, self.depth), self.product(1, s)

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Entries ``W_{L:1}[rows, cols]`` without forming the ``m × n`` product.

        Cost ``O(|Ω| k)`` after :meth:`split` for the narrowest width ``k``.
        """
        dims = self.dims
        if min(dims[1:-1], default=dims[0]) >= min(dims[0], dims[-1]):
            return self.product()[rows, cols]  # no narrow inner width: index the product
        left, right = self.split()
        return (left[rows] * right.T[cols]).sum(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the chain to inputs.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(n,)`` or ``(n, N)`` (columns are samples, as ``W_{L:1} X`` in seed 004 eq. 2).

        Returns
        -------
        torch.Tensor
            ``W_{L:1} x``, shape ``(m,)`` or ``(m, N)``.
        """
        for w in self.factors:
            x = w @ x
        return x

    # ------------------------------------------------------------------ optimisation
    def param_groups(self, lr: float) -> list[dict]:
        """``torch.optim`` parameter groups, one per trainable factor, with ``lr × multiplier``."""
        lr = check_positive("lr", lr, "the step size η")
        return [
            {"params": [w], "lr": lr * m, "name": f"factors.{i}"}
            for i, (w, m) in enumerate(zip(self.factors, self.lr_multipliers))
            if m > 0
        ]

    def extra_repr(self) -> str:
        return f"dims={self.dims}, lr_multipliers={self.lr_multipliers}"
