"""Closed-form predictions of the theorems, to compare measured dynamics against.

* :func:`rho_recursion` — seed 003 Theorem 2.1 eq. 6 (seed 004 Theorem 1 Case 1 eq. 6).
* :func:`rho_whitened_regression` — seed 004 Theorem 1 Case 2 eq. 7.
* :func:`spectral_recursion` — seed 000 Theorem 1 (eq. 16–17): singular values of the
  spectral-initialized compressed factorization.
* :func:`compression_gap_bound` — seed 003 Proposition 2.2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rho_recursion(
    scales: Sequence[float], lr: float, steps: int, weight_decay: float = 0.0, momentum: float = 0.0
) -> np.ndarray:
    r"""Repeated singular values ρ_l(t) of each factor on the invariant subspace.

    .. math:: ρ_l(t) = ρ_l(t-1)\,\bigl(1 - ηλ - η \prod_{k \ne l} ρ_k(t-1)^2\bigr),\quad ρ_l(0) = ε_l

    (seed 003 Theorem 2.1 eq. 6). With heavy-ball momentum μ (seed 004 eq. 16, as
    :class:`torch.optim.SGD`: ``b(t) = μ b(t−1) + g(t)``, ``b(0) = g(0)``) the invariant block's
    gradient is still exactly ``g_l = ρ_l (λ + ∏_{k≠l} ρ_k²)`` (the proof of Theorem 2.1), so the
    same scalars follow ``ρ(t+1) = ρ(t) − η b(t)``; ``momentum=0`` is eq. 6.

    Returns
    -------
    numpy.ndarray
        Shape ``(steps + 1, L)``.
    """
    rho = np.empty((steps + 1, len(scales)))
    rho[0] = scales
    buf = np.zeros(len(scales))
    for t in range(steps):
        prev = rho[t]
        others = np.array([np.prod(np.delete(prev, l) ** 2) for l in range(len(prev))])
        buf = momentum * buf + prev * (weight_decay + others)
        rho[t + 1] = prev - lr * buf
    return rho


def rho_whitened_regression(scale: float, lr: float, steps: int, weight_decay: float = 0.0) -> np.ndarray:
    """``ρ(t) = ε (1 − ηλ)^t`` for ``t = 0..steps`` (seed 004 Theorem 1 Case 2, ``d_y = r``)."""
    return scale * (1 - lr * weight_decay) ** np.arange(steps + 1)


def spectral_recursion(
    singular_values: Sequence[float], rank: int, depth: int, scale: float, lr: float, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""λ_i(t) and β(t) of seed 000 Theorem 1 (α = 1, deep matrix factorization).

    .. math::

        λ_i(t) = λ_i(t-1)\bigl(1 - η(λ_i(t-1)^L - σ_i^*)λ_i(t-1)^{L-2}\bigr),\quad
        β(t) = β(t-1)\bigl(1 - η β(t-1)^{2(L-1)}\bigr),\quad λ_i(0) = β(0) = ε.

    The end-to-end singular values are ``λ_i(t)^L`` (i ≤ r) and ``β(t)^L`` (the other r̂ − r).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``λ`` of shape ``(steps + 1, r)`` and ``β`` of shape ``(steps + 1,)``.
    """
    sigma = np.asarray(singular_values[:rank], dtype=float)
    lam = np.empty((steps + 1, sigma.size))
    beta = np.empty(steps + 1)
    lam[0], beta[0] = scale, scale
    for t in range(1, steps + 1):
        p = lam[t - 1]
        lam[t] = p * (1 - lr * (p**depth - sigma) * p ** (depth - 2))
        beta[t] = beta[t - 1] * (1 - lr * beta[t - 1] ** (2 * (depth - 1)))
    return lam, beta


def compression_gap_bound(d: int, rank: int, scales: Sequence[float]) -> float:
    """``m · ∏ ε_l²`` with ``m = d − 2r``: the bound on ``‖f(Θ(t)) − f_C(Θ̃(t))‖_F²`` (Prop. 2.2)."""
    return float((d - 2 * rank) * np.prod(np.square(scales)))
