"""Compressed deep factorizations: the two compression methods of the papers and the narrow baseline.

All three return a :class:`~lowdim.DeepFactorization`, so the same training loop, operators and
measurements apply to every model.

* :func:`invariant_subspace_compression` — seed 003 Sec. 2.3 (and Sec. 3 eq. 11 for completion),
  seed 004 Sec. 4.1, seed 001 eq. 5: from the full-width initialization Θ(0) and the loss, build
  the bases ``V_{1,1}`` and ``U_{L,1}`` of the invariant subspace and the ``2r × 2r`` cores
  ``W̃_l(0) = ε_l I``; the model is ``U_{L,1} W̃_L ⋯ W̃_1 V_{1,1}ᵀ`` with learning-rate multipliers
  ``[γ, 1, …, 1, γ]`` (γ = 0 freezes the bases, as Prop. 2.2 of seed 003 assumes).
* :func:`spectral_compression` — Algorithm 1 of seed 000 (C-DLN): outer factors ``ε U_r̂`` and
  ``ε V_r̂ᵀ`` from the top-r̂ singular vectors of the surrogate ``A†(y)``, middle factors ``ε I``,
  learning-rate ratio α on the outer factors.
* :func:`narrow_factorization` — a width-r̂ factorization with small random initialization, the
  baseline both papers compare against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._validation import check_int, check_nonnegative, check_positive, fail
from .defaults import INIT_SCALE
from .factorization import DeepFactorization, _as_generator
from .initialization import ExplicitInit, FullWidthInit, as_init
from .linalg import LinearMap, compute_dtype, orthonormal_columns, qr_positive, top_singular
from .operators import MeasurementOperator


def _check_rank(rank: int, dims: Sequence[int], factor: int, what: str) -> int:
    """``rank`` r with ``d − factor·r > 0`` for the narrowest width ``d`` (Theorem 2.1's ``m > 0``)."""
    rank = check_int("rank", rank, 1)
    d = min(dims)
    if d - factor * rank <= 0:
        raise fail(
            "rank", f"at most {(d - 1) // factor}", rank,
            f"{what} needs d - {factor}r > 0 for the narrowest dimension d = {d} "
            f"(d - {factor}r = {d - factor * rank})",
        )
    return rank


def _gradient(init: FullWidthInit, problem: MeasurementOperator | LinearMap) -> LinearMap:
    if not isinstance(problem, (MeasurementOperator, LinearMap)):
        raise TypeError(
            "problem must be a MeasurementOperator or the end-to-end gradient as a LinearMap "
            f"(lowdim.gradients), got {type(problem).__name__}"
        )
    if tuple(problem.shape) != tuple(init.shape):
        raise ValueError(
            f"the problem measures {problem.shape[0]}×{problem.shape[1]} matrices but the "
            f"initialization produces {init.shape[0]}×{init.shape[1]} matrices"
        )
    return problem.gradient_at(init) if isinstance(problem, MeasurementOperator) else problem


def _chain_transpose_times(init: FullWidthInit, gradient: LinearMap, start: int) -> LinearMap:
    """``W_{L:start+1}(0)ᵀ E`` (``d_start × n``) through products, scaled by ``1/∏_{l>start} ε_l``."""
    return LinearMap(
        (init.dims[start], init.dims[0]),
        lambda x: init.chain_rmatmul(gradient.matmul(x), start),
        lambda y: gradient.rmatmul(init.chain_matmul(y, start)),
        gradient.dtype, gradient.device,
        lambda: init.chain_rmatmul(gradient.dense(), start),
    ).scaled(1.0 / math.prod(init.scales[start:]))


def compression_basis(
    init: FullWidthInit,
    gradient: LinearMap,
    rank: int,
    *,
    svd: str = "auto",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``V_{1,1}``: orthonormal basis (``n × 2r``) of ``S^⊥``, ``S = N(G_1) ∩ N(G_1ᵀ W_1(0))``.

    Seed 003 Sec. 2.3 with ``G_1 = W_{L:2}(0)ᵀ E`` (chain rule, ``E`` the end-to-end gradient):
    ``S^⊥ = range(G_1ᵀ) + range(W_1(0)ᵀ G_1)``. We take the top-``r`` right singular vectors of
    ``G_1`` and the top-``r`` left singular vectors of ``W_1(0)ᵀ G_1 = W_{L:1}(0)ᵀ E`` separately
    and orthonormalize them together (stacking both blocks and keeping the top ``2r`` directions
    fails for completion: the second block is ε times smaller and noise directions win). For deep
    matrix factorization both blocks lie exactly in the invariant subspace of Theorem 2.1. Both
    operators are applied through products only, scaled by ``1/∏ε`` so they have unit scale.
    """
    g1 = _chain_transpose_times(init, gradient, start=1)  # G_1 = W_{L:2}ᵀ E, d_1 × n
    second = _chain_transpose_times(init, gradient, start=0)  # W_1ᵀ G_1 = W_{L:1}ᵀ E, n × n
    _, _, right = top_singular(g1, rank, method=svd, generator=generator)
    left, _, _ = top_singular(second, rank, method=svd, generator=generator)
    return orthonormal_columns(torch.cat([right, left], dim=1), generator)


def invariant_subspace_compression(
    init: DeepFactorization | FullWidthInit,
    problem: MeasurementOperator | LinearMap,
    rank: int,
    *,
    gamma: float = 0.0,
    svd: str = "auto",
    random_state: int | torch.Generator | None = 0,
) -> DeepFactorization:
    r"""Compress a full-width factorization at initialization onto its invariant subspace.

    The one compression engine of lowdim (seed 003 Sec. 2.3; Sec. 3 eq. 11 for the discrepant
    rate; seed 004 Sec. 4.1; Deep LoRA, seed 003 Sec. 4.1):

    .. math::

        V_{1,1} = \operatorname{orth}\,S^\perp,\quad U_{l,1} = W_l(0) V_{l,1} / ε_l,\quad
        V_{l+1,1} = U_{l,1},\qquad
        f_C = U_{L,1}\, \widetilde W_L \cdots \widetilde W_1\, V_{1,1}^\top,\quad
        \widetilde W_l(0) = ε_l I_{2r}.

    ``U_{l,1}`` is computed as the Q factor of ``W_l(0) V_{l,1}`` (sign-fixed QR) and
    ``W̃_l(0) = U_{l,1}ᵀ W_l(0) V_{l,1}``, which is exactly the formula above for ε-orthogonal
    square factors and stays well defined for rectangular ones (then ``W̃_l(0)`` is the best
    approximation of ``W_l(0)`` on the subspace); every basis is orthonormal.

    Parameters
    ----------
    init : DeepFactorization or FullWidthInit
        The full-width initialization Θ(0): an explicit model (typically ``init="orthogonal"``), or
        an implicit one (:class:`~lowdim.initialization.ImplicitOrthogonalInit`) that is never formed.
    problem : MeasurementOperator or LinearMap
        The loss, through its end-to-end gradient at Θ(0) (:meth:`MeasurementOperator.gradient_at`;
        observed entries only for completion), or that gradient itself (:mod:`lowdim.gradients`,
        e.g. a layer's batch gradient ``δᵀX``).
    rank : int
        ``r``: the compressed width is ``2r`` (Theorem 2.1); needs ``d − 2r > 0`` for every width.
    gamma : float, default=0.0
        Learning-rate ratio γ of the bases ``U_{L,1}``, ``V_{1,1}`` (0 freezes them, which is what
        Prop. 2.2 covers; completion and Deep LoRA need γ > 0, seed 003 Fig. 5).
    svd : {"auto", "dense", "arpack", "randomized"}, default="auto"
        How the top singular vectors are found (:func:`lowdim.linalg.top_singular`).
    random_state : int or torch.Generator, default=0
        Randomness of the randomized SVD and of basis completion when the gradient has rank < r.

    Returns
    -------
    DeepFactorization
        Depth ``L + 2``: factors ``[V_{1,1}ᵀ, W̃_1, …, W̃_L, U_{L,1}]`` with multipliers
        ``[γ, 1, …, 1, γ]``; it trains ``4L r²`` numbers when γ = 0. Float64 for float64 data,
        float32 otherwise, on the gradient's device.

    Examples
    --------
    >>> import torch
    >>> from lowdim import DeepFactorization, FullObservation, invariant_subspace_compression
    >>> from lowdim.datasets import low_rank_matrix
    >>> phi = low_rank_matrix(20, 20, rank=2, random_state=0)
    >>> full = DeepFactorization([20, 20, 20, 20], scale=1e-2, random_state=0)
    >>> small = invariant_subspace_compression(full, FullObservation(phi), rank=2)
    >>> small.dims
    [20, 4, 4, 4, 4, 20]
    """
    init = as_init(init)
    rank = _check_rank(rank, init.dims, 2, "invariant-subspace compression")
    gamma = check_nonnegative("gamma", gamma)
    gradient = _gradient(init, problem)
    gradient = gradient.astype(compute_dtype(gradient.dtype))
    v11 = compression_basis(init, gradient, rank, svd=svd, generator=_as_generator(random_state))
    v, cores = v11, []
    for layer in range(init.depth):
        v, core = qr_positive(init.matmul(layer, v))
        cores.append(core)
    return DeepFactorization.from_factors(
        [v11.T, *cores, v], lr_multipliers=[gamma] + [1.0] * len(cores) + [gamma]
    )


def invariant_bases(
    model: DeepFactorization, operator: MeasurementOperator, rank: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Complete orthogonal bases ``(U_l, V_l)`` of Theorem 2.1 (seed 003) for a square model.

    ``V_1 = [V_{1,1}, V_{1,2}]`` with ``V_{1,2}`` the orthogonal complement, ``U_l = W_l(0)V_l/ε_l``
    and ``V_{l+1} = U_l``. The invariant parts are the trailing ``d − 2r`` columns. Requires
    ε-orthogonal square factors (seed 003 eq. 3).
    """
    dims = model.dims
    if len(set(dims)) != 1:
        raise ValueError(f"complete invariant bases need a square model, got dims {dims}")
    rank = _check_rank(rank, dims, 2, "the invariant subspace decomposition")
    init = ExplicitInit(model)
    v11 = compression_basis(init, _gradient(init, operator), rank, svd="dense")
    q, _ = torch.linalg.qr(v11, mode="complete")
    v = torch.cat([v11, q[:, 2 * rank :]], dim=1)
    us, vs = [], []
    for w, eps in zip(model.factors, init.scales):
        u = w.detach() @ v / eps
        us.append(u)
        vs.append(v)
        v = u
    return us, vs


def spectral_compression(
    operator: MeasurementOperator,
    rank: int,
    depth: int,
    *,
    scale: float = INIT_SCALE,
    alpha: float = 1.0,
) -> DeepFactorization:
    r"""C-DLN of seed 000 Algorithm 1: spectral initialization from the surrogate ``A†(y)``.

    ``W̃_L(0) = ε U_r̂``, ``W̃_1(0) = ε V_r̂ᵀ`` (top-r̂ singular vectors of the surrogate, eq. 6),
    ``W̃_l(0) = ε I_r̂`` for ``2 ≤ l ≤ L−1``; the outer factors train at ``α η``.

    Parameters
    ----------
    operator : MeasurementOperator
        Gives the surrogate (``Ω⊙Φ/p`` for completion, ``(1/M) Σ y_i A_i`` for sensing).
    rank : int
        ``r̂ ≥ rank(M*)``; must satisfy ``r̂ < min(m, n)``.
    depth : int
        ``L ≥ 2``.
    scale : float, default=INIT_SCALE (1e-3)
        ε > 0.
    alpha : float, default=1.0
        Learning-rate ratio of the outer factors (> 0).

    Returns
    -------
    DeepFactorization
        Dims ``[n, r̂, …, r̂, m]`` with multipliers ``[α, 1, …, 1, α]``.
    """
    depth = check_int("depth", depth, 2, "spectral compression has two outer factors")
    rank = _check_rank(rank, operator.shape, 1, "spectral compression")
    scale = check_positive("scale", scale)
    alpha = check_positive("alpha", alpha)
    u, _, vh = operator.top_singular(rank)
    eye = torch.eye(rank, dtype=u.dtype, device=u.device)
    factors = [scale * vh] + [scale * eye for _ in range(depth - 2)] + [scale * u]
    return DeepFactorization.from_factors(
        factors, lr_multipliers=[alpha] + [1.0] * (depth - 2) + [alpha]
    )


def narrow_factorization(
    shape: tuple[int, int],
    rank: int,
    depth: int,
    *,
    scale: float = INIT_SCALE,
    init: str = "normal",
    random_state: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> DeepFactorization:
    """A width-``rank`` factorization ``[n, r̂, …, r̂, m]`` with small random initialization.

    The baseline of seed 003 App. D.1 / seed 000 Sec. 4.1 ("randomly initialized factorization of
    similar width").
    """
    m, n = shape
    depth = check_int("depth", depth, 1)
    rank = _check_rank(rank, shape, 1, "a narrow factorization") if depth > 1 else rank
    dims = [n] + [rank] * (depth - 1) + [m]
    return DeepFactorization(dims, init=init, scale=scale, random_state=random_state, dtype=dtype)
