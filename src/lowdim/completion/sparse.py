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
* **invariant-subspace compression without the full-width model**
  (:func:`implicit_invariant_compression`). At ε-orthogonal initialization
  ``W_l(0) = ε_l Q_l`` the residual is ``R = P_Ω(W_{L:1}(0) − Φ)`` (sparse, ``|Ω|`` entries) and
  ``G_1 = ∇_{W_1}ℓ(Θ(0)) = W_{L:2}(0)ᵀ R``. The recipe of seed 003 Sec. 2.3 needs
  ``S^⊥ = range(G_1ᵀ) + range(W_1(0)ᵀ G_1)``: we take the top-``r`` directions of each block
  separately (see :func:`lowdim.compression.input_basis`) —

  - block 1 = top-``r`` right singular vectors of ``G_1``; when ``Q_{L:2}`` has orthonormal rows
    (``G_1ᵀG_1 = c² RᵀR``) these are the top right singular vectors of ``R``;
  - block 2 = top-``r`` left singular vectors of ``W_1(0)ᵀG_1 = c ε_1 Q_{L:1}ᵀ R``; when
    ``Q_{L:1}ᵀ`` is an isometry these are ``Q_{L:1}ᵀ U_r`` for the top left singular vectors
    ``U_r`` of ``R``;

  then ``V_{1,1} = orth[block 1, block 2]`` and, layer by layer, ``U_{l,1} R_l = W_l(0) V_{l,1}``
  (thin QR), ``V_{l+1,1} = U_{l,1}``, ``W̃_l(0) = R_l`` (``= ε_l I`` for ε-orthogonal factors,
  seed 003 Sec. 2.3). Only the action of the orthogonal product ``Q_{L:1} = W_{L:1}(0)/∏ε_l`` on
  ``2r`` vectors and its entries on Ω are needed. By default the full-width initialization is a
  *virtual* one (:class:`SignedPermutationInit`: identity layers and one random signed
  (partial) permutation, a legitimate ε-orthogonal full-width initialization that costs ``O(m + n)``
  to apply); an explicit :class:`~lowdim.DeepFactorization` can be given instead, which reproduces
  :func:`lowdim.compression.invariant_subspace_compression` exactly (tests: same trajectory).
  Truncated SVDs use ``scipy.sparse.linalg.svds`` on the sparse ``R`` (ARPACK, ``tol=0``).
* **spectral compression** reuses :func:`lowdim.compression.spectral_compression`, whose
  surrogate SVD is already sparse for :class:`~lowdim.EntryObservation`.

:func:`lowdim.train` trains these models like any other: with a :class:`SparseEntryObservation`
its loss and gradients touch the observed entries only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..compression import _check_rank, _qr_positive
from ..factorization import DeepFactorization
from ..operators import EntryObservation

__all__ = [
    "SparseEntryObservation",
    "observed_loss",
    "SignedPermutationInit",
    "implicit_invariant_compression",
]

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

    def residual_matrix(self, model: DeepFactorization | None = None) -> scipy.sparse.csr_matrix:
        """``P_Ω(W_{L:1} − Φ)`` (or ``−P_Ω(Φ)`` without a model) as SciPy CSR, float64."""
        with torch.no_grad():
            pred = self.predict(model) if model is not None else torch.zeros_like(self.y)
            data = (pred - self.y).double().cpu().numpy()
        return scipy.sparse.csr_matrix(
            (data, (self.rows.cpu().numpy(), self.cols.cpu().numpy())), shape=self.shape
        )


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


# ---------------------------------------------------------------------------------------------
# Implicit full-width initializations
# ---------------------------------------------------------------------------------------------


