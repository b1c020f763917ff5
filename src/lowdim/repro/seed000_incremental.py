"""Seed 000's incremental-learning figures (Assumption 1): Figs. 4, 7–12 and 13 (c_val, c_vec).

The end-to-end singular values σ_i(W_{L:1}(t)) of the original DLN (full width, ε-orthogonal) and of
C-DLN (:func:`lowdim.spectral_compression`) are recorded along GD with the alignments
``|⟨u_i(t), u_i*⟩|``, ``|⟨v_i(t), v_i*⟩|`` to the target's singular vectors, for deep matrix
factorization, completion and sensing. Scale as in :mod:`lowdim.repro.seed000` (σ_max(M*) = 1,
summed losses: steps 0.3, 0.3/p, 0.3/M; α = 1.5 instead of the paper's 5 / 2 / 5).
"""

from __future__ import annotations

import numpy as np
import torch

from ..compression import spectral_compression
from ..datasets import completion_problem, low_rank_matrix
from ..factorization import DeepFactorization
from ..operators import FullObservation, GaussianSensing
from ..training import train
from ._common import fmt, subplots
from ._registry import Check, Figure, register

PAPER = "000 (Kwon et al., efficient compression)"
MODELS = ("original", "compressed")
_NAMES = {"original": "DLN", "compressed": "C-DLN"}


def _problem(s: dict, seed: int):
    """``(operator, truth, step size)`` of the figure's problem."""
    d, r, kind = s["d"], s["rank"], s["problem"]
    if kind == "completion":
        pb = completion_problem(d, d, r, s["fraction"], random_state=seed)
        return pb.operator(), pb.truth, s["lr"] / s["fraction"]
    truth = low_rank_matrix(d, d, r, random_state=seed)
    if kind == "sensing":
        return GaussianSensing.random(truth, s["measurements"], random_state=seed), truth, \
            s["lr"] / s["measurements"]
    return FullObservation(truth), truth, s["lr"]


def _track(model: DeepFactorization, op, truth: torch.Tensor, lr: float, s: dict) -> dict:
    """Train ``model``; every ``every`` iterations its top singular values and vector alignments."""
    u_star, sig_star, vh_star = torch.linalg.svd(truth)
    r, k = s["rank"], min(2 * s["rank"], s["d"])
    rec = {"iterations": [], "sigma": [], "cos_u": [], "cos_v": []}

    def observe(t: int, m: DeepFactorization, loss: float) -> None:
        with torch.no_grad():
            u, sv, vh = torch.linalg.svd(m.product())
        rec["iterations"].append(t)
        rec["sigma"].append(sv[:k].tolist())
        rec["cos_u"].append((u[:, :r] * u_star[:, :r]).sum(0).abs().tolist())
        rec["cos_v"].append((vh[:r] * vh_star[:r]).sum(1).abs().tolist())

    h = train(model, op, lr=lr, max_iter=s["max_iter"], tol=s["tol"], eval_every=s["every"],
              callback=observe)
    if rec["iterations"][-1] != h.iterations[-1]:  # stopped on tol: train skips the callback there
        observe(h.iterations[-1], model, h.loss[-1])
    rec["stop_reason"] = h.stop_reason
    return rec


def _incremental_compute(s: dict, seed: int, progress: bool) -> dict:
    op, truth, lr = _problem(s, seed)
    d, depth = s["d"], s["depth"]
    models = {
        "original": DeepFactorization([d] * (depth + 1), scale=s["scale"], random_state=seed),
        "compressed": spectral_compression(op, 2 * s["rank"], depth, scale=s["scale"], alpha=s["alpha"]),
    }
    out = {name: _track(m, op, truth, lr, s) for name, m in models.items()}
    out["sigma_star"] = torch.linalg.svdvals(truth)[: s["rank"]].tolist()
    return out


def fit_times(rec: dict, sigma_star: list[float], rel: float) -> list[int | None]:
    """t_i: first recorded iteration from which ``|σ_i(t) − σ_i*| ≤ rel·σ_i*`` holds to the end."""
    sig = np.asarray(rec["sigma"])
    out = []
    for i, target in enumerate(sigma_star):
        ok = np.abs(sig[:, i] - target) <= rel * target
        bad = np.flatnonzero(~ok)
        first = 0 if bad.size == 0 else bad[-1] + 1
        out.append(int(rec["iterations"][first]) if first < len(ok) else None)
    return out


