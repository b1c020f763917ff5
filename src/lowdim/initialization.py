"""Full-width initializations Θ(0) that the compression reads through their action on vectors.

The compression of seed 003 Sec. 2.3 needs the full-width factors ``W_l(0)`` only through products
``W_l(0) x`` and ``W_l(0)ᵀ y`` with ``2r`` vectors (and, for completion, the entries of
``W_{L:1}(0)`` on the observed set). A :class:`FullWidthInit` provides exactly that:

* :class:`ExplicitInit` — the factors of a :class:`~lowdim.DeepFactorization` (small problems; the
  reference the implicit ones are tested against);
* :class:`ImplicitOrthogonalInit` — ε-orthogonal factors (seed 003 eq. 3; semi-orthogonal end
  factors for rectangular shapes, seed 000 eq. 3–4) ``W_l(0) = ε_l Q_l`` with structured random
  orthogonal ``Q_l`` (:class:`StructuredOrthogonal`) stored in ``O(k b)`` numbers instead of
  ``k²``. With ``block_size=1`` each ``Q_l`` is a random signed permutation: ``O(k)`` per vector
  and cheap entries on Ω, the choice for completion at scale; ``block_size=32`` mixes every
  coordinate, the choice for Deep LoRA layers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from ._validation import check_int
from .defaults import INIT_SCALE
from .factorization import DeepFactorization, _as_generator, per_layer
from .linalg import qr_positive

__all__ = ["ExplicitInit", "FullWidthInit", "ImplicitOrthogonalInit", "StructuredOrthogonal", "as_init"]


class FullWidthInit(ABC):
    """A depth-``L`` full-width initialization ``W_L(0) ⋯ W_1(0)`` known through its products.

    Attributes
    ----------
    dims : list of int
        ``[d_0, …, d_L]`` (``W_l`` is ``d_l × d_{l-1}``); the product is ``d_L × d_0``.
    scales : list of float
        ``ε_l`` (the spectral norms of the factors), used to keep ε-small products at unit scale.
    """

    dims: list[int]
    scales: list[float]

    @property
    def depth(self) -> int:
        return len(self.dims) - 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.dims[-1], self.dims[0]

    @abstractmethod
    def matmul(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """``W_{layer+1}(0) @ x`` (0-based ``layer``), ``x`` of shape ``(d_layer, k)``."""

    @abstractmethod
    def rmatmul(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        """``W_{layer+1}(0)ᵀ @ y``, ``y`` of shape ``(d_{layer+1}, k)``."""

    def chain_matmul(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``W_{L:start+1}(0) @ x``."""
        for layer in range(start, self.depth):
            x = self.matmul(layer, x)
        return x

    def chain_rmatmul(self, y: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``W_{L:start+1}(0)ᵀ @ y``."""
        for layer in reversed(range(start, self.depth)):
            y = self.rmatmul(layer, y)
        return y

    def product(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Dense ``W_{L:1}(0)`` (``d_L × d_0``; small problems only)."""
        return self.chain_matmul(torch.eye(self.dims[0], dtype=dtype))

    def entries(self, rows: torch.Tensor, cols: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
        """``W_{L:1}(0)[rows, cols]``; the default forms the product."""
        return self.product(dtype)[rows, cols]


class ExplicitInit(FullWidthInit):
    """The factors of an explicit :class:`~lowdim.DeepFactorization` (copied, detached)."""

    def __init__(self, model: DeepFactorization) -> None:
        self.factors = [f.detach().clone() for f in model.factors]
        self.dims = model.dims
        self.scales = [float(torch.linalg.matrix_norm(f.double(), ord=2)) for f in self.factors]
        self._chains: dict[int, torch.Tensor] = {}

    def matmul(self, layer, x):
        return self.factors[layer].to(x.dtype) @ x

    def rmatmul(self, layer, y):
        return self.factors[layer].to(y.dtype).T @ y

    def _chain(self, start: int) -> torch.Tensor:
        """``W_{L:start+1}(0)``, formed once (an explicit model is small enough)."""
        if start not in self._chains:
            model = DeepFactorization.from_factors(self.factors)
            self._chains[start] = model.product(start + 1).detach()
        return self._chains[start]

    def chain_matmul(self, x, start=0):
        return self._chain(start).to(x.dtype) @ x

    def chain_rmatmul(self, y, start=0):
        return self._chain(start).to(y.dtype).T @ y

    def product(self, dtype=torch.float64):
        return self._chain(0).to(dtype)


def as_init(init: FullWidthInit | DeepFactorization) -> FullWidthInit:
    """Accept an explicit model where an initialization is expected."""
    if isinstance(init, FullWidthInit):
        return init
    if isinstance(init, DeepFactorization):
        return ExplicitInit(init)
    raise TypeError(
        f"the full-width initialization must be a DeepFactorization or a FullWidthInit, got "
        f"{type(init).__name__}"
    )


def _haar(n: int, generator: torch.Generator, count: int = 1) -> torch.Tensor:
    """``count`` Haar-distributed ``n × n`` orthogonal matrices (float64)."""
    return qr_positive(torch.randn(count, n, n, generator=generator, dtype=torch.float64))[0]


class StructuredOrthogonal:
    """A random ``k × k`` orthogonal matrix ``Q = B_R Π_R ⋯ B_1 Π_1`` in ``O(R k b)`` numbers.

    ``Π_j`` are random permutations and ``B_j`` block-diagonal with Haar-random ``b × b`` blocks (a
    smaller last block when ``b`` does not divide ``k``). With ``R = ⌈log_b k⌉ + 1`` rounds every
    output coordinate depends on every input; ``k ≤ b`` gives one Haar matrix; ``b = 1`` gives one
    random signed permutation.
    """

    def __init__(self, size: int, generator: torch.Generator, *, block_size: int = 32) -> None:
        size, block_size = check_int("size", size, 1), check_int("block_size", block_size, 1)
        self.size = size
        self.block = b = min(block_size, size)
        rounds = 1 if b in (1, size) else math.ceil(math.log(size) / math.log(b)) + 1
        self._rounds = []
        for _ in range(rounds):
            perm = torch.randperm(size, generator=generator)
            n_full, rem = divmod(size, b)
            full = _haar(b, generator, n_full)
            last = _haar(rem, generator)[0] if rem else None
            self._rounds.append((perm, torch.argsort(perm), full, last))

    def _blocks(self, x: torch.Tensor, full: torch.Tensor, last, transpose: bool) -> torch.Tensor:
        n_full, b = full.shape[0], self.block
        f = full.to(x.device, x.dtype)
        head = (f.transpose(1, 2) if transpose else f) @ x[: n_full * b].reshape(n_full, b, -1)
        parts = [head.reshape(n_full * b, -1)]
        if last is not None:
            lb = last.to(x.device, x.dtype)
            parts.append((lb.T if transpose else lb) @ x[n_full * b :])
        return torch.cat(parts, dim=0)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``Q @ x`` for ``x`` of shape ``(k, m)``."""
        for perm, _, full, last in self._rounds:
            x = self._blocks(x[perm.to(x.device)], full, last, transpose=False)
        return x

    def rmatmul(self, x: torch.Tensor) -> torch.Tensor:
        """``Qᵀ @ x`` for ``x`` of shape ``(k, m)``."""
        for _, inv, full, last in reversed(self._rounds):
            x = self._blocks(x, full, last, transpose=True)[inv.to(x.device)]
        return x

    def signed_permutation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target, sign)`` with ``Q e_j = sign[j] e_{target[j]}`` (``block_size=1`` only)."""
        if self.block != 1:
            raise ValueError("only a block_size=1 structured orthogonal matrix is a signed permutation")
        perm, _, full, _ = self._rounds[0]
        target = torch.argsort(perm)  # (Q x)[i] = s_i x[perm[i]]: input perm[i] lands at i
        return target, full.reshape(-1)[target]

    def dense(self) -> torch.Tensor:
        """Materialize ``Q`` (float64; tests and small layers only)."""
        return self.matmul(torch.eye(self.size, dtype=torch.float64))


class ImplicitOrthogonalInit(FullWidthInit):
    """ε-orthogonal full-width initialization of an ``m × n`` target, applied without forming it.

    ``dims = [n, k, …, k, m]`` with ``k = max(m, n)``; ``W_l(0) = ε_l Q_l`` with structured
    orthogonal ``k × k`` matrices ``Q_l``, truncated to the first ``n`` columns (first factor) and
    the first ``m`` rows (last factor). Every factor satisfies seed 003 eq. 3 (``W_lᵀW_l = ε_l² I``
    or ``W_l W_lᵀ = ε_l² I``), and ``W_{L:2}(0)`` has orthonormal rows up to ``∏_{l≥2} ε_l``.

    Parameters
    ----------
    shape : (int, int)
        ``(m, n)`` of the end-to-end product.
    depth : int
        ``L ≥ 1``.
    scale : float or sequence of float
        ``ε`` or one ``ε_l`` per factor (positive, finite).
    block_size : int, default=32
        Block size ``b`` of :class:`StructuredOrthogonal` (1: signed permutations).
    random_state : int or torch.Generator, optional
        Seed (the initialization is a deterministic function of it).
    """

    def __init__(
        self,
        shape: tuple[int, int],
        depth: int,
        scale: float | Sequence[float] = INIT_SCALE,
        *,
        block_size: int = 32,
        random_state: int | torch.Generator | None = None,
    ) -> None:
        m, n = (check_int("shape", s, 1) for s in shape)
        depth = check_int("depth", depth, 1)
        scales = per_layer(scale, depth, "scale")
        self.width = k = max(m, n)
        self.dims = [n] + [k] * (depth - 1) + [m]
        self.scales = scales
        gen = _as_generator(random_state)
        self.q = [StructuredOrthogonal(k, gen, block_size=block_size) for _ in range(depth)]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == self.width:
            return x
        return torch.cat([x, x.new_zeros(self.width - x.shape[0], x.shape[1])], 0)

    def matmul(self, layer, x):
        out = self.scales[layer] * self.q[layer].matmul(self._pad(x))
        return out[: self.dims[layer + 1]]

    def rmatmul(self, layer, y):
        out = self.scales[layer] * self.q[layer].rmatmul(self._pad(y))
        return out[: self.dims[layer]]

    def factor(self, layer: int) -> torch.Tensor:
        """Dense ``W_{layer+1}(0)`` (float64; for checks on small shapes)."""
        return self.matmul(layer, torch.eye(self.dims[layer], dtype=torch.float64))

    def to_model(self, dtype: torch.dtype = torch.float64) -> DeepFactorization:
        """The same initialization as an explicit :class:`~lowdim.DeepFactorization` (``O(L k²)``)."""
        return DeepFactorization.from_factors([self.factor(l).to(dtype) for l in range(self.depth)])

    def entries(self, rows, cols, dtype=torch.float64):
        if self.q[0].block != 1:
            return super().entries(rows, cols, dtype)
        target = torch.arange(self.width)  # follow every input coordinate through the permutations
        sign = torch.ones(self.width, dtype=torch.float64)
        for q in self.q:
            t, s = q.signed_permutation()
            sign = sign * s[target]
            target = t[target]
        hit = (target[cols.cpu()] == rows.cpu()) & (cols.cpu() < self.width)
        value = math.prod(self.scales) * torch.where(hit, sign[cols.cpu()], 0.0)
        return value.to(device=rows.device, dtype=dtype)
