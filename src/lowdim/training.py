"""Full-batch training of deep factorizations (the GD updates of seed 003 eq. 4).

``W_l(t+1) = (1 − ηλ) W_l(t) − η ∇_{W_l} ℓ(Θ(t))`` is ``torch.optim.SGD`` with ``weight_decay=λ``
on the full-batch loss; each factor's learning rate is ``η × multiplier`` (the discrepant γ of
seed 003 eq. 11 and α of seed 000 Algorithm 1). Momentum and Adam are options.

When the outer factors of a model are frozen (multiplier 0) and the operator can fold them in
(:meth:`lowdim.operators.MeasurementOperator.restrict`), training runs on the equivalent inner
problem — the same iterates, at ``O(L k³)`` per step for deep matrix factorization.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .factorization import DeepFactorization
from .operators import MeasurementOperator

OPTIMIZERS = ("gd", "adam")


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss (the step size is too large for the problem)."""


@dataclass
class History:
    """What :func:`train` recorded, one entry per recorded iteration.

    Attributes
    ----------
    iterations : list of int
        Iteration numbers (0 is the initialization).
    loss : list of float
        ``½‖A(W_{L:1}) − y‖²``.
    error : list of float
        Relative recovery error ``‖W_{L:1} − M*‖_F / ‖M*‖_F`` (empty without ``truth``).
    seconds : list of float
        Wall time since the start of training (evaluation of ``error`` excluded).
    stop_reason : str
        ``"tol"``, ``"target_error"``, ``"max_iter"``, ``"max_time"`` or ``"callback"``.
    """

    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def seconds_per_iteration(self) -> float:
        """Mean wall seconds per iteration."""
        its = self.iterations[-1] if self.iterations else 0
        return self.seconds[-1] / its if its else float("nan")

    def first_below(self, threshold: float, key: str = "error") -> tuple[int, float] | None:
        """``(iteration, seconds)`` when ``key`` first drops to ``threshold`` (None if never)."""
        for it, value, sec in zip(self.iterations, getattr(self, key), self.seconds):
            if value <= threshold:
                return it, sec
        return None

    def as_dict(self) -> dict:
        return {
            "iterations": self.iterations,
            "loss": self.loss,
            "error": self.error,
            "seconds": self.seconds,
            "stop_reason": self.stop_reason,
        }


@dataclass
class TrainState:
    """Where :func:`train` stopped: the iteration count and the GD momentum buffers.

    Pass the same object (and the same :class:`History`) to a later :func:`train` call to continue
    with exactly the iterates an uninterrupted run would have produced (checkpoints store both).
    ``buffers[l]`` belongs to factor ``l`` (None while it has none).
    """

    iteration: int = 0
    buffers: list[torch.Tensor | None] = field(default_factory=list)


def recovery_error(
    model: DeepFactorization, truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
) -> float:
    """``‖W_{L:1} − M*‖_F / ‖M*‖_F`` with ``M*`` dense or factored as ``(P, Q)``, ``M* = P Qᵀ``.

    The factored form uses ``k × k`` Gram matrices of the model split at its narrowest width ``k``
    (``O((m + n)(k + r)²)``), so it works for matrices that do not fit in memory.
    """
    with torch.no_grad():
        if isinstance(truth, (tuple, list)):
            p, q = (t.to(model.dtype) for t in truth)
            a, b = model.split()  # a: m×k, b: k×n
            w2 = float(((a.T @ a) * (b @ b.T)).sum())
            cross = float(((a.T @ p) * (b @ q)).sum())
            t2 = float(((p.T @ p) * (q.T @ q)).sum())
            return math.sqrt(max(w2 - 2 * cross + t2, 0.0) / t2)
        t = truth.to(model.dtype)
        return float(torch.linalg.matrix_norm(model.product() - t) / torch.linalg.matrix_norm(t))


def _frozen_ends(model: DeepFactorization) -> tuple[int, int]:
    mults = model.lr_multipliers
    lo = next((i for i, m in enumerate(mults) if m > 0), len(mults))
    hi = next((i for i, m in enumerate(reversed(mults)) if m > 0), len(mults))
    return lo, hi