def _incremental_checks(data: dict, s: dict) -> list[Check]:
    r, rel = s["rank"], s["fit_rel"]
    star = data["sigma_star"]
    checks = []
    for name in MODELS:
        rec, who = data[name], _NAMES[name]
        times = fit_times(rec, star, rel)
        its = rec["iterations"]
        done = all(t is not None for t in times)
        checks.append(Check(f"{who}: σ_1 … σ_{r} are fitted (to {rel:.0%}) in order, t_1 ≤ … ≤ t_{r}",
                            done and times == sorted(times), f"t_i = {times}"))
        if done:  # when σ_i is fitted, σ_{i+1} is still far from its target
            ahead = [rec["sigma"][its.index(times[i])][i + 1] / star[i + 1] for i in range(r - 1)]
            aligned = min(rec[key][j][i] for key in ("cos_u", "cos_v") for i in range(r)
                          for j in range(its.index(times[i]), len(its)))
        else:
            ahead, aligned = [float("inf")], 0.0
        checks.append(Check(f"{who}: one at a time (σ_(i+1) ≤ half its target when σ_i is fitted)",
                            done and max(ahead, default=0.0) <= 0.5,
                            f"largest σ_(i+1)(t_i)/σ*_(i+1) = {fmt(max(ahead, default=0.0))}"))
        checks.append(Check(f"{who}: after t_i the singular vectors are aligned, |⟨u_i, u_i*⟩|, "
                            f"|⟨v_i, v_i*⟩| ≥ {1 - s['c_vec']:g}", aligned >= 1 - s["c_vec"],
                            f"smallest alignment after t_i {fmt(aligned)}"))
    return checks


def _incremental_plot(data: dict, s: dict):
    fig, axes = subplots(3, width=4.5)
    r, star = s["rank"], data["sigma_star"]
    for name, style in zip(MODELS, ("-", "--")):
        rec = data[name]
        t, sig = rec["iterations"], np.asarray(rec["sigma"])
        for i in range(sig.shape[1]):
            axes[0].semilogy(t, sig[:, i], style, color=f"C{i % 10}" if i < r else "0.5", lw=1.3,
                             label=_NAMES[name] if i == 0 else None)
        for ax, key in ((axes[1], "cos_u"), (axes[2], "cos_v")):
            c = np.asarray(rec[key])
            for i in range(r):
                ax.plot(t, c[:, i], style, color=f"C{i % 10}", lw=1.3,
                        label=f"{_NAMES[name]}, i = {i + 1}" if name == "original" or i == 0 else None)
    for i, v in enumerate(star):
        axes[0].axhline(v, ls=":", color=f"C{i % 10}", lw=1)
    axes[0].set(xlabel="iteration", ylabel="σ_i(W_L:1(t))",
                title=f"singular values (dotted: σ_i*; grey: i > r = {r})")
    axes[1].set(xlabel="iteration", ylabel="|⟨u_i(t), u_i*⟩|", title="left singular vectors")
    axes[2].set(xlabel="iteration", ylabel="|⟨v_i(t), v_i*⟩|", title="right singular vectors")
    axes[0].legend(title="solid / dashed")
    axes[1].legend(ncol=2, fontsize=7)
    return fig


def _sizes(problem: str, rank: int, **extra) -> dict:
    base = dict(problem=problem, depth=3, scale=1e-3, alpha=1.5, lr=0.3, tol=1e-14, every=20,
                fit_rel=0.05, c_vec=0.05, **extra)
    return {
        "paper": {**base, "d": 100, "rank": rank, "max_iter": 30000},
        "quick": {**base, "d": 40, "rank": 3, "max_iter": 20000,
                  **({"fraction": 0.35} if problem == "completion" else {})},
    }


_SPECS = [
    ("000-fig4", "factorization", 5, {}, "Occurrence of the incremental learning phenomenon in deep matrix "
     "factorization: the first r = 5 singular values are fitted incrementally, along with their singular "
     "subspaces, corroborating Assumption 1."),
    ("000-fig7", "completion", 5, {"fraction": 0.2}, "Occurrence of the incremental learning phenomenon in "
     "matrix completion: the first r = 5 singular values are fitted incrementally, along with their "
     "singular subspaces."),
    ("000-fig8", "sensing", 5, {"measurements": 2000}, "Occurrence of the incremental learning phenomenon "
     "in matrix sensing: the first r = 5 singular values are fitted incrementally, along with their "
     "singular subspaces."),
    ("000-fig9", "factorization", 10, {}, "Occurrence of the incremental learning phenomenon in matrix "
     "factorization: the first r = 10 singular values are fitted incrementally, along with their singular "
     "subspaces."),
    ("000-fig10", "sensing", 10, {"measurements": 2000}, "Occurrence of the incremental learning phenomenon "
     "in matrix sensing: the first r = 10 singular values are fitted incrementally, along with their "
     "singular subspaces."),
    ("000-fig11", "completion", 10, {"fraction": 0.2}, "Occurrence of the incremental learning phenomenon "
     "in matrix completion: the first r = 10 singular values are fitted incrementally, along with their "
     "singular subspaces."),
    ("000-fig12", "factorization", 5, {}, "Incremental learning in matrix factorization, close up on the "
     "singular values: the matrix has rank r = 5, so the sixth singular value onwards stays (almost) "
     "unchanged from initialization; dotted lines are the targets σ_i*."),
]


