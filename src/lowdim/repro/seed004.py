"""Figures of seed 004 (Yaras et al., the law of parsimony in GD for deep linear networks): Figs. 1, 3."""

from __future__ import annotations

import torch

from ..datasets import low_rank_matrix
from ..linalg import qr_positive
from ..operators import Regression
from . import seed003
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
    sizes=DMF_SIZES, estimate={"quick": 70, "paper": 900},
    compute=dmf_compression, plot=dmf_plot, check=dmf_check,
    notes="The same experiment as 003-fig4 (whitened data: the DLN loss is ½‖W − Φ‖² up to a constant).",
    module=__name__, depends=("lowdim.repro.seed003",),
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
    module=__name__, depends=("lowdim.repro.seed003",),
))


register(Figure(
    id="004-fig8", paper=PAPER,
    caption="Evolution of SVD of weight matrices for all layers of an L = 3 deep linear network with "
            "d_x = d_y = 30 and r = 3 (Case 1) throughout GD without weight decay. Left: σ_i(t). Middle: "
            "∠(v_i(t), v_i(0)). Right: ∠(u_i(t), u_i(0)).",
    claim="In every layer only 2r singular values and vectors move: d − 2r singular values stay equal to "
          "ρ(t) and their singular subspaces stay fixed (Theorem 1, Case 1).",
    sizes={k: {**v, "samples": 2 * v["d"], "all_layers": True} for k, v in _SVD_SIZES.items()},
    estimate={"quick": 10, "paper": 20},
    compute=_fig3_compute, plot=svd_evolution_plot, check=svd_evolution_check,
    notes="As 004-fig3, for W_1, W_2 and W_3.",
    module=__name__, depends=("lowdim.repro.seed003",),
))

register(Figure(
    id="004-fig9", paper=PAPER,
    caption="Evolution of SVD of weight matrices with momentum: first layer of an L = 3 deep linear network "
            "with d_x = d_y = 30 and r = 3 (Case 1) throughout GD with momentum (16).",
    claim="With heavy-ball momentum the trajectory stays low-dimensional: d − 2r singular values of W_1 stay "
          "equal (to eq. 6's ρ(t) carried through the momentum recursion) and their subspaces stay fixed.",
    sizes={k: {**v, "samples": 2 * v["d"], "momentum": 0.5, "lr": 0.05} for k, v in _SVD_SIZES.items()},
    estimate={"quick": 5, "paper": 10},
    compute=_fig3_compute, plot=svd_evolution_plot, check=svd_evolution_check,
    notes="Momentum μ = 0.5 and step 0.05 (the paper does not state them); torch.optim.SGD's heavy ball is "
          "exactly eq. 16. ρ(t) follows ρ(t+1) = ρ(t) − η ρ(t)∏_{k≠l}ρ_k(t)² + μ(ρ(t) − ρ(t−1)).",
    module=__name__, depends=("lowdim.repro.seed003",),
))

_SAME = "Seed 004 Sec. 4.1 shows the experiment of seed 003 without separate settings; lowdim runs 003's. "


def _same_as(fig_id: str, new_id: str, caption: str, claim: str, notes: str = "") -> None:
    """Register ``new_id`` as the experiment of ``fig_id`` (seed 003) under seed 004's caption."""
    base = seed003.FIGURES[fig_id]
    register(Figure(id=new_id, paper=PAPER, caption=caption, claim=claim, sizes=base.sizes,
                    estimate=base.estimate, compute=base.compute, plot=base.plot, check=base.check,
                    notes=_SAME + (notes or base.notes), module=__name__,
                    depends=("lowdim.repro.seed003", *base.depends)))


_same_as("003-fig2", "004-fig4",
         "Benefits of depth and width in over-parameterized matrix completion. Left: recovery error using "
         "L = 2 vs. L = 3. Right: number of GD iterations to converge.",
         "Deeper (L = 3) networks are less prone to overfitting as the width grows (L = 2 error grows), "
         "and wider L = 3 networks converge in fewer iterations.",
         "Recovery error over all entries (seed 004's footnote 2 uses the unobserved ones; both vanish "
         "together when the matrix is recovered).")
_same_as("003-fig10", "004-fig5",
         "Comparison of efficiency of compressed networks vs. narrow network with different overestimated "
         "r̂. Left: number of iterations to converge. Right: time to converge.",
         "Compressed networks converge in fewer iterations and less time than narrow networks of the same "
         "width at every r̂, with an iteration count almost independent of r̂.")
_same_as("003-fig5", "004-fig6",
         "Ablation of γ in compressed network for deep matrix completion: original 3-layer network vs. its "
         "compressed networks with γ > 0 and γ = 0. Left: principal components of the trajectories. Middle: "
         "recovery error vs. iteration. Right: recovery error vs wall-time.",
         "With γ > 0 the compressed network ends where the original does and is faster in wall time; with "
         "γ = 0 it does not recover.")
