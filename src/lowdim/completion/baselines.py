"""Baselines for matrix completion, with the same interface as :class:`DeepMatrixCompletion`.

All share the input forms, bias terms, normalization, ``predict``/``score``/``rmse``/``complete``
of :class:`~lowdim.completion.estimator.CompletionEstimator`.

* :class:`AltMin` — alternating minimization (Jain, Netrapalli & Sanghavi, STOC 2013; the AltMin
  of seed 000 Sec. 4.1): spectral initialization from ``P_Ω(Y)/p``, then exact least squares for
  ``V`` given ``U`` and for ``U`` given ``V`` on the observed entries. We use all observations in
  every step (the practical variant; the analysis splits Ω into fresh samples per step) and a tiny
  ridge ``reg`` so rows with fewer than ``rank`` observations stay well posed.
* :class:`SoftImpute` — nuclear-norm shrinkage (Mazumder, Hastie & Tibshirani, JMLR 2010):
  ``Z ← S_λ(P_Ω(Y) + P_Ω^⊥(Z))`` with ``S_λ`` soft-thresholding of singular values, computed on a
  sparse-plus-low-rank operator (no dense ``m × n`` matrix).
* :class:`BurerMonteiro` — two-layer factorization ``U Vᵀ`` of width ``rank`` trained by gradient
  descent from small random initialization (seed 004 Sec. 4.1: depth 2 "reduces to a
  Burer–Monteiro factorization").
* The full-width and the narrow deep factorizations are :class:`DeepMatrixCompletion` with
  ``method="full"`` and ``method="narrow"``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from .._validation import check_int, check_nonnegative
from ..compression import narrow_factorization
from ..defaults import INIT_SCALE
from ..operators import EntryObservation
from .estimator import CompletionEstimator, DeepMatrixCompletion

__all__ = ["AltMin", "SoftImpute", "BurerMonteiro"]


def _check_rank(rank, shape, name="rank"):
    check_int(name, rank, 1)
    if rank >= min(shape):
        raise ValueError(f"{name}={rank} must be smaller than min(m, n) = {min(shape)}")


def _solve_side(idx, other_rows, vals, size, reg, chunk=1 << 22):
    """Rows ``x_i`` minimizing ``Σ_{ω: idx_ω = i} (x_i·o_ω − v_ω)² + reg‖x_i‖²`` for every ``i``.

    ``other_rows`` holds ``o_ω`` (the other factor's row of each observation); the normal equations
    are accumulated with ``index_add_`` in chunks and solved as a batch.
    """
    idx_t = torch.as_tensor(idx)
    o = torch.as_tensor(other_rows)
    v = torch.as_tensor(vals)
    k = o.shape[1]
    gram = torch.zeros(size, k, k, dtype=torch.float64)
    rhs = torch.zeros(size, k, dtype=torch.float64)
    step = max(1, chunk // (k * k))
    for s in range(0, idx.size, step):
        e = min(idx.size, s + step)
        oj = o[s:e]
        gram.index_add_(0, idx_t[s:e], oj[:, :, None] * oj[:, None, :])
        rhs.index_add_(0, idx_t[s:e], oj * v[s:e, None])
    gram += max(reg, 1e-12) * torch.eye(k, dtype=torch.float64)
    return torch.linalg.solve(gram, rhs).numpy()


class AltMin(CompletionEstimator):
    """Alternating minimization (Jain et al. 2013) for rank-``rank`` completion.

    Parameters
    ----------
    rank : int, default=10
        Factor width ``r̂``.
    max_iter : int, default=50
        Number of alternating (V then U) updates.
    tol : float, default=1e-9
        Stop when the relative training loss changes by less than this.
    reg : float, default=1e-8
        Ridge term of each least-squares problem (normalized units).
    max_time : float, optional
    bias, bias_reg, duplicates, unknown, random_state
        As :class:`DeepMatrixCompletion`.
    """

    def __init__(self, rank=10, max_iter=50, tol=1e-9, reg=1e-8, max_time=None, bias="none",
                 bias_reg=10.0, duplicates="error", unknown="fallback", random_state=None):
        self.rank = rank
        self.max_iter = max_iter
        self.tol = tol
        self.reg = reg
        self.max_time = max_time
        self.bias = bias
        self.bias_reg = bias_reg
        self.duplicates = duplicates
        self.unknown = unknown
        self.random_state = random_state

    def fit(self, X, y=None, shape=None, truth=None):
        """Fit; ``truth`` (dense ``m × n``, original units) records ``error_`` per iteration."""
        t0 = time.perf_counter()
        obs, (r, c, v), _ = self._prepare(X, y, shape)
        _check_rank(self.rank, obs.shape)
        check_nonnegative("reg", self.reg)
        m, n = obs.shape
        k = int(self.rank)
        u = EntryObservation(r, c, v, (m, n)).top_singular(k)[0].numpy()  # spectral init of Ω⊙Y/p
        # Clip rows of large norm (incoherence step of Jain et al.) and re-orthonormalize.
        norms = np.linalg.norm(u, axis=1)
        cap = 2 * math.sqrt(k / m)
        u = u * np.minimum(1.0, cap / np.maximum(norms, 1e-300))[:, None]
        u, _ = np.linalg.qr(u)
        self.loss_, self.seconds_, self.error_ = [], [], []
        prev = math.inf
        scale0 = float(v @ v)
        for _ in range(int(self.max_iter)):
            vf = _solve_side(c, u[r], v, n, self.reg)
            u = _solve_side(r, vf[c], v, m, self.reg)
            res = np.einsum("ij,ij->i", u[r], vf[c]) - v
            loss = float(res @ res) / max(scale0, 1e-300)
            self.loss_.append(loss)
            self.seconds_.append(time.perf_counter() - t0)
            self.left_, self.right_ = u, vf.T
            if truth is not None:
                self.error_.append(self._truth_error(truth))
            if (math.isfinite(prev) and abs(prev - loss) <= self.tol * prev) or loss <= 1e-30:
                break
            if self.max_time is not None and time.perf_counter() - t0 > self.max_time:
                break
            prev = loss
        self.left_, self.right_ = u, vf.T
        self.n_iter_ = len(self.loss_)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _truth_error(self, truth) -> float:
        full = self.complete(max_entries=10**9)
        t = np.asarray(truth)
        return float(np.linalg.norm(full - t) / np.linalg.norm(t))


def _sparse_plus_low_rank(sp, u, s, vt):
    """``sp + U diag(s) Vᵀ`` as a LinearOperator (what SoftImpute decomposes each step)."""
    return scipy.sparse.linalg.LinearOperator(
        sp.shape,
        matvec=lambda x: sp @ x + u @ (s * (vt @ x)),
        rmatvec=lambda x: sp.T @ x + vt.T @ (s * (u.T @ x)),
        matmat=lambda x: sp @ x + u @ (s[:, None] * (vt @ x)),
        rmatmat=lambda x: sp.T @ x + vt.T @ (s[:, None] * (u.T @ x)),
        dtype=np.float64,
    )


class SoftImpute(CompletionEstimator):
    """SoftImpute (Mazumder, Hastie & Tibshirani 2010): nuclear-norm regularized completion.

    Minimizes ``½‖P_Ω(Z − Y)‖² + λ‖Z‖_*`` by ``Z ← S_λ(P_Ω(Y) + P_Ω^⊥(Z))``.

    Parameters
    ----------
    shrinkage : float, default=0.05
        λ relative to ``σ_max(P_Ω(Y))`` of the normalized data (so it is scale free).
    max_rank : int, default=30
        Number of singular values computed per step (the solution's rank is at most this).
    max_iter : int, default=100
    tol : float, default=1e-5
        Stop when ``‖Z_t − Z_{t−1}‖_F² / ‖Z_{t−1}‖_F² < tol``.
    max_time : float, optional
    bias, bias_reg, duplicates, unknown, random_state
        As :class:`DeepMatrixCompletion`.
    """

    def __init__(self, shrinkage=0.05, max_rank=30, max_iter=100, tol=1e-5, max_time=None,
                 bias="none", bias_reg=10.0, duplicates="error", unknown="fallback",
                 random_state=None):
        self.shrinkage = shrinkage
        self.max_rank = max_rank
        self.max_iter = max_iter
        self.tol = tol
        self.max_time = max_time
        self.bias = bias
        self.bias_reg = bias_reg
        self.duplicates = duplicates
        self.unknown = unknown
        self.random_state = random_state

    def fit(self, X, y=None, shape=None):
        t0 = time.perf_counter()
        obs, (r, c, v), _ = self._prepare(X, y, shape)
        _check_rank(self.max_rank, obs.shape, "max_rank")
        check_nonnegative("shrinkage", self.shrinkage)
        m, n = obs.shape
        k = int(self.max_rank)
        rng = np.random.default_rng(0)
        p = v.size / (m * n)
        smax = p * float(EntryObservation(r, c, v, (m, n)).top_singular(1)[1][0])  # σ_max(P_Ω(Y))
        lam = float(self.shrinkage) * float(smax)
        u = np.zeros((m, 0))
        s = np.zeros(0)
        vt = np.zeros((0, n))
        self.seconds_, self.n_iter_ = [], 0
        for _ in range(int(self.max_iter)):
            z_obs = np.einsum("ij,j,ji->i", u[r], s, vt[:, c]) if s.size else np.zeros_like(v)
            sp = scipy.sparse.csr_matrix((v - z_obs, (r, c)), shape=(m, n))
            op = _sparse_plus_low_rank(sp, u, s, vt)
            v0 = (vt[0] if s.size else rng.standard_normal(n))
            if n > m:
                v0 = (u[:, 0] if s.size else rng.standard_normal(m))
            nu, ns, nvt = scipy.sparse.linalg.svds(op, k=k, v0=v0, tol=1e-6)
            order = np.argsort(-ns)
            nu, ns, nvt = nu[:, order], ns[order], nvt[order]
            ns = np.maximum(ns - lam, 0.0)
            keep = ns > 0
            nu, ns, nvt = nu[:, keep], ns[keep], nvt[keep]
            # relative change ‖Z_new − Z_old‖² / ‖Z_old‖² via Gram matrices
            old2 = float(np.sum(s**2))
            new2 = float(np.sum(ns**2))
            cross = float(np.sum((u.T @ nu) * np.outer(s, ns) * (vt @ nvt.T))) if s.size and ns.size else 0.0
            change = (old2 + new2 - 2 * cross) / max(old2, 1e-300)
            u, s, vt = nu, ns, nvt
            self.n_iter_ += 1
            self.seconds_.append(time.perf_counter() - t0)
            if change < self.tol:
                break
            if self.max_time is not None and time.perf_counter() - t0 > self.max_time:
                break
        self.left_ = u * s
        self.right_ = vt
        self.rank_ = int(s.size)
        self.lambda_ = lam
        self.fit_seconds_ = time.perf_counter() - t0
        return self


class BurerMonteiro(DeepMatrixCompletion):
    """Two-layer ``U Vᵀ`` of width ``rank``, gradient descent from small random initialization.

    The parameters are those of :class:`DeepMatrixCompletion` without ``depth``/``method``/
    ``outer_ratio`` (fixed: depth 2, Gaussian initialization of scale ``init_scale``).
    """

    depth = 2
    method = "narrow"
    outer_ratio = None
    preset = "exact"
    clip = None
    refit = None  # the exact preset's: no refit, no implicit feedback or side information
    implicit = None
    side_weight = None

    def __init__(self, rank=10, init_scale=INIT_SCALE, learning_rate=None, max_iter=5000, tol=1e-10,
                 max_time=None, weight_decay=0.0, momentum=0.0, bias="none", bias_reg=10.0,
                 validation_fraction=None, n_iter_no_change=10, eval_every=10,
                 duplicates="error", unknown="fallback", dtype="float64", device="cpu",
                 distributed=False, checkpoint_dir=None, checkpoint_every=500, random_state=None,
                 warm_start=False, verbose=False):
        self.rank = rank
        self.init_scale = init_scale
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.tol = tol
        self.max_time = max_time
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.bias = bias
        self.bias_reg = bias_reg
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.eval_every = eval_every
        self.duplicates = duplicates
        self.unknown = unknown
        self.dtype = dtype
        self.device = device
        self.distributed = distributed
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    def _narrow_width(self) -> int:
        return int(self.rank)

    def _build_model(self, op):
        from .estimator import _DTYPES

        model = narrow_factorization(
            op.shape, self._narrow_width(), 2, scale=self.init_scale,
            random_state=self.random_state, dtype=_DTYPES[self.settings_["dtype"]],
        )
        return model.to(device=self.device)
