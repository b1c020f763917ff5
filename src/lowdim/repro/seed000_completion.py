"""Seed 000's completion figures: Fig. 6 (synthetic and MovieLens 100K), Fig. 16 (η grid at α = 1) and
Fig. 17 (α on MovieLens).

C-DLN is :func:`lowdim.spectral_compression` (Algorithm 1) on a
:class:`lowdim.completion.SparseEntryObservation`, the original a full-width orthogonally initialized
DLN, both trained by :func:`lowdim.train`; AltMin is :class:`lowdim.completion.AltMin` with an
over-specified rank r̂ > r.

Scale (as :mod:`lowdim.repro.seed000`): synthetic targets have σ_max = 1 and the loss is summed, so steps
are ``c/p``. MovieLens ratings are divided by ``s = σ_max(Ω⊙Y/p)`` (the surrogate then has σ_max = 1, as
:class:`lowdim.completion.DeepMatrixCompletion` normalizes) with the loss weighted by ``1/p``; test RMSE is
reported in rating units. MovieLens is read from ``$LOWDIM_DATA/movielens-100k`` (default
``../shared/data``), a clear error where it is absent.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..completion import AltMin, SparseEntryObservation
from ..compression import spectral_compression
from ..datasets import completion_problem
from ..datasets.movielens import load_movielens_100k
from ..factorization import DeepFactorization
from ..operators import EntryObservation
from ..training import DivergenceError, History, TrainState, train
from ._common import COLORS, fmt, history_data, subplots
from ._registry import Check, Figure, register
from .seed000 import PAPER, _error_panels, _pair, _pair_checks

DEPENDS = ("lowdim.repro.seed000", "lowdim.completion.sparse", "lowdim.completion.baselines",
           "lowdim.completion.estimator")
NAMES = {"original": "DLN (original)", "compressed": "C-DLN (compressed)", "altmin": "AltMin"}
_ALTMIN_COLOR = COLORS["narrow"]


# ----------------------------------------------------------------------------- MovieLens
def movielens_split(top: int | None, seed: int) -> dict:
    """The seeded random 80/20 split of MovieLens 100K (:meth:`MovieLens100K.random_split`), as 0-based
    ``(rows, cols, values)`` arrays; with ``top``, only the ``top`` most active users and items (by number
    of ratings). The data comes from ``$LOWDIM_DATA`` (default ``../shared/data``)."""
    root = os.environ.get("LOWDIM_DATA") or os.path.join("..", "shared", "data")
    try:
        ml = load_movielens_100k(root)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"this figure trains on MovieLens 100K, which is not available here: {err} (set LOWDIM_DATA to "
            "the shared data folder holding movielens-100k/)") from err
    ratings = ml.ratings
    if top is None:
        users, items = np.arange(1, ml.shape[0] + 1), np.arange(1, ml.shape[1] + 1)
    else:
        users = np.sort(ratings["row"].value_counts().index[:top].to_numpy())
        items = np.sort(ratings["col"].value_counts().index[:top].to_numpy())
    out = {"shape": (len(users), len(items))}
    for name, part in zip(("train", "test"), ml.random_split(0.2, seed=seed)):
        keep = part["row"].isin(users) & part["col"].isin(items)
        part = part[keep]
        rows, cols = part["row"].to_numpy(), part["col"].to_numpy()
        out[name] = (np.searchsorted(users, rows), np.searchsorted(items, cols),
                     np.array(part["value"], dtype=np.float64))
    return out


class RatingsProblem:
    """Training and test operators of a ratings split in the normalized units of the module docstring."""

    def __init__(self, split: dict) -> None:
        r, c, v = split["train"]
        self.shape = split["shape"]
        self.fraction = v.size / (self.shape[0] * self.shape[1])
        self.scale = float(EntryObservation(r, c, v, self.shape).top_singular(1)[1][0])  # σ_max(Ω⊙Y/p)
        self.train = SparseEntryObservation(r, c, v / self.scale, self.shape, weight=1.0 / self.fraction)
        rt, ct, vt = split["test"]
        self.test = SparseEntryObservation(rt, ct, vt / self.scale, self.shape)
        self.split = split

    def rmse(self, model: DeepFactorization, op: SparseEntryObservation | None = None) -> float:
        """RMSE in rating units on ``op``'s entries (default: the test set)."""
        op = self.test if op is None else op
        with torch.no_grad():
            res = op.predict(model) - op.y  # predict is in the operator's (sorted) entry order
        return self.scale * float(torch.sqrt(torch.mean(res.double() ** 2)))


