"""Measurements of the low-dimensional dynamics of deep factorizations.

* :func:`singular_values` — spectrum of each factor (seed 003 Fig. 3 left).
* :func:`singular_vector_angles` — ∠(v_i(t), v_i(0)) and ∠(u_i(t), u_i(0)) (Fig. 3 middle/right).
* :func:`angles_to_reference` — the same angles where singular values repeat (the invariant block's
  ρ(t) has a unique span, not unique vectors).
* :func:`invariant_residuals` — ``‖W_l(t)V_{l,2} − ρ_l(t)U_{l,2}‖`` and ``‖W_l(t)ᵀU_{l,2} − ρ_l(t)V_{l,2}‖``
  (seed 003 Theorem 2.1, eq. 5).
* :func:`numerical_rank` — seed 003 Fig. 7: singular values above ``max(1e-8, d σ_1 ε_mach)``.
* :func:`subspace_distance` — seed 000 eq. 14: ``r − ‖U_r(t)ᵀU_r(s)‖_F²``.
* :func:`trajectory_pca` — principal components of an end-to-end trajectory (seed 003 Fig. 4 left).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .factorization import DeepFactorization


def singular_values(model: DeepFactorization) -> list[torch.Tensor]:
    """Singular values of every factor ``W_l``, in decreasing order."""
    with torch.no_grad():
        return [torch.linalg.svdvals(w) for w in model.factors]


def singular_vector_angles(w_t: torch.Tensor, w_0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles (radians) between the i-th left/right singular vectors of ``w_t`` and ``w_0``.

    Returns ``(angles_u, angles_v)``, each of length ``min(shape)``; the sign ambiguity of singular
    vectors is removed with ``|⟨a, b⟩|``.
    """
    u_t, _, vh_t = torch.linalg.svd(w_t.detach(), full_matrices=False)
    u_0, _, vh_0 = torch.linalg.svd(w_0.detach(), full_matrices=False)
    cos_u = (u_t * u_0).sum(0).abs().clamp(max=1)
    cos_v = (vh_t * vh_0).sum(1).abs().clamp(max=1)
    return torch.arccos(cos_u), torch.arccos(cos_v)


def repeated_values(values: torch.Tensor, rtol: float = 1e-9) -> torch.Tensor:
    """Mask of the singular values that are repeated (another value within ``rtol · σ_max``)."""
    close = (values[:, None] - values[None, :]).abs() <= rtol * float(values.max())
    return close.sum(1) > 1


def angles_to_reference(
    vecs: torch.Tensor, values: torch.Tensor, ref_vecs: torch.Tensor, ref_values: torch.Tensor,
    rtol: float = 1e-9,
) -> list[float]:
    """Angles (radians) of singular vectors (columns of ``vecs``, values ``values``) to reference ones.

    A repeated singular value (seed 003 Theorem 2.1: the ``d − 2r`` values ρ(t) of the invariant
    block) has no unique vectors, only a unique span, so: the k-th non-repeated vector (in
    decreasing order of its value) is compared with the k-th non-repeated reference vector, and each
    repeated vector with the span of the repeated reference vectors.

    Returns
    -------
    list of float
        ``[angles of the non-repeated vectors…, angles of the repeated vectors…]``.
    """
    rep, ref_rep = repeated_values(values, rtol), repeated_values(ref_values, rtol)
    mov, ref_mov = vecs[:, ~rep], ref_vecs[:, ~ref_rep]
    k = min(mov.shape[1], ref_mov.shape[1])
    moving = torch.arccos((mov[:, :k] * ref_mov[:, :k]).sum(0).abs().clamp(max=1.0))
    span = ref_vecs[:, ref_rep].T @ vecs[:, rep]
    stay = torch.arccos(torch.linalg.vector_norm(span, dim=0).clamp(max=1.0))
    return moving.tolist() + stay.tolist()


