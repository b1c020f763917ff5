"""``DeepMatrixCompletion``: a scikit-learn estimator for deep (compressed) matrix completion.

It fits ``Ŷ = b + s · W_{L:1}`` to the observed entries of a partially observed matrix, where
``W_{L:1}`` is a deep factorization trained by full-batch gradient descent from small
initialization (seed 003 Sec. 3, seed 004 Sec. 4.1, seed 000 Sec. 4.1):

``method="compressed"`` (default)
    invariant-subspace compression of a virtual full-width depth-``L`` factorization
    (seed 003 Sec. 2.3 / eq. 11): width ``2·rank``, bases trained at ``γη`` (``outer_ratio``).
    Built from the observed entries only (:func:`~lowdim.invariant_subspace_compression` with a virtual
    :class:`~lowdim.ImplicitOrthogonalInit`).
``method="spectral"``
    C-DLN (seed 000 Algorithm 1): width ``rank``, outer factors from the top singular vectors of the
    surrogate ``Ω⊙Y/p``, trained at ``αη`` (``outer_ratio``).
``method="full"``
    the full-width factorization itself (dims ``[n, d, …, d, m]``, ``d = max(m, n)``) — small
    problems only, as the reference the compressed model follows.
``method="narrow"``
    width ``2·rank`` with small random (Gaussian) initialization (seed 003 App. D.1 baseline).

Data normalization (why the defaults work on any rating scale)
--------------------------------------------------------------
1. Optional bias terms ``b_ij = μ + a_i + c_j`` (``bias=``) are fitted first by regularized
   alternating means (the "baseline predictors" of Koren 2008) and subtracted.
2. The residual values are divided by ``s = σ_max(P_Ω(Y − b)) / p`` with ``p = |Ω| / (m n)``, so the
   surrogate ``Ω⊙Y/p`` of the normalized data has largest singular value 1 — the scale the
   papers' synthetic problems have up to a constant. Fixing the scale fixes good step sizes and a
   good default γ (below).
3. The loss is ``(1/p) · ½ Σ_Ω (W_ij − Y'_ij)²``: with the ``1/p`` weight, the step size no longer
   depends on the observed fraction (``learning_rate = 0.5`` here is ``η = 2.5`` of the summed loss
   at ``p = 0.2``).

Predictions are mapped back: ``Ŷ_ij = b_ij + s · W_ij``. With implicit feedback or side information
(``implicit``, ``side_weight``, ``row_features`` / ``col_features``) the trained factorization
multiplies sparse feature matrices, ``W = F_u W_{L:1} F_iᵀ``
(:mod:`lowdim.completion.side_information`).

The default γ and how it depends on the scale and the depth
-----------------------------------------------------------
The compressed model is ``f = U W̃_L ⋯ W̃_1 Vᵀ`` with orthonormal bases ``U, V`` trained at step
``γη`` and ``2r × 2r`` cores ``W̃_l`` (initialized at ``ε``) trained at ``η``, on
``ℓ_s = ½‖A(f) − sΦ‖²``. Substitute ``W̃_l = s^{1/L} W̃'_l`` (``U``, ``V`` unchanged): then
``f = s f'`` with ``f' = U W̃'_L ⋯ W̃'_1 Vᵀ`` and ``ℓ_s = s² ℓ_1(f')``, so

* ``∇_{W̃_l} ℓ_s = s^{2 − 1/L} ∇_{W̃'_l} ℓ_1`` and the core update ``W̃_l ← W̃_l − η∇`` reads
  ``W̃'_l ← W̃'_l − η s^{2 − 2/L} ∇_{W̃'_l} ℓ_1``, from ``W̃'_l(0) = ε / s^{1/L}``;
* ``∇_U ℓ_s = s² ∇_U ℓ_1`` (likewise for ``V``): the bases move at step ``γη s²``.

Training on ``sΦ`` is therefore training on ``Φ`` with core step ``η' = η s^{2 − 2/L}``,
initialization ``ε / s^{1/L}`` and bases at ``γη s² = γ' η'`` with the effective ratio
``γ' = γ · s^{2/L}`` (the full-width reference transforms the same way, all factors at ``η'``).
A γ tuned at one scale or depth thus moves with both.

Seed 003 (Fig. 5) uses γ = 0.01 at L = 3 but does not state its target's scale. lowdim measured
γ = 0.15 best at L = 3 on ``σ_max = 1`` data (``benchmarks/completion_synthetic.py``); read
through the law, that is the paper's γ at a reference scale ``s_ref = (0.15 / 0.01)^{3/2} ≈ 58``
— *inferred from our measurement, not read from the paper*. The default γ for
``method="compressed"`` at depth ``L`` on normalized (``σ_max = 1``) data is then
:func:`default_gamma` ``(L) = 0.01 · s_ref^{2/L}``: 0.15 at L = 3, ≈ 0.58 at L = 2, ≈ 0.076 at
L = 4.

Examples
--------
>>> import numpy as np
>>> from lowdim.completion import DeepMatrixCompletion
>>> from lowdim.datasets import completion_problem
>>> pb = completion_problem(60, 80, rank=2, fraction=0.4, random_state=0)
>>> est = DeepMatrixCompletion(rank=4, random_state=0).fit((pb.rows, pb.cols), pb.values)
>>> est.predict(pb.rows[:3], pb.cols[:3]).shape
(3,)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.sparse.linalg
import torch
from sklearn.base import BaseEstimator, RegressorMixin

from .._io import atomic_write
from .._validation import (
    check_choice,
    check_fraction,
    check_int,
    check_nonnegative,
    check_positive,
)
from ..compression import (
    invariant_subspace_compression,
    narrow_factorization,
    spectral_compression,
)
from ..defaults import COMPLETION_PRESETS, DEPTH, RATING_LEVELS, default_gamma
from ..factorization import DeepFactorization
from ..initialization import ImplicitOrthogonalInit
from ..operators import EntryObservation
from ..training import DivergenceError, History, TrainState, train
from ._data import Observations, _frame_triples, parse_observations, parse_query
from ._recommender import RecommenderMixin
from .distributed import data_parallel, init_from_env
from .side_information import FeatureEntryObservation, feature_matrix, implicit_block, one_hot_block
from .sparse import SparseEntryObservation, entries_chunked

__all__ = [
    "CompletionEstimator", "DeepMatrixCompletion", "METHODS", "BIASES", "DEFAULTS",
]

METHODS = ("compressed", "spectral", "full", "narrow")
BIASES = ("none", "global", "row", "col", "both")
_DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: Default (learning rate, outer ratio) per method, in the normalized units of the module docstring;
#: ``None``: the ratio depends on the depth (:func:`default_gamma`).
DEFAULTS = {
    "compressed": (0.5, None),
    "spectral": (0.2, 5.0),
    "full": (0.5, 1.0),
    "narrow": (0.5, 1.0),
}
_FULL_WIDTH_LIMIT = 60_000_000  # L·d² numbers: beyond this "full" refuses (use "compressed")
_CKPT_NAME = "checkpoint.safetensors"


def _split(model: DeepFactorization, op) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m × k`` and ``k × n`` factors of the predictions (features applied, if any)."""
    return op.effective_split(model) if isinstance(op, FeatureEntryObservation) else model.split()


