"""Training loops of the nonlinear experiments.

* :func:`train_epoch` — one epoch of minibatch training of a classifier (seed 000 Sec. 4.2, the talk).
* :func:`fit_least_squares` — full-batch GD on ``½‖f(X) − Y‖_F²`` to a relative loss (seed 004
  Sec. 4.2, eq. 2).
* :func:`train_until_plateau` — minibatch training until a validation score stops improving, the best
  validated state kept (the talk's low-rank training "to convergence").
* :func:`train_side_by_side` — several models trained on the same batches, one step of each in
  turn, each with its own clock (seed 000 Table 1 / Fig. 21: time ratios measured side by side).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_positive
from ..training import DivergenceError

__all__ = ["Plateau", "SideBySideRun", "fit_least_squares", "train_epoch", "train_side_by_side",
           "train_until_plateau"]


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """One pass over ``(x, y)`` in a random order, one optimizer step per batch of ``batch_size``.

    The last partial batch is dropped. ``on_step(i)`` is called after the ``i``-th step (1-based).
    Returns the last batch's loss; raises :class:`lowdim.DivergenceError` on a non-finite loss.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(4, 2)
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> loss = train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, batch_size=16)
    """
    batch_size = check_int("batch_size", batch_size, 1)
    if len(x) != len(y) or len(x) < batch_size:
        raise ValueError(f"x has {len(x)} rows and y {len(y)}: they must match and hold at least "
                         f"batch_size = {batch_size} examples")
    order = torch.randperm(len(x), generator=generator)
    for step, i in enumerate(range(0, len(x) - batch_size + 1, batch_size), start=1):
        idx = order[i : i + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        if not torch.isfinite(loss):
            raise DivergenceError(f"training diverged at step {step} (loss {loss.item()}); use a "
                                  "smaller learning rate")
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step)
    return loss.item()


def fit_least_squares(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    tol: float = 1e-4,
    max_iter: int = 20000,
) -> tuple[int, float]:
    """Full-batch GD on ``½‖f(X) − Y‖_F²`` (seed 004 eq. 2) until ``loss / (½‖Y‖²) < tol``.

    Returns ``(iterations, relative loss)`` (``iterations = max_iter`` when ``tol`` was not
    reached); raises :class:`lowdim.DivergenceError` on a non-finite loss.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(4, 2, bias=False)
    >>> x, y = torch.eye(4), torch.randn(4, 2)
    >>> iters, rel = fit_least_squares(net, x, y, lr=0.5, tol=1e-8)
    >>> rel < 1e-8
    True
    """
    lr = check_positive("lr", lr, "the GD step")
    tol = check_positive("tol", tol, "the relative loss to stop at")
    max_iter = check_int("max_iter", max_iter, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    scale = 0.5 * float(y.square().sum())
    for it in range(1, max_iter + 1):
        opt.zero_grad()
        loss = 0.5 * (model(x) - y).square().sum()
        if not torch.isfinite(loss):
            raise DivergenceError(f"GD diverged at iteration {it} (lr={lr}); use a smaller lr")
        if loss.item() / scale < tol:
            return it, loss.item() / scale
        loss.backward()
        opt.step()
    return max_iter, loss.item() / scale


@dataclass
class SideBySideRun:
    """One model of :func:`train_side_by_side`: its optimizer, its clock and its evaluations.

    Attributes
    ----------
    name : str
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer
    scheduler : optional
        Stepped after every optimizer step (e.g. cosine annealing).
    seconds : float
        The model's clock: set it to the time spent building the model (e.g. a compression) before
        training; each training step adds its own time (evaluations are not timed).
    curve : list of (step, seconds, metric)
        One entry per evaluation.
    step_seconds : list of float
        Duration of every training step.
    """

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    seconds: float = 0.0
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)

    def step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> None:
        """One timed training step on ``(x, y)``."""
        t0 = time.perf_counter()
        self.optimizer.zero_grad()
        loss = loss_fn(self.model(x), y)
        if not torch.isfinite(loss):
            raise DivergenceError(f"{self.name}: training diverged (loss {loss.item()}); use a smaller "
                                  "learning rate")
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_seconds.append(time.perf_counter() - t0)
        self.seconds += self.step_seconds[-1]

    def first_reaching(self, fraction: float = 0.99) -> float:
        """Seconds until the metric first reached ``fraction`` of its final value (seed 000 Table 1)."""
        final = self.curve[-1][2]
        return next(t for _, t, m in self.curve if m >= fraction * final)


def train_side_by_side(
    runs: Sequence[SideBySideRun],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    eval_every: int,
    evaluate: Callable[[nn.Module], float],
    batch_size: int = 128,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    on_eval: Callable[[SideBySideRun], None] | None = None,
) -> None:
    """Train every model of ``runs`` on the same batches, one step of each in turn.

    A shared machine's load then falls on all of them alike, so the ratios of their clocks
    (:attr:`SideBySideRun.seconds`) are meaningful. Every ``eval_every`` steps and after the last,
    each model is scored by ``evaluate(model)`` (not timed) into its :attr:`~SideBySideRun.curve`,
    then ``on_eval(run)`` is called (e.g. to keep a weight snapshot). Each epoch visits ``(x, y)``
    in a random order drawn from ``generator``; the last partial batch is dropped.

    Examples
    --------
    >>> import torch
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> nets = [torch.nn.Linear(4, 2), torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))]
    >>> runs = [SideBySideRun(f"net{i}", n, torch.optim.SGD(n.parameters(), lr=0.1))
    ...         for i, n in enumerate(nets)]
    >>> acc = lambda m: float((m(x).argmax(1) == y).float().mean())
    >>> train_side_by_side(runs, x, y, epochs=2, eval_every=2, evaluate=acc, batch_size=16)
    >>> [len(r.curve) for r in runs], runs[0].curve[-1][0]
    ([4, 4], 8)
    """
    epochs = check_int("epochs", epochs, 1)
    eval_every = check_int("eval_every", eval_every, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if len(x) != len(y) or len(x) < batch_size:
        raise ValueError(f"x has {len(x)} rows and y {len(y)}: they must match and hold at least "
                         f"batch_size = {batch_size} examples")
    total, done = epochs * (len(x) // batch_size), 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            for r in runs:
                r.step(x[idx], y[idx], loss_fn)
            done += 1
            if done % eval_every == 0 or done == total:
                for r in runs:
                    r.curve.append((done, r.seconds, float(evaluate(r.model))))
                    if on_eval is not None:
                        on_eval(r)


@dataclass
class Plateau:
    """What :func:`train_until_plateau` did: best validation score, epochs and optimizer steps run,
    seconds of training (validations not timed), whether it stopped on the plateau (``converged``;
    else it hit ``max_rounds``) and the epoch where the loss turned non-finite (None if never)."""

    best: float
    epochs: int
    steps: int
    seconds: float
    converged: bool
    diverged_at_epoch: int | None = None


def train_until_plateau(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    validate: Callable[[nn.Module], float],
    *,
    epochs_per_round: int = 1,
    patience: int = 3,
    min_delta: float = 0.05,
    max_rounds: int = 50,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> Plateau:
    """Train ``model`` (:func:`train_epoch`) until ``validate(model)`` stops improving.

    After every ``epochs_per_round`` epochs the model is validated; training stops when the score has
    not risen by more than ``min_delta`` for ``patience`` validations in a row, or after
    ``max_rounds``. A non-finite loss stops training too (:attr:`Plateau.diverged_at_epoch`). The
    model is left in its best validated state.

    Examples
    --------
    >>> import torch
    >>> x, y = torch.randn(256, 5), torch.randint(0, 2, (256,))
    >>> net = torch.nn.Linear(5, 2)
    >>> acc = lambda m: float((m(x).argmax(1) == y).float().mean())
    >>> out = train_until_plateau(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, acc,
    ...                           patience=2, min_delta=0.01, batch_size=32)
    >>> out.converged and abs(acc(net) - out.best) < 1e-12
    True
    """
    patience = check_int("patience", patience, 1)
    best, best_state, since, seconds, epoch, diverged = -float("inf"), None, 0, 0.0, 0, None
    per_epoch = len(x) // check_int("batch_size", batch_size, 1)
    for _ in range(check_int("max_rounds", max_rounds, 1)):
        t0 = time.perf_counter()
        try:
            for _ in range(check_int("epochs_per_round", epochs_per_round, 1)):
                epoch += 1
                train_epoch(model, optimizer, x, y, batch_size=batch_size, generator=generator)
        except DivergenceError:
            diverged = epoch
        seconds += time.perf_counter() - t0
        if diverged is not None:
            break
        score = float(validate(model))
        if score > best + min_delta:
            best, best_state, since = score, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= patience:
                break
    if best_state is None:
        raise DivergenceError(f"training diverged at epoch {diverged} before its first validation; use a "
                              "smaller learning rate")
    model.load_state_dict(best_state)
    steps = (epoch - (diverged is not None)) * per_epoch
    return Plateau(best, epoch, steps, seconds, since >= patience, diverged)
