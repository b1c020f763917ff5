"""Small reference networks for the nonlinear experiments of seed 000 Sec. 4.2 and seed 004 Sec. 4.2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._validation import check_choice, check_int
from ..factorization import INITS, _as_generator, init_factor

__all__ = ["VisionTransformer", "deep_network", "hybrid_network", "mlp"]


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


def hybrid_network(
    in_features: int, width: int, num_classes: int, *, nonlinear_layers: int = 4, linear_layers: int = 6
) -> nn.Sequential:
    """``nonlinear_layers`` ReLU layers, then ``linear_layers`` linear layers, of width ``width``, and a
    linear head: the talk's hybrid network (seed 002, "Implication II": a 4-layer MLP + 6-layer linear).

    Examples
    --------
    >>> net = hybrid_network(784, 256, 10)
    >>> sum(isinstance(m, nn.ReLU) for m in net), sum(isinstance(m, nn.Linear) for m in net)
    (4, 11)
    """
    width = check_int("width", width, 1)
    layers: list[nn.Module] = []
    for i in range(check_int("nonlinear_layers", nonlinear_layers, 1)):
        layers += [nn.Linear(check_int("in_features", in_features, 1) if i == 0 else width, width), nn.ReLU()]
    layers += [nn.Linear(width, width) for _ in range(check_int("linear_layers", linear_layers, 0))]
    return nn.Sequential(*layers, nn.Linear(width, check_int("num_classes", num_classes, 1)))


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


class Block(nn.Module):
    """Pre-norm transformer block: ``x + MHA(LN(x))``, then ``x + fc2(GELU(fc1(LN(x))))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """A small ViT (Dosovitskiy et al. 2021) for square single-channel images, e.g. MNIST.

    Patches of ``patch × patch`` pixels are embedded linearly, a class token and learned position
    embeddings are added, ``depth`` pre-norm blocks follow, and the class token's normalized
    feature goes to a linear head. Seed 000 Sec. 4.2 overparameterizes ``blocks.{depth−1}.fc2``,
    the last linear layer of the last block (:attr:`penultimate`).
    """

    def __init__(self, image: int = 28, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_dim: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        if check_int("image", image, 1) % check_int("patch", patch, 1):
            raise ValueError(f"patch must divide image, got image={image}, patch={patch}")
        self.patch, tokens = patch, (image // patch) ** 2
        self.embed = nn.Linear(patch * patch, check_int("dim", dim, 1))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens + 1, dim))
        depth = check_int("depth", depth, 1)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.penultimate = f"blocks.{depth - 1}.fc2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: images ``(B, image²)`` or ``(B, image, image)``; returns logits ``(B, classes)``."""
        b, p = x.shape[0], self.patch
        side = int(round(x[0].numel() ** 0.5))
        patches = x.reshape(b, side // p, p, side // p, p).transpose(2, 3).reshape(b, -1, p * p)
        z = torch.cat([self.cls.expand(b, -1, -1), self.embed(patches)], dim=1) + self.pos
        return self.head(self.norm(self.blocks(z)[:, 0]))
