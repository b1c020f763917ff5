"""Small reference networks for the nonlinear experiments of seed 000 Sec. 4.2 and seed 004 Sec. 4.2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_choice, check_int
from ..factorization import INITS, _as_generator, init_factor

__all__ = ["deep_network", "mlp"]


def mlp(in_features: int, hidden: int, num_classes: int, hidden_layers: int = 3) -> nn.Sequential:
    """``W_{H+1} ρ(W_H ⋯ ρ(W_1 x))`` with ReLU ρ and ``hidden_layers = H`` hidden layers of width ``hidden``.

    With ``H = 3`` this is the MLP of seed 000 Sec. 4.2 before its penultimate layer ``W_3`` (module
    ``"4"``) becomes a :class:`~lowdim.nonlinear.DeepLinear` (``ψ = W₆ ρ(W̃₅W̃₄W̃₃ ρ(W₂ ρ(W₁x)))``).
    """
    hidden_layers = check_int("hidden_layers", hidden_layers, 1)
    sizes = [check_int("in_features", in_features, 1)] + [check_int("hidden", hidden, 1)] * hidden_layers
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], check_int("num_classes", num_classes, 1)))


ACTIVATIONS = {"linear": None, "relu": nn.ReLU}


def deep_network(
    dims: Sequence[int],
    *,
    activation: str = "relu",
    init: str = "orthogonal",
    scale: float = 0.5,
    random_state: int | torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> nn.Sequential:
    """``W_L σ(W_{L−1} ⋯ σ(W_1 x))`` without biases, factors drawn as in :class:`~lowdim.DeepFactorization`.

    The networks of seed 004 Sec. 4.2 (Fig. 7: ε = 0.5 orthogonal; Figs. 11–12: other ε and
    ``init`` in {"orthogonal", "normal", "uniform"}); ``activation="linear"`` gives the DLN.
    """
    activation = check_choice("activation", activation, tuple(ACTIVATIONS))
    init = check_choice("init", init, INITS)
    dims = [check_int("dims", d, 1) for d in dims]
    gen = _as_generator(random_state)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(a, b, bias=False, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(init_factor(b, a, scale, init, generator=gen, dtype=dtype))
        layers.append(linear)
        if ACTIVATIONS[activation] is not None and i < len(dims) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