def _aligned(frame, labels: pd.Index | None, size: int, name: str) -> pd.DataFrame:
    """``frame``'s rows in the order of the fitted labels (positions when unlabelled)."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame indexed by label, got {type(frame).__name__}")
    index = pd.RangeIndex(size) if labels is None else labels
    out = frame.reindex(index)
    if out.notna().to_numpy().sum() == 0:
        raise ValueError(f"{name}: no row of the frame matches a label of the data (index "
                         f"{list(frame.index[:3])} vs labels {list(index[:3])})")
    return out


def fit_biases(rows, cols, values, shape, kind: str, reg: float, sweeps: int = 10):
    """Regularized baseline predictors ``μ + a_i + c_j`` (alternating ridge means)."""
    m, n = shape
    mu = float(values.mean()) if kind != "none" else 0.0
    a, c = np.zeros(m), np.zeros(n)
    if kind in ("row", "col", "both"):
        cnt_r = np.bincount(rows, minlength=m)
        cnt_c = np.bincount(cols, minlength=n)
        for _ in range(sweeps if kind == "both" else 1):
            if kind in ("row", "both"):
                a = np.bincount(rows, weights=values - mu - c[cols], minlength=m) / (cnt_r + reg)
            if kind in ("col", "both"):
                c = np.bincount(cols, weights=values - mu - a[rows], minlength=n) / (cnt_c + reg)
    return mu, a, c


def looks_like_ratings(values: np.ndarray) -> bool:
    """Whether observed values take at most :data:`~lowdim.defaults.RATING_LEVELS` distinct levels."""
    return np.unique(values).size <= RATING_LEVELS


class CompletionEstimator(RecommenderMixin, RegressorMixin, BaseEstimator):
    """Shared input handling, normalization, prediction, scoring, recommending and saving.

    Subclasses implement ``fit``: it calls ``_prepare`` (which resolves ``settings_`` and normalizes
    the values) and sets ``left_`` (``m × k``) and ``right_`` (``k × n``), the normalized low-rank
    term ``W = left_ @ right_`` (predictions are ``b_ij + scale_ · W_ij``).
    """

    # --------------------------------------------------------------------------- preparation
    def _resolve_settings(self, values: np.ndarray) -> dict:
        """The effective hyperparameters for these observed values (``settings_``)."""
        clip = getattr(self, "clip", None)
        return {"bias": self.bias, "bias_reg": self.bias_reg, "validation_fraction": None,
                "clip": looks_like_ratings(values) if clip is None else bool(clip)}

    def _prepare(self, X, y, shape):
        check_choice("unknown", self.unknown, ("error", "fallback"))
        obs = parse_observations(X, y, shape=shape, duplicates=self.duplicates)
        self.settings_ = st = self._resolve_settings(obs.values)
        check_choice("bias", st["bias"], BIASES)
        check_nonnegative("bias_reg", st["bias_reg"])
        rng = np.random.default_rng(self.random_state)
        val_idx = None
        vf = st["validation_fraction"]
        if vf is not None:
            check_fraction("validation_fraction", vf, advice="or None for no validation split")
            n_val = int(round(vf * obs.values.size))
            if n_val < 1 or n_val >= obs.values.size:
                raise ValueError(
                    f"validation_fraction={vf} leaves {n_val} validation and "
                    f"{obs.values.size - n_val} training entries; need at least one of each"
                )
            perm = rng.permutation(obs.values.size)
            val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        else:
            tr_idx = np.arange(obs.values.size)
        r, c, v = obs.rows[tr_idx], obs.cols[tr_idx], obs.values[tr_idx]
        self.shape_ = obs.shape
        self.row_labels_, self.col_labels_ = obs.row_labels, obs.col_labels
        self.seen_ = scipy.sparse.csr_matrix(
            (np.ones(obs.rows.size, dtype=bool), (obs.rows, obs.cols)), shape=obs.shape
        )
        self.clip_range_ = (float(obs.values.min()), float(obs.values.max())) if st["clip"] else None
        self.global_mean_ = float(v.mean())
        self.bias_mean_, self.row_bias_, self.col_bias_ = fit_biases(
            r, c, v, obs.shape, st["bias"], float(st["bias_reg"])
        )
        resid = v - self._bias_at(r, c)
        p = v.size / (obs.shape[0] * obs.shape[1])
        sigma = float(EntryObservation(r, c, resid, obs.shape).top_singular(1)[1][0])  # σ_max(Ω⊙Y/p)
        self.degenerate_ = not sigma > 1e-12 * max(1.0, float(np.abs(v).max()))
        if self.degenerate_:
            warnings.warn(
                "the observed values are constant or fully explained by the bias terms (bias="
                f"{st['bias']!r}); the low-rank part is zero and predictions are the bias terms",
                RuntimeWarning, stacklevel=3,
            )
        self.scale_ = sigma if not self.degenerate_ else 1.0
        self.observed_fraction_ = p
        train = (r, c, resid / self.scale_)
        val = None
        if val_idx is not None:
            val = (obs.rows[val_idx], obs.cols[val_idx], obs.values[val_idx])
        return obs, train, val

    def _bias_at(self, r, c) -> np.ndarray:
        return self.bias_mean_ + self.row_bias_[r] + self.col_bias_[c]

    # --------------------------------------------------------------------------- prediction
    def _check_fitted(self):
        if not hasattr(self, "scale_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _encode(self, labels, index: pd.Index | None, size: int, what: str):
        if index is None:
            arr = np.asarray(labels)
            if arr.size and not np.issubdtype(arr.dtype, np.number):
                raise ValueError(
                    f"{what} indices must be integers (the model was fitted on positions); got "
                    f"dtype {arr.dtype}"
                )
            pos = arr.astype(np.float64)
            ok = np.isfinite(pos) & (pos >= 0) & (pos < size) & (pos == np.round(pos))
            pos = np.where(ok, pos, -1).astype(np.int64)
        else:
            pos = index.get_indexer(np.asarray(labels, dtype=object if index.dtype == object else None))
            ok = pos >= 0
        if not ok.all() and self.unknown == "error":
            bad = np.asarray(labels)[~ok][:5].tolist()
            raise ValueError(
                f"{int((~ok).sum())} {what} label(s) were not seen in fit (e.g. {bad}) or are out "
                f"of range [0, {size}); set unknown='fallback' to predict them from the mean and "
                "bias terms"
            )
        return pos, ok

    def predict(self, X, cols=None) -> np.ndarray:
        """Predicted values at ``(row, column)`` pairs.

        ``predict(rows, cols)``, ``predict((rows, cols))``, ``predict(array of shape (N, 2))`` or
        ``predict(DataFrame)`` (columns ``row``/``col`` or the first two). Labels are those of
        ``fit`` (positions for array inputs). Unseen labels raise ``ValueError`` unless
        ``unknown="fallback"``: then the low-rank term (and the bias of the unseen side) is 0 and the
        prediction is the global mean plus the known bias.
        """
        self._check_fitted()
        r_lab, c_lab = parse_query(X, cols)
        m, n = self.shape_
        r, rok = self._encode(r_lab, self.row_labels_, m, "row")
        c, cok = self._encode(c_lab, self.col_labels_, n, "column")
        both = rok & cok
        out = np.empty(r.size, dtype=np.float64)
        if both.any():
            rr, cc = r[both], c[both]
            out[both] = self._bias_at(rr, cc) + self.scale_ * self._predict_normalized(rr, cc)
        if (~both).any():
            base = self._fallback_mean()
            rb = np.where(rok, self.row_bias_[np.clip(r, 0, None)], 0.0)
            cb = np.where(cok, self.col_bias_[np.clip(c, 0, None)], 0.0)
            out[~both] = (base + rb + cb)[~both]
        return self._clip(out)

    def _clip(self, values: np.ndarray) -> np.ndarray:
        """Predictions clipped to the observed range when ``settings_["clip"]``."""
        return values if self.clip_range_ is None else np.clip(values, *self.clip_range_)

    def rmse(self, X, y=None) -> float:
        """Root-mean-square error of :meth:`predict` against the observed values (same inputs as fit)."""
        r, c, v = self._query_values(X, y)
        return float(np.sqrt(np.mean((self.predict(r, c) - v) ** 2)))

    def mae(self, X, y=None) -> float:
        """Mean absolute error (same inputs as :meth:`rmse`)."""
        r, c, v = self._query_values(X, y)
        return float(np.mean(np.abs(self.predict(r, c) - v)))

    def score(self, X, y=None, sample_weight=None) -> float:
        """**Negative** RMSE, so that greater is better (scikit-learn's model-selection convention;
        :meth:`rmse` gives the RMSE itself)."""
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported")
        return -self.rmse(X, y)

    def _query_values(self, X, y):
        self._check_fitted()
        if isinstance(X, pd.DataFrame):
            return _frame_triples(X, y)
        if scipy.sparse.issparse(X) or (y is None and np.asarray(X).ndim == 2 and not isinstance(X, tuple)):
            obs = parse_observations(X, None, duplicates="last") if y is None else None
            if obs is not None:
                return obs.rows, obs.cols, obs.values
        r, c = parse_query(X)
        v = np.asarray(y, dtype=np.float64).reshape(-1)
        if v.size != r.size:
            raise ValueError(f"{r.size} (row, column) pairs but {v.size} values")
        return r, c, v

    def complete(self, max_entries: int = 50_000_000) -> np.ndarray:
        """The dense completed ``m × n`` matrix (positions order), if it has at most ``max_entries``.

        Raises ``MemoryError`` with the size otherwise: use :meth:`predict` on the entries you need.
        """
        self._check_fitted()
        m, n = self.shape_
        if m * n > max_entries:
            raise MemoryError(
                f"the completed matrix has {m}×{n} = {m * n:,} entries (> max_entries="
                f"{max_entries:,}, {8 * m * n / 2**30:.1f} GiB as float64); use predict(rows, cols) "
                "for the entries you need, or raise max_entries"
            )
        return self._clip(self._row_scores(np.arange(m), np.ones(m, dtype=bool)))

    def _fallback_mean(self) -> float:
        """The mean that a row or column not seen in fit falls back to."""
        return self.bias_mean_ if self.settings_["bias"] != "none" else self.global_mean_

    def _row_scores(self, rows: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Unclipped predictions for every column of the rows at ``rows`` (``len(rows) × n``).

        Rows with ``known`` False were not seen in fit: the fallback mean plus the column bias, as
        in :meth:`predict`.
        """
        safe = np.where(known, rows, 0)
        low = np.where(known[:, None], self.left_[safe] @ self.right_, 0.0)
        base = np.where(known, self.bias_mean_ + self.row_bias_[safe], self._fallback_mean())
        return base[:, None] + self.col_bias_ + self.scale_ * low

    def _predict_normalized(self, rows, cols) -> np.ndarray:
        """``(left_ right_)_{ij}`` at the given positions (both gathered as ``N × k`` rows)."""
        return np.einsum("ij,ij->i", self.left_[rows], self.right_.T[cols])

    def _check_range(self, rows, cols, values) -> None:
        """Warn, with advice, when predictions (before clipping) on the observed and 20 000 random
        entries leave the data's range by more than twice its width (MovieLens: good fits stay
        within 1.1 widths; fitting the noise to convergence reaches 4). Milder overfitting is what
        early stopping on a validation fraction is for."""
        rng = np.random.default_rng(0)
        m, n = self.shape_
        r = np.concatenate([rng.integers(0, m, 20_000), rows])
        c = np.concatenate([rng.integers(0, n, 20_000), cols])
        pred = self._bias_at(r, c) + self.scale_ * self._predict_normalized(r, c)
        lo, hi = float(values.min()), float(values.max())
        span = max(hi - lo, 1e-12 * max(1.0, abs(hi)))
        if not np.isfinite(pred).all() or pred.min() < lo - 2 * span or pred.max() > hi + 2 * span:
            warnings.warn(
                f"{type(self).__name__}: predictions range from {pred.min():.3g} to {pred.max():.3g} "
                f"on data in [{lo:.3g}, {hi:.3g}]: the fit overfits or diverges. Use early stopping "
                "(validation_fraction=0.1), a smaller rank or learning_rate, weight_decay, or "
                "preset='ratings' for noisy ratings",
                RuntimeWarning, stacklevel=3,
            )


