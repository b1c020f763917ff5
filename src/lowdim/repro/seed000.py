"""Figures of seed 000 (Kwon et al., efficient low-dimensional compression of overparameterized models):
Figs. 5, 14 (sensing), 15 (α ablation), 18 (near-zero random initialization), 19 (depth), Table 3.

The compressed network is C-DLN (:func:`lowdim.spectral_compression`, Algorithm 1), the original a
full-width DLN. Scale: targets have σ_max = 1 and losses are summed (``½‖A(W) − y‖²``), so step sizes
are ``c/M`` for M Gaussian measurements and ``c/p`` for completion instead of the paper's η = 10 (whose
target scale is not stated); α is reduced where the paper's α = 5 is unstable at this scale.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..compression import spectral_compression
from ..datasets import completion_problem, low_rank_matrix
from ..factorization import DeepFactorization
from ..operators import FullObservation, GaussianSensing
from ..training import History, train
from ._common import COLORS, fmt, history_data, reached, subplots
from ._registry import Check, Figure, register

PAPER = "000 (Kwon et al., efficient compression)"


def _pair(op, truth, s: dict, seed: int, depth: int, lr: float, init: str = "orthogonal",
          progress: bool = False, callback=None) -> dict:
    """Train the original DLN and C-DLN on one problem; histories and the compression time.

    ``callback`` is passed to the original DLN's :func:`lowdim.train` (its time is then part of the
    DLN's recorded seconds: keep it cheap)."""
    d = s["d"]
    t0 = time.perf_counter()
    comp = spectral_compression(op, s["rank_hat"], depth, scale=s["scale"], alpha=s["alpha"])
    setup = time.perf_counter() - t0
    common = dict(lr=lr, max_iter=s["max_iter"], truth=truth, target_error=s["target_error"],
                  eval_every=s["eval_every"])
    h_c = train(comp, op, **common)
    orig = DeepFactorization([d] * (depth + 1), init=init, scale=s["scale"], random_state=seed)
    h_o = train(orig, op, progress=progress, callback=callback, **common)
    return {"original": history_data(h_o), "compressed": history_data(h_c), "svd_seconds": setup}


def _error_panels(axes, runs: dict, label: str = "", style: str = "-") -> None:
    for name in ("original", "compressed"):
        h = runs[name]
        lab = f"{'DLN (original)' if name == 'original' else 'C-DLN (compressed)'}{label}"
        off = runs["svd_seconds"] if name == "compressed" else 0.0
        axes[0].semilogy(h["iterations"], h["error"], style, label=lab, color=COLORS[name])
        axes[1].semilogy(np.asarray(h["seconds"]) + off, h["error"], style, label=lab, color=COLORS[name])
    axes[0].set(xlabel="iteration", ylabel="relative recovery error")
    axes[1].set(xlabel="wall time (s)", ylabel="relative recovery error")
    axes[0].legend()


def _below_everywhere(runs: dict) -> tuple[bool, float]:
    """C-DLN error ≤ 1.01 × original error at every common recorded iteration (t > 0: both start near 1,
    where rounding decides the order); the worst ratio."""
    o, c = runs["original"], runs["compressed"]
    common = dict(zip(o["iterations"], o["error"]))
    ratios = [e / common[t] for t, e in zip(c["iterations"], c["error"]) if t > 0 and t in common]
    worst = max(ratios, default=float("inf"))
    return worst <= 1.01, worst


def _faster(runs: dict, thr: float) -> tuple[bool, str]:
    it_o, t_o = reached(History.from_dict(runs["original"]), thr)
    it_c, t_c = reached(History.from_dict(runs["compressed"]), thr)
    t_c = None if t_c is None else t_c + runs["svd_seconds"]
    ok = it_c is not None and (it_o is None or (it_c < it_o and t_c < t_o))
    return ok, (f"C-DLN {fmt(it_c)} it. / {fmt(t_c)} s, DLN {fmt(it_o)} it. / {fmt(t_o)} s "
                f"(DLN final error {fmt(runs['original']['error'][-1])})")


