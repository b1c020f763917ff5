"""Sparse compressed training for matrix completion: nothing ``m × n``, no ``d × d`` factor.

Seed 003 Sec. 3 (eq. 10–11) and seed 004 Sec. 4.1 compress a full-width depth-``L`` factorization
of an ``m × n`` matrix to ``U_{L,1} W̃_L ⋯ W̃_1 V_{1,1}ᵀ`` (width ``2r``) and train the bases
``U_{L,1}, V_{1,1}`` at the discrepant rate ``γη``. Seed 000 Algorithm 1 (C-DLN) starts instead from
the top-``r̂`` singular vectors of the surrogate ``Ω⊙Φ/p``. This module gives both methods a path
whose cost depends on the observed entries only:

* **loss and gradients** (:class:`SparseEntryObservation`, :func:`observed_loss`): with the model
  split at its narrowest width ``k`` as ``W_{L:1} = A B`` (``A`` is ``m × k``, ``B`` is ``k × n``),
  the residual on Ω is ``r_ω = ⟨A[i], B[:, j]⟩ − y_ω`` and the gradients are
  ``∇_A = Σ_ω r_ω e_i B[:, j]ᵀ`` and ``∇_B = Σ_ω r_ω A[i]ᵀ e_jᵀ``, accumulated with
  ``gather`` / ``index_add_`` over chunks of Ω: ``O(|Ω| k)`` time, ``O(chunk · k)`` extra memory;
  the rest of the chain backpropagates through ``O((m + n) k² + L k³)`` products.
* **invariant-subspace compression without the full-width model**: the one engine,
  :func:`lowdim.invariant_subspace_compression`, reads the gradient at initialization through
  :meth:`~lowdim.EntryObservation.gradient_at` (the sparse residual ``P_Ω(W_{L:1}(0) − Φ)``) and a
  virtual full-width initialization
  (:class:`~lowdim.initialization.ImplicitOrthogonalInit` with ``block_size=1``: random signed
  permutations, ``O(m + n)`` per vector), so nothing ``m × n`` or ``d × d`` is ever formed.
* **spectral compression** reuses :func:`lowdim.compression.spectral_compression`, whose
  surrogate SVD is already sparse for :class:`~lowdim.EntryObservation`.

:func:`lowdim.train` trains these models like any other: with a :class:`SparseEntryObservation`
its loss and gradients touch the observed entries only.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import torch

from ..factorization import DeepFactorization
from ..operators import EntryObservation

__all__ = ["SparseEntryObservation", "entries_chunked", "observed_loss"]

#: Entries per chunk times width in the sparse kernels (bounds the temporary memory).
_CHUNK_ELEMENTS = 1 << 18  # 2 MiB float64 temporaries: cache-sized, no page-fault churn


def _chunks(n: int, k: int):
    step = max(4096, _CHUNK_ELEMENTS // max(1, k))
    for s in range(0, n, step):
        yield s, min(n, s + step)


class _Pattern:
    """CSR/CSC index structure of Ω (rows sorted), reused by every backward pass.

    The gradients ``∇_A = R B`` and ``∇_B = Rᵀ A`` of the observed-entry loss are sparse-times-dense
    products with the residual matrix ``R`` (|Ω| non-zeros); on the CPU they run as SciPy CSR
    products (plain single-threaded C++, no MKL sparse threads), elsewhere as ``index_add_``.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> None:
        m, n = shape
        r = rows.cpu().numpy()
        c = cols.cpu().numpy()
        self.shape = (m, n)
        self.row_sorted = bool(np.all(r[1:] >= r[:-1])) if r.size > 1 else True
        by_col = np.lexsort((r, c))
        self.perm_c = torch.as_tensor(by_col)
        self.indptr_r = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=m))]).astype(np.int64)
        self.indices_r = c.astype(np.int32 if n < 2**31 else np.int64)
        self.indptr_c = np.concatenate([[0], np.cumsum(np.bincount(c, minlength=n))]).astype(np.int64)
        self.indices_c = r[by_col].astype(np.int32 if m < 2**31 else np.int64)

    def matmul(self, data: torch.Tensor, dense: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``R @ dense`` (``transpose=False``) or ``Rᵀ @ dense`` with ``R``'s values ``data``."""
        m, n = self.shape
        if transpose:
            d = data[self.perm_c].numpy()
            mat = scipy.sparse.csr_matrix((d, self.indices_c, self.indptr_c), shape=(n, m))
        else:
            mat = scipy.sparse.csr_matrix((data.numpy(), self.indices_r, self.indptr_r), shape=(m, n))
        return torch.from_numpy(np.asarray(mat @ dense.detach().numpy()))


class _ObservedLoss(torch.autograd.Function):
    """``½ w Σ_ω (⟨A[i_ω], Bt[j_ω]⟩ − y_ω)²`` with hand-written, chunked gradients."""

    @staticmethod
    def forward(ctx, a, bt, rows, cols, values, weight, pattern):  # noqa: D401
        n = values.numel()
        k = a.shape[1]
        res = torch.empty_like(values)
        for s, e in _chunks(n, k):
            prod = torch.index_select(a, 0, rows[s:e]).mul_(torch.index_select(bt, 0, cols[s:e]))
            torch.sum(prod, dim=1, out=res[s:e])
        res.sub_(values)
        ctx.save_for_backward(a, bt, rows, cols, res)
        ctx.weight = weight
        ctx.pattern = pattern
        return 0.5 * weight * torch.dot(res, res)

    @staticmethod
    def backward(ctx, grad):
        a, bt, rows, cols, res = ctx.saved_tensors
        scale = grad * ctx.weight
        pattern = ctx.pattern
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if pattern is not None and a.device.type == "cpu" and pattern.row_sorted:
            data = res * scale
            ga = pattern.matmul(data, bt, transpose=False).to(a.dtype) if need_a else None
            gb = pattern.matmul(data, a, transpose=True).to(a.dtype) if need_b else None
            return ga, gb, None, None, None, None, None
        ga = torch.zeros_like(a) if need_a else None
        gb = torch.zeros_like(bt) if need_b else None
        k = a.shape[1]
        for s, e in _chunks(res.numel(), k):
            r = (res[s:e] * scale).unsqueeze(1)
            rs, cs = rows[s:e], cols[s:e]
            if ga is not None:
                ga.index_add_(0, rs, r * bt[cs])
            if gb is not None:
                gb.index_add_(0, cs, r * a[rs])
        return ga, gb, None, None, None, None, None


def observed_loss(
    left: torch.Tensor,
    right: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    weight: float = 1.0,
    pattern: _Pattern | None = None,
) -> torch.Tensor:
    """``½ · weight · Σ_ω ((left @ right)[i_ω, j_ω] − y_ω)²`` without forming ``left @ right``.

    ``left`` is ``m × k`` and ``right`` is ``k × n``; differentiable in both. The backward pass uses
    ``pattern`` (CSR products, CPU) when given, else chunked ``index_add_``.
    """
    return _ObservedLoss.apply(
        left, right.T.contiguous(), rows, cols, values, float(weight), pattern
    )


class SparseEntryObservation(EntryObservation):
    """:class:`~lowdim.EntryObservation` whose loss runs on the observed entries only, in chunks.

    Same data checks and surrogate as the parent; :meth:`loss` uses :func:`observed_loss` (memory
    ``O((m + n) k + |Ω|)``), and ``weight`` multiplies the loss (the estimator uses ``1/p``, so that
    the step size does not depend on the observed fraction).

    Parameters
    ----------
    rows, cols, values, shape, dtype
        As :class:`~lowdim.EntryObservation`.
    weight : float, default=1.0
        Loss ``½ · weight · Σ_Ω (ŷ − y)²``.
    device : torch.device or str, optional
        Where the index and value tensors live.
    """

    def __init__(
        self, rows, cols, values, shape, *, dtype=torch.float64, weight: float = 1.0, device=None
    ) -> None:
        super().__init__(rows, cols, values, shape, dtype=dtype)
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be positive and finite, got {weight}")
        self.weight = float(weight)
        order = torch.as_tensor(np.lexsort((self.cols.numpy(), self.rows.numpy())))
        self.rows, self.cols, self.y = self.rows[order], self.cols[order], self.y[order]
        self._pattern = _Pattern(self.rows, self.cols, self.shape)
        if device is not None:
            self.rows, self.cols, self.y = (
                self.rows.to(device), self.cols.to(device), self.y.to(device)
            )

    @classmethod
    def from_operator(cls, op: EntryObservation, weight: float = 1.0) -> SparseEntryObservation:
        """Wrap an existing :class:`~lowdim.EntryObservation` (shares its tensors, no re-checks)."""
        new = cls.__new__(cls)
        new.rows, new.cols, new.y, new.shape = op.rows, op.cols, op.y, tuple(op.shape)
        new.weight = float(weight)
        new._pattern = _Pattern(new.rows, new.cols, new.shape)
        return new

    def loss(self, model: DeepFactorization) -> torch.Tensor:
        self.check_model(model)
        left, right = model.split()
        return observed_loss(
            left, right, self.rows, self.cols, self.y, self.weight, getattr(self, "_pattern", None)
        )

    def predict(self, model: DeepFactorization) -> torch.Tensor:
        self.check_model(model)
        left, right = model.split()
        return entries_chunked(left, right, self.rows, self.cols)

    def scale(self) -> float:
        return 0.5 * self.weight * float(self.y.square().sum())


def entries_chunked(
    left: torch.Tensor, right: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``(left @ right)[rows, cols]`` in chunks (no autograd graph is kept)."""
    bt = right.T
    out = torch.empty(rows.numel(), dtype=left.dtype, device=left.device)
    with torch.no_grad():
        for s, e in _chunks(rows.numel(), left.shape[1]):
            rs, cs = rows[s:e], cols[s:e]
            out[s:e] = (torch.index_select(left, 0, rs) * torch.index_select(bt, 0, cs)).sum(dim=1)
    return out
