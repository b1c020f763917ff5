"""Full-batch training of deep factorizations (the GD updates of seed 003 eq. 4).

``W_l(t+1) = (1 − ηλ) W_l(t) − η ∇_{W_l} ℓ(Θ(t))`` is ``torch.optim.SGD`` with ``weight_decay=λ``
on the full-batch loss; each factor's learning rate is ``η × multiplier`` (the discrepant γ of
seed 003 eq. 11 and α of seed 000 Algorithm 1). Momentum and Adam are options.

When the outer factors of a model are frozen (multiplier 0) and the operator can fold them in
(:meth:`lowdim.operators.MeasurementOperator.restrict`), training runs on the equivalent inner
problem — the same iterates, at ``O(L k³)`` per step for deep matrix factorization.

:func:`train` is a short loop over named parts: :func:`_check_train_args` (argument rules),
:func:`_fold_frozen_ends` (the restriction above), :func:`_make_optimizer` (parameter groups and
restored momentum buffers), :class:`_Recorder` (the :class:`History`, with the time spent on the
recovery error excluded) and :class:`_StoppingRules` (tol, target error, budgets).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ._validation import (
    check_choice,
    check_int,
    check_nonnegative,
    check_positive,
    fail,
)
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

    def to_dict(self) -> dict:
        """A JSON-serializable copy: ``{"iterations", "loss", "error", "seconds", "stop_reason"}``."""
        return {
            "iterations": [int(i) for i in self.iterations],
            "loss": [float(v) for v in self.loss],
            "error": [float(v) for v in self.error],
            "seconds": [float(v) for v in self.seconds],
            "stop_reason": str(self.stop_reason),
        }

    @classmethod
    def from_dict(cls, data: dict) -> History:
        """The :class:`History` that :meth:`to_dict` described (extra keys are ignored)."""
        return cls(
            iterations=[int(i) for i in data["iterations"]],
            loss=[float(v) for v in data["loss"]],
            error=[float(v) for v in data["error"]],
            seconds=[float(v) for v in data["seconds"]],
            stop_reason=str(data["stop_reason"]),
        )


@dataclass
class TrainState:
    """Where :func:`train` stopped: the iteration count and the GD momentum buffers.

    Pass the same object (and the same :class:`History`) to a later :func:`train` call to continue
    with exactly the iterates an uninterrupted run would have produced (checkpoints store both).
    ``buffers[l]`` belongs to factor ``l`` (None while it has none).
    """

    iteration: int = 0
    buffers: list[torch.Tensor | None] = field(default_factory=list)

    def to_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """``(metadata, tensors)``: what a checkpoint stores, in the two forms safetensors takes.

        ``metadata = {"iteration": int, "n_buffers": int}`` is JSON-serializable;
        ``tensors = {"buffer.<l>": tensor}`` holds detached, contiguous CPU *copies* of the buffers
        that exist (a missing key is a factor without a buffer), ready for
        ``safetensors.torch.save_file`` (merge with other tensors under other key prefixes).
        """
        meta = {"iteration": int(self.iteration), "n_buffers": len(self.buffers)}
        tensors = {
            f"buffer.{i}": b.detach().to("cpu", copy=True).contiguous()
            for i, b in enumerate(self.buffers)
            if b is not None
        }
        return meta, tensors

    @classmethod
    def from_dict(
        cls, metadata: dict, tensors: dict[str, torch.Tensor], device: torch.device | str | None = None
    ) -> TrainState:
        """The :class:`TrainState` of :meth:`to_dict`'s ``(metadata, tensors)``.

        Extra keys in either mapping are ignored (a checkpoint holds more); buffers are copied (to
        ``device`` when given), so the new state shares no memory with ``tensors``.
        """
        buffers = []
        for i in range(int(metadata["n_buffers"])):
            b = tensors.get(f"buffer.{i}")
            buffers.append(None if b is None else b.to(device=device, copy=True))
        return cls(iteration=int(metadata["iteration"]), buffers=buffers)


def recovery_error(
    model: DeepFactorization, truth: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
) -> float:
    """``‖W_{L:1} − M*‖_F / ‖M*‖_F`` with ``M*`` dense or factored as ``(P, Q)``, ``M* = P Qᵀ``.

    The factored form uses ``k × k`` Gram matrices of the model split at its narrowest width ``k``
    (``O((m + n)(k + r)²)``), so it works for matrices that do not fit in memory; they are summed
    in float64 whatever the model's dtype (``‖W‖² − 2⟨W, M*⟩ + ‖M*‖²`` cancels: float32 sums over
    millions of rows would hide errors below about 1e-2).
    """
    with torch.no_grad():
        if isinstance(truth, (tuple, list)):
            p, q = (t.to(torch.float64) for t in truth)
            a, b = (t.to(torch.float64) for t in model.split())  # a: m×k, b: k×n
            w2 = float(((a.T @ a) * (b @ b.T)).sum())
            cross = float(((a.T @ p) * (b @ q)).sum())
            t2 = float(((p.T @ p) * (q.T @ q)).sum())
            return math.sqrt(max(w2 - 2 * cross + t2, 0.0) / t2)
        t = truth.to(model.dtype)
        return float(torch.linalg.matrix_norm(model.product() - t) / torch.linalg.matrix_norm(t))


# --------------------------------------------------------------------------- the parts of train
def _check_train_args(lr, max_iter, weight_decay, momentum, optimizer, tol, target_error,
                      max_time, truth, eval_every, state) -> None:
    """The argument rules of :func:`train` (one :mod:`lowdim._validation` message form)."""
    check_positive("lr", lr, advice="lr is the step size η of W ← (1 − ηλ)W − η∇ℓ")
    check_int("max_iter", max_iter, 0)
    check_nonnegative("weight_decay", weight_decay)
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise fail("momentum", "in [0, 1)", momentum)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if tol is not None:
        check_nonnegative("tol", tol)
    if target_error is not None:
        check_nonnegative("target_error", target_error)
        if truth is None:
            raise ValueError("target_error needs the ground truth (truth=...)")
    if max_time is not None:
        check_positive("max_time", max_time)
    check_int("eval_every", eval_every, 1)
    if optimizer != "gd" and state is not None and state.iteration > 0:
        raise ValueError("resuming from a TrainState is supported for optimizer='gd' only")


def _frozen_ends(model: DeepFactorization) -> tuple[int, int]:
    """Numbers of frozen (multiplier 0) factors at the input end and at the output end."""
    mults = model.lr_multipliers
    lo = next((i for i, m in enumerate(mults) if m > 0), len(mults))
    hi = next((i for i, m in enumerate(reversed(mults)) if m > 0), len(mults))
    return lo, hi


def _fold_frozen_ends(
    model: DeepFactorization, operator: MeasurementOperator
) -> tuple[DeepFactorization, MeasurementOperator, float]:
    """``(inner model, inner operator, constant)`` with the frozen outer factors folded in.

    With ``lo`` frozen factors at the input and ``hi`` at the output, the loss of ``model`` equals
    the inner operator's loss of the trainable middle ``model.view(lo + 1, L − hi)`` plus a
    constant (:meth:`~lowdim.operators.MeasurementOperator.restrict`), with the same gradients.
    Returns ``(model, operator, 0.0)`` unchanged when nothing is frozen, everything is, or the
    operator cannot fold.
    """
    lo, hi = _frozen_ends(model)
    if not 0 < lo + hi < model.depth:
        return model, operator, 0.0
    with torch.no_grad():
        folded = operator.restrict(model.product(model.depth - hi + 1), model.product(1, lo))
    if folded is None:
        return model, operator, 0.0
    inner_op, const = folded
    return model.view(lo + 1, model.depth - hi), inner_op, const


def _make_optimizer(
    model: DeepFactorization, inner_model: DeepFactorization, *, lr: float, optimizer: str,
    momentum: float, weight_decay: float, state: TrainState,
) -> torch.optim.Optimizer:
    """SGD (heavy ball) or Adam on ``inner_model``'s parameter groups, with ``state``'s momentum
    buffers restored (``state.buffers[l]`` belongs to ``model.factors[l]``)."""
    groups = inner_model.param_groups(lr)
    if not groups:
        raise ValueError("the model has no trainable factor (all learning-rate multipliers are 0)")
    if optimizer == "gd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    for p, buf in zip(model.factors, state.buffers):
        if buf is not None:
            opt.state[p]["momentum_buffer"] = buf
    return opt


def _momentum_buffers(opt: torch.optim.Optimizer, model: DeepFactorization) -> list:
    """The optimizer's momentum buffer of each factor of ``model`` (None where it has none)."""
    return [opt.state[p].get("momentum_buffer") if p in opt.state else None for p in model.factors]