class DeepMatrixCompletion(CompletionEstimator):
    """Deep matrix completion by (compressed) deep factorizations, scikit-learn style.

    With no arguments it suits both kinds of data it meets: ``preset="auto"`` reads values with at
    most 20 distinct levels as **ratings** (biases, C-DLN with a rank bound of 40, implicit feedback
    on both sides, early stopping on 10% of the entries then a refit on all of them, float32,
    predictions clipped to the observed range: RMSE 0.896 on MovieLens-100K u1, 0.891 with the
    users' and movies' side information) and anything else as the papers' **exact** low-rank regime
    (compressed, ε = 1e-3, no bias, trained to a relative loss of 1e-10). Every hyperparameter left
    at ``None`` takes the preset's value (:data:`lowdim.defaults.COMPLETION_PRESETS`); the effective
    values are in ``settings_`` after ``fit``.

    Parameters
    ----------
    rank : int, optional
        Rank upper bound ``r̂`` (may over-estimate the true rank: depth keeps it from overfitting,
        seed 003 Fig. 2). Width ``2·rank`` for ``"compressed"``/``"narrow"``, ``rank`` for
        ``"spectral"``; ``"compressed"`` needs ``min(m, n) > 2·rank``. Preset: 10 exact, 40 ratings.
    depth : int, default=3
        Depth ``L`` of the (full-width) factorization.
    method : {"compressed", "spectral", "full", "narrow"}, optional
        See the module docstring. Preset: ``"compressed"`` exact, ``"spectral"`` ratings.
    init_scale : float, optional
        Initialization scale ε. Preset: 1e-3 exact, 0.1 ratings.
    learning_rate : float, optional
        Step size η in normalized units (module docstring). Preset: exact 0.5 (compressed, full,
        narrow) or 0.2 (spectral); ratings 0.02 (spectral) or 0.2.
    outer_ratio : float, optional
        γ (compressed: learning-rate ratio of the bases, default :func:`default_gamma` ``(depth)``
        — 0.15 at depth 3; 0 freezes them) or α (spectral: ratio of the outer factors, default 5).
    max_iter : int, optional
        Iteration cap (total, including resumed iterations). Preset: 5000 exact, 1000 ratings.
    tol : float, default=1e-10
        Stop when the training loss is at most ``tol`` × its value at zero.
    max_time : float, optional
        Wall-time budget of one ``fit`` call, in seconds.
    weight_decay : float, optional
        λ of the GD update. Preset: 0 exact, 0.03 ratings.
    momentum : float, default=0
        Heavy-ball momentum of the GD update.
    bias : {"none", "global", "row", "col", "both"}, optional
        Bias terms fitted before the low-rank part (module docstring). Preset: ``"none"`` exact
        (a mean offset would add one to the rank), ``"both"`` ratings.
    bias_reg : float, optional
        Ridge regularization of the row/column biases (pseudo-observations). Preset: 10 / 5.
    validation_fraction : float, None or "auto", default="auto"
        Hold out this fraction of the observed entries; evaluate their RMSE every ``eval_every``
        iterations, stop after ``n_iter_no_change`` evaluations without improvement and keep the
        best iterate (early stopping). ``None``: no validation. ``"auto"``: 0.1 for ratings,
        ``None`` exact.
    n_iter_no_change : int, default=10
        Patience of early stopping, in evaluations.
    eval_every : int, optional
        Record the history (and evaluate the validation set) every this many iterations.
        Preset: 10 exact, 2 ratings.
    refit : bool, optional
        After early stopping, train again from the same initialization on *all* entries (the
        validation ones included) for ``best_iteration_`` iterations. The refit is kept only if it
        fits the former validation entries at least as well (within 5%) as the early-stopped model
        predicted them (else a warning, and the early-stopped model stays; ``refitted_`` says which).
        Preset: off exact, on ratings (0.8952 → 0.8925 on the inner split of u1.base).
    implicit : float, optional
        Weight of the implicit-feedback blocks: a user is also described by the items they rated,
        an item by the users who rated it (SVD++'s ``|N(u)|^{-1/2} Σ y_j`` and its item-side
        counterpart, symmetrically normalized; from the training entries only). 0 turns it off;
        ``"spectral"`` and ``"narrow"`` only, on the CPU (:mod:`lowdim.completion.side_information`).
        Preset: 0 exact, 5 ratings (spectral, on the CPU; 0 on other devices).
    side_weight : float, optional
        Weight of the side information given to ``fit`` as ``row_features`` / ``col_features``
        (0 ignores it). Preset: 0 exact, 3 ratings.
    duplicates : {"error", "mean", "last"}, default="error"
        What to do with repeated ``(row, column)`` pairs.
    unknown : {"fallback", "error"}, default="fallback"
        What :meth:`predict` does with rows/columns not seen in ``fit``: ``"fallback"`` predicts
        them from the mean and the known bias (so cross-validation folds never score NaN).
    clip : bool, optional
        Clip predictions to the observed ``[min, max]``. Default: on for ratings (at most 20
        distinct values), off otherwise.
    preset : {"auto", "ratings", "exact"}, default="auto"
        Where unset hyperparameters come from (above).
    dtype : {"float64", "float32"}, optional
        Preset: float64 exact (theorem-level accuracy), float32 ratings (1.5× faster, the same
        RMSE to 1e-4 on the inner split).
    device : str, default="cpu"
    distributed : bool, default=False
        Data-parallel fit over the processes of a ``torchrun`` launch (``torch.distributed``: gloo
        on CPUs, NCCL on GPUs; :mod:`lowdim.completion.distributed`): each process keeps a shard
        of the observed entries, the small gradients are all-reduced every step, and every process
        ends with the same model (the one-process fit, to 1e-10 in float64). The process group is
        joined from torchrun's environment; a plain ``python`` run is one process. Write outputs
        on one process only (``is_main_process()``). See docs/scale.md.
    checkpoint_dir : str, optional
        Folder for a resumable checkpoint (one ``safetensors`` file with a JSON header, written
        atomically every ``checkpoint_every`` iterations and at the end). If it holds a checkpoint
        of the same data and hyperparameters, ``fit`` resumes from it and reaches the same result.
    checkpoint_every : int, default=500
    random_state : int, optional
        Seeds the virtual initialization, the narrow initialization and the validation split.
    warm_start : bool, default=False
        Continue the last training run (of this estimator, or of a model read by :meth:`load`)
        instead of starting afresh, up to ``max_iter`` iterations in all: the factors, momentum
        buffers, history and early-stopping record go on exactly as in one uninterrupted run. The
        data, features and hyperparameters must be those of that run (``max_iter``, ``max_time``,
        ``n_iter_no_change``, ``verbose`` and the checkpoint settings may change); after a refit the
        run continued is the refit on all entries.
    verbose : bool, default=False
        Show a progress bar.

    Attributes
    ----------
    settings_ : dict
        The effective hyperparameters (preset values filled in).
    model_ : DeepFactorization
        The trained factorization (normalized units).
    left_, right_ : ndarray
        The normalized low-rank term ``W = left_ @ right_`` (``m × k``, ``k × n``) used to predict.
    history_ : lowdim.training.History
        Training loss (normalized units) and seconds at recorded iterations.
    validation_rmse_ : list of float
        Validation RMSE at recorded iterations (with a validation fraction).
    best_iteration_, n_iter_ : int
    scale_, bias_mean_, row_bias_, col_bias_, global_mean_ : normalization (module docstring)
    clip_range_ : (float, float) or None
    seen_ : scipy.sparse.csr_matrix
        Which entries were observed (for ``recommend(exclude_seen=True)``).
    shape_ : (int, int); row_labels_, col_labels_ : pandas.Index or None
    fit_seconds_ : float
    refitted_ : bool
        Whether the model is the refit on all entries (``refit``).

    Examples
    --------
    >>> from lowdim.completion import DeepMatrixCompletion
    >>> from lowdim.datasets import completion_problem
    >>> pb = completion_problem(60, 80, rank=2, fraction=0.4, random_state=0)
    >>> est = DeepMatrixCompletion(rank=4, random_state=0).fit((pb.rows, pb.cols), pb.values)
    >>> est.settings_["method"], est.predict(pb.rows[:3], pb.cols[:3]).shape
    ('compressed', (3,))
    """

    _PRESET_NAMES = tuple(COMPLETION_PRESETS["exact"])

    def __init__(
        self,
        rank: int | None = None,
        depth: int = DEPTH,
        method: str | None = None,
        init_scale: float | None = None,
        learning_rate: float | None = None,
        outer_ratio: float | None = None,
        max_iter: int | None = None,
        tol: float = 1e-10,
        max_time: float | None = None,
        weight_decay: float | None = None,
        momentum: float = 0.0,
        bias: str | None = None,
        bias_reg: float | None = None,
        validation_fraction: float | str | None = "auto",
        n_iter_no_change: int = 10,
        eval_every: int | None = None,
        refit: bool | None = None,
        implicit: float | None = None,
        side_weight: float | None = None,
        duplicates: str = "error",
        unknown: str = "fallback",
        clip: bool | None = None,
        preset: str = "auto",
        dtype: str | None = None,
        device: str = "cpu",
        distributed: bool = False,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 500,
        random_state: int | None = None,
        warm_start: bool = False,
        verbose: bool = False,
    ):
        self.rank = rank
        self.depth = depth
        self.method = method
        self.init_scale = init_scale
        self.learning_rate = learning_rate
        self.outer_ratio = outer_ratio
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
        self.refit = refit
        self.implicit = implicit
        self.side_weight = side_weight
        self.duplicates = duplicates
        self.unknown = unknown
        self.clip = clip
        self.preset = preset
        self.dtype = dtype
        self.device = device
        self.distributed = distributed
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    def _resolve_settings(self, values: np.ndarray) -> dict:
        """Each preset-able hyperparameter: its value, or the preset's when it is left unset."""
        check_choice("preset", self.preset, ("auto", *COMPLETION_PRESETS))
        name = self.preset
        if name == "auto":
            name = "ratings" if looks_like_ratings(values) else "exact"
        preset = COMPLETION_PRESETS[name]
        st = {"preset": name}
        for key in self._PRESET_NAMES:
            value = getattr(self, key)
            unset = value == "auto" if key == "validation_fraction" else value is None
            st[key] = preset[key] if unset else value
            if unset and key == "validation_fraction" and values.size < 20:
                st[key] = None  # too few entries to hold some out
        for key in ("learning_rate", "implicit"):
            if isinstance(st[key], dict):
                check_choice("method", st["method"], METHODS)
                st[key] = st[key][st["method"]]
        st["clip"] = bool(st["clip"])
        st.update(getattr(self, "_refitting", None) or {})
        return st

    # --------------------------------------------------------------------------- validation
    def _check_params(self, shape):
        m, n = shape
        st = self.settings_
        method = check_choice("method", st["method"], METHODS)
        if self.rank is None:  # the preset's bound, capped to what the matrix allows
            st["rank"] = max(1, min(st["rank"], (min(m, n) - 1) // (1 if method == "spectral" else 2)))
        rank = check_int("rank", st["rank"], 1)
        check_int("depth", self.depth, 1)
        if method == "spectral" and self.depth < 2:
            raise ValueError("method='spectral' needs depth >= 2 (two outer factors)")
        width = rank if method == "spectral" else 2 * rank
        if method != "full" and min(m, n) - width <= 0:
            need = "min(m, n) - 2·rank" if width == 2 * rank else "min(m, n) - rank"
            raise ValueError(
                f"rank={rank} is too large for a {m}×{n} matrix with method={method!r}: "
                f"{need} = {min(m, n) - width} <= 0 (compression needs d - 2r > 0); use rank <= "
                f"{(min(m, n) - 1) // (width // rank)}"
            )
        check_positive("init_scale", st["init_scale"])
        check_nonnegative("weight_decay", st["weight_decay"])
        if st["learning_rate"] is not None:
            check_positive("learning_rate", st["learning_rate"])
        if self.outer_ratio is not None:
            check_nonnegative("outer_ratio", self.outer_ratio)
            if method == "spectral" and self.outer_ratio == 0:
                raise ValueError("outer_ratio (α) must be positive for method='spectral'")
        check_int("max_iter", st["max_iter"], 0)
        check_nonnegative("tol", self.tol)
        if self.max_time is not None:
            check_positive("max_time", self.max_time, advice="or None for no time budget")
        check_choice("dtype", st["dtype"], tuple(_DTYPES))
        check_int("eval_every", st["eval_every"], 1)
        for name in ("n_iter_no_change", "checkpoint_every"):
            check_int(name, getattr(self, name), 1)
        if method == "full":
            d = max(m, n)
            if self.depth * d * d > _FULL_WIDTH_LIMIT:
                raise ValueError(
                    f"method='full' would train {self.depth}×{d}² = {self.depth * d * d:,} numbers; "
                    "that is what compression avoids: use method='compressed'"
                )

    def _lr_ratio(self) -> tuple[float, float]:
        """``(learning rate, outer ratio)``: the parameters, or the method's defaults."""
        lr0, ratio0 = DEFAULTS[self.settings_["method"]]  # the method was checked in fit
        if ratio0 is None:
            ratio0 = default_gamma(self.depth)
        lr = lr0 if self.settings_["learning_rate"] is None else self.settings_["learning_rate"]
        ratio = ratio0 if self.outer_ratio is None else self.outer_ratio
        return float(lr), float(ratio)

    # --------------------------------------------------------------------------- model building
    def _build_model(self, op: SparseEntryObservation) -> DeepFactorization:
        m, n = op.shape
        dtype = _DTYPES[self.settings_["dtype"]]
        _, ratio = self._lr_ratio()
        seed, st = self.random_state, self.settings_
        method, rank, scale = st["method"], st["rank"], st["init_scale"]
        if method == "compressed":
            init = ImplicitOrthogonalInit(
                (m, n), self.depth, scale, block_size=1, random_state=seed
            )
            model = invariant_subspace_compression(init, op, rank, gamma=ratio)
        elif method == "spectral":
            model = spectral_compression(
                op, rank, self.depth, scale=scale, alpha=ratio
            )
        elif method == "full":
            d = max(m, n)
            model = DeepFactorization(
                [n] + [d] * (self.depth - 1) + [m], scale=scale, random_state=seed,
                dtype=dtype,
            )
        else:
            model = narrow_factorization(
                (m, n), 2 * rank, self.depth, scale=scale, random_state=seed,
                dtype=dtype,
            )
        return model.to(dtype=dtype, device=self.device)

    # --------------------------------------------------------------------------- fit
    def fit(self, X, y=None, shape=None, row_features=None, col_features=None):
        """Fit to the observed entries (see :mod:`lowdim.completion._data` for the input forms).

        Parameters
        ----------
        X : scipy.sparse matrix, pandas.DataFrame, (N, 2) index array, (rows, cols) or dense array
            The observed entries.
        y : array-like, optional
            Values, when ``X`` holds only indices.
        shape : (int, int), optional
            Matrix shape for index-array inputs (default: largest index + 1).
        row_features, col_features : pandas.DataFrame, optional
            Side information (e.g. a user's age, gender, occupation; a movie's genres), one row per
            row/column label (index = the labels of ``X``; positions for array inputs; labels
            missing from the frame get no feature). Used with weight ``side_weight``
            (:mod:`lowdim.completion.side_information`).

        Returns
        -------
        self
        """
        with data_parallel(True) if self.distributed and init_from_env() else nullcontext():
            return self._fit(X, y, shape, row_features, col_features)

    def _fit(self, X, y, shape, row_features, col_features):
        """:meth:`fit` itself (run inside the data-parallel context when ``distributed``)."""
        t_start = time.perf_counter()
        last = getattr(self, "_training", None) if self.warm_start else None
        if last is not None:  # continue the last run (the refit, if there was one) up to max_iter
            self._refitting = {k: v for k, v in (last[0].get("refitting") or {}).items()
                               if k != "max_iter"} or None
            try:
                self._fit_run(X, y, shape, row_features, col_features)
            finally:
                self._refitting = None
            self.fit_seconds_ = time.perf_counter() - t_start
            return self
        self._refitting, self.refitted_ = None, False
        self._fit_run(X, y, shape, row_features, col_features)
        if self.settings_["refit"] and self.validation_iterations_ and not self.degenerate_:
            self._refit_all(X, y, shape, row_features, col_features)
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _refit_all(self, X, y, shape, row_features, col_features) -> None:
        """Train again on all entries for the early-stopped number of iterations (``refit``).

        Kept only if it fits the former validation entries, now training entries, at least as well
        (within 5%) as the early-stopped model predicted them held out; else (a run that met an
        instability the validation split no longer watches) the early-stopped model stays, with a
        warning.
        """
        early = dict(self.__dict__)
        vr, vc, vv = self._validation_entries
        held_out = min(self.validation_rmse_)
        self._refitting = {"validation_fraction": None, "refit": False,
                           "max_iter": max(1, self.best_iteration_)}
        try:
            self._fit_run(X, y, shape, row_features, col_features)
            pred = self._clip(self._bias_at(vr, vc) + self.scale_ * self._predict_normalized(vr, vc))
            # vr, vc: positions; 5% slack for an under-trained refit, which is no better in-sample
            ok = float(np.sqrt(np.mean((pred - vv) ** 2))) <= 1.05 * held_out
        except DivergenceError:
            ok = False
        finally:
            self._refitting = None
        if not ok:
            self.__dict__.update(early)
            warnings.warn(
                f"{type(self).__name__}: the refit on all entries ended worse than the early-"
                f"stopped model on its validation entries; keeping the early-stopped model. A "
                f"smaller learning_rate (now {self.settings_['learning_rate']}) makes it stable",
                RuntimeWarning, stacklevel=3)
            return
        self.refitted_ = True
        for key in ("validation_rmse_", "validation_iterations_", "best_iteration_", "settings_"):
            setattr(self, key, early[key])

    def _fit_run(self, X, y, shape, row_features, col_features) -> None:
        """One training run: with early stopping on the validation split, or (refit) on all entries."""
        obs, (r, c, v), val = self._prepare(X, y, shape)
        self._validation_entries = val
        self._check_params(obs.shape)
        if self.degenerate_:
            return self._fit_degenerate(obs)
        op = SparseEntryObservation(
            r, c, v, obs.shape, dtype=_DTYPES[self.settings_["dtype"]],
            weight=1.0 / self.observed_fraction_,
            device=self.device,
        )
        op = self._augment(op, obs, (r, c), row_features, col_features)
        name = _CKPT_NAME if self._refitting is None else "refit_" + _CKPT_NAME
        ckpt = Path(self.checkpoint_dir) / name if self.checkpoint_dir else None
        fingerprint = self._fingerprint(obs, op)
        state, history, best = self._start_or_resume(op, ckpt, fingerprint)
        val_t = None
        if val is not None:
            vr, vc, vv = val
            val_t = (torch.as_tensor(vr), torch.as_tensor(vc), vv, self._bias_at(vr, vc))

        def callback(it, mdl, loss):
            stop = val_t is not None and self._validate(it, mdl, val_t, best, op)
            if ckpt is not None and it > 0 and it % self.checkpoint_every == 0:
                self._save_checkpoint(ckpt, fingerprint, state, history, best)
            return stop

        try:
            self.history_ = train(
                self.model_, op, lr=self._lr_ratio()[0], max_iter=int(self.settings_["max_iter"]),
                weight_decay=float(self.settings_["weight_decay"]), momentum=self.momentum,
                tol=self.tol if self.tol > 0 else None, max_time=self.max_time,
                eval_every=int(self.settings_["eval_every"]), callback=callback,
                state=state, history=history, progress=bool(self.verbose),
            )
        except DivergenceError as exc:
            if val_t is None or best["factors"] is None:
                raise
            # early stopping watches the validation error: a blow-up after the best iterate ends
            # the run there, as a rise of the validation error would have
            self.history_ = history
            history.stop_reason = "diverged"
            warnings.warn(f"{type(self).__name__}: {exc} Kept the best validated iterate "
                          f"(iteration {best['iteration']}).", RuntimeWarning, stacklevel=3)
        if ckpt is not None:
            self._save_checkpoint(ckpt, fingerprint, state, history, best)
        self._training = self._training_payload(fingerprint, state, history, best)
        self._keep_best(state, best if val_t is not None else None, op)
        self._check_range(obs.rows, obs.cols, obs.values)

    def _augment(self, op, obs: Observations, train_rc, row_features, col_features):
        """``op`` or, with implicit feedback or side information, the augmented
        :class:`~lowdim.completion.side_information.FeatureEntryObservation`."""
        w_imp, w_side = float(self.settings_["implicit"]), float(self.settings_["side_weight"])
        check_nonnegative("implicit", w_imp)
        check_nonnegative("side_weight", w_side)
        side = w_side > 0 and (row_features is not None or col_features is not None)
        if w_imp == 0 and not side:
            return op
        if self.settings_["method"] not in ("spectral", "narrow"):
            raise ValueError(
                f"implicit feedback and side information need method='spectral' or 'narrow', got "
                f"method={self.settings_['method']!r}; set implicit=0 and leave the features out"
            )
        if torch.device(self.device).type != "cpu":
            if self.implicit is None and not side:  # the preset's implicit feedback is CPU-only
                self.settings_["implicit"] = 0.0
                return op
            raise ValueError(
                f"implicit feedback and side information run on the CPU (SciPy sparse products), "
                f"got device={self.device!r}; use device='cpu', or implicit=0 without features"
            )
        m, n = obs.shape
        user_side, item_side = (
            None if f is None else one_hot_block(_aligned(f, labels, size, name))
            for f, labels, size, name in ((row_features, obs.row_labels, m, "row_features"),
                                          (col_features, obs.col_labels, n, "col_features"))
        )
        rated = implicit_block(*train_rc, (m, n))  # who rated what, in the training entries only
        fu = feature_matrix(m, (w_imp, rated), (w_side, user_side))
        fi = feature_matrix(n, (w_imp, rated.T), (w_side, item_side))
        return FeatureEntryObservation(op, fu, fi)

    def _start_or_resume(self, op, ckpt: Path | None, fingerprint: str):
        """``(state, history, best)``: with ``warm_start``, from the last fit (or :meth:`load`);
        else from the checkpoint when one exists; else a new model."""
        self.validation_rmse_, self.validation_iterations_ = [], []
        last = getattr(self, "_training", None) if self.warm_start else None
        if last is not None:
            self.model_, state, history, best = self._from_payload(
                *last, fingerprint, "the fitted state that warm_start continues")
            return state, history, best
        if ckpt is not None and ckpt.is_file():
            resumed = self._load_checkpoint(ckpt, fingerprint)
            if resumed is not None:
                self.model_, state, history, best = resumed
                return state, history, best
        self.model_ = self._build_model(op)
        return TrainState(), History(), {"rmse": math.inf, "iteration": 0, "factors": None, "bad": 0}

    def _validate(self, it: int, model: DeepFactorization, val_t, best: dict, op) -> bool:
        """Record the validation RMSE at ``it``, keep the best factors; True stops (early stopping)."""
        if not self.validation_iterations_ or self.validation_iterations_[-1] < it:
            with torch.no_grad():
                left, right = _split(model, op)
                pred = entries_chunked(left, right, val_t[0], val_t[1]).double().cpu().numpy()
            rmse = float(np.sqrt(np.mean((val_t[3] + self.scale_ * pred - val_t[2]) ** 2)))
            self.validation_rmse_.append(rmse)
            self.validation_iterations_.append(it)
            if rmse < best["rmse"] - 1e-12:
                best.update(rmse=rmse, iteration=it, bad=0,
                            factors=[f.detach().clone() for f in model.factors])
            else:
                best["bad"] += 1
        return best["bad"] >= self.n_iter_no_change

    def _keep_best(self, state: TrainState, best: dict | None, op) -> None:
        """Restore the best validated factors (if any) and store the low-rank term ``left_ @ right_``."""
        self.n_iter_ = self.best_iteration_ = state.iteration
        if best is not None and best["factors"] is not None:
            with torch.no_grad():
                for p, b in zip(self.model_.factors, best["factors"]):
                    p.copy_(b)
            self.best_iteration_ = best["iteration"]
        with torch.no_grad():
            left, right = _split(self.model_, op)
        self.left_, self.right_ = (t.detach().double().cpu().numpy() for t in (left, right))

    def _fit_degenerate(self, obs: Observations) -> None:
        """Nothing low-rank to learn (``degenerate_``): a zero low-rank term, no training."""
        m, n = obs.shape
        self.model_, self.history_ = None, History()
        self.left_, self.right_ = np.zeros((m, 1)), np.zeros((1, n))
        self.validation_rmse_, self.validation_iterations_ = [], []
        self.n_iter_ = self.best_iteration_ = 0

    # --------------------------------------------------------------------------- checkpoints
    _VOLATILE = ("max_iter", "max_time", "verbose", "checkpoint_dir", "checkpoint_every",
                 "warm_start", "n_iter_no_change", "distributed")

    def _fingerprint(self, obs: Observations, op) -> str:
        h = hashlib.sha256()
        arrays = [obs.rows, obs.cols, obs.values]
        if isinstance(op, FeatureEntryObservation):
            arrays += [a for f in op.features() for a in (f.indptr, f.indices, f.data)]
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(obs.shape).encode())
        params = {k: v for k, v in self.get_params().items() if k not in self._VOLATILE}
        params["refitting"] = {k: v for k, v in (self._refitting or {}).items() if k != "max_iter"}
        h.update(json.dumps(params, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def _training_payload(self, fingerprint, state, history, best) -> tuple[dict, dict]:
        """``(meta, tensors)`` of a training run: factors, best factors and momentum buffers as
        tensors, the rest (``TrainState`` / ``History`` dicts, early-stopping record) as JSON."""
        state_meta, tensors = state.to_dict()  # "buffer.<l>" tensors
        for i, f in enumerate(self.model_.factors):
            tensors[f"factor.{i}"] = f.detach().cpu().clone().contiguous()
        if best["factors"] is not None:
            for i, f in enumerate(best["factors"]):
                tensors[f"best.{i}"] = f.detach().cpu().contiguous()
        meta = {
            "format": "lowdim.completion.checkpoint/1",
            "fingerprint": fingerprint,
            **state_meta,  # "iteration", "n_buffers"
            "lr_multipliers": list(self.model_.lr_multipliers),
            "history": history.to_dict(),
            "best": {"rmse": best["rmse"] if math.isfinite(best["rmse"]) else None,
                     "iteration": best["iteration"], "bad": best["bad"]},
            "validation_rmse": list(self.validation_rmse_),
            "validation_iterations": list(self.validation_iterations_),
            "refitting": self._refitting,
        }
        return meta, tensors

    def _from_payload(self, meta: dict, tensors: dict, fingerprint: str, where: str):
        """``(model, state, history, best)`` of :meth:`_training_payload`'s output; a payload of
        other data or hyperparameters raises ``ValueError`` naming ``where`` it came from."""
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{where} was written for other data or hyperparameters; continue training with the "
                "same data, features and parameters (max_iter, max_time, n_iter_no_change, verbose "
                "and the checkpoint settings may change), or start afresh"
            )
        nf = len(meta["lr_multipliers"])
        model = DeepFactorization.from_factors(
            [tensors[f"factor.{i}"].to(self.device) for i in range(nf)],
            lr_multipliers=meta["lr_multipliers"],
        )
        state = TrainState.from_dict(meta, tensors, device=self.device)
        history = History.from_dict(meta["history"])
        best = dict(meta["best"])
        best["rmse"] = math.inf if best["rmse"] is None else float(best["rmse"])
        best["factors"] = ([tensors[f"best.{i}"].to(self.device).clone() for i in range(nf)]
                           if "best.0" in tensors else None)
        self.validation_rmse_ = list(meta["validation_rmse"])
        self.validation_iterations_ = list(meta["validation_iterations"])
        return model, state, history, best

    def _save_checkpoint(self, path: Path, fingerprint, state, history, best) -> None:
        """One safetensors file (:meth:`_training_payload`), written atomically."""
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        meta, tensors = self._training_payload(fingerprint, state, history, best)
        # the old checkpoint or the new one, never half of one
        metadata = {"lowdim": json.dumps(meta, default=float)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    def _load_checkpoint(self, path: Path, fingerprint):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["lowdim"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        return self._from_payload(meta, tensors, fingerprint, f"the checkpoint {path}")

    # --------------------------------------------------------------------------- save / load
    def _extra_state(self) -> tuple[dict, dict]:
        """What :meth:`save` adds so that ``load`` + ``fit(warm_start=True)`` can continue."""
        if getattr(self, "_training", None) is None:
            return {}, {}
        meta, tensors = self._training
        return {"training": meta}, {f"training.{k}": t.numpy() for k, t in tensors.items()}

    def _restore_extra_state(self, meta: dict, tensors: dict) -> None:
        if "training" not in meta:
            return
        train_tensors = {k[len("training."):]: torch.from_numpy(v.copy())
                         for k, v in tensors.items() if k.startswith("training.")}
        self._training = (meta["training"], train_tensors)