def _register_all() -> None:
    for fig_id, problem, rank, extra, caption in _SPECS:
        sizes = _sizes(problem, rank, **extra)
        if problem == "sensing":  # M Gaussian d × d matrices cost M d² per step: quick d = 30, M = 600
            sizes["quick"].update(d=30, measurements=600)
        register(Figure(
            id=fig_id, paper=PAPER, caption=caption,
            claim=f"In deep matrix {problem}, DLN and C-DLN fit σ_1 … σ_r of the target one at a time and in "
                  "order (Assumption 1), each singular vector pair aligned with the target's once fitted.",
            sizes=sizes, estimate={"quick": 60 if problem == "sensing" else 30,
                                   "paper": 900 if problem == "sensing" else 200},
            compute=_incremental_compute, plot=_incremental_plot, check=_incremental_checks,
            notes="Seed 000 App. A.1: d = 100, L = 3, ε = 1e-3, r̂ = 2r, 20% observed (completion), M = 2000 "
                  "N(0, 1) sensing matrices. lowdim: σ_max(M*) = 1, step 0.3 (÷p, ÷M), α = 1.5 (the "
                  "paper's η = 10, α = 5 / 2 / 5 are for an unstated scale); 'fitted' means within 5% "
                  "of σ_i*; quick size d = 40 (30 with M = 600 for sensing), r = 3 (35% observed for "
                  "completion).",
            module=__name__,
        ))


_register_all()