class _Recorder:
    """Appends to a :class:`History`; its clock excludes the time spent on the recovery error.

    A resumed ``history`` continues its clock from its last entry.
    """

    def __init__(self, model: DeepFactorization, truth, history: History) -> None:
        self.model, self.truth, self.history = model, truth, history
        self.start = time.perf_counter() - (history.seconds[-1] if history.seconds else 0.0)
        self.eval_seconds = 0.0

    def elapsed(self) -> float:
        """Training seconds so far (evaluation excluded)."""
        return time.perf_counter() - self.start - self.eval_seconds

    def record(self, it: int, loss: float) -> float | None:
        """Record iteration ``it`` (once) and return its recovery error (None without truth)."""
        h = self.history
        if h.iterations and h.iterations[-1] == it:  # recorded before a resume, or just now
            return h.error[-1] if h.error else None
        h.iterations.append(it)
        h.loss.append(loss)
        h.seconds.append(self.elapsed())
        if self.truth is None:
            return None
        t0 = time.perf_counter()
        err = recovery_error(self.model, self.truth)
        self.eval_seconds += time.perf_counter() - t0
        h.error.append(err)
        return err


@dataclass
class _StoppingRules:
    """When :func:`train` records and when it stops (the ``stop_reason`` values of History)."""

    max_iter: int
    eval_every: int
    tol_loss: float | None  # tol × operator.scale()
    target_error: float | None
    max_time: float | None

    def converged(self, loss: float) -> bool:
        return self.tol_loss is not None and loss <= self.tol_loss

    def due(self, it: int, loss: float) -> bool:
        """Record this iteration: every ``eval_every``, at the last one, and on convergence."""
        return it % self.eval_every == 0 or it >= self.max_iter or self.converged(loss)

    def reached(self, loss: float, err: float | None) -> str | None:
        """``"tol"`` or ``"target_error"`` when the iterate is good enough (checked first)."""
        if self.converged(loss):
            return "tol"
        if self.target_error is not None and err is not None and err <= self.target_error:
            return "target_error"
        return None

    def spent(self, it: int, seconds: float) -> str | None:
        """``"max_iter"`` or ``"max_time"`` when a budget is used up (checked after the callback)."""
        if it >= self.max_iter:
            return "max_iter"
        if self.max_time is not None and seconds > self.max_time:
            return "max_time"
        return None