def invariant_residuals(
    model: DeepFactorization,
    u2: Sequence[torch.Tensor],
    v2: Sequence[torch.Tensor],
    rho: Sequence[float],
) -> list[tuple[float, float]]:
    """``(‖W_l V_{l,2} − ρ_l U_{l,2}‖_F, ‖W_lᵀ U_{l,2} − ρ_l V_{l,2}‖_F)`` for each layer.

    ``u2``/``v2`` are the invariant parts of the bases (e.g. the trailing ``d − 2r`` columns from
    :func:`lowdim.compression.invariant_bases`) and ``rho`` the predicted ρ_l(t)
    (:func:`lowdim.theory.rho_recursion`). Theorem 2.1 of seed 003 says both vanish.
    """
    out = []
    with torch.no_grad():
        for w, u, v, r in zip(model.factors, u2, v2, rho):
            out.append(
                (
                    float(torch.linalg.matrix_norm(w @ v - r * u)),
                    float(torch.linalg.matrix_norm(w.T @ u - r * v)),
                )
            )
    return out


def rank_from_singular_values(singular: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> int:
    """Numerical rank from singular values (seed 003 Fig. 7): those above ``max(1e-8, d σ_1 ε)``.

    Parameters
    ----------
    singular : torch.Tensor
        Singular values (any order).
    shape : sequence of int
        Shape of the matrix they come from; ``d`` is its largest dimension.
    dtype : torch.dtype
        Floating type whose machine epsilon ``ε`` is used.
    """
    if singular.numel() == 0:
        return 0
    tol = max(1e-8, max(shape) * float(singular.max()) * torch.finfo(dtype).eps)
    return int((singular > tol).sum())


def numerical_rank(matrix: torch.Tensor | np.ndarray) -> int:
    """Numerical rank of ``matrix`` (seed 003 Fig. 7), see :func:`rank_from_singular_values`."""
    m = torch.as_tensor(matrix)
    if not m.is_floating_point():
        m = m.double()
    return rank_from_singular_values(torch.linalg.svdvals(m.detach()), m.shape, m.dtype)


def top_singular_subspace(matrix: torch.Tensor, rank: int, side: str = "left") -> torch.Tensor:
    """Orthonormal basis of the top-``rank`` left (or right) singular subspace."""
    u, _, vh = torch.linalg.svd(matrix.detach(), full_matrices=False)
    return u[:, :rank] if side == "left" else vh[:rank].T


def subspace_distance(basis_a: torch.Tensor, basis_b: torch.Tensor) -> float:
    """``r − ‖U_aᵀ U_b‖_F²`` for orthonormal ``n × r`` bases (seed 000 eq. 14); 0 iff equal spans."""
    if basis_a.shape != basis_b.shape:
        raise ValueError(
            f"bases must have the same shape, got {tuple(basis_a.shape)}, {tuple(basis_b.shape)}"
        )
    return float(basis_a.shape[1] - torch.linalg.matrix_norm(basis_a.T @ basis_b) ** 2)


def trajectory_pca(trajectory: Sequence[torch.Tensor | np.ndarray], components: int = 2) -> np.ndarray:
    """Project a trajectory of end-to-end matrices on its top principal components.

    Parameters
    ----------
    trajectory : sequence of arrays
        ``W_{L:1}(t)`` for the recorded iterations (all the same shape). Several trajectories can be
        compared in one frame by concatenating them.
    components : int, default=2

    Returns
    -------
    numpy.ndarray
        Shape ``(len(trajectory), components)``: coordinates of each iterate.
    """
    x = np.stack(
        [np.asarray(torch.as_tensor(t).detach().cpu(), dtype=np.float64).ravel() for t in trajectory]
    )
    x = x - x.mean(axis=0)
    # Left singular vectors of the (T × mn) data matrix via the small T × T Gram matrix.
    u, s, _ = np.linalg.svd(x @ x.T)
    return u[:, :components] * np.sqrt(s[:components])
