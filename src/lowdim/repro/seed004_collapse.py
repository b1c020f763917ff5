"""Figures of seed 004 Sec. 4.2 (progressive feature collapse): Figs. 2, 7, 11, 12.

K = 5 classes of n = 10 orthonormal samples (d = N = 50, X Xᵀ = I:
:func:`lowdim.datasets.orthogonal_classes`), one-hot targets, networks ``W_L σ(⋯ σ(W_1 x))`` of
width d without biases (:func:`lowdim.nonlinear.deep_network`), full-batch GD on ½‖f(X) − Y‖²
(eq. 2) with step 0.2/L to a relative loss of 1e-4 (:func:`lowdim.nonlinear.fit_least_squares`),
then D_l (eqs. 13–14) at layers 0 … L − 1 and its best log-linear fit over layers 1 … L − 1
(:func:`lowdim.collapse.collapse_profile`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..collapse import collapse_profile, theorem2_bound, theorem2_max_scale
from ..datasets import orthogonal_classes
from ..nonlinear import deep_network, fit_least_squares
from ._common import fmt, subplots
from ._registry import Check, Figure, register

PAPER = "004 (Yaras et al., law of parsimony)"
DEPENDS = ("lowdim.nonlinear.models", "lowdim.nonlinear.training", "lowdim.datasets.synthetic")
#: R² of the log-linear fit that counts as "linear decay" of log D_l.
MIN_R2 = 0.9
#: Largest ratio between the per-layer log-decay rates of runs the paper calls "the same rate".
SAME_RATE = 1.5
#: Relative loss standing for Theorem 2's global optimality (i) ``W_{L:1} X = Y``: at 1e-4 the residual,
#: not the ε-scaled directions, sets the within-class scatter of the last layers.
THEOREM_TOL = 1e-12
_BASE = dict(classes=5, per_class=10, lr_times_depth=0.2, tol=1e-4, max_iter=30000)


def collapse_run(s: dict, seed: int, depth: int, activation: str, init: str, eps: float,
                 tol: float | None = None, data: tuple | None = None) -> dict:
    """Train one network of Sec. 4.2 (to relative loss ``tol``, default ``s["tol"]``) and measure D_l, S_l.

    ``data``: ``(x, labels)`` instead of Sec. 4.2's orthonormal samples."""
    tol = s["tol"] if tol is None else tol
    x, labels = data or orthogonal_classes(s["classes"], s["per_class"], random_state=seed)
    y = torch.nn.functional.one_hot(labels, s["classes"]).double()
    d = x.shape[1]
    net = deep_network([d] * depth + [s["classes"]], activation=activation, init=init, scale=eps,
                       random_state=seed + 1)
    iters, rel = fit_least_squares(net, x, y, lr=s["lr_times_depth"] / depth, tol=tol,
                                   max_iter=s["max_iter"])
    prof = collapse_profile(net, x, labels)
    eps_max = theorem2_max_scale(s["classes"], s["per_class"], d, depth)
    return {"depth": depth, "activation": activation, "init": init, "eps": eps, "iterations": iters,
            "rel_loss": rel, "tol": tol, "converged": rel < tol, "D": prof.collapse.tolist(),
            "S": prof.separation.tolist(), "ratios": prof.ratios.tolist(), "fit_layers": prof.fit_layers,
            "slope": prof.fit.slope, "intercept": prof.fit.intercept, "decay_ratio": prof.fit.decay_ratio,
            "r2": prof.fit.r2, "bound": theorem2_bound(s["classes"], eps), "theorem2_max_eps": eps_max,
            "theorem2_conditions": activation == "linear" and init == "orthogonal" and eps <= eps_max
            and rel < THEOREM_TOL}


def _compute(s: dict, seed: int, progress: bool) -> dict:
    configs = [(c["depth"], c["activation"], c.get("init", "orthogonal"), c["eps"]) for c in s["runs"]]
    if s.get("theorem_depth"):  # a DLN inside Theorem 2's conditions: ε = 0.9 × the largest allowed
        d = s["classes"] * s["per_class"]
        eps = 0.9 * theorem2_max_scale(s["classes"], s["per_class"], d, s["theorem_depth"])
        configs.append((s["theorem_depth"], "linear", "orthogonal", eps, THEOREM_TOL))
    runs = [collapse_run(s, seed, *c) for c in tqdm(configs, desc="seed 004 collapse", disable=not progress)]
    for r in runs[len(s["runs"]):]:
        r["theorem_run"] = True
    return {"runs": runs}