def _check_finite(loss: float, it: int, lr: float) -> None:
    if not math.isfinite(loss):
        raise DivergenceError(
            f"the loss became non-finite at iteration {it} with step size lr={lr:g}; gradient "
            f"descent diverged. Try a smaller step size, e.g. lr={lr / 4:g}, or rescale the data."
        )


# --------------------------------------------------------------------------- train
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
    ValueError
        For invalid arguments (``"<name> must be <rule>, got <value>"``, see :mod:`lowdim._validation`)
        or a model the operator does not measure.
    """
    operator.check_model(model)
    _check_train_args(lr, max_iter, weight_decay, momentum, optimizer, tol, target_error,
                      max_time, truth, eval_every, state)
    state = state if state is not None else TrainState()
    history = history if history is not None else History()
    inner_model, inner_op, const = _fold_frozen_ends(model, operator)
    opt = _make_optimizer(model, inner_model, lr=lr, optimizer=optimizer, momentum=momentum,
                          weight_decay=weight_decay, state=state)
    # the clock starts here: a process's first torch.optim optimizer imports torch._dynamo (seconds)
    recorder = _Recorder(model, truth, history)
    rules = _StoppingRules(int(max_iter), int(eval_every),
                           None if tol is None else tol * operator.scale(), target_error, max_time)

    bar = tqdm(total=max_iter, initial=state.iteration, disable=not progress, desc="training",
               leave=False)
    it, reason = state.iteration, None
    try:
        while True:
            opt.zero_grad(set_to_none=True)
            loss_t = inner_op.loss(inner_model)
            loss = float(loss_t.detach()) + const
            _check_finite(loss, it, lr)
            recorded = rules.due(it, loss)
            err = recorder.record(it, loss) if recorded else None
            reason = rules.reached(loss, err)
            if reason is None and recorded and callback is not None:
                state.buffers = _momentum_buffers(opt, model)  # so that it can checkpoint the state
                reason = "callback" if callback(it, model, loss) else None
            reason = reason or rules.spent(it, recorder.elapsed())
            if reason is not None:
                recorder.record(it, loss)  # a no-op unless stopped by max_time between records
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
        state.buffers = _momentum_buffers(opt, model)
    history.stop_reason = reason
    return history
