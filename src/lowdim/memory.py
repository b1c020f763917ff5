"""Training memory counted exactly on any device: the bytes autograd saves for the backward pass.

On CPU there is no allocator peak counter; the tensors a forward pass saves for backward (each
storage counted once), plus parameters, gradients and optimizer states, are what a GPU peak
measures up to allocator slack (seed 003, Table 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["saved_activation_bytes"]


def saved_activation_bytes(forward: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``forward()`` and return ``(its result, bytes of the tensors it saved for backward)``.

    Each storage is counted once, however many saved tensors view it.

    Examples
    --------
    >>> x = torch.ones(10, 4, requires_grad=True)
    >>> out, saved = saved_activation_bytes(lambda: (x * x).sum())
    >>> saved  # x, saved twice for x * x, is one storage of 40 float32 numbers
    160
    """
    seen: set[int] = set()
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        try:
            key = t.untyped_storage().data_ptr()
        except RuntimeError:
            return t
        if key not in seen:
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    return out, saved