def _label(r: dict, key: str) -> str:
    what = {"depth": f"L = {r['depth']}", "eps": f"ε = {r['eps']:.3g}", "init": r["init"],
            "activation": r["activation"]}[key]
    return f"{what}: ×{r['decay_ratio']:.3f}/layer (R² {r['r2']:.3f})"


def _draw_runs(ax, runs: list[dict], key: str) -> None:
    """D_l vs layer (log scale), markers, and the best log-linear fit (dashed) for each run."""
    for i, r in enumerate(runs):
        layers = np.arange(len(r["D"]))
        ax.semilogy(layers, r["D"], "o-", color=f"C{i}", label=_label(r, key))
        fit = np.asarray(r["fit_layers"], dtype=float)
        ax.semilogy(fit, np.exp(r["intercept"] + r["slope"] * fit), "--", color=f"C{i}", lw=1)
    ax.set(xlabel="layer l (0 = input)", ylabel="D_l = Tr(Σ_W) / Tr(Σ_B)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, title="dashed: best log-linear fit", title_fontsize=8)


def _plot_by_activation(key: str, title: str):
    """Two panels (linear, ReLU) of the runs of the sweep over ``key``."""
    def plot(data: dict, s: dict):
        runs = [r for r in data["runs"] if not _is_theorem_run(r, s)]
        extra = [r for r in data["runs"] if _is_theorem_run(r, s)]
        fig, axes = subplots(3 if extra else 2, width=5.0)
        for ax, act in zip(axes, ("linear", "relu")):
            _draw_runs(ax, [r for r in runs if r["activation"] == act], key)
            ax.set_title(f"{'DLN (linear)' if act == 'linear' else 'ReLU network'}: {title.format(**s)}")
        if extra:
            _draw_bound(axes[2], extra[0])
        return fig
    return plot


def _draw_bound(ax, r: dict) -> None:
    """Theorem 2: every D_{l+1}/D_l against 2(√K+1)ε²."""
    ax.semilogy(np.arange(len(r["ratios"])), r["ratios"], "o-", color="C3", label="measured D_(l+1) / D_l")
    ax.axhline(r["bound"], color="k", ls="--", label=f"2(√K+1)ε² = {r['bound']:.3g}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="layer l", ylabel="D_(l+1) / D_l",
           title=f"Theorem 2's regime: DLN, L = {r['depth']}, ε = {r['eps']:.3g} "
                 f"(≤ {r['theorem2_max_eps']:.3g})")
    ax.legend(fontsize=8)


def _is_theorem_run(r: dict, s: dict) -> bool:
    """The extra DLN inside Theorem 2's conditions (not one of the paper's runs)."""
    return bool(r.get("theorem_run"))


def _linear_decay_check(runs: list[dict]) -> Check:
    ok = all(r["r2"] >= MIN_R2 and r["decay_ratio"] < 1 for r in runs)
    return Check(f"log D_l decays linearly in l in every run (fit R² ≥ {MIN_R2}, ratio < 1 per layer)", ok,
                 "; ".join(f"{r['activation']} L={r['depth']} {r['init']} ε={fmt(r['eps'])}: "
                           f"×{fmt(r['decay_ratio'])}, R² {fmt(r['r2'])}" for r in runs))


def _same_rate_check(runs: list[dict], key: str) -> list[Check]:
    """Per activation: the per-layer log-decay rates |slope| of the runs differ by ≤ SAME_RATE×."""
    checks = []
    for act in ("linear", "relu"):
        rs = [r for r in runs if r["activation"] == act]
        rates = [abs(r["slope"]) for r in rs]
        spread = max(rates) / min(rates)
        checks.append(Check(f"{act}: the decay rate does not depend on the {key} (per-layer log-decay "
                            f"rates within {SAME_RATE}×)", spread <= SAME_RATE,
                            ", ".join(f"{r[key]}: ×{fmt(r['decay_ratio'])}" for r in rs)
                            + f" per layer (rates differ {fmt(spread)}×)"))
    return checks


def _converged_check(runs: list[dict], s: dict) -> Check:
    bad = [r for r in runs if not r["converged"]]
    return Check(f"every network was trained to relative loss < {s['tol']:g} (Theorem 2's run: "
                 f"{THEOREM_TOL:g}) before D_l is measured",
                 not bad, "all converged (iterations " + ", ".join(str(r["iterations"]) for r in runs) + ")"
                 if not bad else "; ".join(f"L={r['depth']} {r['activation']}: {fmt(r['rel_loss'])} after "
                                         f"{r['iterations']}" for r in bad))


def _theorem_check(data: dict, s: dict) -> list[Check]:
    inside = [r for r in data["runs"] if r["theorem2_conditions"]]
    outside = [r for r in data["runs"] if not r["theorem2_conditions"]]
    worst = max((max(r["ratios"]) / r["bound"] for r in inside), default=math.inf)
    measured = (f"largest D_(l+1)/D_l ÷ 2(√K+1)ε² = {fmt(worst)} in {len(inside)} run(s) meeting its "
                f"conditions (ε ≤ {fmt(inside[0]['theorem2_max_eps'])})" if inside else "no run meets them")
    measured += (f"; outside them (ε = 0.5 > the allowed {fmt(min(r['theorem2_max_eps'] for r in outside))}, "
                 f"or ReLU) the same ratio reaches {fmt(max(max(r['ratios']) / r['bound'] for r in outside))}"
                 if outside else "")
    return [Check("Theorem 2 (15): D_(l+1)/D_l ≤ 2(√K+1)ε² at every layer where its conditions hold",
                  bool(inside) and worst <= 1.0, measured)]


def _fig7_check(data: dict, s: dict) -> list[Check]:
    runs = [r for r in data["runs"] if not _is_theorem_run(r, s)]
    return ([_converged_check(data["runs"], s), _linear_decay_check(runs)]
            + _same_rate_check(runs, "depth") + _theorem_check(data, s))


_CAPTION7 = ("Linear decay of feature separation in trained deep networks. Varying the depth L and "
             "activation type (Linear vs ReLU), we plot the separation measure D_l in (13) at each layer l "
             "up to the penultimate layer (L − 1), along with the best log-linear fit line.")


def _runs(depths, acts=("linear", "relu"), eps=0.5, init="orthogonal") -> list[dict]:
    return [{"depth": L, "activation": a, "eps": eps, "init": init} for L in depths for a in acts]


register(Figure(
    id="004-fig7", paper=PAPER, caption=_CAPTION7,
    claim="In DLNs and ReLU networks (ε = 0.5 orthogonal) log D_l decays linearly in l (fit R² ≥ 0.9) at a "
          "rate independent of the depth L (within 1.5×); where Theorem 2's conditions hold (a DLN with "
          "ε below its limit) every D_(l+1)/D_l ≤ 2(√K+1)ε².",
    sizes={"paper": {**_BASE, "runs": _runs([6, 8, 10]), "theorem_depth": 4},
           "quick": {**_BASE, "runs": _runs([6, 8]), "theorem_depth": 4},
           "test": {**_BASE, "tol": 1e-3, "runs": _runs([3, 4]), "theorem_depth": 3}},
    estimate={"quick": 15, "paper": 40},
    compute=_compute, plot=_plot_by_activation("depth", "ε = 0.5, orthogonal"), check=_fig7_check,
    notes="Seed 004 Sec. 4.2 setting (K = 5, n = 10, d = N = 50, ε = 0.5 orthogonal); GD step 0.2/L to a "
          "relative loss of 1e-4 (the paper does not state them). Theorem 2's condition (ii) needs "
          "ε ≤ 0.035 at L = 6 (0.025 at L = 10), where GD from ε^L ≈ 1e-9 does not leave the origin in "
          "reasonable time; "
          "lowdim adds one DLN at L = 4 with ε = 0.9 × its limit (0.042), trained to relative loss 1e-12 "
          "(condition (i), global optimality), to check (15) where it applies; stopped at 1e-4 instead, its "
          "last ratio D_3/D_2 was 0.63, 55× the bound: the residual then dominates the within-class scatter.",
    module=__name__, depends=DEPENDS,
))


def _fig11_check(data: dict, s: dict) -> list[Check]:
    runs = data["runs"]
    checks = [_converged_check(runs, s), _linear_decay_check(runs)]
    for act in ("linear", "relu"):
        rs = sorted((r for r in runs if r["activation"] == act), key=lambda r: -r["eps"])
        ratios = [r["decay_ratio"] for r in rs]
        checks.append(Check(f"{act}: a smaller ε gives a steeper decay (the per-layer ratio falls with ε)",
                            all(a > b for a, b in zip(ratios, ratios[1:])),
                            ", ".join(f"ε = {fmt(r['eps'])}: ×{fmt(r['decay_ratio'])}" for r in rs)))
    return checks


register(Figure(
    id="004-fig11", paper=PAPER,
    caption="Linear decay of feature separation in trained deep networks with varying initialization "
            "scale ε. Varying the initialization scale ε for networks with both linear and ReLU activations "
            "for an L = 4 deep network, we plot the separation measure D_l in (13) at each layer l up to the "
            "penultimate layer (L − 1), along with the best log-linear fit line.",
    claim="At L = 4, log D_l decays linearly for every ε ∈ {0.5, 0.25, 0.125} (fit R² ≥ 0.9), and a "
          "smaller ε gives a steeper decay in linear and ReLU networks (the ε² dependence of (15)).",
    sizes={"paper": {**_BASE, "runs": [r for e in (0.5, 0.25, 0.125) for r in _runs([4], eps=e)]},
           "quick": {**_BASE, "runs": [r for e in (0.5, 0.25, 0.125) for r in _runs([4], eps=e)]}},
    estimate={"quick": 10, "paper": 10},
    compute=_compute, plot=_plot_by_activation("eps", "L = {runs[0][depth]}, ε sweep"), check=_fig11_check,
    notes="Seed 004 App. A: L = 4, ε ∈ {0.5, 0.25, 0.125}, otherwise as 004-fig7 (quick = paper: seconds). "
          "With L = 4 the fit uses layers 1–3 (three points).",
    module=__name__, depends=DEPENDS,
))


_INITS = ("orthogonal", "normal", "uniform")


def _fig12_check(data: dict, s: dict) -> list[Check]:
    runs = data["runs"]
    return [_converged_check(runs, s), _linear_decay_check(runs)] + _same_rate_check(runs, "init")


register(Figure(
    id="004-fig12", paper=PAPER,
    caption="Linear decay of feature separation in trained deep networks with different initialization "
            "types. Varying the initialization type (orthogonal vs normal vs uniform) and activation type "
            "(Linear vs ReLU) for an L = 8 deep network, we plot the separation measure D_l in (13) at each "
            "layer l up to the penultimate layer (L − 1), along with the best log-linear fit line.",
    claim="With orthogonal, N(0, ε²/d) and uniform initializations (ε = 0.5) log D_l decays linearly (fit "
          "R² ≥ 0.9) at the same rate (per-layer log-decay rates within 1.5×), for linear and ReLU networks.",
    sizes={"paper": {**_BASE, "runs": [r for i in _INITS for r in _runs([8], init=i)]},
           "quick": {**_BASE, "runs": [r for i in _INITS for r in _runs([6], init=i)]}},
    estimate={"quick": 10, "paper": 25},
    compute=_compute, plot=_plot_by_activation("init", "L = {runs[0][depth]}, ε = 0.5"), check=_fig12_check,
    notes="Seed 004 App. A: L = 8 (quick: L = 6), ε = 0.5; normal entries N(0, ε²/d), uniform with the same "
          "E‖W‖_F² = dε² (lowdim.factorization.init_factor), otherwise as 004-fig7.",
    module=__name__, depends=DEPENDS,
))


def _fig2_plot(data: dict, s: dict):
    fig, axes = subplots(1, width=6.0)
    _draw_runs(axes[0], data["runs"], "activation")
    axes[0].set_title(f"L = {s['runs'][0]['depth']}, ε = {s['runs'][0]['eps']} orthogonal: D_l per layer")
    return fig


def _fig2_check(data: dict, s: dict) -> list[Check]:
    runs = data["runs"]
    every = all(all(q < 1 for q in r["ratios"]) for r in runs)
    return [_converged_check(runs, s), _linear_decay_check(runs),
            Check("every layer collapses the features further (D_(l+1) < D_l at every l, both networks)",
                  every,
                  "; ".join(f"{r['activation']}: largest D_(l+1)/D_l {fmt(max(r['ratios']))}" for r in runs))]


register(Figure(
    id="004-fig2", paper=PAPER,
    caption="Progressive collapse with linear decay on deep linear and nonlinear networks. The x-axis "
            "denotes the layer index and the y-axis denotes the separation measure in (13).",
    claim="In a trained deep linear network and a trained ReLU network, every layer lowers D_l and log D_l "
          "falls linearly with the layer index (fit R² ≥ 0.9).",
    sizes={"paper": {**_BASE, "runs": _runs([8])}, "quick": {**_BASE, "runs": _runs([8])},
           "test": {**_BASE, "tol": 1e-3, "runs": _runs([4])}},
    estimate={"quick": 8, "paper": 8},
    compute=_compute, plot=_fig2_plot, check=_fig2_check,
    notes="The paper's illustration does not state its setting; lowdim runs one of Fig. 7's (L = 8, ε = 0.5 "
          "orthogonal, Sec. 4.2 data) for a linear and a ReLU network.",
    module=__name__, depends=DEPENDS,
))
