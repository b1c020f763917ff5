"""One epoch of minibatch training of a classifier (the loop of seed 000 Sec. 4.2 and the talk's runs)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int
from ..training import DivergenceError

__all__ = ["train_epoch"]


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