class RMSETracker:
    """A :func:`lowdim.train` callback recording the test and train RMSE; its own time is kept apart so
    that it can be taken off the recorded wall time (:meth:`curve`). A non-finite RMSE stops training."""

    def __init__(self, problem: RatingsProblem) -> None:
        self.problem = problem
        self.iterations: list[int] = []
        self.test_rmse: list[float] = []
        self.train_rmse: list[float] = []
        self.before: list[float] = []
        self.spent = 0.0
        self.nonfinite = False

    def __call__(self, it: int, model: DeepFactorization, loss: float) -> bool:
        t0 = time.perf_counter()
        self.iterations.append(int(it))
        self.test_rmse.append(self.problem.rmse(model))
        self.train_rmse.append(self.problem.rmse(model, self.problem.train))
        self.before.append(self.spent)
        self.spent += time.perf_counter() - t0
        self.nonfinite = not math.isfinite(self.test_rmse[-1])
        return self.nonfinite

    def curve(self, history: History, setup: float = 0.0) -> dict:
        """The recorded RMSE against iterations and training seconds (+ ``setup``, tracking excluded);
        non-finite records are left out (:func:`ratings_run` reports where a run diverged)."""
        secs = dict(zip(history.iterations, history.seconds))
        keep = [i for i, (a, b) in enumerate(zip(self.test_rmse, self.train_rmse))
                if math.isfinite(a) and math.isfinite(b)]
        return {"iterations": [self.iterations[i] for i in keep],
                "test_rmse": [self.test_rmse[i] for i in keep],
                "train_rmse": [self.train_rmse[i] for i in keep],
                "seconds": [setup + secs[self.iterations[i]] - self.before[i] for i in keep]}


def ratings_run(problem: RatingsProblem, model: DeepFactorization, s: dict, setup: float = 0.0,
                progress: bool = False) -> dict:
    """Train ``model`` on the ratings with test tracking; a divergence is recorded, not raised."""
    tracker, history, state = RMSETracker(problem), History(), TrainState()
    diverged_at = None
    try:
        train(model, problem.train, lr=s["lr"], max_iter=s["max_iter"], eval_every=s["eval_every"],
              callback=tracker, history=history, state=state, progress=progress)
    except DivergenceError:
        diverged_at = state.iteration  # the iteration whose loss was non-finite
    if tracker.nonfinite:
        diverged_at = tracker.iterations[-1]
    out = tracker.curve(history, setup)
    out.update(diverged=diverged_at is not None, diverged_at=diverged_at, setup_seconds=setup)
    return out


def _cdln(problem: RatingsProblem, s: dict, alpha: float) -> tuple[DeepFactorization, float]:
    t0 = time.perf_counter()
    model = spectral_compression(problem.train, s["rank_hat"], s["depth"], scale=s["scale"], alpha=alpha)
    return model, time.perf_counter() - t0


def altmin_ratings(problem: RatingsProblem, s: dict) -> dict:
    """AltMin (rank r̂) run for each iteration budget of ``s["altmin_iters"]`` (it has no callback, and
    is deterministic: each run retraces the previous one): test RMSE against its own fit time."""
    (r, c, v), (rt, ct, vt) = problem.split["train"], problem.split["test"]
    rows = {"iterations": [], "seconds": [], "test_rmse": [], "train_rmse": []}
    for k in s["altmin_iters"]:
        est = AltMin(rank=s["rank_hat"], max_iter=k, tol=0.0).fit((r, c), v, shape=problem.shape)
        rows["iterations"].append(est.n_iter_)
        rows["seconds"].append(est.fit_seconds_)
        rows["test_rmse"].append(est.rmse((rt, ct), vt))
        rows["train_rmse"].append(est.rmse((r, c), v))
    return rows


def first_time_below(curve: dict, level: float, key: str = "test_rmse") -> tuple[int | None, float | None]:
    """``(iteration, seconds)`` when ``curve[key]`` first drops to ``level`` (Nones if never)."""
    for it, value, sec in zip(curve["iterations"], curve[key], curve["seconds"]):
        if value <= level:
            return it, sec
    return None, None