def _pair_checks(runs: dict, s: dict, what: str) -> list[Check]:
    below, worst = _below_everywhere(runs)
    ok, msg = _faster(runs, s["target_error"])
    return [
        Check(f"{what}: C-DLN's recovery error is ≤ the DLN's at every recorded iteration (1% slack)", below,
              f"largest ratio C-DLN/DLN {fmt(worst)}"),
        Check(f"{what}: C-DLN reaches error {s['target_error']:g} in fewer iterations and less time",
              ok, msg),
    ]


# ----------------------------------------------------------------------------- Fig. 14
def _fig14_compute(s: dict, seed: int, progress: bool) -> dict:
    phi = low_rank_matrix(s["d"], s["d"], s["rank"], random_state=seed)
    op = GaussianSensing.random(phi, s["measurements"], random_state=seed)
    return _pair(op, phi, s, seed, s["depth"], s["lr_times_m"] / s["measurements"], progress=progress)


def _pair_plot(title: str):
    """A plot of one DLN / C-DLN pair: error vs iteration (titled ``title.format(**settings)``) and time."""
    def plot(data: dict, s: dict):
        fig, axes = subplots(2)
        _error_panels(axes, data)
        axes[0].set_title(title.format(**s))
        axes[1].set_title("recovery error vs wall time (C-DLN incl. SVD)")
        return fig
    return plot


_fig14_plot = _pair_plot("sensing, d = {d}, r = {rank}, M = {measurements}")


