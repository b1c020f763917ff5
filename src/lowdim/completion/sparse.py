"""Sparse compressed training for matrix completion: nothing ``m × n``, no ``d × d`` factor.

Seed 003 Sec. 3 (eq. 10–11) and seed 004 Sec. 4.1 compress a full-width depth-``L`` factorization
of an ``m × n`` matrix to ``U_{L,1} W̃_L ⋯ W̃_1 V_{1,1}ᵀ`` (width ``2r``) and train the bases
``U_{L,1}, V_{1,1}`` at the discrepant rate ``γη``. Seed 000 Algorithm 1 (C-DLN) starts instead from
the top-``r̂`` singular vectors of the surrogate ``Ω⊙Φ/p``. This module gives both methods a path
whose cost depends on the observed entries only:

* **loss and gradients** (:class:`SparseEntryObservation`, :func:`observed_loss`): with the model
  split at its narrowest width ``k`` as ``W_{L:1} = A B`` (``A`` is ``m × k``, ``B`` is ``k × n``),
  the residual on Ω is ``r_ω = ⟨A[i], B[:, j]⟩ − y_ω`` (a sampled dense-dense product, SDDMM) and
  the gradients are the sparse-dense products ``∇_A = w R Bᵀ`` and ``∇_B = w Aᵀ R`` with the
  residual matrix ``R`` (``|Ω|`` non-zeros). One fused pass computes all three on a cached row-sorted
  (CSR) layout of Ω, :class:`ObservedLayout`: the SDDMM by row blocks (dense ``A_blk B`` tiles
  when Ω is dense enough, else chunked gathers), ``R Bᵀ`` as a ``torch.sparse_csr_tensor`` product
  and ``Rᵀ A`` as SciPy's CSC product on the same arrays — ``O(|Ω| k)`` time, no temporary larger
  than one block, reused buffers;
  the rest of the chain backpropagates through ``O((m + n) k² + L k³)`` products.
* **invariant-subspace compression without the full-width model**: the one engine,
  :func:`lowdim.invariant_subspace_compression`, reads the gradient at initialization through
  :meth:`~lowdim.EntryObservation.gradient_at` (the sparse residual ``P_Ω(W_{L:1}(0) − Φ)``) and a
  virtual full-width initialization
  (:class:`~lowdim.initialization.ImplicitOrthogonalInit` with ``block_size=1``: random signed
  permutations, ``O(m + n)`` per vector), so nothing ``m × n`` or ``d × d`` is ever formed.
* **spectral compression** reuses :func:`lowdim.compression.spectral_compression`, whose
  surrogate SVD runs on the same cached layout.

:func:`lowdim.train` trains these models like any other: with a :class:`SparseEntryObservation`
its loss and gradients touch the observed entries only. Data-parallel training over shards of Ω
(``torch.distributed``) is :mod:`lowdim.completion.distributed`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse
import torch

from ..factorization import DeepFactorization
from ..initialization import FullWidthInit
from ..linalg import LinearMap, compute_dtype
from ..operators import EntryObservation

__all__ = ["ObservedLayout", "SparseEntryObservation", "entries_chunked", "observed_loss"]

#: Numbers per temporary block of the kernels (gathered rows): 2 MiB in float64.
_CHUNK_ELEMENTS = 1 << 18
#: Numbers per dense ``A_blk B`` tile of the SDDMM (one reused buffer; fewer, larger BLAS calls).
_TILE_ELEMENTS = 1 << 19
#: Observed fraction from which the SDDMM uses dense ``A_blk B`` tiles (BLAS) instead of gathers.
DENSE_TILE_FRACTION = 0.05


def _chunks(n: int, k: int):
    step = max(4096, _CHUNK_ELEMENTS // max(1, k))
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _sorted_order(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray | None:
    """The permutation sorting Ω by (row, column), or ``None`` when it is sorted already."""
    key = rows.astype(np.int64) * n + cols
    if key.size < 2 or bool(np.all(key[1:] > key[:-1])):
        return None
    return np.argsort(key, kind="stable")


class ObservedLayout:
    """The index structure of Ω, built once and reused by every loss and gradient evaluation.

    Entries are kept sorted by (row, column) (``perm`` maps the caller's order to it, ``None`` when
    the caller's order is sorted): ``crow`` / ``cols`` are the CSR arrays (int32 when they fit),
    ``blocks`` are row ranges ``(s, e, lo, hi)`` of about one chunk each, and for dense problems
    (observed fraction at least :data:`DENSE_TILE_FRACTION`) ``local`` holds each entry's offset in
    its block's ``(e − s) × n`` tile.

    Parameters
    ----------
    rows, cols : torch.Tensor
        Indices of the observed entries (int64, any order, no duplicates).
    shape : (int, int)
        ``(m, n)``.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> None:
        m, n = (int(s) for s in shape)
        self.shape = (m, n)
        r, c = rows.cpu().numpy(), cols.cpu().numpy()
        order = _sorted_order(r, c, n)
        if order is not None:
            r, c = r[order], c[order]
        self.perm = None if order is None else torch.as_tensor(order)
        self.nnz = nnz = r.size
        itype = np.int32 if max(nnz, m, n) < 2**31 - 1 else np.int64
        counts = np.bincount(r, minlength=m)
        crow = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(counts, out=crow[1:])
        self.crow_np, self.cols_np = crow.astype(itype), c.astype(itype)
        self.crow, self.cols = torch.from_numpy(self.crow_np), torch.from_numpy(self.cols_np)
        span = (int(r[-1]) - int(r[0]) + 1) if nnz else 0  # rows from the first to the last entry
        self.dense_tiles = nnz > 0 and nnz >= DENSE_TILE_FRACTION * span * n
        self.blocks = self._blocks(crow, int(r[0]) if nnz else 0, int(r[-1]) + 1 if nnz else 0, n)
        self.rows_sorted = None
        if self.dense_tiles:
            self.local = torch.from_numpy(
                (r - np.repeat(np.array([b[0] for b in self.blocks]), [b[3] - b[2] for b in self.blocks]))
                * np.int64(n) + c
            )
        else:
            self.rows_sorted = torch.from_numpy(r.astype(itype))
        self._buffers: dict = {}
        #: Sums loss and gradients over processes (set on a shard by lowdim.completion.distributed).
        self.reduce: Callable | None = None

    def _blocks(self, crow: np.ndarray, first: int, stop: int, n: int) -> list[tuple[int, int, int, int]]:
        """Row ranges ``(s, e, lo, hi)`` of rows ``first … stop − 1`` whose ``(e − s) × n`` tiles
        hold at most ``_TILE_ELEMENTS`` numbers (dense tiles only; the gathers cut Ω into fixed
        chunks instead)."""
        if not self.dense_tiles:
            return []
        step = max(1, _TILE_ELEMENTS // n)
        return [(s, min(stop, s + step), int(crow[s]), int(crow[min(stop, s + step)]))
                for s in range(first, stop, step)]

    # ------------------------------------------------------------------ kernels
    def buffer(self, name: str, size: int, dtype: torch.dtype) -> torch.Tensor:
        """A reused scratch tensor of ``size`` numbers (no allocation per iteration)."""
        key = (name, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < size:
            buf = self._buffers[key] = torch.empty(size, dtype=dtype)
        return buf[:size]

    def sddmm(self, a: torch.Tensor, bt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out[ω] = ⟨a[i_ω], bt[j_ω]⟩`` for every entry, in layout order (``a``: m × k, ``bt``: n × k)."""
        if self.dense_tiles:
            b, n = bt.T, self.shape[1]
            rows = max(e - s for s, e, _, _ in self.blocks)
            buf = self.buffer("tile", rows * n, a.dtype)
            for s, e, lo, hi in self.blocks:
                torch.mm(a[s:e], b, out=buf[: (e - s) * n].view(e - s, n))
                torch.index_select(buf[: (e - s) * n], 0, self.local[lo:hi], out=out[lo:hi])
            return out
        k = a.shape[1]
        step = 1 << 16
        ga = self.buffer("ga", step * k, a.dtype).view(step, k)
        gb = self.buffer("gb", step * k, a.dtype).view(step, k)
        ones = torch.ones(k, dtype=a.dtype)
        for lo in range(0, self.nnz, step):
            hi = min(self.nnz, lo + step)
            x, y = ga[: hi - lo], gb[: hi - lo]
            torch.index_select(a, 0, self.rows_sorted[lo:hi], out=x)
            torch.index_select(bt, 0, self.cols[lo:hi], out=y)
            torch.mv(x.mul_(y), ones, out=out[lo:hi])
        return out

    def residual(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, scipy.sparse.csc_matrix]:
        """``(res, R, Rᵀ)``: a reused buffer of ``|Ω|`` numbers and the torch CSR matrix ``R`` and
        SciPy CSC matrix ``Rᵀ`` built once on it (they see every write to ``res``)."""
        key = ("residual", dtype)
        if key not in self._buffers:
            res = torch.zeros(self.nnz, dtype=dtype)
            m, n = self.shape
            csc = scipy.sparse.csc_matrix((res.numpy(), self.cols_np, self.crow_np), shape=(n, m))
            self._buffers[key] = (res, self.csr(res), csc)
        return self._buffers[key]

    def csr(self, data: torch.Tensor) -> torch.Tensor:
        """The ``m × n`` sparse matrix with values ``data`` (layout order) as a torch CSR tensor."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta state"
            return torch.sparse_csr_tensor(self.crow, self.cols, data, self.shape,
                                           check_invariants=False)

    def matmul(self, data: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``R x`` for the sparse ``R`` with values ``data`` (``x``: n × k, result m × k)."""
        return self.csr(data) @ x.contiguous()

    def rmatmul(self, data: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Rᵀ y`` (``y``: m × k, result n × k): SciPy's CSC product on the CSR arrays."""
        m, n = self.shape
        mat = scipy.sparse.csc_matrix((data.numpy(), self.cols_np, self.crow_np), shape=(n, m))
        return torch.from_numpy(np.asarray(mat @ y.detach().contiguous().numpy()))

    def in_order(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (caller's order) in layout order."""
        return values if self.perm is None else values[self.perm]

    def to_caller(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (layout order) in the caller's order."""
        if self.perm is None:
            return values
        out = torch.empty_like(values)
        out[self.perm] = values
        return out


def fused_loss_and_gradients(
    a: torch.Tensor, bt: torch.Tensor, values: torch.Tensor, weight: float, layout: ObservedLayout,
    need_grad: tuple[bool, bool] = (True, True),
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(½ w Σ r², w R bt, w Rᵀ a)`` in one pass over Ω (``values`` in layout order, CPU).

    ``r = sddmm(a, bt) − values`` lives in one reused buffer of ``|Ω|`` numbers.
    """
    res, r_csr, rt_csc = layout.residual(a.dtype)
    layout.sddmm(a, bt, res).sub_(values)
    loss = 0.5 * weight * torch.dot(res, res)
    if not (need_grad[0] or need_grad[1]):
        return loss, None, None
    res.mul_(weight)
    ga = r_csr @ bt.contiguous() if need_grad[0] else None
    gb = torch.from_numpy(rt_csc @ a.contiguous().numpy()) if need_grad[1] else None
    return loss, ga, gb


def _index_add_loss(a, bt, rows, cols, values, weight, need_grad):
    """The same on any device, by chunked gathers and ``index_add_`` (no cached layout)."""
    k = a.shape[1]
    res = entries_chunked(a, bt.T, rows, cols).sub_(values)
    loss = 0.5 * weight * torch.dot(res, res)
    ga = torch.zeros_like(a) if need_grad[0] else None
    gb = torch.zeros_like(bt) if need_grad[1] else None
    if ga is None and gb is None:
        return loss, None, None
    for s, e in _chunks(res.numel(), k):
        r = (res[s:e] * weight).unsqueeze(1)
        rs, cs = rows[s:e], cols[s:e]
        if ga is not None:
            ga.index_add_(0, rs, r * bt[cs])
        if gb is not None:
            gb.index_add_(0, cs, r * a[rs])
    return loss, ga, gb


class _ObservedLoss(torch.autograd.Function):
    """``½ w Σ_ω (⟨A[i_ω], Bt[j_ω]⟩ − y_ω)²``; the gradients are computed in the forward pass
    (one fused pass over Ω) and, with ``reduce``, summed over processes there."""

    @staticmethod
    def forward(ctx, a, bt, rows, cols, values, weight, layout, reduce):  # noqa: D401
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        a_, bt_ = a.detach(), bt.detach()
        if layout is not None and a.device.type == "cpu":
            loss, ga, gb = fused_loss_and_gradients(a_, bt_, layout.in_order(values), weight,
                                                    layout, need)
        else:
            loss, ga, gb = _index_add_loss(a_, bt_, rows, cols, values, weight, need)
        if reduce is not None:
            loss, ga, gb = reduce(loss, ga, gb, a=a_, bt=bt_)
        ctx.grads = (ga, gb)
        return loss

    @staticmethod
    def backward(ctx, grad):
        ga, gb = ctx.grads
        ctx.grads = None
        return (None if ga is None else grad * ga, None if gb is None else grad * gb,
                None, None, None, None, None, None)


def observed_loss(
    left: torch.Tensor,
    right: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    values: torch.Tensor,
    weight: float = 1.0,
    pattern: ObservedLayout | None = None,
    reduce: Callable | None = None,
) -> torch.Tensor:
    """``½ · weight · Σ_ω ((left @ right)[i_ω, j_ω] − y_ω)²`` without forming ``left @ right``.

    ``left`` is ``m × k`` and ``right`` is ``k × n``; differentiable in both. With ``pattern`` (the
    :class:`ObservedLayout` of ``rows, cols``; CPU) the loss and both gradients come from one fused
    pass (SDDMM, then CSR products); without it, from chunked gathers and ``index_add_``.
    ``reduce(loss, grad_left, grad_rightᵀ, a=left, bt=rightᵀ)`` (default: the layout's, set on a
    shard of Ω by :mod:`lowdim.completion.distributed`) returns the first three summed over
    processes.

    Examples
    --------
    >>> import torch
    >>> from lowdim.completion import observed_loss
    >>> a, b = torch.ones(2, 1, requires_grad=True), torch.ones(1, 3, requires_grad=True)
    >>> loss = observed_loss(a, b, torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([3.0, 1.0]))
    >>> loss.backward()
    >>> float(loss), a.grad.flatten().tolist()
    (2.0, [-2.0, 0.0])
    """
    if reduce is None and pattern is not None:
        reduce = pattern.reduce
    return _ObservedLoss.apply(
        left, right.T.contiguous(), rows, cols, values, float(weight), pattern, reduce
    )


class SparseEntryObservation(EntryObservation):
    """:class:`~lowdim.EntryObservation` whose loss runs on the observed entries only.

    Same data checks and surrogate as the parent; the entries are kept sorted by (row, column) in a
    cached :class:`ObservedLayout`; :meth:`loss` is :func:`observed_loss` (memory
    ``O((m + n) k + |Ω|)``), and ``weight`` multiplies the loss (the estimator uses ``1/p``, so that
    the step size does not depend on the observed fraction). ``dtype=torch.float32`` halves the
    memory traffic of every pass (train a float32 model with it).

    Parameters
    ----------
    rows, cols, values, shape, dtype
        As :class:`~lowdim.EntryObservation`.
    weight : float, default=1.0
        Loss ``½ · weight · Σ_Ω (ŷ − y)²``.
    device : torch.device or str, optional
        Where the index and value tensors live.
    distributed : bool, optional
        Keep only this process's shard of Ω (contiguous rows, balanced by entries) and sum the
        loss, its gradients and the compression's products over the ``torch.distributed`` process
        group (:mod:`lowdim.completion.distributed`). ``None`` (default) follows
        :func:`~lowdim.completion.distributed.data_parallel`; one process is plain training.

    Examples
    --------
    >>> from lowdim import train
    >>> from lowdim.completion import SparseEntryObservation
    >>> from lowdim.compression import spectral_compression
    >>> from lowdim.datasets import completion_problem
    >>> pb = completion_problem(60, 50, 2, 0.4, random_state=0)
    >>> op = SparseEntryObservation(pb.rows, pb.cols, pb.values, pb.shape)
    >>> model = spectral_compression(op, 2, 3, scale=0.3, alpha=1.0)
    >>> h = train(model, op, lr=0.5, max_iter=300, truth=pb.truth)
    >>> h.error[-1] < 1e-3
    True
    """

    _dist = None  # the process group's sums (lowdim.completion.distributed) when sharded

    def __init__(
        self, rows, cols, values, shape, *, dtype=torch.float64, weight: float = 1.0, device=None,
        distributed: bool | None = None,
    ) -> None:
        r = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows).reshape(-1)
        c = np.asarray(cols.cpu() if isinstance(cols, torch.Tensor) else cols).reshape(-1)
        v = values.cpu() if isinstance(values, torch.Tensor) else np.asarray(values)
        v = v.reshape(-1)
        if (r.size == c.size == v.shape[0] and r.size > 1 and np.issubdtype(r.dtype, np.integer)
                and np.issubdtype(c.dtype, np.integer)):
            order = _sorted_order(r, c, max(int(shape[1]), 1))  # sorted input skips the sort
            if order is not None:
                r, c, v = r[order], c[order], v[order]
        super().__init__(r, c, v, shape, dtype=dtype)
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be positive and finite, got {weight}")
        self.weight = float(weight)
        self._pattern = ObservedLayout(self.rows, self.cols, self.shape)
        from .distributed import shard_if_wanted

        shard_if_wanted(self, distributed)
        if device is not None:
            self.rows, self.cols, self.y = (
                self.rows.to(device), self.cols.to(device), self.y.to(device)
            )

    @classmethod
    def from_operator(cls, op: EntryObservation, weight: float = 1.0) -> SparseEntryObservation:
        """Wrap an existing :class:`~lowdim.EntryObservation` (shares its tensors and their order,
        no re-checks)."""
        new = cls.__new__(cls)
        new.rows, new.cols, new.y, new.shape = op.rows, op.cols, op.y, tuple(op.shape)
        new.weight = float(weight)
        new._pattern = ObservedLayout(new.rows, new.cols, new.shape)
        return new

    @property
    def layout(self) -> ObservedLayout:
        """The cached :class:`ObservedLayout` of Ω."""
        return self._pattern

    def _reduce(self) -> Callable | None:
        """How loss and gradients are summed over processes (``None``: one process)."""
        return self._pattern.reduce

    @property
    def fraction(self) -> float:
        """Observed fraction ``p = |Ω| / (m n)`` (all processes' entries when sharded)."""
        total = self.y.numel() if self._dist is None else self._dist.total
        return total / (self.shape[0] * self.shape[1])

    def loss(self, model: DeepFactorization) -> torch.Tensor:
        self.check_model(model)
        left, right = model.split()
        return observed_loss(left, right, self.rows, self.cols, self.y, self.weight,
                             self._pattern, self._reduce())

    def predict(self, model: DeepFactorization) -> torch.Tensor:
        """The model's values on Ω (on this process's shard when sharded)."""
        self.check_model(model)
        left, right = model.split()
        lay = self._pattern
        if left.device.type != "cpu":
            return entries_chunked(left, right, self.rows, self.cols)
        with torch.no_grad():
            out = lay.sddmm(left.detach(), right.detach().T.contiguous(),
                            torch.empty(lay.nnz, dtype=left.dtype))
        return lay.to_caller(out)

    def scale(self) -> float:
        local = self.y.double().square().sum().reshape(1)
        total = local if self._dist is None else self._dist.all_reduce(local)
        return 0.5 * self.weight * float(total)

    # ------------------------------------------------------------------ compression inputs
    def _sparse_map(self, values: torch.Tensor) -> LinearMap:
        """The ``m × n`` matrix with ``values`` (layout order) on Ω, as products on the cached
        layout (no COO → CSR conversion, no copy of the indices), computing in ``values.dtype``:
        float64 data gets ARPACK's machine precision, float32 data the randomized SVD
        (:func:`lowdim.linalg.top_singular`)."""
        lay, dtype = self._pattern, values.dtype

        def matmul(x):
            return lay.matmul(values, x.detach().to("cpu", dtype)).to(x.device, x.dtype)

        def rmatmul(y):
            return lay.rmatmul(values, y.detach().to("cpu", dtype)).to(y.device, y.dtype)

        def dense():
            out = torch.zeros(self.shape, dtype=dtype)
            out[self.rows.cpu(), self.cols.cpu()] = lay.to_caller(values)
            return out

        local = LinearMap(tuple(self.shape), matmul, rmatmul, dtype, self.y.device, dense)
        return local if self._dist is None else self._dist.summed_map(local)

    def surrogate_map(self) -> LinearMap:
        """``Ω⊙Φ / p`` as products on the cached layout (seed 000 Algorithm 1's surrogate)."""
        lay, y = self._pattern, self.y.detach().cpu()
        return self._sparse_map(lay.in_order(y.to(compute_dtype(y.dtype))) / self.fraction)

    def gradient_at(self, init: FullWidthInit) -> LinearMap:
        """``E = P_Ω(W_{L:1}(0) − Φ)`` on the cached layout (``|Ω|`` non-zeros)."""
        lay, y = self._pattern, self.y.detach().cpu()
        values = init.entries(self.rows.cpu(), self.cols.cpu(), torch.float64) - y.double()
        return self._sparse_map(lay.in_order(values.to(compute_dtype(y.dtype))))


def entries_chunked(
    left: torch.Tensor, right: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``(left @ right)[rows, cols]`` in chunks (no autograd graph is kept)."""
    bt = right.T
    k = left.shape[1]
    out = torch.empty(rows.numel(), dtype=left.dtype, device=left.device)
    ones = torch.ones(k, dtype=left.dtype, device=left.device)
    with torch.no_grad():
        for s, e in _chunks(rows.numel(), k):
            rs, cs = rows[s:e], cols[s:e]
            prod = torch.index_select(left, 0, rs).mul_(torch.index_select(bt, 0, cs))
            torch.mv(prod, ones, out=out[s:e])
    return out
