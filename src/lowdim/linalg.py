"""Linear-algebra kernels shared by every compression: sign-fixed QR, truncated SVD of operators.

Each routine exists once here; :mod:`lowdim.compression`, :mod:`lowdim.initialization` and the
Deep LoRA layers call them.

* :func:`qr_positive` — thin QR with a non-negative diagonal of ``R`` (unique; ``Q = A/ε`` when
  ``AᵀA = ε² I``, which is what makes the compressed cores start at exactly ``ε I``).
* :func:`orthonormal_columns` — an orthonormal basis of a span, completed with random directions
  when the given vectors are (numerically) dependent.
* :class:`LinearMap` — a matrix known only through ``x ↦ A x`` and ``y ↦ Aᵀ y`` (never formed).
* :func:`top_singular` — top-``k`` singular triplets of a :class:`LinearMap`: LAPACK on the
  materialized matrix (small), ARPACK (``scipy.sparse.linalg.svds``, ``tol=0``) or randomized
  subspace iteration (Halko, Martinsson and Tropp 2011) that touches ``A`` only through products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse.linalg
import torch

__all__ = [
    "LinearMap", "SVD_METHODS", "compute_dtype", "factored_svd", "orthonormal_columns", "qr_positive",
    "top_singular",
]

SVD_METHODS = ("auto", "dense", "arpack", "randomized")
#: ``"auto"`` materializes operators with at most this many entries (LAPACK: exact, and faster than
#: iterating at this size).
DENSE_LIMIT = 65_536


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision of the linear algebra for data of ``dtype``: float64 stays, anything else is float32.

    (QR and SVD have no half-precision kernels; float32 singular vectors are accurate to ~1e-6.)
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def qr_positive(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR ``a = Q R`` with ``diag(R) ≥ 0`` (unique for full column rank).

    Parameters
    ----------
    a : torch.Tensor
        Shape ``(m, k)`` with ``k ≤ m``, or a batch ``(..., m, k)``.

    Returns
    -------
    Q, R : torch.Tensor
        ``(m, k)`` with orthonormal columns and ``(k, k)`` upper triangular.
    """
    q, r = torch.linalg.qr(a)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return q * signs.unsqueeze(-2), r * signs.unsqueeze(-1)


def orthonormal_columns(a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Orthonormal basis (sign-fixed QR) of the columns of ``a``, completed if they are dependent.

    Columns whose QR diagonal is below ``m · eps · max|diag|`` are replaced by random directions
    orthogonal to the others, so the result always has ``a.shape[1]`` orthonormal columns.
    """
    q, r = qr_positive(a)
    diag = torch.diagonal(r).abs()
    tol = a.shape[0] * torch.finfo(a.dtype).eps * max(float(diag.max()) if diag.numel() else 0.0, 1e-300)
    bad = diag <= tol
    if not bool(bad.any()):
        return q
    keep = q[:, ~bad]
    fill = torch.randn(a.shape[0], int(bad.sum()), dtype=a.dtype, generator=generator).to(a.device)
    fill = fill - keep @ (keep.T @ fill)
    q, _ = qr_positive(torch.cat([keep, fill], 1))
    return q


def factored_svd(
    left: torch.Tensor, core: torch.Tensor, right: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD ``(U, s, Vᵀ)`` of ``left @ core @ right`` without forming the ``m × n`` product.

    ``left`` is ``m × r``, ``core`` ``r × r``, ``right`` ``r × n``: thin QRs of the outer factors and
    an ``r × r`` SVD, ``O((m + n) r²)``. Computed in :func:`compute_dtype` of the inputs.
    """
    dtype = compute_dtype(left.dtype)
    q_l, r_l = torch.linalg.qr(left.to(dtype))
    q_r, r_r = torch.linalg.qr(right.to(dtype).T)
    u, s, vt = torch.linalg.svd(r_l @ core.to(dtype) @ r_r.T)
    return q_l @ u, s, vt @ q_r.T


@dataclass
class LinearMap:
    """A ``rows × cols`` matrix given by its products (``matmul(x) = A x``, ``rmatmul(y) = Aᵀ y``).

    ``x`` and ``y`` are 2-D tensors (one vector per column); ``dtype`` and ``device`` are those of
    the products.
    """

    shape: tuple[int, int]
    matmul: Callable[[torch.Tensor], torch.Tensor]
    rmatmul: Callable[[torch.Tensor], torch.Tensor]
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    #: Optional cheaper way to form ``A`` than ``cols`` products (e.g. ``δᵀX`` in one matmul).
    materialize: Callable[[], torch.Tensor] | None = None
    _dense: torch.Tensor | None = field(default=None, init=False, repr=False)

    def dense(self) -> torch.Tensor:
        """Materialize ``A`` (small operators only); computed once and kept."""
        if self._dense is None:
            if self.materialize is not None:
                self._dense = self.materialize().to(self.device, self.dtype)
            else:
                self._dense = self.matmul(torch.eye(self.shape[1], dtype=self.dtype, device=self.device))
        return self._dense

    def astype(self, dtype: torch.dtype) -> LinearMap:
        """The same map computing in ``dtype`` (shares this one's materialized matrix)."""
        return LinearMap(self.shape, self.matmul, self.rmatmul, dtype, self.device, self.dense)

    def scaled(self, factor: float) -> LinearMap:
        """``factor · A`` (singular vectors unchanged; keeps ε-small operators near unit scale)."""
        return LinearMap(
            self.shape, lambda x: factor * self.matmul(x), lambda y: factor * self.rmatmul(y),
            self.dtype, self.device, lambda: factor * self.dense(),
        )


def _svd_dense(op: LinearMap, k: int):
    u, s, vh = torch.linalg.svd(op.dense(), full_matrices=False)
    return u[:, :k], s[:k], vh[:k].T


def _svd_arpack(op: LinearMap, k: int, seed: int):
    def as_t(x):
        return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64)).to(op.device, op.dtype)

    def as_np(t):
        return t.detach().to("cpu", torch.float64).numpy()

    def product(f, x, rows_in):
        out = as_np(f(as_t(x.reshape(rows_in, -1))))
        return out if x.ndim == 2 else out.reshape(-1)

    lin = scipy.sparse.linalg.LinearOperator(
        op.shape,
        matvec=lambda x: product(op.matmul, x, op.shape[1]),
        rmatvec=lambda y: product(op.rmatmul, y, op.shape[0]),
        matmat=lambda x: product(op.matmul, x, op.shape[1]),
        rmatmat=lambda y: product(op.rmatmul, y, op.shape[0]),
        dtype=np.float64,
    )
    v0 = np.random.default_rng(seed).standard_normal(min(op.shape))
    u, s, vh = scipy.sparse.linalg.svds(lin, k=k, tol=0, v0=v0, solver="arpack")
    order = np.argsort(-s)
    return as_t(u[:, order]), as_t(s[order]), as_t(vh[order].T)


