"""Measurement operators: the loss ``ℓ(Θ) = ½‖A(W_{L:1}) − y‖²`` of every problem in the papers.

======================  ==========================================  =======================  =================
operator                A(W)                                        surrogate A†(y)          paper
======================  ==========================================  =======================  =================
:class:`FullObservation` ``W``  (deep matrix factorization)          ``Φ``                    seed 003 eq. 2
:class:`EntryObservation` ``W[rows, cols]`` (matrix completion)      ``Ω⊙Φ / p``              seed 003 eq. 10
:class:`GaussianSensing`  ``(⟨A_i, W⟩)_{i≤M}``                        ``(1/M) Σ y_i A_i``      seed 000 eq. 6
:class:`Regression`       ``W X`` (deep linear network on data)      ``Y Xᵀ``                 seed 004 eq. 2
======================  ==========================================  =======================  =================

Each operator evaluates predictions through the model's factored form
(:meth:`lowdim.DeepFactorization.entries` for completion: never an ``m × n`` matrix), gives its
surrogate for spectral initialization, and — where the algebra allows — folds frozen outer factors
of a model into a smaller equivalent problem (:meth:`MeasurementOperator.restrict`), which is what
makes compressed training cost ``O(L k³)`` per step for deep matrix factorization.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from .factorization import DeepFactorization
from .gradients import dense_gradient, observed_gradient
from .initialization import FullWidthInit
from .linalg import LinearMap, top_singular


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def _as_float(x, dtype: torch.dtype, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"{name} must be numeric, got dtype {t.dtype}")
    t = t.to(dtype)
    _check_finite(name, t)
    return t


class MeasurementOperator(ABC):
    """A linear measurement map ``A: R^{m×n} → R^M`` with observations ``y``.

    Subclasses implement :meth:`apply` (on an explicit matrix), :meth:`predict` (through a model,
    as cheaply as the structure allows) and :meth:`surrogate`.
    """

    shape: tuple[int, int]
    y: torch.Tensor

    @abstractmethod
    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """``A(W)`` for an explicit ``m × n`` matrix ``W``."""

    def predict(self, model: DeepFactorization) -> torch.Tensor:
        """``A(W_{L:1})`` for a factorization; the default forms the product."""
        self.check_model(model)
        return self.apply(model.product())

    @abstractmethod
    def surrogate(self) -> torch.Tensor:
        """The dense surrogate ``A†(y)`` of shape ``m × n`` (seed 000 eq. 6)."""

    def top_singular(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-``k`` singular triplets ``(U, s, Vᵀ)`` of the surrogate (Algorithm 1 of seed 000)."""
        u, s, v = top_singular(self.surrogate_map(), k)
        return u, s, v.T

    def surrogate_map(self) -> LinearMap:
        """The surrogate as a :class:`~lowdim.linalg.LinearMap` (sparse where the operator is)."""
        return dense_gradient(self.surrogate())

    def gradient_at(self, init: FullWidthInit) -> LinearMap:
        """``E = ∇_W ½‖A(W) − y‖²`` at ``W = W_{L:1}(0)``: what the compression reads (seed 003 Sec. 2.3).

        The default forms ``W_{L:1}(0)`` (dense problems are small) and differentiates
        :meth:`apply`; :class:`EntryObservation` keeps it sparse.
        """
        w = init.product(self.y.dtype).to(self.y.device).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(0.5 * (self.apply(w) - self.y).square().sum(), w)
        return dense_gradient(grad)

    def residual(self, model: DeepFactorization) -> torch.Tensor:
        """``A(W_{L:1}) − y``."""
        return self.predict(model) - self.y

    def loss(self, model: DeepFactorization) -> torch.Tensor:
        """``½‖A(W_{L:1}) − y‖²`` (the summed loss of the papers)."""
        return 0.5 * self.residual(model).square().sum()

    def scale(self) -> float:
        """``½‖y‖²``: the loss of the zero matrix, used for relative tolerances."""
        return 0.5 * float(self.y.square().sum())

    def restrict(
        self, left: torch.Tensor, right: torch.Tensor
    ) -> tuple[MeasurementOperator, float] | None:
        """Fold fixed outer factors into the operator.

        Returns ``(op, c)`` such that for every inner matrix ``C``
        ``½‖A(left C right) − y‖² = op.loss(C) + c`` (same gradients in ``C``), or ``None`` when
        no cheaper equivalent exists. ``left`` (``m × k``) must have orthonormal columns and
        ``right`` (``k × n``) orthonormal rows.
        """
        return None

    def check_model(self, model: DeepFactorization) -> None:
        if tuple(model.shape) != tuple(self.shape):
            raise ValueError(
                f"model produces a {model.shape[0]}×{model.shape[1]} matrix but the operator "
                f"measures {self.shape[0]}×{self.shape[1]} matrices"
            )


