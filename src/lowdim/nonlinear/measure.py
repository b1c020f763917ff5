"""Low-dimensional updates in nonlinear networks, measured (seed 000 Fig. 1, eq. 14 / Fig. 20;
seed 003 Sec. 5 eq. 13 / Fig. 9).

* :func:`track_weight` — train a classifier and keep snapshots of one weight (the runs of Figs. 1, 20).
* :func:`update_singular_values` — singular values of a layer's update ``W(t) − W(0)`` (Fig. 1).
* :func:`consecutive_subspace_distances` — ``r − ‖U_r(t)ᵀU_r(t+1)‖_F²`` between the top-r left
  singular subspaces of consecutive snapshots of a weight (eq. 14, Fig. 20), with
  :func:`lowdim.dynamics.subspace_distance`.
* :func:`nonlinear_gradient_spectrum` — singular values of ``∇_{W_l} ½‖f(Θ) − Φ‖²`` at a small
  initialization of the nonlinear factorization ``f(Θ) = W_L σ(⋯ σ(W_1))`` (seed 003 eq. 13, Fig. 9).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._validation import check_int, fail
from ..defaults import INIT_SCALE
from ..dynamics import subspace_distance, top_singular_subspace
from .models import deep_network
from .training import train_epoch

__all__ = ["consecutive_subspace_distances", "nonlinear_gradient_spectrum", "track_weight",
           "update_singular_values"]


def track_weight(
    model: torch.nn.Module,
    weight: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    every: int,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> tuple[list[torch.Tensor], float]:
    """Train ``model`` for ``epochs`` (:func:`~lowdim.nonlinear.train_epoch`, cross-entropy) and keep
    copies of ``weight`` (a parameter of it) at the start and after every ``every`` steps.

    Returns ``(snapshots, last batch loss)``: the trajectory seed 000 Figs. 1 and 20 measure with
    :func:`update_singular_values` and :func:`consecutive_subspace_distances`.
    """
    every = check_int("every", every, 1)
    snaps, per_epoch, loss = [weight.detach().clone()], len(x) // batch_size, float("nan")

    def keep(step: int) -> None:
        if step % every == 0:
            snaps.append(weight.detach().clone())

    for epoch in range(check_int("epochs", epochs, 1)):
        loss = train_epoch(model, optimizer, x, y, batch_size=batch_size, generator=generator,
                           on_step=lambda i, e=epoch: keep(e * per_epoch + i))
    return snaps, loss


def update_singular_values(weight: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """Singular values (decreasing) of ``W(t) − W(0)`` (seed 000 Fig. 1)."""
    if weight.shape != initial.shape:
        raise ValueError(f"weight {tuple(weight.shape)} and initial {tuple(initial.shape)} differ in shape")
    return torch.linalg.svdvals((weight.detach() - initial.detach()).double())


def consecutive_subspace_distances(snapshots: Sequence[torch.Tensor], rank: int) -> list[float]:
    """``r − ‖U_r(t)ᵀ U_r(t+1)‖_F²`` for consecutive snapshots of one weight (seed 000 eq. 14)."""
    rank = check_int("rank", rank, 1)
    if len(snapshots) < 2:
        raise fail("snapshots", "at least two weights", len(snapshots))
    bases = [top_singular_subspace(w.detach().double(), rank) for w in snapshots]
    return [subspace_distance(a, b) for a, b in zip(bases[:-1], bases[1:])]


def nonlinear_gradient_spectrum(
    target: torch.Tensor,
    depth: int = 3,
    *,
    layer: int = 2,
    scale: float = INIT_SCALE,
    activation: str = "relu",
    random_state: int | None = 0,
) -> torch.Tensor:
    """Singular values of ``∇_{W_layer} ½‖W_L σ(⋯ σ(W_1)) − Φ‖_F²`` at ε-orthogonal ``Θ(0)`` (Fig. 9).

    The factorization is the network :func:`~lowdim.nonlinear.deep_network` applied to the
    identity (``f(Θ)ᵀ = net(I)``), square ``d × d`` factors; ``layer`` is 1-based.
    """
    depth = check_int("depth", depth, 2)
    layer = check_int("layer", layer, 1)
    if layer > depth:
        raise fail("layer", f"at most depth = {depth}", layer)
    phi = torch.as_tensor(target, dtype=torch.float64)
    m, n = phi.shape
    net = deep_network([n] + [max(m, n)] * (depth - 1) + [m], activation=activation, scale=scale,
                       random_state=random_state)
    f = net(torch.eye(n, dtype=torch.float64)).T
    (0.5 * (f - phi).square().sum()).backward()
    linears = [mod for mod in net if isinstance(mod, torch.nn.Linear)]
    return torch.linalg.svdvals(linears[layer - 1].weight.grad)