class SignedPermutationInit:
    """A virtual ε-orthogonal full-width initialization applied in ``O(m + n)`` per vector.

    The full-width model has dims ``[n, d, …, d, m]`` with ``d = max(m, n)``. Every factor is
    ``ε_l I_d`` except one, ``ε_l Q``, where ``Q`` is a random signed (partial) permutation:
    ``Q[i, π(i)] = s_i`` (``m ≤ n``: the last factor, ``Q Qᵀ = I_m``) or ``Q[π(j), j] = s_j``
    (``m > n``: the first factor, ``QᵀQ = I_n``). So every ``W_l(0)`` satisfies eq. 3 of seed 003
    (eq. 3–4 of seed 000 for the rectangular end factor), ``Q_{L:2}`` has orthonormal rows, and
    :meth:`to_model` materializes the same initialization as a :class:`~lowdim.DeepFactorization`
    for small problems.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        depth: int,
        scale: float | Sequence[float] = 1e-3,
        random_state: int | None = None,
    ) -> None:
        m, n = (int(s) for s in shape)
        if int(depth) != depth or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        scales = [float(scale)] * depth if np.isscalar(scale) else [float(s) for s in scale]
        if len(scales) != depth or any(not (s > 0 and math.isfinite(s)) for s in scales):
            raise ValueError(f"need {depth} positive finite scales, got {scale!r}")
        rng = np.random.default_rng(random_state)
        self.shape, self.depth, self.scales = (m, n), int(depth), scales
        self.width = max(m, n)
        k = min(m, n)
        # wide (m <= n): Q[i, perm[i]] = sign[i], i < m ; tall: Q[perm[j], j] = sign[j], j < n
        self.perm = rng.permutation(max(m, n))[:k]
        self.sign = rng.choice(np.array([-1.0, 1.0]), size=k)
        self.wide = m <= n
        self.q_layer = depth - 1 if self.wide else 0  # 0-based index of the factor holding Q

    # dense pieces (small problems / tests) ---------------------------------------------------
    def q_dense(self) -> np.ndarray:
        m, n = self.shape
        q = np.zeros((m, n))
        k = len(self.perm)
        if self.wide:
            q[np.arange(k), self.perm] = self.sign
        else:
            q[self.perm, np.arange(k)] = self.sign
        return q

    def to_model(self, dtype: torch.dtype = torch.float64) -> DeepFactorization:
        """The explicit full-width :class:`~lowdim.DeepFactorization` (``O(d²)`` memory)."""
        m, n = self.shape
        d = self.width
        factors = []
        for l in range(self.depth):
            rows_l = m if l == self.depth - 1 else d
            cols_l = n if l == 0 else d
            if l == self.q_layer:  # m×n: the last factor (m <= n = d) or the first (n < m = d)
                w = self.q_dense()
            else:
                w = np.eye(rows_l, cols_l)
            factors.append(torch.as_tensor(self.scales[l] * w, dtype=dtype))
        return DeepFactorization.from_factors(factors)

    # implicit actions ---------------------------------------------------------------------
    def q_matmul(self, x: np.ndarray) -> np.ndarray:
        """``Q x`` for ``x`` of shape ``(n, k)``."""
        m, _ = self.shape
        out = np.zeros((m, x.shape[1]))
        if self.wide:
            out[:] = self.sign[:, None] * x[self.perm]
        else:
            out[self.perm] = self.sign[:, None] * x
        return out

    def q_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``Q[rows, cols]``."""
        m, n = self.shape
        k = len(self.perm)
        if self.wide:  # row i < m has its entry at column perm[i]
            hit = self.perm[rows] == cols
            return np.where(hit, self.sign[rows], 0.0)
        inv = np.full(m, -1)
        inv[self.perm] = np.arange(k)
        j = inv[rows]
        return np.where(j == cols, self.sign[np.clip(j, 0, None)], 0.0)

    def q_transpose_rows(self, r: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
        """``Qᵀ R`` for a sparse ``m × n`` matrix ``R`` (a signed selection of rows)."""
        m, n = self.shape
        k = len(self.perm)
        if self.wide:  # Qᵀ is n×m with Qᵀ[perm[i], i] = sign[i]
            qt = scipy.sparse.csr_matrix((self.sign, (self.perm, np.arange(k))), shape=(n, m))
        else:  # Qᵀ[j, perm[j]] = sign[j]
            qt = scipy.sparse.csr_matrix((self.sign, (np.arange(k), self.perm)), shape=(n, m))
        return (qt @ r).tocsr()

    def layer_matmul(self, l: int, v: np.ndarray) -> np.ndarray:
        """``W_l(0) v`` for the 0-based layer ``l`` (identity layers keep their vectors)."""
        if l == self.q_layer:
            return self.scales[l] * self.q_matmul(v)
        return self.scales[l] * v


def _top_singular(op, k: int, solver: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` singular triplets (descending) of a sparse matrix / LinearOperator / ndarray."""
    shape = op.shape
    small = min(shape)
    use_dense = solver == "dense" or k >= small - 1 or (solver == "auto" and shape[0] * shape[1] <= 250_000)
    if use_dense:
        if isinstance(op, scipy.sparse.linalg.LinearOperator):
            dense = op.matmat(np.eye(shape[1]))
        elif scipy.sparse.issparse(op):
            dense = op.toarray()
        else:
            dense = np.asarray(op)
        u, s, vh = np.linalg.svd(dense, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]
    if solver not in ("arpack", "auto"):
        raise ValueError(f"svd_solver must be 'auto', 'arpack' or 'dense', got {solver!r}")
    v0 = np.random.default_rng(seed).standard_normal(small)
    u, s, vh = scipy.sparse.linalg.svds(op, k=k, tol=0, v0=v0, solver="arpack")
    order = np.argsort(-s)
    return u[:, order], s[order], vh[order]


def implicit_invariant_compression(
    operator: EntryObservation,
    rank: int,
    depth: int = 3,
    *,
    scale: float | Sequence[float] = 1e-3,
    gamma: float = 0.0,
    init: DeepFactorization | SignedPermutationInit | None = None,
    random_state: int | None = None,
    svd_solver: str = "auto",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> DeepFactorization:
    r"""Invariant-subspace compression (seed 003 Sec. 2.3 and eq. 11) from the observed entries only.

    Builds the same model as :func:`lowdim.compression.invariant_subspace_compression` —
    ``[V_{1,1}ᵀ, W̃_1, …, W̃_L, U_{L,1}]`` with learning-rate multipliers ``[γ, 1, …, 1, γ]`` — but
    never forms an ``m × n`` matrix or a full-width factor: the gradient ``G_1`` enters only through
    truncated SVDs of the sparse residual ``R = P_Ω(W_{L:1}(0) − Φ)`` (see the module docstring).

    Parameters
    ----------
    operator : EntryObservation
        The observed entries.
    rank : int
        ``r`` (rank upper bound); the compressed width is ``2r``, which needs ``min(m, n) − 2r > 0``.
    depth : int, default=3
        Depth ``L`` of the (virtual) full-width factorization.
    scale : float or sequence, default=1e-3
        ``ε`` or ``(ε_l)`` of the full-width initialization.
    gamma : float, default=0.0
        Learning-rate ratio of the bases (seed 003 eq. 11; completion needs γ > 0, Fig. 5).
    init : DeepFactorization or SignedPermutationInit, optional
        The full-width initialization Θ(0). Default: a :class:`SignedPermutationInit` drawn with
        ``random_state``. With an explicit model (``d`` wide, small problems only) the result
        equals the dense construction.
    svd_solver : {"auto", "arpack", "dense"}, default="auto"
        ``"arpack"``: ``scipy.sparse.linalg.svds`` with ``tol=0``; ``"dense"``: LAPACK on the dense
        residual (tests only); ``"auto"``: dense below 250 000 entries, else ARPACK.

    Returns
    -------
    DeepFactorization
        Dims ``[n, 2r, …, 2r, m]`` (depth ``L + 2``).
    """
    if not isinstance(operator, EntryObservation):
        raise TypeError(
            f"operator must be an EntryObservation (observed entries), got {type(operator).__name__}"
        )
    m, n = operator.shape
    rank = _check_rank(rank, [m, n], 2, "invariant-subspace compression")
    if not (gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be >= 0 and finite, got {gamma}")
    rows = operator.rows.cpu().numpy()
    cols = operator.cols.cpu().numpy()
    y = operator.y.detach().double().cpu().numpy()
    if init is None:
        init = SignedPermutationInit((m, n), depth, scale, random_state=random_state)
    if isinstance(init, SignedPermutationInit):
        if init.shape != (m, n):
            raise ValueError(f"init is for a {init.shape} matrix, the observations are {m}×{n}")
        prod_eps = float(np.prod(init.scales))
        pred0 = prod_eps * init.q_entries(rows, cols)
        resid = scipy.sparse.csr_matrix((pred0 - y, (rows, cols)), shape=(m, n))
        # block 1: Q_{L:2} has orthonormal rows, so G_1ᵀG_1 ∝ RᵀR
        u, _, vh = _top_singular(resid, rank, svd_solver)
        block1 = vh.T
        if init.wide:  # Qᵀ is an isometry: left singular vectors of QᵀR are Qᵀ U_r
            block2 = init.q_transpose_rows(scipy.sparse.csr_matrix(u)).toarray()
        else:
            block2, _, _ = _top_singular(init.q_transpose_rows(resid), rank, svd_solver)
        layers = [lambda v, l=l: init.layer_matmul(l, v) for l in range(init.depth)]
    elif isinstance(init, DeepFactorization):
        operator.check_model(init)
        with torch.no_grad():
            w = [f.detach().double().cpu() for f in init.factors]
            model64 = DeepFactorization.from_factors(w)
            tail = model64.product(2).numpy() if init.depth > 1 else np.eye(m)  # W_{L:2}, m×d_1
            w1 = w[0].numpy()
            full = tail @ w1  # W_{L:1}(0): an explicit model is small enough to hold m×n
            resid = scipy.sparse.csr_matrix((full[rows, cols] - y, (rows, cols)), shape=(m, n))
        # Singular vectors do not depend on positive scalings; normalizing the ε-small operators
        # keeps ARPACK's convergence test (relative to machine precision) meaningful.
        tail = tail / max(np.linalg.norm(tail) / math.sqrt(min(tail.shape)), 1e-300)
        w1 = w1 / max(np.linalg.norm(w1) / math.sqrt(min(w1.shape)), 1e-300)
        d1 = w1.shape[0]
        g1 = scipy.sparse.linalg.LinearOperator(  # G_1 = W_{L:2}ᵀ R  (d_1 × n)
            (d1, n), matvec=lambda x: tail.T @ (resid @ x), rmatvec=lambda x: resid.T @ (tail @ x),
            matmat=lambda x: tail.T @ (resid @ x), rmatmat=lambda x: resid.T @ (tail @ x),
            dtype=np.float64,
        )
        _, _, vh = _top_singular(g1, rank, svd_solver)
        block1 = vh.T
        full = full / max(np.linalg.norm(full) / math.sqrt(min(full.shape)), 1e-300)
        b2 = scipy.sparse.linalg.LinearOperator(  # W_1ᵀ G_1 = W_{L:1}ᵀ R  (n × n)
            (n, n), matvec=lambda x: full.T @ (resid @ x), rmatvec=lambda x: resid.T @ (full @ x),
            matmat=lambda x: full.T @ (resid @ x), rmatmat=lambda x: resid.T @ (full @ x),
            dtype=np.float64,
        )
        block2, _, _ = _top_singular(b2, rank, svd_solver)
        layers = [lambda v, wl=wl: wl.numpy() @ v for wl in w]
    else:
        raise TypeError(
            f"init must be a DeepFactorization or SignedPermutationInit, got {type(init).__name__}"
        )
    basis, _ = _qr_positive(torch.as_tensor(np.concatenate([block1, block2], axis=1)))
    v = basis
    cores = []
    for apply in layers:
        v, core = _qr_positive(torch.as_tensor(apply(v.numpy())))
        cores.append(core)
    factors = [basis.T, *cores, v]
    factors = [f.to(dtype=dtype, device=device).contiguous() for f in factors]
    return DeepFactorization.from_factors(
        factors, lr_multipliers=[gamma] + [1.0] * len(cores) + [gamma]
    )