def _orthonormal(q: torch.Tensor, tol: float = 1e-8) -> bool:
    eye = torch.eye(q.shape[1], dtype=q.dtype, device=q.device)
    return bool(torch.linalg.matrix_norm(q.T @ q - eye) <= tol * max(1, q.shape[1]))


class FullObservation(MeasurementOperator):
    """Deep matrix factorization: ``A = Id``, loss ``½‖W_{L:1} − Φ‖_F²`` (seed 003 eq. 2).

    Parameters
    ----------
    target : array-like, shape (m, n)
        The matrix Φ to factorize; finite values only.
    dtype : torch.dtype, default=torch.float64
    """

    def __init__(self, target, *, dtype: torch.dtype = torch.float64) -> None:
        t = _as_float(target, dtype, "target")
        if t.ndim != 2 or min(t.shape) < 1:
            raise ValueError(f"target must be a non-empty 2-D matrix, got shape {tuple(t.shape)}")
        self.target = t
        self.y = t
        self.shape = tuple(t.shape)

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def surrogate(self) -> torch.Tensor:
        return self.target

    def restrict(self, left, right):
        if not (_orthonormal(left) and _orthonormal(right.T)):
            return None
        # ½‖L C R − Φ‖² = ½‖C − LᵀΦRᵀ‖² + ½(‖Φ‖² − ‖LᵀΦRᵀ‖²) for orthonormal L, Rᵀ.
        inner = (left.T @ self.target) @ right.T
        const = 0.5 * max(float(self.target.square().sum() - inner.square().sum()), 0.0)
        return FullObservation(inner.detach(), dtype=inner.dtype), const


class EntryObservation(MeasurementOperator):
    """Matrix completion: observed entries ``y_k = Φ[rows_k, cols_k]`` (seed 003 eq. 10).

    Predictions use :meth:`lowdim.DeepFactorization.entries`, so the loss and its gradient cost
    ``O(|Ω| k)`` for a model of narrowest width ``k``, with no ``m × n`` intermediate.

    Parameters
    ----------
    rows, cols : array-like of int, shape (|Ω|,)
        Indices of the observed entries (0-based, no duplicated pairs).
    values : array-like of float, shape (|Ω|,)
        Observed values, finite.
    shape : (int, int)
        Shape ``(m, n)`` of the full matrix.
    dtype : torch.dtype, default=torch.float64
    """

    def __init__(self, rows, cols, values, shape, *, dtype: torch.dtype = torch.float64) -> None:
        m, n = (int(s) for s in shape)
        if m < 1 or n < 1:
            raise ValueError(f"shape must be positive, got {shape}")
        r = torch.as_tensor(np.asarray(rows)).long().reshape(-1)
        c = torch.as_tensor(np.asarray(cols)).long().reshape(-1)
        v = _as_float(values, dtype, "observed values").reshape(-1)
        if not (r.numel() == c.numel() == v.numel()):
            raise ValueError(
                f"rows, cols and values must have the same length, got {r.numel()}, {c.numel()}, "
                f"{v.numel()}"
            )
        if r.numel() == 0:
            raise ValueError("no observed entries: matrix completion needs at least one")
        for name, idx, bound in (("row", r, m), ("column", c, n)):
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= bound:
                raise ValueError(f"{name} index out of range: got [{lo}, {hi}] for size {bound}")
        flat = r * n + c
        if flat.numel() > 1 and not bool((flat[1:] > flat[:-1]).all()):  # unsorted: sort to check
            flat = torch.sort(flat).values
        if bool((flat[1:] == flat[:-1]).any()):
            raise ValueError(
                "duplicate (row, col) pairs among the observations; aggregate them first "
                "(e.g. average repeated ratings)"
            )
        self.rows, self.cols, self.y = r, c, v
        self.shape = (m, n)

    @classmethod
    def from_mask(cls, mask, target, *, dtype: torch.dtype = torch.float64) -> EntryObservation:
        """Observations of ``target`` where the dense 0/1 ``mask`` is non-zero (a convenience)."""
        mask_t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        t = _as_float(target, dtype, "target")
        if mask_t.shape != t.shape:
            raise ValueError(f"mask shape {tuple(mask_t.shape)} != target shape {tuple(t.shape)}")
        r, c = torch.nonzero(mask_t != 0, as_tuple=True)
        return cls(r, c, t[r, c], t.shape, dtype=dtype)

    @property
    def fraction(self) -> float:
        """Observed fraction ``p = |Ω| / (m n)``."""
        return self.y.numel() / (self.shape[0] * self.shape[1])

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        return w[self.rows, self.cols]

    def predict(self, model: DeepFactorization) -> torch.Tensor:
        self.check_model(model)
        return model.entries(self.rows, self.cols)

    def gradient_at(self, init: FullWidthInit) -> LinearMap:
        """``E = P_Ω(W_{L:1}(0) − Φ)``: ``|Ω|`` non-zeros, never an ``m × n`` array."""
        values = init.entries(self.rows, self.cols, torch.float64).to(self.y.device) - self.y.double()
        return observed_gradient(self.rows, self.cols, values, self.shape)

    def surrogate(self) -> torch.Tensor:
        out = torch.zeros(self.shape, dtype=self.y.dtype, device=self.y.device)
        out[self.rows, self.cols] = self.y / self.fraction
        return out

    def surrogate_map(self) -> LinearMap:
        """``Ω⊙Φ / p`` as a sparse product (its truncated SVD never forms the ``m × n`` array)."""
        return observed_gradient(self.rows, self.cols, self.y / self.fraction, self.shape)