def _svd_randomized(op: LinearMap, k: int, oversample: int, power_iters: int, generator):
    width = min(k + oversample, min(op.shape))
    omega = torch.randn(op.shape[1], width, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(op.matmul(omega.to(op.device, op.dtype)))
    for _ in range(power_iters):
        z, _ = torch.linalg.qr(op.rmatmul(q))
        q, _ = torch.linalg.qr(op.matmul(z))
    ub, s, vt = torch.linalg.svd(op.rmatmul(q).T, full_matrices=False)  # Qᵀ A = Ub S Vᵀ
    return (q @ ub)[:, :k], s[:k], vt[:k].T


def top_singular(
    op: LinearMap,
    k: int,
    *,
    method: str = "auto",
    oversample: int = 8,
    power_iters: int = 2,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` singular triplets ``(U, s, V)`` of ``op`` (``A ≈ U diag(s) Vᵀ``), largest first.

    Parameters
    ----------
    op : LinearMap
        The matrix, ``rows × cols``.
    k : int
        Number of triplets, ``1 ≤ k ≤ min(rows, cols)``.
    method : {"auto", "dense", "arpack", "randomized"}, default="auto"
        ``"dense"``: LAPACK on the materialized matrix (exact). ``"arpack"``: Lanczos
        bidiagonalization through products only, to machine precision (CPU, float64 products).
        ``"randomized"``: subspace iteration with ``oversample`` extra columns and
        ``power_iters`` passes (approximate, to about the precision of float32). ``"auto"``: dense
        when the matrix has at most 65 536 entries or ``k`` is close to ``min(rows, cols)``; else
        ARPACK for float64 operators on the CPU (where machine precision is wanted and reachable)
        and randomized otherwise (float32/half data, accelerators: e.g. Deep LoRA layers).
    generator, seed
        Randomness of the randomized method and of ARPACK's start vector.

    Returns
    -------
    U, s, V : torch.Tensor
        ``(rows, k)``, ``(k,)``, ``(cols, k)``.
    """
    if method not in SVD_METHODS:
        raise ValueError(f"svd method must be one of {SVD_METHODS}, got {method!r}")
    small = min(op.shape)
    if not 1 <= k <= small:
        raise ValueError(f"need 1 <= k <= min{op.shape} = {small} singular triplets, got k={k}")
    if method == "auto":
        if op.shape[0] * op.shape[1] <= DENSE_LIMIT or k >= small - 1:
            method = "dense"
        else:
            precise = op.dtype == torch.float64 and torch.device(op.device).type == "cpu"
            method = "arpack" if precise else "randomized"
    if method == "dense" or (method == "arpack" and k >= small - 1):
        return _svd_dense(op, k)
    if method == "arpack":
        try:
            return _svd_arpack(op, k, seed)
        except scipy.sparse.linalg.ArpackError:  # e.g. a zero or numerically rank-deficient operator
            return _svd_randomized(op, k, oversample, max(power_iters, 8), generator)
    return _svd_randomized(op, k, oversample, power_iters, generator)
