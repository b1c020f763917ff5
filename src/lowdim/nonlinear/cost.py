r"""What a network costs to train: MACs per example, training memory, trained parameters.

The Table 1 columns of seed 000 (MACs, memory (train), # of parameters) and of the talk's
"Low-Rank Training of Nonlinear Networks?" table (seed 002: # params, memory, FLOPs), measured,
not counted by hand:

* :func:`count_macs` — multiply–accumulates of one forward pass per example, from PyTorch's
  :class:`torch.utils.flop_counter.FlopCounterMode` (every matmul, including attention's
  ``Q Kᵀ`` and ``A V``: attention runs in its math form while counting).
* :func:`training_flops` — FLOPs of one forward and backward pass per example (the same counter).
* :func:`training_memory` — bytes of one training step's state: parameters, gradients, optimizer
  buffers after one real step, and the activations autograd saves for backward
  (``saved_tensors_hooks``, each storage counted once, by the bytes its saved views reach). On a
  CPU there is no allocator peak counter; this is what a GPU's peak measures up to allocator slack.
* :func:`num_parameters` — trained scalars.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "num_parameters", "training_flops", "training_memory"]


def num_parameters(model: nn.Module) -> int:
    """Number of trained scalars (``requires_grad`` parameters) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply–accumulates of ``model``'s forward pass per example of the batch ``example``.

    FLOPs from :class:`~torch.utils.flop_counter.FlopCounterMode` (a matmul of ``m×k`` by ``k×n``
    counts ``2mkn``) halved, divided by the batch size ``example.shape[0]``.

    Examples
    --------
    >>> import torch
    >>> count_macs(torch.nn.Linear(784, 10), torch.zeros(4, 784))
    7840
    """
    if example.ndim < 1 or example.shape[0] < 1:
        raise ValueError(f"example must be a batch with at least one row, got shape {tuple(example.shape)}")
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops() // 2 // example.shape[0])


def training_flops(
    model: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor
) -> int:
    """FLOPs of one forward and backward pass of ``loss_fn(model(batch))`` per example of ``batch``.

    Counted by :class:`~torch.utils.flop_counter.FlopCounterMode` (matmuls: ``2mkn``); gradients are
    computed on a deep copy, so ``model``'s ``.grad`` are untouched.

    Examples
    --------
    >>> import torch
    >>> training_flops(torch.nn.Linear(784, 10), lambda out: out.sum(), torch.zeros(4, 784))
    31360
    """
    model = copy.deepcopy(model)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss_fn(model(batch)).backward()
    return int(counter.get_total_flops() // batch.shape[0])


def training_memory(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
) -> int:
    """Bytes of one training step on ``batch``: parameters, gradients, optimizer state, saved activations.

    Runs one real step on a deep copy of ``model`` (``model`` is not changed).

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        ``loss_fn(outputs)`` → scalar loss (close over the targets).
    batch : torch.Tensor
        One training batch.
    optimizer : callable
        ``optimizer(model)`` → the optimizer used in training (its buffers are counted after one step).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(100, 10, bias=False)
    >>> sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    >>> training_memory(net, lambda out: out.sum(), torch.zeros(8, 100), sgd)   # 3 × 1000 + 800 floats
    15200
    """
    model = copy.deepcopy(model)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage → bytes its saved views reach (a batch sliced from a
    # large data tensor counts its own rows, not the whole storage)

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in params:
            reach = t.numel() * t.element_size() if t.is_contiguous() else t.untyped_storage().nbytes()
            saved[key] = max(saved.get(key, 0), reach)
        return t

    opt = optimizer(model)
    opt.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model(batch))
    loss.backward()
    opt.step()
    trained = [p for p in model.parameters() if p.requires_grad]
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                if torch.is_tensor(v) and v.ndim > 0)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in trained)
    return weights + grads + state + sum(saved.values())