class GaussianSensing(MeasurementOperator):
    """Matrix sensing ``y_i = ⟨A_i, Φ⟩`` with Gaussian ``A_i`` (seed 000 App. A.2).

    Parameters
    ----------
    matrices : array-like, shape (M, m, n)
        The sensing matrices ``A_i``.
    y : array-like, shape (M,)
        The measurements.
    """

    def __init__(self, matrices, y, *, dtype: torch.dtype = torch.float64) -> None:
        a = _as_float(matrices, dtype, "sensing matrices")
        yy = _as_float(y, dtype, "measurements").reshape(-1)
        if a.ndim != 3 or a.shape[0] < 1:
            raise ValueError(f"sensing matrices must have shape (M, m, n), got {tuple(a.shape)}")
        if a.shape[0] != yy.numel():
            raise ValueError(f"{a.shape[0]} sensing matrices but {yy.numel()} measurements")
        self.matrices, self.y = a, yy
        self.shape = tuple(a.shape[1:])

    @classmethod
    def random(
        cls, target, num_measurements: int, *, random_state: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> GaussianSensing:
        """Draw ``M`` standard Gaussian ``A_i`` and measure ``target`` (``E[A†A(Φ)] = Φ``)."""
        t = _as_float(target, dtype, "target")
        if num_measurements < 1:
            raise ValueError(f"num_measurements must be >= 1, got {num_measurements}")
        gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
        a = torch.randn(num_measurements, *t.shape, generator=gen, dtype=torch.float64).to(dtype)
        return cls(a, torch.einsum("kij,ij->k", a, t), dtype=dtype)

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kij,ij->k", self.matrices, w)

    def surrogate(self) -> torch.Tensor:
        return torch.einsum("k,kij->ij", self.y, self.matrices) / self.y.numel()


class Regression(MeasurementOperator):
    """Deep linear network on data: loss ``½‖W_{L:1} X − Y‖_F²`` (seed 004 eq. 2).

    Parameters
    ----------
    x : array-like, shape (d_x, N)
        Inputs as columns.
    y : array-like, shape (d_y, N)
        Targets as columns.
    """

    def __init__(self, x, y, *, dtype: torch.dtype = torch.float64) -> None:
        xx, yy = _as_float(x, dtype, "inputs X"), _as_float(y, dtype, "targets Y")
        if xx.ndim != 2 or yy.ndim != 2 or xx.shape[1] != yy.shape[1] or xx.shape[1] < 1:
            raise ValueError(
                f"X must be (d_x, N) and Y (d_y, N) with the same N >= 1, got {tuple(xx.shape)} "
                f"and {tuple(yy.shape)}"
            )
        self.x, self.y = xx, yy
        self.shape = (yy.shape[0], xx.shape[0])

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.x

    def predict(self, model: DeepFactorization) -> torch.Tensor:
        self.check_model(model)
        return model(self.x)

    def surrogate(self) -> torch.Tensor:
        """The cross-correlation ``Y Xᵀ`` (seed 000 Sec. 2.3; ``A†(y)`` when ``XXᵀ = I``)."""
        return self.y @ self.x.T

    def restrict(self, left, right):
        if not _orthonormal(left):
            return None
        # ½‖L C R X − Y‖² = ½‖C (R X) − LᵀY‖² + ½(‖Y‖² − ‖LᵀY‖²) for orthonormal columns of L.
        ly = left.T @ self.y
        const = 0.5 * max(float(self.y.square().sum() - ly.square().sum()), 0.0)
        return Regression((right @ self.x).detach(), ly.detach(), dtype=ly.dtype), const
