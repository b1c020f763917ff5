"""Synthetic low-rank problems (the settings of seed 003 Sec. 2–3, seed 000 Sec. 4.1) and the
orthogonal classification data of seed 004 Sec. 4.2 (:func:`orthogonal_classes`).

The ground truth ``Φ = A Bᵀ`` has i.i.d. Gaussian ``A ∈ R^{m×r*}``, ``B ∈ R^{n×r*}`` and is rescaled
so that ``σ_max(Φ) = 1`` (the step sizes quoted in lowdim's docs assume this scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._validation import check_int
from ..factorization import init_factor


def _rng(random_state) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(
        random_state
    )


def low_rank_matrix(
    m: int,
    n: int,
    rank: int,
    *,
    random_state: int | np.random.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A random ``m × n`` matrix of rank ``rank`` with largest singular value 1.

    Examples
    --------
    >>> import torch
    >>> phi = low_rank_matrix(30, 40, 3, random_state=0)
    >>> int(torch.linalg.matrix_rank(phi)), round(float(torch.linalg.matrix_norm(phi, 2)), 6)
    (3, 1.0)
    """
    if min(m, n) < 1:
        raise ValueError(f"matrix dimensions must be positive, got {m}×{n}")
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be in [1, min(m, n) = {min(m, n)}], got {rank}")
    rng = _rng(random_state)
    phi = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    phi /= np.linalg.norm(phi, 2)
    return torch.as_tensor(phi, dtype=dtype)


def sample_entries(
    m: int, n: int, fraction: float, *, random_state: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``round(fraction · m n)`` distinct entries drawn uniformly (``≥ 1``)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = _rng(random_state)
    total = m * n
    count = max(1, int(round(fraction * total)))
    if count > total // 4:
        flat = rng.choice(total, size=count, replace=False)
    else:  # sparse regime: rejection of duplicates without an m·n permutation
        flat = np.unique(rng.integers(0, total, size=int(count * 1.1) + 16))
        while flat.size < count:
            flat = np.unique(np.concatenate([flat, rng.integers(0, total, size=count)]))
        flat = rng.permutation(flat)[:count]
    flat = np.sort(flat)
    return flat // n, flat % n


@dataclass
class CompletionProblem:
    """A synthetic matrix completion problem: ground truth and noisy observed entries."""

    truth: torch.Tensor
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.truth.shape)

    def operator(self, dtype: torch.dtype = torch.float64):
        """The :class:`lowdim.EntryObservation` of the observed entries."""
        from ..operators import EntryObservation

        return EntryObservation(self.rows, self.cols, self.values, self.shape, dtype=dtype)


def completion_problem(
    m: int,
    n: int,
    rank: int,
    fraction: float,
    *,
    noise: float = 0.0,
    random_state: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> CompletionProblem:
    """Rank-``rank`` ``m × n`` truth with a uniformly random ``fraction`` of entries observed.

    ``noise`` is the standard deviation of Gaussian noise added to the observed values, relative to
    the root-mean-square entry of the truth.
    """
    rng = np.random.default_rng(random_state)
    truth = low_rank_matrix(m, n, rank, random_state=rng, dtype=dtype)
    rows, cols = sample_entries(m, n, fraction, random_state=rng)
    values = truth.numpy()[rows, cols].astype(np.float64)
    if noise > 0:
        rms = float(np.sqrt(np.mean(truth.numpy() ** 2)))
        values = values + noise * rms * rng.standard_normal(values.shape)
    return CompletionProblem(truth, rows, cols, values)


def orthogonal_classes(
    num_classes: int,
    per_class: int,
    dim: int | None = None,
    *,
    random_state: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced classification data with orthonormal samples (seed 004 Sec. 4.2, Theorem 2).

    ``N = num_classes · per_class`` samples in ``R^dim`` (default ``dim = N``): the rows of ``x``
    (``N × dim``) are orthonormal, i.e. ``X Xᵀ = I`` for the paper's ``X = xᵀ`` when ``dim = N``
    (a random orthogonal matrix, :func:`lowdim.factorization.init_factor` with ε = 1); labels are
    ``0 … K−1``, ``per_class`` each, in blocks.

    Examples
    --------
    >>> import torch
    >>> x, labels = orthogonal_classes(5, 10, random_state=0)          # K = 5, n = 10, d = N = 50
    >>> x.shape, labels[:12].tolist()
    (torch.Size([50, 50]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    >>> bool(torch.allclose(x @ x.T, torch.eye(50, dtype=x.dtype), atol=1e-12))
    True
    """
    k = check_int("num_classes", num_classes, 2)
    n = check_int("per_class", per_class, 2)
    dim = k * n if dim is None else check_int("dim", dim, k * n, "orthonormal samples need dim >= N")
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    x = init_factor(k * n, dim, 1.0, generator=gen, dtype=dtype)
    return x, torch.arange(k).repeat_interleave(n)
