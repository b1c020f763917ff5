"""Training loops of the nonlinear experiments.

* :func:`train_epoch` — one epoch of minibatch training of a classifier (seed 000 Sec. 4.2, the talk).
* :func:`fit_least_squares` — full-batch GD on ``½‖f(X) − Y‖_F²`` to a relative loss (seed 004
  Sec. 4.2, eq. 2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int, check_positive
from ..training import DivergenceError

__all__ = ["fit_least_squares", "train_epoch"]


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
