"""Figures of seed 004 (Yaras et al., the law of parsimony in GD for deep linear networks): Figs. 1, 3–6,
8–10."""

from __future__ import annotations

import numpy as np
import torch

from ..datasets import low_rank_matrix
from ..factorization import DeepFactorization
from ..linalg import qr_positive
from ..operators import Regression
from ..training import train
from . import seed003
from ._common import fmt, subplots
from ._registry import Check, Figure, register
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


# ----------------------------------------------------------------------------- Fig. 10
def _fig10_compute(s: dict, seed: int, progress: bool) -> dict:
    """W_1's SVD over GD on raw Gaussian inputs (no whitening).

    Records the singular values and, for the bulk (all but the top and bottom ``d_y`` singular values,
    which move), how far W_1 has moved on the bulk's right singular subspace:
    ``‖(W_1(t) − W_1(0)) V_bulk(t)‖₂ / ε``. W_1(0) is ε·orthogonal, so every subspace is a singular
    subspace at t = 0; a small drift means the bulk's singular values *and* vectors (``u = W_1 v / ε``)
    are those of the initialization, as Theorem 1 says exactly for whitened data.
    """
    d, dy, n = s["d"], s["d_y"], s["samples"]
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(d, n, generator=gen, dtype=torch.float64)  # i.i.d. N(0, 1): X Xᵀ ≠ I
    op = Regression(x, low_rank_matrix(dy, d, dy, random_state=seed) @ x)
    model = DeepFactorization([d] * s["depth"] + [dy], scale=s["scale"], random_state=seed)
    w0 = model.factors[0].detach().clone()
    rec, mid = {"iterations": [], "sigma": [], "drift": [], "drift_moving": []}, slice(dy, d - dy)

    def observe(t: int, m: DeepFactorization, loss: float) -> None:
        if t % s["every"]:
            return
        w = m.factors[0].detach()
        _, sv, vh = torch.linalg.svd(w)
        rec["iterations"].append(t)
        rec["sigma"].append(sv.tolist())
        v, change = vh.T, w - w0
        rec["drift"].append(float(torch.linalg.matrix_norm(change @ v[:, mid], ord=2)) / s["scale"])
        moving = torch.cat([v[:, :dy], v[:, d - dy:]], dim=1)
        rec["drift_moving"].append(float(torch.linalg.matrix_norm(change @ moving, ord=2)) / s["scale"])

    h = train(model, op, lr=s["lr"] / n, max_iter=s["steps"], callback=observe, progress=progress)
    sigma = torch.as_tensor(rec["sigma"][-1])
    return {**rec, "loss": [h.loss[0], h.loss[-1]], "bulk": d - 2 * dy,
            "bulk_change": float(((sigma[mid] - s["scale"]).abs() / s["scale"]).max()),
            "top_change": float(sigma[:dy].min() / s["scale"]),
            "condition_xxt": float(torch.linalg.cond(x @ x.T))}


def _fig10_plot(data: dict, s: dict):
    fig, ax = subplots(2, width=4.6, height=3.4)
    t, sig, dy = np.asarray(data["iterations"]), np.asarray(data["sigma"]), s["d_y"]
    ax[0].plot(t, np.concatenate([sig[:, :dy], sig[:, -dy:]], axis=1), lw=1.4)
    ax[0].plot(t, sig[:, dy:-dy], lw=1, color="0.4")
    ax[0].plot([], [], color="0.4", label=f"the other d − 2d_y = {data['bulk']}")
    ax[0].set(xlabel="iteration t", ylabel="singular value", yscale="log", title="σ_i(t) of W_1")
    ax[0].legend()
    ax[1].plot(t, np.maximum(data["drift"], 1e-16), color="k", lw=2, label=f"bulk ({data['bulk']} vectors)")
    ax[1].plot(t, np.maximum(data["drift_moving"], 1e-16), color="C1", lw=1.4,
               label=f"the moving 2d_y = {2 * dy}")
    ax[1].set(xlabel="iteration t", ylabel="‖(W_1(t) − W_1(0)) V(t)‖₂ / ε", yscale="log",
              title="W_1's change on its singular subspaces")
    ax[1].legend()
    fig.suptitle(f"no whitening: X Gaussian, cond(X Xᵀ) = {data['condition_xxt']:.1f}", y=1.0)
    return fig


def _fig10_check(data: dict, s: dict) -> list[Check]:
    drift, moving = max(data["drift"]), max(data["drift_moving"])
    return [
        Check(f"the loss is fitted (relative loss ≤ 1e-3) while W_1's other d − 2d_y = {data['bulk']} "
              "singular values stay within 5% of their initial ε",
              data["loss"][1] <= 1e-3 * data["loss"][0] and data["bulk_change"] <= 0.05,
              f"relative loss {fmt(data['loss'][1] / data['loss'][0])}, bulk values within "
              f"{fmt(100 * data['bulk_change'])}% of ε, top d_y values ×{fmt(data['top_change'])}"),
        Check("their singular vectors evolve little: W_1 moves on the bulk's subspace by at most a quarter "
              "of its move on the 2d_y moving directions (0 with whitened data, Theorem 1)",
              drift <= 0.25 * moving, f"largest ‖(W_1(t) − W_1(0)) V(t)‖₂ / ε: bulk {fmt(drift)}, moving "
              f"directions {fmt(moving)} (ratio {fmt(drift / max(moving, 1e-300))})"),
    ]


register(Figure(
    id="004-fig10", paper=PAPER,
    caption="Evolution of SVD of weight matrices without whitened data: the first layer of an L = 3 deep "
            "linear network with d_x = 30, d_y = 3 and N = 300 throughout GD without weight decay. Left: "
            "σ_i(t). Right (the paper: angles of u_i, v_i to initialization): W_1's change on the "
            "subspace of its unmoved singular values.",
    claim="Without whitening the law of parsimony holds approximately: most singular values of W_1 stay at "
          "their initial value and their singular subspaces barely move while the network fits the data.",
    sizes={
        "paper": dict(d=30, d_y=3, samples=300, depth=3, scale=1.0, lr=0.1, steps=3000, every=10),
        "quick": dict(d=30, d_y=3, samples=300, depth=3, scale=1.0, lr=0.1, steps=2000, every=10),
        "test": dict(d=20, d_y=2, samples=200, depth=3, scale=1.0, lr=0.1, steps=1500, every=10),
    },
    estimate={"quick": 10, "paper": 15},
    compute=_fig10_compute, plot=_fig10_plot, check=_fig10_check,
    notes="X has i.i.d. N(0, 1) entries (not whitened; cond(X Xᵀ) ≈ 3–4) and Y = Φ X with a rank-3 Φ of "
          "σ_max = 1; the step is 0.1/N (the loss sums over N = 300 samples). ε = 1 orthogonal "
          "initialization. W_1 starts at ε·orthogonal (no unique singular vectors), so the vectors' change "
          "is measured as W_1's change on the bulk's singular subspace, relative to ε.",
    module=__name__, depends=("lowdim.repro.seed003",),
))