def train(
    model: DeepFactorization,
    operator: MeasurementOperator,
    *,
    lr: float,
    max_iter: int = 1000,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    optimizer: str = "gd",
    tol: float | None = None,
    target_error: float | None = None,
    max_time: float | None = None,
    truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int = 1,
    callback: Callable[[int, DeepFactorization, float], bool | None] | None = None,
    state: TrainState | None = None,
    history: History | None = None,
    progress: bool = False,
) -> History:
    """Train ``model`` on ``½‖A(W_{L:1}) − y‖²`` with full-batch gradient descent (or Adam).

    The loss is ``operator.loss(model)``: dense for small problems, observed entries only for
    :class:`lowdim.completion.SparseEntryObservation`.

    Parameters
    ----------
    model : DeepFactorization
        Trained in place; per-factor learning rates are ``lr × model.lr_multipliers``.
    operator : MeasurementOperator
        The measurements.
    lr : float
        Step size η (> 0).
    max_iter : int, default=1000
        Iteration cap (counting the iterations of a resumed ``state``).
    weight_decay : float, default=0.0
        λ ≥ 0 in ``W ← (1 − ηλ)W − η∇ℓ``.
    momentum : float, default=0.0
        Heavy-ball momentum in [0, 1) (GD only).
    optimizer : {"gd", "adam"}, default="gd"
        ``"adam"`` uses :class:`torch.optim.Adam` with the same groups (``weight_decay`` as L2).
    tol : float, optional
        Stop when the loss is at most ``tol × operator.scale()`` (relative loss).
    target_error : float, optional
        Stop when the recovery error (needs ``truth``) is at most this.
    max_time : float, optional
        Wall-time budget in seconds.
    truth : torch.Tensor or (P, Q), optional
        Ground truth ``M*``, dense or factored as ``P Qᵀ`` (see :func:`recovery_error`).
    eval_every : int, default=1
        Record (and call ``callback``) every ``eval_every`` iterations, and at the last one.
    callback : callable, optional
        ``callback(iteration, model, loss)`` after each recorded iteration; ``True`` stops training.
    state, history : TrainState, History, optional
        Continue a previous run (both are updated in place); GD only.
    progress : bool, default=False
        Show a ``tqdm`` progress bar.

    Returns
    -------
    History

    Raises
    ------
    DivergenceError
        When the loss becomes non-finite; the message names the step size and suggests a smaller one.
    """
    operator.check_model(model)
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"the step size lr must be positive and finite, got {lr}")
    if int(max_iter) != max_iter or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter}")
    if weight_decay < 0 or not 0 <= momentum < 1:
        raise ValueError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {weight_decay}, {momentum}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if target_error is not None and truth is None:
        raise ValueError("target_error needs the ground truth (truth=...)")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if optimizer != "gd" and state is not None and state.iteration > 0:
        raise ValueError("resuming from a TrainState is supported for optimizer='gd' only")
    state = state if state is not None else TrainState()
    history = history if history is not None else History()

    start = time.perf_counter() - (history.seconds[-1] if history.seconds else 0.0)
    # Fold frozen outer factors into the operator where the algebra allows (same iterates).
    inner_model, inner_op, const = model, operator, 0.0
    lo, hi = _frozen_ends(model)
    if 0 < lo + hi < model.depth:
        with torch.no_grad():
            folded = operator.restrict(model.product(model.depth - hi + 1), model.product(1, lo))
        if folded is not None:
            inner_op, const = folded
            inner_model = model.view(lo + 1, model.depth - hi)

    groups = inner_model.param_groups(lr)
    if not groups:
        raise ValueError("the model has no trainable factor (all learning-rate multipliers are 0)")
    if optimizer == "gd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    params = list(model.factors)
    for p, buf in zip(params, state.buffers):
        if buf is not None:
            opt.state[p]["momentum_buffer"] = buf

    def sync_buffers() -> None:
        state.buffers = [opt.state[p].get("momentum_buffer") if p in opt.state else None for p in params]

    scale = operator.scale()
    eval_seconds = 0.0

    def record(it: int, loss: float) -> float | None:
        nonlocal eval_seconds
        if history.iterations and history.iterations[-1] == it:  # recorded before a resume
            return history.error[-1] if history.error else None
        history.iterations.append(it)
        history.loss.append(loss)
        history.seconds.append(time.perf_counter() - start - eval_seconds)
        if truth is None:
            return None
        t0 = time.perf_counter()
        err = recovery_error(model, truth)
        eval_seconds += time.perf_counter() - t0
        history.error.append(err)
        return err

    bar = tqdm(total=max_iter, initial=state.iteration, disable=not progress, desc="training",
               leave=False)
    it, reason = state.iteration, "max_iter"
    try:
        while True:
            opt.zero_grad(set_to_none=True)
            loss_t = inner_op.loss(inner_model)
            loss = float(loss_t.detach()) + const
            if not math.isfinite(loss):
                raise DivergenceError(
                    f"the loss became non-finite at iteration {it} with step size lr={lr:g}; "
                    f"gradient descent diverged. Try a smaller step size, e.g. lr={lr / 4:g}, or "
                    "rescale the data."
                )
            last = it >= max_iter
            converged = tol is not None and loss <= tol * scale
            recorded = it % eval_every == 0 or last or converged
            err = record(it, loss) if recorded else None
            if converged:
                reason = "tol"
                break
            if target_error is not None and err is not None and err <= target_error:
                reason = "target_error"
                break
            if recorded and callback is not None:
                sync_buffers()  # so that a callback can checkpoint the state
                if callback(it, model, loss):
                    reason = "callback"
                    break
            if last:
                break
            if max_time is not None and time.perf_counter() - start - eval_seconds > max_time:
                record(it, loss)
                reason = "max_time"
                break
            loss_t.backward()
            opt.step()
            it += 1
            state.iteration = it
            bar.update(1)
            if progress and it % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3e}")
    finally:
        bar.close()
        opt.zero_grad(set_to_none=True)
        sync_buffers()
    history.stop_reason = reason
    return history
