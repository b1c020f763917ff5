"""Figures of seed 000 (Kwon et al., efficient low-dimensional compression of overparameterized models):
Fig. 14 (deep matrix sensing), Fig. 18 (near-zero random initialization), Fig. 19 (depth).

The compressed network is C-DLN (:func:`lowdim.spectral_compression`, Algorithm 1), the original a
full-width DLN. Scale: targets have σ_max = 1 and losses are summed (``½‖A(W) − y‖²``), so step sizes
are ``c/M`` for M Gaussian measurements and ``c/p`` for completion instead of the paper's η = 10 (whose
target scale is not stated); α is reduced where the paper's α = 5 is unstable at this scale.
"""

from __future__ import annotations

import time

import numpy as np
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
          progress: bool = False) -> dict:
    """Train the original DLN and C-DLN on one problem; histories and the compression time."""
    d = s["d"]
    t0 = time.perf_counter()
    comp = spectral_compression(op, s["rank_hat"], depth, scale=s["scale"], alpha=s["alpha"])
    setup = time.perf_counter() - t0
    common = dict(lr=lr, max_iter=s["max_iter"], truth=truth, target_error=s["target_error"],
                  eval_every=s["eval_every"])
    h_c = train(comp, op, **common)
    orig = DeepFactorization([d] * (depth + 1), init=init, scale=s["scale"], random_state=seed)
    h_o = train(orig, op, progress=progress, **common)
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


def _fig14_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    _error_panels(axes, data)
    axes[0].set_title(f"sensing, d = {s['d']}, r = {s['rank']}, M = {s['measurements']}")
    axes[1].set_title("recovery error vs wall time (C-DLN incl. SVD)")
    return fig


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


def _fig5_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    _error_panels(axes, data)
    axes[0].set_title(f"factorization, d = {s['d']}, r = {s['rank']}, r̂ = {s['rank_hat']}")
    axes[1].set_title("recovery error vs wall time (C-DLN incl. SVD)")
    return fig


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
