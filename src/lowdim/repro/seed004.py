"""Figures of seed 004 (Yaras et al., the law of parsimony in GD for deep linear networks): Figs. 1, 3."""

from __future__ import annotations

import torch

from ..datasets import low_rank_matrix
from ..linalg import qr_positive
from ..operators import Regression
from ._registry import Figure, register
from .seed003 import (
    _SVD_SIZES,
    DMF_SIZES,
    dmf_check,
    dmf_compression,
    dmf_plot,
    svd_evolution,
    svd_evolution_check,
    svd_evolution_plot,
)

PAPER = "004 (Yaras et al., law of parsimony)"

register(Figure(
    id="004-fig1", paper=PAPER,
    caption="Efficient training of deep linear networks. Left: principal components of end-to-end GD "
            "trajectories for an overparameterized DLN and its equivalent compressed network. Right: "
            "training loss vs. wall-time (d = 1000, r̂ = r = 5, Sec. 4.1).",
    claim="The compressed network's end-to-end trajectory follows the original's and converges an order "
          "of magnitude earlier in wall time (≥ 10× at paper size).",
    sizes=DMF_SIZES, estimate={"quick": 40, "paper": 900},
    compute=dmf_compression, plot=dmf_plot, check=dmf_check,
    notes="The same experiment as 003-fig4 (whitened data: the DLN loss is ½‖W − Φ‖² up to a constant).",
    module=__name__,
))


def _whitened_regression(s: dict, seed: int) -> Regression:
    """Case 1 data: X with X Xᵀ = I (N = d_x samples), Y = Φ X with rank(Φ) = r, d_y = d_x."""
    d = s["d"]
    gen = torch.Generator().manual_seed(seed + 1)
    x, _ = qr_positive(torch.randn(d, s["samples"], generator=gen, dtype=torch.float64).T)
    x = x.T  # d × N with orthonormal rows: X Xᵀ = I
    phi = low_rank_matrix(d, d, s["rank"], random_state=seed)
    return Regression(x, phi @ x)


def _fig3_compute(s: dict, seed: int, progress: bool) -> dict:
    return svd_evolution(_whitened_regression(s, seed), s, seed, progress, "deep linear network, Case 1")


register(Figure(
    id="004-fig3", paper=PAPER,
    caption="Evolution of SVD of weight matrices: first layer of an L = 3 deep linear network with "
            "d_x = d_y = 30 and r = 3 (Case 1) throughout GD without weight decay. Left: σ_i(t). Middle: "
            "∠(v_i(t), v_i(0)). Right: ∠(u_i(t), u_i(0)).",
    claim="Only 2r singular values and vectors of W_1 move: d − 2r singular values stay equal to ρ(t) of "
          "eq. 6 and their singular subspaces stay fixed (Theorem 1, Case 1).",
    sizes={k: {**v, "samples": 2 * v["d"]} for k, v in _SVD_SIZES.items()},
    estimate={"quick": 5, "paper": 10},
    compute=_fig3_compute, plot=svd_evolution_plot, check=svd_evolution_check,
    notes="Whitened inputs X (d_x × N, N = 2d_x, X Xᵀ = I), Y = Φ X with rank-r Φ, ε = 1, step 0.1. Angles "
          "are measured to the SVD at t = 1 (at t = 0 the factor is ε·orthogonal and its singular vectors "
          "are not unique), for repeated values to the span of their cluster.",
    module=__name__,
))
