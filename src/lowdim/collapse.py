r"""Progressive feature collapse and separation across the layers of a network.

* :func:`feature_collapse` — ``D_l = Tr(Σ_W^l) / Tr(Σ_B^l)`` (seed 004 eqs. 13–14): within-class
  scatter with ``1/N``, between-class scatter with ``1/K`` around the mean of the class means.
* :func:`class_separation` — ``S_l = 1 − max_{k≠k'} |⟨μ_k, μ_k'⟩| / (‖μ_k‖‖μ_k'‖)`` with centred
  class means ``μ_k = z̄_k − z̄`` (the talk, seed 002, "Measure of Feature Compression and
  Separation").
* :func:`layer_features` — the features ``z^l`` of every layer of an ``nn.Sequential`` (a layer is a
  module with parameters and the parameter-free modules after it, e.g. its activation), of chosen
  modules of any model (forward hooks), or ``W_{l:1} X`` of a :class:`~lowdim.DeepFactorization`.
* :func:`collapse_profile` — ``D_l`` and ``S_l`` of every layer with the best log-linear fit
  ``log D_l ≈ a + b l`` and its per-layer decay ratio ``e^b`` (seed 004 Figs. 2, 7, 11, 12).
* :func:`theorem2_bound` — ``2(√K + 1) ε²``, the bound on ``D_{l+1}/D_l`` of seed 004 Theorem 2 (15);
  :func:`theorem2_max_scale` — the largest ε its condition (ii) allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._validation import check_int, check_positive, fail
from .factorization import DeepFactorization

__all__ = [
    "CollapseProfile",
    "LogLinearFit",
    "class_separation",
    "collapse_profile",
    "feature_collapse",
    "layer_features",
    "log_linear_fit",
    "theorem2_bound",
    "theorem2_max_scale",
]


def _class_means(features, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(z (N×p), labels (N,), class means (K×p))`` in float64, refusing classes with < 2 samples."""
    t = torch.as_tensor(features).detach().cpu().double()
    z = np.asarray(t.reshape(t.shape[0], -1))
    y = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1)
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"features have {z.shape[0]} rows but labels has {y.shape[0]} entries")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise fail("labels", "at least two classes", f"{len(classes)} class(es)",
                   "between-class scatter needs K >= 2")
    if counts.min() < 2:
        raise fail("labels", "at least two samples per class", f"class {classes[counts.argmin()]!r} "
                   f"with {counts.min()}", "within-class scatter needs n_k >= 2 (use more samples)")
    means = np.stack([z[y == c].mean(axis=0) for c in classes])
    return z, np.searchsorted(classes, y), means


def feature_collapse(features: torch.Tensor | np.ndarray, labels) -> float:
    r"""``D = Tr(Σ_W) / Tr(Σ_B)`` of seed 004 eqs. (13)–(14).

    ``Σ_W = (1/N) Σ_k Σ_i (z_{k,i} − z̄_k)(z_{k,i} − z̄_k)ᵀ``, ``Σ_B = (1/K) Σ_k (z̄_k − z̄)(z̄_k − z̄)ᵀ``
    with ``z̄`` the mean of the class means. Small ``D``: features collapsed to their class means.

    Parameters
    ----------
    features : array-like, shape (N, ...)
        One row (flattened) per sample.
    labels : array-like, shape (N,)
        Class of each sample (at least two classes, two samples each).
    """
    z, idx, means = _class_means(features, labels)
    within = float(((z - means[idx]) ** 2).sum()) / z.shape[0]
    between = float(((means - means.mean(axis=0)) ** 2).sum()) / means.shape[0]
    if between == 0.0:
        raise ValueError("the class means coincide (Tr Σ_B = 0): D is undefined for these features")
    return within / between


def class_separation(features: torch.Tensor | np.ndarray, labels) -> float:
    """``S = 1 − max_{k≠k'} |cos(μ_k, μ_k')|`` for centred class means ``μ_k = z̄_k − z̄`` (seed 002).

    1 for orthogonal centred means; 0 when two of them are parallel.
    """
    _, _, means = _class_means(features, labels)
    mu = means - means.mean(axis=0)
    norms = np.linalg.norm(mu, axis=1)
    if norms.min() == 0.0:
        raise ValueError("a centred class mean is zero: S is undefined for these features")
    cos = np.abs(mu @ mu.T) / np.outer(norms, norms)
    np.fill_diagonal(cos, 0.0)
    return float(1.0 - cos.max())


def _sequential_layers(model: nn.Sequential) -> list[int]:
    """Index of the last module of every layer (a module with parameters + following parameter-free ones)."""
    ends, started = [], False
    for i, m in enumerate(model):
        has_params = any(True for _ in m.parameters())
        if has_params and started:
            ends.append(i - 1)
        started = started or has_params
    return ends + [len(model) - 1] if started else []


