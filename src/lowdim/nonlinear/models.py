"""Small reference networks for the nonlinear experiments of seed 000 Sec. 4.2 and seed 004 Sec. 4.2."""

from __future__ import annotations

from torch import nn

from .._validation import check_int

__all__ = ["mlp"]


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