# ----------------------------------------------------------------------------- Fig. 13
def _c_values(rec: dict, sigma_star: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """``c_val[t, i] = (σ_i(t) − σ_i*)²`` and ``c_vec[t, i] = 1 − min(|⟨u_i, u_i*⟩|, |⟨v_i, v_i*⟩|)``."""
    r = len(sigma_star)
    c_val = (np.asarray(rec["sigma"])[:, :r] - np.asarray(sigma_star)) ** 2
    c_vec = 1 - np.minimum(np.asarray(rec["cos_u"]), np.asarray(rec["cos_v"]))
    return c_val, c_vec


def _fig13_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    for name, style in zip(MODELS, ("-", "--")):
        c_val, c_vec = _c_values(data[name], data["sigma_star"])
        t = data[name]["iterations"]
        for i in range(c_val.shape[1]):
            lab = f"{_NAMES[name]}, i = {i + 1}"
            axes[0].semilogy(t, np.maximum(c_val[:, i], 1e-32), style, color=f"C{i}", label=lab)
            axes[1].semilogy(t, np.maximum(c_vec[:, i], 1e-17), style, color=f"C{i}", label=lab)
    axes[0].set(xlabel="iteration", ylabel="(σ_i(t) − σ_i*)²", title="c_val of each principal component")
    axes[1].set(xlabel="iteration", ylabel="1 − |⟨u_i, u_i*⟩| (worse of u, v)",
                title="c_vec of each principal component (floored at 1e-17)")
    axes[0].legend(ncol=2, fontsize=8)
    return fig


def _fig13_checks(data: dict, s: dict) -> list[Check]:
    checks = []
    for name in MODELS:
        c_val, c_vec = _c_values(data[name], data["sigma_star"])
        end = float(max(c_val[-1].max(), c_vec[-1].max()))
        t = np.asarray(data[name]["iterations"])
        below = np.maximum(c_val, c_vec) <= 1e-6
        small = [int(t[np.flatnonzero(below[:, i])[0]]) if below[:, i].any() else None
                 for i in range(c_val.shape[1])]
        ordered = None not in small and small == sorted(small)
        checks += [
            Check(f"{_NAMES[name]}: c_val and c_vec end ≤ {s['c_final']:g} for every i ≤ r",
                  end <= s["c_final"], f"largest at the end {fmt(end)}"),
            Check(f"{_NAMES[name]}: they drop below 1e-6 one component after the other (t_1 ≤ t_2 ≤ …)",
                  ordered, f"iterations {small}"),
        ]
    return checks


register(Figure(
    id="000-fig13", paper=PAPER,
    caption="c_val and c_vec throughout GD (deep matrix factorization, d = 100, rank 3): after t_i, when the "
            "i-th principal component is learned (Assumption 1), c_val and c_vec are very close to 0 "
            "(smaller than approximately 1e-15).",
    claim="After each component is learned, in order, c_val = (σ_i − σ_i*)² and c_vec = 1 − ⟨u_i, u_i*⟩ fall "
          "to round-off (≤ 1e-12 at the end) for DLN and C-DLN.",
    sizes={k: {**v, "tol": 1e-30, "max_iter": 20000, "c_final": 1e-12}
           for k, v in _sizes("factorization", 3).items()},
    estimate={"quick": 40, "paper": 120},
    compute=_incremental_compute, plot=_fig13_plot, check=_fig13_checks,
    notes="Seed 000 App. A.1 (d = 100, rank 3, L = 3, ε = 1e-3; the paper's step 5 is for an unstated "
          "scale): lowdim uses step 0.3 with σ_max(M*) = 1 and trains to the iteration cap.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 3
def _fig3_compute(s: dict, seed: int, progress: bool) -> dict:
    out = {}
    for problem in ("factorization", "completion"):
        op, truth, lr = _problem({**s, "problem": problem}, seed)
        u_star, _, vh_star = torch.linalg.svd(truth)
        model = DeepFactorization([s["d"]] * (s["depth"] + 1), scale=s["scale"], random_state=seed)
        rec = {"iterations": [], "left": [], "right": []}

        def observe(t: int, m: DeepFactorization, loss: float, rec=rec, u1=u_star[:, 0], v1=vh_star[0]):
            with torch.no_grad():
                top_left = torch.linalg.svd(m.factors[-1])[0][:, 0]   # first principal component of W_L
                top_right = torch.linalg.svd(m.factors[0])[2][0]      # ... and of W_1 (right side)
            rec["iterations"].append(t)
            rec["left"].append(float((top_left @ u1).abs()))
            rec["right"].append(float((top_right @ v1).abs()))

        h = train(model, op, lr=lr, max_iter=s["max_iter"], tol=s["tol"], eval_every=s["every"],
                  callback=observe)
        if rec["iterations"][-1] != h.iterations[-1]:  # the final iterate (no callback on tol)
            observe(h.iterations[-1], model, h.loss[-1])
        out[problem] = rec
    return out


def _fig3_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    for ax, problem in zip(axes, ("factorization", "completion")):
        rec = data[problem]
        ax.plot(rec["iterations"], rec["left"], label="|⟨u_1(W_L(t)), u_1*⟩|", color="C0")
        ax.plot(rec["iterations"], rec["right"], "--", label="|⟨v_1(W_1(t)), v_1*⟩|", color="C1")
        ax.set(xlabel="iteration", ylabel="similarity", title=f"deep matrix {problem}", ylim=(-0.02, 1.02))
        ax.legend(loc="lower right")
    return fig


def _fig3_check(data: dict, s: dict) -> list[Check]:
    out = []
    for problem in ("factorization", "completion"):
        rec = data[problem]
        start, end = min(rec["left"][0], rec["right"][0]), min(rec["left"][-1], rec["right"][-1])
        out.append(Check(f"{problem}: W_L's and W_1's first principal components align with u_1*, v_1* "
                         "(similarity ≥ 0.99 at the end, from a random start)", end >= 0.99 and start < 0.9,
                         f"at t = 0: {fmt(start)}, at the end: {fmt(end)}"))
    return out


register(Figure(
    id="000-fig3", paper=PAPER,
    caption="Motivating spectral initialization when starting from an orthogonal initialization: similarity "
            "between the first principal component of W_L(t) and U* (and of W_1(t) and V*), for matrix "
            "factorization and completion. The DLN factors fit the singular vectors of the target M*.",
    claim="Trained from an ε-orthogonal initialization, the first principal components of the outer factors "
          "W_L and W_1 end aligned with the target's top singular vectors u_1*, v_1*.",
    sizes={"paper": dict(d=100, rank=5, depth=3, scale=1e-3, lr=0.3, fraction=0.3, tol=1e-14, every=20,
                         max_iter=20000),
           "quick": dict(d=40, rank=3, depth=3, scale=1e-3, lr=0.3, fraction=0.35, tol=1e-14, every=20,
                         max_iter=20000)},
    estimate={"quick": 30, "paper": 150},
    compute=_fig3_compute, plot=_fig3_plot, check=_fig3_check,
    notes="Similarity is |⟨u_1(W_L(t)), u_1*⟩| of the top singular vectors (the paper does not define it); "
          "original DLN, σ_max(M*) = 1, step 0.3 (÷p for completion).",
    module=__name__,
))