def _best(curve: dict) -> float:
    finite = [v for v in curve["test_rmse"] if math.isfinite(v)]
    return min(finite) if finite else math.inf


# ----------------------------------------------------------------------------- Fig. 6
def _fig6_compute(s: dict, seed: int, progress: bool) -> dict:
    ml = s["movielens"]
    problem = RatingsProblem(movielens_split(ml["top"], seed))  # first: a missing data set stops at once
    syn = s["synthetic"]
    pb = completion_problem(syn["d"], syn["d"], syn["rank"], syn["fraction"], random_state=seed)
    op = SparseEntryObservation(pb.rows, pb.cols, pb.values, pb.shape)
    synthetic = _pair(op, pb.truth, syn, seed, syn["depth"], syn["lr"] / syn["fraction"], progress=progress)
    alt = AltMin(rank=syn["rank_hat"], max_iter=syn["altmin_iter"], tol=0.0).fit(
        (pb.rows, pb.cols), pb.values, shape=pb.shape, truth=pb.truth.numpy())
    synthetic["altmin"] = {"iterations": list(range(1, alt.n_iter_ + 1)), "error": alt.error_,
                           "seconds": alt.seconds_, "loss": alt.loss_}
    cdln, svd = _cdln(problem, ml, ml["alpha"])
    runs = {"compressed": ratings_run(problem, cdln, ml, setup=svd)}
    m, n = problem.shape
    width = max(m, n)
    orig = DeepFactorization([n] + [width] * (ml["depth"] - 1) + [m], scale=ml["scale"], random_state=seed)
    runs["original"] = ratings_run(problem, orig, ml, progress=progress)
    runs["altmin"] = altmin_ratings(problem, ml)
    info = {"shape": list(problem.shape), "train": int(problem.train.y.numel()),
            "test": int(problem.test.y.numel()), "normalization": problem.scale,
            "observed_fraction": problem.fraction}
    return {"synthetic": synthetic, "movielens": {**runs, "data": info}}


def _rmse_axes(ax, runs: dict, xkey: str) -> None:
    for name in ("original", "compressed", "altmin"):
        if name not in runs:
            continue
        run = runs[name]
        style = "o-" if name == "altmin" else "-"
        color = _ALTMIN_COLOR if name == "altmin" else COLORS[name]
        ax.plot(run[xkey], run["test_rmse"], style, ms=3, color=color, label=NAMES[name])
    best = min(_best(runs[k]) for k in runs if k in NAMES)
    ax.set_ylim(best - 0.03, best + 0.45)
    ax.set(xlabel="wall time (s), log scale" if xkey == "seconds" else "iteration",
           ylabel="test RMSE (rating units)", xscale="log" if xkey == "seconds" else "linear")


def _fig6_plot(data: dict, s: dict):
    fig, axes = subplots(2, nrows=2, height=3.3)
    syn, alt = data["synthetic"], data["synthetic"]["altmin"]
    _error_panels(axes[:2], syn)
    axes[0].semilogy(alt["iterations"], alt["error"], "o-", ms=3, color=_ALTMIN_COLOR,
                     label=f"AltMin (r̂ = {s['synthetic']['rank_hat']})")
    axes[1].semilogy(alt["seconds"], alt["error"], "o-", ms=3, color=_ALTMIN_COLOR)
    axes[0].legend()
    syn_s = s["synthetic"]
    axes[0].set_title(f"synthetic, d = {syn_s['d']}, r = {syn_s['rank']}, {syn_s['fraction']:.0%} observed")
    axes[1].set_title("recovery error vs wall time")
    ml = data["movielens"]
    _rmse_axes(axes[2], ml, "seconds")
    _rmse_axes(axes[3], ml, "iterations")
    shape = ml["data"]["shape"]
    axes[2].set_title(f"MovieLens 100K {shape[0]}×{shape[1]}, random 80/20, r̂ = {s['movielens']['rank_hat']}")
    axes[3].set_title("test RMSE vs iteration (AltMin: its iterations)")
    axes[2].legend()
    return fig


