"""Implicit feedback and side information as a deep factorization of an augmented matrix.

The deep factorization ``W_{L:1}`` of the papers (seed 003 Sec. 3, seed 000 Algorithm 1) is kept;
only what it multiplies changes. With sparse row features ``F_u`` (``m × M``) and column features
``F_i`` (``n × N``) the prediction of the low-rank part is

``Ŷ = F_u · W_{L:1} · F_iᵀ``,   ``W_{L:1}`` of size ``M × N``, trained by the same GD,

so row ``u``'s vector is ``Σ_f F_u[u, f] · (W_{L:1})[f]``. The blocks lowdim builds:

* **identity** ``I_m`` / ``I_n``: the plain model (``F = I`` gives back ``W_{L:1}`` itself);
* **implicit feedback** ``N̄`` (:func:`implicit_block`): ``N̄[u, j] = |N(u)|^{-1/2}`` for the items
  ``j ∈ N(u)`` user ``u`` rated (in the *training* data), Koren's SVD++ term (KDD 2008, eq. 15)
  ``p_u + |N(u)|^{-1/2} Σ_{j∈N(u)} y_j``;
* **side information** (:func:`one_hot_block`): attribute indicators (age group, gender,
  occupation of a user; genres of a movie), each row scaled to unit norm, adding a learned vector
  per attribute value.

Everything stays sparse: the loss costs one sparse product per side on top of the observed-entry
loss (:func:`~lowdim.completion.sparse.observed_loss`), and the spectral initialization of
C-DLN reads the top singular vectors of the augmented surrogate ``F_uᵀ (Ω⊙Y/p) F_i``.

Examples
--------
>>> import numpy as np
>>> from lowdim.completion.side_information import feature_matrix, implicit_block
>>> rows, cols = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
>>> nbar = implicit_block(rows, cols, (3, 3))
>>> round(float(np.linalg.norm(nbar.toarray(), 2)), 12)   # spectral norm 1
1.0
>>> feature_matrix(3, (5.0, nbar)).shape                   # F_u = [I | 5 N̄]
(3, 6)

:class:`~lowdim.completion.DeepMatrixCompletion` builds these from ``implicit``, ``side_weight``
and the ``row_features`` / ``col_features`` given to ``fit``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse
import torch

from ..linalg import LinearMap
from .sparse import SparseEntryObservation, observed_loss

__all__ = ["FeatureEntryObservation", "implicit_block", "one_hot_block", "feature_matrix"]


def implicit_block(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
    """``N̄`` (``m × n``): ``(|N(u)| |U(j)|)^{-1/2}`` at the items ``j`` each row ``u`` rated.

    The symmetric normalization of the bipartite rating graph (as in GC-MC / LightGCN): its
    spectral norm is 1, so the augmented factorization keeps the step sizes of the plain one
    (SVD++'s ``|N(u)|^{-1/2}`` alone has a spectral norm in the tens on MovieLens and makes GD
    diverge). Rows or columns without observations are zero.
    """
    return _bipartite_normalized(scipy.sparse.csr_matrix(
        (np.ones(rows.size), (rows, cols)), shape=shape))


def _bipartite_normalized(mat: scipy.sparse.spmatrix) -> scipy.sparse.csr_matrix:
    """``D_r^{-1/2} B D_c^{-1/2}`` with the row and column sums of the non-negative ``B``."""
    def inv_sqrt(x):
        x = np.asarray(x).ravel()
        return 1.0 / np.sqrt(np.where(x > 0, x, 1.0))

    return (scipy.sparse.diags(inv_sqrt(mat.sum(axis=1))) @ mat
            @ scipy.sparse.diags(inv_sqrt(mat.sum(axis=0)))).tocsr()


def one_hot_block(frame: pd.DataFrame) -> scipy.sparse.csr_matrix:
    """Indicators of every column's values (0/1 columns kept as they are), normalized like
    :func:`implicit_block` (spectral norm 1).

    Categorical or text columns become one indicator per value; numeric columns with only 0/1 are
    used as indicators (e.g. genre flags); other numeric columns are cut into quintiles first.
    Missing values give no indicator.
    """
    blocks = []
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col) and set(np.unique(col.dropna())) <= {0, 1}:
            blocks.append(scipy.sparse.csr_matrix(col.fillna(0).to_numpy(np.float64)[:, None]))
            continue
        if pd.api.types.is_numeric_dtype(col) and col.nunique() > 10:
            col = pd.qcut(col, 5, duplicates="drop")
        codes = pd.Categorical(col).codes
        ok = codes >= 0
        k = int(codes.max()) + 1 if ok.any() else 0
        blocks.append(scipy.sparse.csr_matrix(
            (np.ones(int(ok.sum())), (np.flatnonzero(ok), codes[ok])), shape=(len(col), k)
        ))
    mat = scipy.sparse.hstack(blocks, format="csr") if blocks else scipy.sparse.csr_matrix((len(frame), 0))
    return _bipartite_normalized(mat)


def feature_matrix(size: int, *blocks: tuple[float, scipy.sparse.spmatrix | None]) -> scipy.sparse.csr_matrix:
    """``[I | w_1 B_1 | w_2 B_2 | …]`` (``size`` rows); blocks that are ``None`` or weight 0 are left out."""
    parts = [scipy.sparse.identity(size, format="csr")]
    parts += [w * scipy.sparse.csr_matrix(b) for w, b in blocks if b is not None and w > 0]
    return scipy.sparse.hstack(parts, format="csr")


def _np_torch(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(np.asarray(x)))


class _SparseMatmul(torch.autograd.Function):
    """``F @ X`` for a fixed SciPy CSR ``F`` (and its transpose for the backward pass)."""

    @staticmethod
    def forward(ctx, x, mat, mat_t):  # noqa: D401
        ctx.mat_t = mat_t
        return torch.from_numpy(np.asarray(mat @ x.detach().numpy())).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(np.asarray(ctx.mat_t @ grad.numpy())).to(grad.dtype), None, None


class FeatureEntryObservation(SparseEntryObservation):
    """Observed entries of ``F_u · W · F_iᵀ``: the loss of a deep factorization ``W`` (``M × N``).

    Parameters
    ----------
    base : SparseEntryObservation
        The observed entries of the ``m × n`` matrix (and the loss weight).
    row_features : scipy.sparse matrix, shape (m, M)
    col_features : scipy.sparse matrix, shape (n, N)

    Notes
    -----
    :meth:`effective_split` gives ``(F_u · left, right · F_iᵀ)``, the ``m × k`` and ``k × n`` factors
    every prediction uses; ``shape`` is ``(M, N)``, the shape of the trained factorization. CPU only.
    """

    def __init__(self, base: SparseEntryObservation, row_features, col_features) -> None:
        m, n = base.shape
        fu, fi = scipy.sparse.csr_matrix(row_features), scipy.sparse.csr_matrix(col_features)
        if fu.shape[0] != m or fi.shape[0] != n:
            raise ValueError(f"row_features must have {m} rows and col_features {n} rows, got "
                             f"{fu.shape[0]} and {fi.shape[0]}")
        self._base = base  # a shard of Ω under lowdim.completion.distributed: its sums are used
        self.rows, self.cols, self.y = base.rows, base.cols, base.y
        self.weight, self._pattern, self.base_shape = base.weight, base._pattern, (m, n)
        self.shape = (fu.shape[1], fi.shape[1])
        self._fu, self._fu_t = fu, fu.T.tocsr()
        self._fi, self._fi_t = fi, fi.T.tocsr()

    def features(self) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
        """``(F_u, F_i)``."""
        return self._fu, self._fi

    @property
    def fraction(self) -> float:
        """Observed fraction of the ``m × n`` matrix (all processes' entries when sharded)."""
        return self._base.fraction

    def scale(self) -> float:
        return self._base.scale()

    def effective_split(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_u · left, right · F_iᵀ)`` for the model split at its narrowest width."""
        left, right = model.split()
        a = _SparseMatmul.apply(left, self._fu, self._fu_t)
        bt = _SparseMatmul.apply(right.T, self._fi, self._fi_t)
        return a, bt.T

    def loss(self, model) -> torch.Tensor:
        self.check_model(model)
        a, b = self.effective_split(model)
        return observed_loss(a, b, self.rows, self.cols, self.y, self.weight, self._pattern,
                             self._base._reduce())

    def predict(self, model) -> torch.Tensor:
        from .sparse import entries_chunked

        a, b = self.effective_split(model)
        return entries_chunked(a.detach(), b.detach(), self.rows, self.cols)

    def surrogate_map(self) -> LinearMap:
        """``F_uᵀ (Ω⊙Y/p) F_i`` as sparse products (never an ``M × N`` array)."""
        s = scipy.sparse.csr_matrix(
            ((self.y / self.fraction).double().numpy(), (self.rows.numpy(), self.cols.numpy())),
            shape=self.base_shape,
        )
        s_t = s.T.tocsr()

        def matmul(x):  # F_uᵀ S F_i x, right to left
            return _np_torch(self._fu_t @ (s @ (self._fi @ x.detach().double().numpy())))

        def rmatmul(y):  # F_iᵀ Sᵀ F_u y
            return _np_torch(self._fi_t @ (s_t @ (self._fu @ y.detach().double().numpy())))

        local = LinearMap(self.shape, matmul, rmatmul, torch.float64, "cpu")
        dist = getattr(self._base, "_dist", None)  # sharded: the sum of every process's part
        return local if dist is None else dist.summed_map(local)

    def surrogate(self) -> torch.Tensor:
        return self.surrogate_map().dense()

    def gradient_at(self, init):
        raise NotImplementedError(
            "implicit feedback and side information train method='spectral' or 'narrow'; the "
            "invariant-subspace compression of an augmented factorization is not implemented"
        )