register(Figure(
    id="000-fig14", paper=PAPER,
    caption="Results on deep matrix sensing with random Gaussian measurements: the same phenomena as in "
            "Figures 5 and 6, where the compressed network consistently outperforms the original network.",
    claim="C-DLN (spectral initialization from A†(y), Algorithm 1) has a lower recovery error than the "
          "original DLN at every iteration and reaches the target error in fewer iterations and less time.",
    sizes={
        "paper": dict(d=100, rank=5, measurements=2000, depth=3, scale=1e-3, rank_hat=10, alpha=2.0,
                      lr_times_m=0.3, max_iter=8000, target_error=1e-4, eval_every=20),
        "quick": dict(d=30, rank=3, measurements=600, depth=3, scale=1e-3, rank_hat=6, alpha=2.0,
                      lr_times_m=0.3, max_iter=4000, target_error=1e-4, eval_every=20),
        "test": dict(d=16, rank=2, measurements=200, depth=3, scale=1e-2, rank_hat=4, alpha=2.0,
                     lr_times_m=0.3, max_iter=1500, target_error=1e-3, eval_every=20),
    },
    estimate={"quick": 15, "paper": 1500},
    compute=_fig14_compute, plot=_fig14_plot, check=lambda d, s: _pair_checks(d, s, "sensing"),
    notes="Setting of seed 000 App. A.1/A.2 (d = 100, rank 5, M = 2000 Gaussian A_i with N(0, 1) entries, "
          "L = 3, ε = 1e-3, r̂ = 2r, α = 2); step 0.3/M on the summed loss with σ_max(Φ) = 1.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 18
def _fig18_compute(s: dict, seed: int, progress: bool) -> dict:
    phi = low_rank_matrix(s["d"], s["d"], s["rank"], random_state=seed)
    out = {"factorization": _pair(FullObservation(phi), phi, s, seed, s["depth"], s["lr"], init="normal")}
    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    out["completion"] = _pair(pb.operator(), pb.truth, s, seed, s["depth"], s["lr"] / s["fraction"],
                              init="normal", progress=progress)
    return out


def _fig18_plot(data: dict, s: dict):
    fig, axes = subplots(2, nrows=2, height=3.2)
    for row, name in enumerate(("factorization", "completion")):
        _error_panels(axes[2 * row: 2 * row + 2], data[name])
        axes[2 * row].set_title(f"deep matrix {name}: error vs iteration")
        axes[2 * row + 1].set_title(f"deep matrix {name}: error vs wall time")
    return fig


register(Figure(
    id="000-fig18", paper=PAPER,
    caption="Comparison of the performance of networks when the original network is initialized with "
            "near-zero random weights: the compressed network still outperforms the original wide network "
            "for both deep matrix factorization and completion.",
    claim="With an N(0, ε²/d) initialization of the original DLN, C-DLN still has the lower recovery error "
          "at every iteration and reaches the target error first, for factorization and for completion.",
    sizes={
        "paper": dict(d=100, rank=10, fraction=0.3, depth=3, scale=1e-3, rank_hat=20, alpha=2.0, lr=0.3,
                      max_iter=15000, target_error=1e-4, eval_every=20),
        "quick": dict(d=60, rank=5, fraction=0.3, depth=3, scale=1e-3, rank_hat=10, alpha=2.0, lr=0.3,
                      max_iter=4000, target_error=1e-4, eval_every=20),
        "test": dict(d=30, rank=2, fraction=0.4, depth=3, scale=1e-2, rank_hat=4, alpha=2.0, lr=0.3,
                     max_iter=1500, target_error=1e-3, eval_every=20),
    },
    estimate={"quick": 35, "paper": 250},
    compute=_fig18_compute, plot=_fig18_plot,
    check=lambda d, s: _pair_checks(d["factorization"], s, "factorization")
    + _pair_checks(d["completion"], s, "completion"),
    notes="Seed 000 Sec. 4.1 setting (d = 100, rank 10, r̂ = 20, L = 3, ε = 1e-3, 30% observed for "
          "completion); the original DLN starts from N(0, ε²/d) entries. Steps 0.3 (factorization) and "
          "0.3/p (completion) with α = 2 at σ_max = 1: the paper's α = 5 diverges at this scale.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 19
def _fig19_compute(s: dict, seed: int, progress: bool) -> dict:
    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    op = pb.operator()
    return {str(L): _pair(op, pb.truth, s, seed, L, s["lr"] / s["fraction"])
            for L in tqdm(s["depths"], desc="000-fig19", disable=not progress)}


def _fig19_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    for L, style in zip(data, ("--", "-", ":")):
        _error_panels(axes, data[L], label=f", L = {L}", style=style)
    axes[0].set_title(f"completion with {s['fraction']:.0%} observed: error vs iteration")
    axes[1].set_title("error vs wall time")
    return fig


def _fig19_check(data: dict, s: dict) -> list[Check]:
    lo, hi = str(min(s["depths"])), str(max(s["depths"]))
    fin = {L: {k: data[L][k]["error"][-1] for k in ("original", "compressed")} for L in (lo, hi)}
    ok, msg = _faster(data[hi], s["target_error"])
    return [
        Check(f"depth helps with few measurements: L = {hi} ends ≥ 10× more accurate than L = {lo}",
              max(fin[hi].values()) * 10 <= min(fin[lo].values()),
              f"final errors L = {lo}: DLN {fmt(fin[lo]['original'])}, C-DLN {fmt(fin[lo]['compressed'])}; "
              f"L = {hi}: DLN {fmt(fin[hi]['original'])}, C-DLN {fmt(fin[hi]['compressed'])}"),
        Check(f"at L = {hi}, where the DLN recovers, C-DLN gets there first", ok, msg),
        Check(f"at L = {lo}, where neither recovers, C-DLN's recovery error is not lower (≥ 0.9× DLN's)",
              fin[lo]["compressed"] >= 0.9 * fin[lo]["original"],
              f"C-DLN/DLN = {fmt(fin[lo]['compressed'] / fin[lo]['original'])}"),
    ]


register(Figure(
    id="000-fig19", paper=PAPER,
    caption="The effect of depth on deep matrix completion with a limited number of measurements: the "
            "compressed network only has advantages over the original network when the original network "
            "converges in terms of recovery (or test) error.",
    claim="With few observed entries, L = 2 fails to recover for both networks (C-DLN's recovery error "
          "slightly higher) while L = 3 recovers, and there C-DLN is faster.",
    sizes={
        "paper": dict(d=100, rank=5, fraction=0.2, depths=[2, 3], scale=1e-3, rank_hat=10, alpha=2.0,
                      lr=0.3, max_iter=15000, target_error=1e-3, eval_every=20),
        "quick": dict(d=60, rank=3, fraction=0.2, depths=[2, 3], scale=1e-3, rank_hat=6, alpha=2.0,
                      lr=0.3, max_iter=10000, target_error=1e-3, eval_every=20),
        "test": dict(d=40, rank=2, fraction=0.25, depths=[2, 3], scale=1e-2, rank_hat=4, alpha=2.0,
                     lr=0.3, max_iter=2000, target_error=1e-3, eval_every=20),
    },
    estimate={"quick": 75, "paper": 300},
    compute=_fig19_compute, plot=_fig19_plot, check=_fig19_check,
    notes="The paper does not state the observed fraction ('very limited'); lowdim uses 20% at d = 100, "
          "rank 5 (about 2× the degrees of freedom; at 15% neither depth recovered within 15000 "
          "iterations: final errors 0.08 (L = 3) and 0.39 (L = 2)). Step 0.3/p, α = 2, r̂ = 2r.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 5
def _fig5_compute(s: dict, seed: int, progress: bool) -> dict:
    phi = low_rank_matrix(s["d"], s["d"], s["rank"], random_state=seed)
    return _pair(FullObservation(phi), phi, s, seed, s["depth"], s["lr"], progress=progress)


_fig5_plot = _pair_plot("factorization, d = {d}, r = {rank}, r̂ = {rank_hat}")


register(Figure(
    id="000-fig5", paper=PAPER,
    caption="Empirical results on deep linear matrix factorization. Left: the compressed network achieves a "
            "lower recovery error than the original network (Theorem 2). Right: the speed-up over the "
            "original network.",
    claim="C-DLN's recovery error is below the original DLN's at every iteration (Theorem 2) and it reaches "
          "the target error in fewer iterations and less time.",
    sizes={
        "paper": dict(d=100, rank=10, depth=3, scale=1e-3, rank_hat=20, alpha=2.0, lr=0.3, max_iter=15000,
                      target_error=1e-4, eval_every=20),
        "quick": dict(d=60, rank=5, depth=3, scale=1e-3, rank_hat=10, alpha=2.0, lr=0.3, max_iter=8000,
                      target_error=1e-4, eval_every=20),
    },
    estimate={"quick": 20, "paper": 120},
    compute=_fig5_compute, plot=_fig5_plot, check=lambda d, s: _pair_checks(d, s, "factorization"),
    notes="Seed 000 Sec. 4.1: d = 100, rank 10, r̂ = 20, L = 3, ε = 1e-3 (η = 10, α = 5 at the paper's "
          "unstated scale); lowdim: σ_max = 1, step 0.3, α = 2.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 15 (α ablation)
def _fig15_compute(s: dict, seed: int, progress: bool) -> dict:
    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    op, lr = pb.operator(), s["lr"] / s["fraction"]
    common = dict(lr=lr, max_iter=s["max_iter"], truth=pb.truth, target_error=s["target_error"],
                  eval_every=s["eval_every"])
    orig = DeepFactorization([s["d"]] * (s["depth"] + 1), scale=s["scale"], random_state=seed)
    h = train(orig, op, **common)
    rows = []
    for alpha in tqdm(s["alphas"], desc="000-fig15", disable=not progress):
        t0 = time.perf_counter()
        comp = spectral_compression(op, s["rank_hat"], s["depth"], scale=s["scale"], alpha=alpha)
        svd = time.perf_counter() - t0
        try:
            hc = train(comp, op, **common)
        except FloatingPointError:  # lowdim.DivergenceError: the step α·η is too large
            rows.append({"alpha": alpha, "diverged": True, "iterations": None, "seconds": None})
            continue
        ok = hc.stop_reason == "target_error"
        rows.append({"alpha": alpha, "diverged": False, "iterations": hc.iterations[-1] if ok else None,
                     "seconds": svd + hc.seconds[-1] if ok else None, "error": hc.error[-1],
                     "iterations_run": hc.iterations[-1], "seconds_run": svd + hc.seconds[-1]})
    ok = h.stop_reason == "target_error"
    return {"rows": rows, "original": {"iterations": h.iterations[-1] if ok else None,
                                       "seconds": h.seconds[-1] if ok else None, "error": h.error[-1],
                                       "seconds_run": h.seconds[-1], "iterations_run": h.iterations[-1]}}


def _fig15_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    rows = [r for r in data["rows"] if r["iterations"] is not None]
    capped = [r for r in data["rows"] if not r["diverged"] and r["iterations"] is None]
    o = data["original"]
    for ax, key, unit in ((axes[0], "iterations", "iterations"), (axes[1], "seconds", "wall time (s)")):
        ax.plot([r["alpha"] for r in rows], [r[key] for r in rows], "o-", color=COLORS["compressed"],
                label="C-DLN")
        if capped:
            ax.plot([r["alpha"] for r in capped], [r[f"{key}_run"] for r in capped], "^", ms=9,
                    color=COLORS["compressed"], mfc="none", label="C-DLN, not converged at the cap")
        if o[key] is not None:
            ax.axhline(o[key], color=COLORS["original"], ls="--", label="DLN (original)")
        else:
            ax.axhline(o[f"{key}_run"], color=COLORS["original"], ls=":",
                       label=f"DLN: not converged in {o['iterations_run']} iterations")
        bad = [r["alpha"] for r in data["rows"] if r["diverged"]]
        if bad:
            ax.plot(bad, [ax.get_ylim()[1]] * len(bad), "x", color="k", ms=9, label="diverged")
        ax.set(xlabel="α (learning-rate ratio of the outer factors)", ylabel=f"{unit} to error "
               f"{s['target_error']:g}", yscale="log")
    axes[0].set_title("iterations to converge vs α")
    axes[1].set_title("time to converge vs α")
    axes[0].legend(fontsize=8)
    return fig


def _fig15_check(data: dict, s: dict) -> list[Check]:
    rows = [r for r in data["rows"] if r["iterations"] is not None]
    o = data["original"]
    low = [r for r in rows if r["alpha"] <= 1]
    its = [r["iterations"] for r in rows]
    return [
        Check("larger α needs fewer iterations (non-increasing in α among the runs that converged)",
              len(rows) >= 2 and all(a >= b for a, b in zip(its, its[1:])),
              f"α {[r['alpha'] for r in rows]}: {its}"),
        Check("with α ≤ 1, C-DLN still takes less time than the DLN (which, if it never converges, takes "
              "more than its whole run)", bool(low) and all(r["seconds"] < o["seconds_run"] for r in low),
              f"C-DLN {[fmt(r['seconds']) for r in low]} s vs DLN {fmt(o['seconds'])} s "
              f"({'converged' if o['seconds'] is not None else 'not converged'} after {o['iterations_run']} "
              f"iterations, {fmt(o['seconds_run'])} s)"),
    ]


register(Figure(
    id="000-fig15", paper=PAPER,
    caption="Ablation study on the compressed DLN with varying α: for small α the compressed network takes "
            "more iterations to reach the convergence criterion, but since each iteration is cheaper, it "
            "still takes much shorter time overall.",
    claim="Larger α makes C-DLN converge in fewer iterations; even with α ≤ 1 C-DLN takes less wall time "
          "than "
          "the original DLN; very large α diverges.",
    sizes={
        "paper": dict(d=100, rank=10, fraction=0.3, depth=3, scale=1e-3, rank_hat=20, lr=0.2,
                      alphas=[0.5 + 0.25 * k for k in range(39)], max_iter=20000, target_error=1e-4,
                      eval_every=20),
        "quick": dict(d=50, rank=4, fraction=0.3, depth=3, scale=1e-3, rank_hat=8, lr=0.2,
                      alphas=[0.5, 1.0, 2.0, 4.0], max_iter=16000, target_error=1e-4, eval_every=20),
    },
    estimate={"quick": 100, "paper": 400},
    compute=_fig15_compute, plot=_fig15_plot, check=_fig15_check,
    notes="Synthetic completion of seed 000 Sec. 4.1 (d = 100, rank 10, r̂ = 20, 30% observed), α from 0.5 to "
          "10 in steps of 0.25; lowdim's step is 0.2/p at σ_max = 1 (the paper's η = 10 is for an unstated "
          "scale), so the α at which GD diverges differs from the paper's; diverged runs are marked ×.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Table 3
def _table3_compute(s: dict, seed: int, progress: bool) -> dict:
    rows = []
    for d in tqdm(s["sizes"], desc="000-table3", disable=not progress):
        pb = completion_problem(d, d, s["rank"], s["fraction"], random_state=seed)
        run = _pair(pb.operator(), pb.truth, {**s, "d": d}, seed, s["depth"], s["lr"] / s["fraction"])
        for name in ("original", "compressed"):
            h = run[name]
            svd = run["svd_seconds"] if name == "compressed" else 0.0
            rows.append({"d": d, "model": name, "svd": svd, "training": h["seconds"][-1],
                         "total": svd + h["seconds"][-1], "error": h["error"][-1],
                         "iterations": h["iterations"][-1]})
    return {"rows": rows}


def _table3_plot(data: dict, s: dict):
    fig, axes = subplots(1, width=6.5)
    ax = axes[0]
    sizes = sorted({r["d"] for r in data["rows"]})
    x = np.arange(len(sizes))
    for k, name in enumerate(("original", "compressed")):
        rows = {r["d"]: r for r in data["rows"] if r["model"] == name}
        tot = [rows[d]["total"] for d in sizes]
        svd = [rows[d]["svd"] for d in sizes]
        ax.bar(x + 0.38 * (k - 0.5), tot, 0.36, label=f"{_LABEL[name]} total", color=COLORS[name])
        if name == "compressed":
            ax.bar(x + 0.38 * (k - 0.5), svd, 0.36, label="of which SVD", color="k")
        for xi, t in zip(x, tot):
            ax.annotate(f"{t:.2f} s", (xi + 0.38 * (k - 0.5), t), ha="center", va="bottom", fontsize=9)
    ax.set(xticks=x, xticklabels=[f"d = {d}" for d in sizes], ylabel="seconds to error "
           f"{s['target_error']:g}", title="time incl. the SVD of the surrogate", yscale="log")
    ax.legend()
    return fig


_LABEL = {"original": "DLN", "compressed": "C-DLN"}


def _table3_check(data: dict, s: dict) -> list[Check]:
    comp = [r for r in data["rows"] if r["model"] == "compressed"]
    orig = {r["d"]: r for r in data["rows"] if r["model"] == "original"}
    share = max(r["svd"] / r["total"] for r in comp)
    return [
        Check("the SVD is a negligible part of C-DLN's time (≤ 5%)", share <= 0.05,
              f"largest share {fmt(share)}"),
        Check("C-DLN's total time (SVD included) is below the DLN's at every d",
              all(r["total"] < orig[r["d"]]["total"] for r in comp),
              "; ".join(f"d = {r['d']}: {fmt(r['total'])} s vs {fmt(orig[r['d']]['total'])} s"
                        for r in comp)),
    ]


register(Figure(
    id="000-table3", paper=PAPER,
    caption="The time (seconds) required to train the compressed and original networks, accounting for the "
            "SVD step, for d = 100 and d = 300: the time taken to compute the SVD is nearly negligible.",
    claim="The SVD of the surrogate is a negligible share of C-DLN's time, and C-DLN's total time (SVD "
          "included) is below the original DLN's at every d.",
    sizes={
        "paper": dict(sizes=[100, 300], rank=10, fraction=0.3, depth=3, scale=1e-3, rank_hat=20, alpha=2.0,
                      lr=0.3, max_iter=20000, target_error=1e-4, eval_every=20),
        "quick": dict(sizes=[50, 100], rank=5, fraction=0.3, depth=3, scale=1e-3, rank_hat=10, alpha=2.0,
                      lr=0.3, max_iter=8000, target_error=1e-4, eval_every=20),
    },
    estimate={"quick": 60, "paper": 900},
    compute=_table3_compute, plot=_table3_plot, check=_table3_check,
    notes="Synthetic completion (seed 000 Sec. 4.1 setting, 30% observed); both run to recovery error 1e-4 "
          "(the paper does not state its stopping rule); step 0.3/p, α = 2.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 2
def _fig2_compute(s: dict, seed: int, progress: bool) -> dict:
    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    spectra, iters = [], []

    def record(t: int, m: DeepFactorization, loss: float) -> None:
        if t % s["spectrum_every"] == 0:
            iters.append(t)
            spectra.append(torch.linalg.svdvals(m.product().detach()).tolist())

    out = _pair(pb.operator(), pb.truth, s, seed, s["depth"], s["lr"] / s["fraction"], progress=progress,
                callback=record)
    out["spectrum"] = {"iterations": iters, "singular_values": spectra}
    return out


def _changed(data: dict, s: dict) -> int:
    """How many end-to-end singular values of the DLN ever move by more than 1e-3 (σ_max(M*) = 1)."""
    sv = np.asarray(data["spectrum"]["singular_values"])
    return int((np.abs(sv - sv[0]).max(axis=0) > 1e-3).sum())


def _fig2_plot(data: dict, s: dict):
    fig, axes = subplots(3, width=4.4)
    sp = data["spectrum"]
    sv = np.asarray(sp["singular_values"])
    change = np.abs(sv - sv[0])
    for i in range(sv.shape[1]):
        axes[0].semilogy(sp["iterations"], np.maximum(change[:, i], 1e-18), lw=1.2 if i < s["rank"] else 0.6,
                         color=f"C{i % 10}" if i < s["rank"] else "0.6")
    axes[0].set(xlabel="iteration", ylabel="|σ_i(t) − σ_i(0)| of the DLN's W_L:1",
                title=f"{_changed(data, s)} of {sv.shape[1]} singular values move (r = {s['rank']})")
    _error_panels(axes[1:], data)
    axes[1].set_title("recovery error vs iteration")
    axes[2].set_title("recovery error vs wall time")
    return fig


def _fig2_check(data: dict, s: dict) -> list[Check]:
    moved = _changed(data, s)
    return [Check(f"training is low-rank: at most r = {s['rank']} end-to-end singular values of the DLN move "
                  "(by > 1e-3)", moved <= s["rank"], f"{moved} move")] + _pair_checks(data, s, "completion")


register(Figure(
    id="000-fig2", paper=PAPER,
    caption="Motivating the compressed DLN and the incremental learning phenomenon. Left: change in the "
            "singular values of the end-to-end DLN for matrix completion with r = 10, hinting that low-rank "
            "training can happen in a small subspace. Middle & Right: recovery error of the original and "
            "compressed DLN across iterations and time.",
    claim="Only r end-to-end singular values of the DLN change during training, and C-DLN reaches a lower "
          "recovery error at every iteration and the target error first.",
    sizes={"paper": dict(d=100, rank=10, fraction=0.3, depth=3, scale=1e-3, rank_hat=20, alpha=2.0, lr=0.3,
                         max_iter=15000, target_error=1e-4, eval_every=20, spectrum_every=100),
           "quick": dict(d=60, rank=5, fraction=0.3, depth=3, scale=1e-3, rank_hat=10, alpha=2.0, lr=0.3,
                         max_iter=10000, target_error=1e-4, eval_every=20, spectrum_every=100)},
    estimate={"quick": 40, "paper": 250},
    compute=_fig2_compute, plot=_fig2_plot, check=_fig2_check,
    notes="Synthetic completion of Sec. 4.1 (d = 100, r = 10, 30% observed, r̂ = 20); step 0.3/p, α = 2 at "
          "σ_max = 1. The DLN's recorded time includes its spectra (one SVD every 100 iterations).",
    module=__name__,
))