def _fig6_check(data: dict, s: dict) -> list[Check]:
    syn, ml = data["synthetic"], data["movielens"]
    checks = _pair_checks(syn, s["synthetic"], "synthetic completion")
    alt_err, c_err = syn["altmin"]["error"][-1], syn["compressed"]["error"][-1]
    checks.append(Check(f"AltMin with r̂ = {s['synthetic']['rank_hat']} > r does not recover: its final "
                        "recovery error is ≥ 10× C-DLN's",
                        alt_err >= 10 * max(c_err, s["synthetic"]["target_error"]),
                        f"AltMin {fmt(alt_err)} (training loss {fmt(syn['altmin']['loss'][-1])}), "
                        f"C-DLN {fmt(c_err)}"))
    best_o, best_c, best_a = _best(ml["original"]), _best(ml["compressed"]), min(ml["altmin"]["test_rmse"])
    level = 1.01 * best_o
    _, t_o = first_time_below(ml["original"], level)
    _, t_c = first_time_below(ml["compressed"], level)
    ratio = None if t_c is None or t_o is None else t_o / max(t_c, 1e-12)
    checks.append(Check("MovieLens: C-DLN reaches the DLN's best test RMSE (+1%) at least 5× sooner in wall "
                        "time", ratio is not None and ratio >= 5,
                        f"level {fmt(level)}: C-DLN {fmt(t_c)} s (incl. SVD), DLN {fmt(t_o)} s, "
                        f"ratio {fmt(ratio)}"))
    checks.append(Check("MovieLens: AltMin plateaus above the DLNs' best test RMSE",
                        best_a > min(best_o, best_c),
                        f"best test RMSE AltMin {fmt(best_a)} (last {fmt(ml['altmin']['test_rmse'][-1])}), "
                        f"DLN {fmt(best_o)}, C-DLN {fmt(best_c)}"))
    return checks


_ML_NOTES = ("MovieLens 100K (seed 0 random 80/20 split of u.data, no bias terms) divided by "
             "σ_max(Ω⊙Y/p) with the loss weighted by 1/p; at this scale the paper's η = 0.5 diverges "
             "with α = 5 and ε = 1e-3 leaves the second singular component unlearned for > 4000 "
             "iterations, so lowdim uses η = 0.2, ε = 0.1 (α = 5, r̂ = 10, L = 3 as the paper). "
             "AltMin's predictions are clipped to [1, 5] (its default for ratings, to its advantage); "
             "its curve is one run per iteration budget.")