def layer_features(
    model: nn.Module, x: torch.Tensor, modules: Sequence[str] | None = None
) -> list[torch.Tensor]:
    """Features ``[z^0 = x, z^1, …]`` of every layer on inputs ``x`` (rows are samples), detached.

    ``nn.Sequential``: the output of each layer (post-activation). A
    :class:`~lowdim.DeepFactorization`: ``z^l = W_{l:1} x`` (seed 004 eq. 12; ``x`` is ``N × d_0``).
    Any model with ``modules``: the outputs of those named modules, in the order given (hooks).
    """
    with torch.no_grad():
        if modules is None and isinstance(model, DeepFactorization):
            feats = [x]
            for w in model.factors:
                feats.append(feats[-1] @ w.T)
            return feats
        if modules is None and isinstance(model, nn.Sequential):
            feats, ends, z = [x], set(_sequential_layers(model)), x
            for i, m in enumerate(model):
                z = m(z)
                if i in ends:
                    feats.append(z)
            return feats
        if modules is None:
            raise ValueError("modules must name the layers whose outputs are features unless the "
                             "model is an nn.Sequential or a DeepFactorization")
        found = dict(model.named_modules())
        missing = [n for n in modules if n not in found]
        if missing:
            raise ValueError(f"modules: model has no module {missing[0]!r}")
        outputs: dict[str, torch.Tensor] = {}
        handles = [found[n].register_forward_hook(
            lambda mod, args, out, n=n: outputs.__setitem__(n, out.detach())) for n in modules]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
        return [x] + [outputs[n] for n in modules]


@dataclass
class LogLinearFit:
    """Least-squares fit ``log v_l ≈ intercept + slope · l``; ``decay_ratio = e^slope`` per layer."""

    slope: float
    intercept: float
    decay_ratio: float
    r2: float


def log_linear_fit(values: Sequence[float], layers: Sequence[int] | None = None) -> LogLinearFit:
    """Best log-linear fit of positive ``values`` against ``layers`` (default ``0, 1, …``)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < 2 or not np.all(v > 0) or not np.all(np.isfinite(v)):
        raise fail("values", "at least two positive finite numbers", values)
    t = np.arange(len(v), dtype=np.float64) if layers is None else np.asarray(layers, np.float64)
    logv = np.log(v)
    slope, intercept = np.polyfit(t, logv, 1)
    resid = logv - (intercept + slope * t)
    total = float(((logv - logv.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else 1.0
    return LogLinearFit(float(slope), float(intercept), float(math.exp(slope)), r2)


@dataclass
class CollapseProfile:
    """``D_l``, ``S_l`` for ``l = 0, …`` (0: the input) and the fit of ``log D_l`` over ``fit_layers``."""

    collapse: np.ndarray
    separation: np.ndarray
    fit: LogLinearFit
    fit_layers: list[int]

    @property
    def ratios(self) -> np.ndarray:
        """``D_{l+1} / D_l`` for consecutive layers (the left side of seed 004 Theorem 2 (15))."""
        return self.collapse[1:] / self.collapse[:-1]


def collapse_profile(
    model: nn.Module,
    x: torch.Tensor,
    labels,
    *,
    modules: Sequence[str] | None = None,
    exclude_last: bool = True,
    fit_from: int = 1,
) -> CollapseProfile:
    """``D_l``, ``S_l`` of every layer's features and the log-linear fit of ``D_l`` (seed 004 Fig. 7).

    Parameters
    ----------
    model, x, modules
        As in :func:`layer_features`.
    labels : array-like, shape (N,)
    exclude_last : bool, default=True
        Drop the output layer (the paper plots ``l`` up to the penultimate layer ``L − 1``).
    fit_from : int, default=1
        First layer of the fit (1: the hidden layers, as Fig. 7).
    """
    feats = layer_features(model, x, modules)
    if exclude_last:
        feats = feats[:-1]
    d = np.array([feature_collapse(f, labels) for f in feats])
    s = np.array([class_separation(f, labels) for f in feats])
    fit_from = check_int("fit_from", fit_from, 0)
    layers = list(range(fit_from, len(d)))
    if len(layers) < 2:
        raise fail("fit_from", f"at most {len(d) - 2} (two layers to fit)", fit_from)
    return CollapseProfile(d, s, log_linear_fit(d[fit_from:], layers), layers)


def theorem2_bound(num_classes: int, scale: float) -> float:
    """``2(√K + 1) ε²``: seed 004 Theorem 2 bounds ``D_{l+1}/D_l`` by it (eq. 15)."""
    k = check_int("num_classes", num_classes, 2)
    eps = check_positive("scale", scale, "the initialization scale ε")
    return 2.0 * (math.sqrt(k) + 1.0) * eps**2


def theorem2_max_scale(num_classes: int, per_class: int, dim: int, depth: int) -> float:
    """Largest ε of seed 004 Theorem 2 (ii) / Corollary 1: ``min{n^{1/2L} / (√(30L) (d−K)^{1/4}),
    (n/2)^{1/4L} / (d−K)^{1/4}, 1/√(2(√K+1))}`` for ``K`` classes of ``n`` samples, width ``d > 2K``.

    Examples
    --------
    >>> round(theorem2_max_scale(5, 10, 50, 4), 4)          # seed 004 Sec. 4.2 data, L = 4
    0.047
    """
    k = check_int("num_classes", num_classes, 2)
    n = check_int("per_class", per_class, 1)
    d = check_int("dim", dim, 2 * k + 1, "Theorem 2 needs width d > 2K")
    depth = check_int("depth", depth, 2)
    root = (d - k) ** 0.25
    return min(n ** (1 / (2 * depth)) / (math.sqrt(30 * depth) * root),
               (n / 2) ** (1 / (4 * depth)) / root, 1 / math.sqrt(2 * (math.sqrt(k) + 1)))