register(Figure(
    id="000-fig6", paper=PAPER,
    caption="Results on matrix completion with synthetic and real data. Left: 30% observed entries of a rank "
            "r = 10 matrix. Right: MovieLens with r̂ = 10. The compressed network converges faster than the "
            "original network and outperforms overparameterized AltMin.",
    claim="Synthetic: C-DLN's recovery error is ≤ the DLN's at every iteration, it reaches the target first, "
          "and AltMin with r̂ > r fails to recover. MovieLens: C-DLN reaches the DLN's best test RMSE ≥ 5× "
          "sooner in wall time, and AltMin plateaus above the DLNs' best test RMSE.",
    sizes={
        "paper": dict(
            synthetic=dict(d=100, rank=10, fraction=0.3, depth=3, scale=1e-3, rank_hat=20, alpha=2.0, lr=0.3,
                           max_iter=15000, target_error=1e-4, eval_every=20, altmin_iter=50),
            movielens=dict(top=None, rank_hat=10, depth=3, scale=0.1, lr=0.2, alpha=5.0, max_iter=2000,
                           eval_every=20, altmin_iters=[1, 2, 3, 5, 8, 12, 20, 30, 50])),
        "quick": dict(
            synthetic=dict(d=60, rank=5, fraction=0.3, depth=3, scale=1e-3, rank_hat=10, alpha=2.0, lr=0.3,
                           max_iter=10000, target_error=1e-4, eval_every=20, altmin_iter=30),
            movielens=dict(top=200, rank_hat=10, depth=3, scale=0.1, lr=0.2, alpha=5.0, max_iter=1500,
                           eval_every=15, altmin_iters=[1, 2, 3, 5, 8, 12, 20, 30])),
    },
    estimate={"quick": 50, "paper": 2000},
    compute=_fig6_compute, plot=_fig6_plot, check=_fig6_check,
    notes=("Synthetic: seed 000 Sec. 4.1 (d = 100, r = 10, 30% observed, r̂ = 20, L = 3, ε = 1e-3) "
           "with σ_max = 1, step 0.3/p and α = 2 (the paper's η = 10, α = 5 are for an unstated "
           "scale; α = 5 diverges here); AltMin with rank r̂. "
           + _ML_NOTES +
           " Quick size: the 200 most active users and items (the full-width DLN on 943×1682 costs "
           "seconds per iteration on one core); paper size: all of them."),
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Fig. 16
def _grid_run(op, truth, s: dict, model_of, lr: float) -> dict:
    """One run of the η grid to the relative loss ``tol`` (a divergence is recorded)."""
    t0 = time.perf_counter()
    model = model_of()
    setup = time.perf_counter() - t0
    try:
        h = train(model, op, lr=lr, max_iter=s["max_iter"], tol=s["tol"], truth=truth,
                  eval_every=s["eval_every"])
    except DivergenceError:
        return {"lr": lr, "diverged": True, "converged": False}
    ok = h.stop_reason == "tol"
    return {"lr": lr, "diverged": False, "converged": ok, "iterations": h.iterations[-1],
            "seconds": setup + h.seconds[-1], "error": h.error[-1], "setup": setup,
            "history": history_data(h)}


def _fig16_compute(s: dict, seed: int, progress: bool) -> dict:
    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    op = SparseEntryObservation(pb.rows, pb.cols, pb.values, pb.shape)
    depth, eps = s["depth"], s["scale"]
    makers = {
        "original": lambda: DeepFactorization([s["d"]] * (depth + 1), scale=eps, random_state=seed),
        "compressed": lambda: spectral_compression(op, s["rank_hat"], depth, scale=eps, alpha=1.0),
    }
    out = {}
    for name, make in makers.items():
        rows = [_grid_run(op, pb.truth, s, make, c / s["fraction"])
                for c in tqdm(s["lr_grid"], desc=f"000-fig16 {name}", disable=not progress)]
        ok = [r for r in rows if r["converged"]]
        best = min(ok, key=lambda r: (r["iterations"], r["seconds"])) if ok else None
        for r in rows:  # keep the curves of the best step size only
            hist = r.pop("history", None)
            if r is best:
                out[f"{name}_history"] = {**hist, "setup": r["setup"]}
        out[name] = {"rows": rows, "best_lr": None if best is None else best["lr"]}
    return out


def _fig16_plot(data: dict, s: dict):
    fig, axes = subplots(3, width=4.4)
    p = s["fraction"]
    for name in ("original", "compressed"):
        rows = data[name]["rows"]
        conv = [r for r in rows if r["converged"]]
        axes[0].semilogy([r["lr"] * p for r in conv], [r["iterations"] for r in conv], "o-",
                         color=COLORS[name], label=NAMES[name])
        capped = [r for r in rows if not r["diverged"] and not r["converged"]]
        if capped:
            axes[0].plot([r["lr"] * p for r in capped], [r["iterations"] for r in capped],
                         "v" if name == "original" else "^", ms=9,
                         mfc="none", color=COLORS[name], label=f"{NAMES[name]}: not converged at the cap")
        bad = [r["lr"] * p for r in rows if r["diverged"]]
        if bad:
            axes[0].plot(bad, [s["max_iter"]] * len(bad), "x", ms=9, color=COLORS[name],
                         label=f"{NAMES[name]}: diverged")
        h = data.get(f"{name}_history")
        if h is not None:
            lab = f"{NAMES[name]}, best η = {data[name]['best_lr'] * p:.3g}/p"
            axes[1].semilogy(h["iterations"], h["error"], color=COLORS[name], label=lab)
            axes[2].semilogy(np.asarray(h["seconds"]) + h["setup"], h["error"], color=COLORS[name], label=lab)
    done = [r["iterations"] for n in ("original", "compressed") for r in data[n]["rows"] if r["converged"]]
    axes[0].set_ylim(min(done, default=s["max_iter"]) / 5, 2 * s["max_iter"])  # room for the legend below
    axes[0].set(xlabel="η · p (step size c of η = c/p)", ylabel=f"iterations to relative loss {s['tol']:g}",
                title="η grid at α = 1")
    axes[1].set(xlabel="iteration", ylabel="relative recovery error", title="at the best η of each network")
    axes[2].set(xlabel="wall time (s)", ylabel="relative recovery error",
                title="error vs wall time (C-DLN incl. SVD)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    return fig


def _fig16_check(data: dict, s: dict) -> list[Check]:
    best = {}
    for name in ("original", "compressed"):
        rows = [r for r in data[name]["rows"] if r["converged"]]
        best[name] = min(rows, key=lambda r: (r["iterations"], r["seconds"])) if rows else None
    o, c = best["original"], best["compressed"]
    desc = "; ".join(f"{NAMES[k]}: " + ("never converged" if b is None else
                                         f"η = {b['lr'] * s['fraction']:.3g}/p, {b['iterations']} it., "
                                         f"{fmt(b['seconds'])} s") for k, b in best.items())
    both = o is not None and c is not None
    return [
        Check("at its best η (α = 1), C-DLN converges in fewer iterations than the DLN at its best η",
              c is not None and (o is None or c["iterations"] < o["iterations"]), desc),
        Check("and in less wall time (SVD included)",
              c is not None and (o is None or c["seconds"] < o["seconds"]),
              desc if not both else f"{fmt(c['seconds'])} s vs {fmt(o['seconds'])} s "
              f"(ratio {fmt(o['seconds'] / c['seconds'])})"),
    ]


register(Figure(
    id="000-fig16", paper=PAPER,
    caption="Ablation study on the compressed DLN with α = 1 and different learning rates η for both "
            "networks: a grid search of 20 evenly spaced steps for η ∈ [10, 100], choosing the η that "
            "converges the fastest to a tolerance of 1e-12. The original network still converges slower than "
            "the compressed network.",
    claim="With α = 1 and each network at the step size of its η grid that reaches the relative loss 1e-12 "
          "in the fewest iterations, C-DLN converges in fewer iterations and less wall time than the DLN.",
    sizes={
        "paper": dict(d=100, rank=10, fraction=0.3, depth=3, scale=1e-3, rank_hat=20,
                      lr_grid=[round(0.1 + 0.9 * k / 19, 4) for k in range(20)], tol=1e-12, max_iter=30000,
                      eval_every=20),
        "quick": dict(d=60, rank=5, fraction=0.3, depth=3, scale=1e-3, rank_hat=10,
                      lr_grid=[0.1, 0.2, 0.3, 0.45, 0.6], tol=1e-12, max_iter=12000, eval_every=20),
        "test": dict(d=30, rank=2, fraction=0.4, depth=3, scale=1e-2, rank_hat=4, lr_grid=[0.3, 0.45],
                     tol=1e-8, max_iter=2000, eval_every=10),
    },
    estimate={"quick": 70, "paper": 1500},
    compute=_fig16_compute, plot=_fig16_plot, check=_fig16_check,
    notes=("Synthetic completion of Sec. 4.1 (d = 100, r = 10, 30% observed, r̂ = 20, L = 3, ε = "
           "1e-3) at σ_max = 1 with the summed loss: the paper's η ∈ [10, 100] (20 steps) becomes η = "
           "c/p with c ∈ [0.1, 1.0] (20 steps; quick: 5); tolerance 1e-12 on the relative training "
           "loss; diverged steps are marked ×."),
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Fig. 17
def _fig17_compute(s: dict, seed: int, progress: bool) -> dict:
    problem = RatingsProblem(movielens_split(s["top"], seed))
    runs = []
    for alpha in tqdm(s["alphas"], desc="000-fig17", disable=not progress):
        model, svd = _cdln(problem, s, alpha)
        runs.append({"alpha": alpha, **ratings_run(problem, model, s, setup=svd)})
    return {"runs": runs, "data": {"shape": list(problem.shape), "normalization": problem.scale}}


def _fig17_plot(data: dict, s: dict):
    fig, axes = subplots(2)
    cmap = __import__("matplotlib").colormaps["viridis"]
    finite = [_best(r) for r in data["runs"] if math.isfinite(_best(r))]
    for k, run in enumerate(data["runs"]):
        color = cmap(0.85 * k / max(1, len(data["runs"]) - 1))  # no pale yellow
        lab = f"α = {run['alpha']:g}" + (f" (diverged at it. {run['diverged_at']})"
                                         if run["diverged"] else "")
        axes[0].plot(run["iterations"], run["test_rmse"], color=color, label=lab)
        axes[1].plot(run["seconds"], run["test_rmse"], color=color, label=lab)
    for ax, x in zip(axes, ("iteration", "wall time (s)")):
        if finite:
            ax.set_ylim(min(finite) - 0.03, min(finite) + 0.45)
        ax.set(xlabel=x, ylabel="test RMSE (rating units)")
    for k, run in enumerate(data["runs"]):  # where a run diverged: × at the top of the panels
        if run["diverged"]:
            color = cmap(0.85 * k / max(1, len(data["runs"]) - 1))  # no pale yellow
            for ax, x in zip(axes, (run["diverged_at"], run["seconds"][-1] if run["seconds"] else 0.0)):
                ax.plot([x], [ax.get_ylim()[1]], "x", ms=10, mew=2, color=color, clip_on=False)
    shape = data["data"]["shape"]
    axes[0].set_title(f"C-DLN on MovieLens {shape[0]}×{shape[1]}, η = {s['lr']}")
    axes[1].set_title("test RMSE vs wall time (incl. SVD)")
    axes[0].legend(fontsize=8)
    return fig


def _describe(alpha: float, run: dict) -> str:
    if run["diverged"]:
        return f"α = {alpha:g}: diverged at iteration {run['diverged_at']}"
    return f"α = {alpha:g}: best {fmt(_best(run))}, last {fmt(run['test_rmse'][-1])}"


def _fig17_check(data: dict, s: dict) -> list[Check]:
    runs = {r["alpha"]: r for r in data["runs"]}
    a_ref = s["alpha_ref"]
    ref = runs[a_ref]
    best_ref = _best(ref)
    large = [a for a in runs if a > s["alpha_ref"]]
    top = runs[max(runs)]
    rise = None if top["diverged"] else top["test_rmse"][-1] / _best(top)
    large_desc = "; ".join(_describe(a, runs[a]) for a in large)
    level = 1.05 * min(_best(r) for r in data["runs"] if math.isfinite(_best(r)))
    small = runs[min(runs)]
    it_small, t_small = first_time_below(small, level)
    it_ref, t_ref = first_time_below(ref, level)
    return [
        Check(f"the largest α = {max(runs):g} diverges (non-finite loss) or overfits (test RMSE ends ≥ 5% "
              "above its best)", top["diverged"] or rise >= 1.05,
              _describe(max(runs), top) + ("" if top["diverged"] else f", last/best {fmt(rise)}")),
        Check(f"every α > {a_ref:g} diverges or reaches a higher best test RMSE than α = {a_ref:g} "
              f"({fmt(best_ref)})",
              bool(large) and all(runs[a]["diverged"] or _best(runs[a]) > best_ref for a in large),
              large_desc),
        Check(f"small α = {min(runs):g} converges slower: more iterations than α = {a_ref:g} to reach test "
              f"RMSE {fmt(level)} (1.05 × the best of all α)",
              it_ref is not None and (it_small is None or it_small > it_ref),
              f"α = {min(runs):g}: {fmt(it_small)} it. / {fmt(t_small)} s, α = {a_ref:g}: {fmt(it_ref)} "
              f"it. / {fmt(t_ref)} s"),
    ]


register(Figure(
    id="000-fig17", paper=PAPER,
    caption="Ablation study on α on the MovieLens dataset: for large values of α the compressed network can "
            "overfit, whereas smaller values of α increase the time it takes for the model to converge.",
    claim="On MovieLens, the largest α diverges or overfits, every α above the paper's α = 5 diverges or "
          "reaches a worse best test RMSE, and the smallest α needs more iterations to reach a good test "
          "RMSE.",
    sizes={
        "paper": dict(top=None, rank_hat=10, depth=3, scale=0.1, lr=0.2, alphas=[0.1, 1.0, 5.0, 10.0, 50.0],
                      alpha_ref=5.0, max_iter=5000, eval_every=25),
        "quick": dict(top=None, rank_hat=10, depth=3, scale=0.1, lr=0.2, alphas=[0.1, 1.0, 5.0, 10.0, 50.0],
                      alpha_ref=5.0, max_iter=1500, eval_every=15),
        "test": dict(top=150, rank_hat=5, depth=3, scale=0.1, lr=0.2, alphas=[0.1, 5.0, 50.0], alpha_ref=5.0,
                     max_iter=400, eval_every=10),
    },
    estimate={"quick": 40, "paper": 100},
    compute=_fig17_compute, plot=_fig17_plot, check=_fig17_check,
    notes="The paper does not list its α values; lowdim uses {0.1, 1, 5, 10, 50}. "
          + _ML_NOTES.split(" AltMin")[0],
    module=__name__, depends=DEPENDS,
))
