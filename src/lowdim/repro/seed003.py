"""Figures of seed 003 (Yaras, Wang, Balzano, Qu: compressible dynamics in deep overparameterized
low-rank learning and adaptation): Figs. 2, 3, 4, 5 and 10 (deep matrix factorization/completion).

Scale: lowdim's synthetic targets have σ_max(Φ) = 1 and the completion loss is ``½ Σ_Ω (ŵ − y)²``, so
step sizes are ``0.5 / p`` (the demo's) rather than the papers' unstated-scale values, and the bases'
ratio γ is :func:`lowdim.default_gamma` (0.15 at L = 3), the paper's γ = 0.01 carried to this scale.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..compression import invariant_bases, invariant_subspace_compression, narrow_factorization
from ..datasets import completion_problem, low_rank_matrix
from ..defaults import default_gamma
from ..dynamics import angles_to_reference, invariant_residuals, repeated_values
from ..factorization import DeepFactorization
from ..operators import FullObservation, MeasurementOperator
from ..theory import compression_gap_bound, rho_recursion
from ..training import train
from ._common import COLORS, fmt, gaps, history_data, joint_pca, reached, run_recorded, subplots
from ._registry import Check, Figure, register

PAPER = "003 (Yaras et al., compressible dynamics)"
#: The figures this module registers, by id (seed 004 re-registers some under its own captions).
FIGURES: dict[str, Figure] = {}


def _register(figure: Figure) -> None:
    FIGURES[figure.id] = register(figure)


# ----------------------------------------------------------------------------- Fig. 2
def _fig2_compute(s: dict, seed: int, progress: bool) -> dict:
    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    op, runs = pb.operator(), []
    grid = [(L, w) for L in s["depths"] for w in s["widths"]]
    for depth, width in tqdm(grid, desc="003-fig2", disable=not progress):
        model = DeepFactorization([s["d"]] + [width] * (depth - 1) + [s["d"]], scale=s["scale"],
                                  random_state=seed)
        h = train(model, op, lr=s["lr_times_p"] / s["fraction"], max_iter=s["max_iter"], tol=s["tol"],
                  truth=pb.truth, eval_every=s["eval_every"])
        runs.append({"depth": depth, "width": width, "error": h.error[-1], "iterations": h.iterations[-1],
                     "converged": h.stop_reason == "tol"})
    return {"runs": runs}


def _series(data: dict, depth: int, key: str) -> tuple[list, list]:
    rows = [r for r in data["runs"] if r["depth"] == depth]
    return [r["width"] for r in rows], [r[key] for r in rows]


def _fig2_plot(data: dict, s: dict):
    fig, (a, b) = subplots(2)
    for depth in s["depths"]:
        w, err = _series(data, depth, "error")
        a.loglog(w, err, "o-", label=f"L = {depth}", color=COLORS.get(f"L={depth}"))
        w, its = _series(data, depth, "iterations")
        _, conv = _series(data, depth, "converged")
        b.semilogy(w, its, "o-", label=f"L = {depth}", color=COLORS.get(f"L={depth}"))
        capped = [(x, y) for x, y, c in zip(w, its, conv) if not c]
        if capped:
            b.plot(*zip(*capped), "x", ms=10, color="k",
                   label="hit the iteration cap" if depth == 2 else None)
    a.set(xlabel="width", ylabel="relative recovery error", title="recovery error vs width")
    b.set(xlabel="width", ylabel=f"GD iterations to relative loss {s['tol']:g}",
          title="iterations to converge vs width")
    a.legend()
    b.legend()
    return fig


def _fig2_check(data: dict, s: dict) -> list[Check]:
    deep = [r for r in data["runs"] if r["depth"] == max(s["depths"])]
    shallow = [r for r in data["runs"] if r["depth"] == min(s["depths"])]
    worst = max(r["error"] for r in deep)
    grow = shallow[-1]["error"] / shallow[0]["error"]
    its = [r["iterations"] for r in deep]
    return [
        Check(f"depth-{deep[0]['depth']} error ≤ {s['deep_error_max']:g} at every width",
              worst <= s["deep_error_max"], f"largest {fmt(worst)}"),
        Check(f"depth-{shallow[0]['depth']} error grows with width (widest/narrowest ≥ 5)", grow >= 5,
              f"{fmt(shallow[0]['error'])} at width {shallow[0]['width']} → {fmt(shallow[-1]['error'])} "
              f"at width {shallow[-1]['width']} (×{fmt(grow)})"),
        Check(f"width speeds up depth-{deep[0]['depth']} convergence (widest < narrowest iterations)",
              all(r["converged"] for r in deep) and its[-1] < its[0],
              f"{its[0]} iterations at width {deep[0]['width']} → {its[-1]} at width {deep[-1]['width']}"),
    ]


_register(Figure(
    id="003-fig2", paper=PAPER,
    caption="Benefits of depth & width in overparameterized matrix completion with d = 100, r* = 5, "
            "ε_l = 1e-3 and 30% of entries observed. Left: recovery error vs. width for shallow and deep "
            "factorizations. Right: number of GD iterations to converge to 1e-10 error vs. width.",
    claim="The depth-3 recovery error stays small (≤ 1e-4) at every width while the depth-2 error grows "
          "with width (overfitting), and wider depth-3 factorizations converge in fewer iterations.",
    sizes={
        "paper": dict(d=100, rank=5, fraction=0.3, scale=1e-3, depths=[2, 3], widths=[5, 10, 25, 50, 100],
                      lr_times_p=0.5, tol=1e-10, max_iter=20000, eval_every=50, deep_error_max=1e-4),
        "quick": dict(d=50, rank=3, fraction=0.3, scale=1e-3, depths=[2, 3], widths=[5, 12, 50],
                      lr_times_p=0.5, tol=1e-10, max_iter=10000, eval_every=100, deep_error_max=1e-4),
        "test": dict(d=40, rank=2, fraction=0.35, scale=1e-2, depths=[2, 3], widths=[2, 40],
                     lr_times_p=0.5, tol=1e-10, max_iter=2000, eval_every=50, deep_error_max=1e-4),
    },
    estimate={"quick": 90, "paper": 550},
    compute=_fig2_compute, plot=_fig2_plot, check=_fig2_check,
    notes="Widths are the hidden widths d_1 = … = d_{L−1}, ε-orthogonal (semi-orthogonal) initialization; "
          "step 0.5/p on the summed loss ½Σ_Ω; 'converge' is relative loss ≤ 1e-10 (the paper's '1e-10 "
          "error'); runs that hit the iteration cap are marked ×.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 3 (and 004 Fig. 3)
def svd_evolution(op: MeasurementOperator, s: dict, seed: int, progress: bool, label: str) -> dict:
    """Singular values of every factor over GD and the angles of their singular vectors to those at
    t = 1 (the first iterate with distinct values, cluster-aware), with Theorem 2.1's residuals."""
    d, r = s["d"], s["rank"]
    model = DeepFactorization([d] * (s["depth"] + 1), scale=s["scale"], random_state=seed)
    us, vs = invariant_bases(model, op, r)
    u2, v2 = [u[:, 2 * r:] for u in us], [v[:, 2 * r:] for v in vs]
    rho = rho_recursion([s["scale"]] * s["depth"], s["lr"], s["steps"], s.get("weight_decay", 0.0),
                        s.get("momentum", 0.0))
    layers = list(range(s["depth"])) if s.get("all_layers") else [0]
    rec = {l: {"sigma": [], "angle_v": [], "angle_u": []} for l in layers}
    refs, worst, iters = {}, [0.0], []

    def observe(t: int, m: DeepFactorization, loss: float) -> None:
        res = invariant_residuals(m, u2, v2, rho[t])
        worst[0] = max(worst[0], max(max(a, b) for a, b in res) / (rho[t, 0] * np.sqrt(d - 2 * r)))
        if t == 0 or (t % s["every"] and t != 1):
            return
        iters.append(t)
        for l in layers:
            u, sv, vh = torch.linalg.svd(m.factors[l].detach())
            refs.setdefault(l, (u, sv, vh.T))
            ur, sr, vr = refs[l]
            rec[l]["sigma"].append(sv.tolist())
            rec[l]["angle_v"].append(angles_to_reference(vh.T, sv, vr, sr))
            rec[l]["angle_u"].append(angles_to_reference(u, sv, ur, sr))

    h = train(model, op, lr=s["lr"], max_iter=s["steps"], weight_decay=s.get("weight_decay", 0.0),
              momentum=s.get("momentum", 0.0), callback=observe, progress=progress)
    repeated = min(  # over the recorded layers: singular values of W_l(T) equal to ρ_l(T)
        int(((torch.linalg.svdvals(model.factors[l].detach()) - rho[-1, l]).abs()
             <= 1e-9 * max(rho[-1, l], 1e-300)).sum()) for l in layers)
    return {"iterations": iters, "layers": {str(l + 1): rec[l] for l in layers}, "loss": h.loss[-1],
            "max_relative_residual": worst[0], "rho_final": float(rho[-1, 0]),
            "repeated_at_rho": repeated, "label": label}


def svd_evolution_plot(data: dict, s: dict):
    layers = data["layers"]
    fig, axes = subplots(3, nrows=len(layers), width=4.4, height=3.3)
    d, r = s["d"], s["rank"]
    t = np.asarray(data["iterations"])
    for row, (name, rec) in enumerate(layers.items()):
        ax = axes[3 * row: 3 * row + 3]
        sig = torch.as_tensor(rec["sigma"])
        rep = torch.stack([repeated_values(row) for row in sig])
        if bool((rep.sum(1) == d - 2 * r).all()):  # moving values, then the repeated one
            for i in range(2 * r):
                ax[0].plot(t, sig[~rep].reshape(len(t), -1)[:, i], lw=1.4, color=f"C{1 + i % 8}",
                           label="the other 2r" if i == 0 else None)
            ax[0].plot(t, sig[rep].reshape(len(t), -1)[:, 0], lw=3, color="0.4",
                       label=f"repeated (×{d - 2 * r}) = ρ(t)")
        else:
            ax[0].plot(t, sig.numpy(), lw=1)
        ax[0].set(xlabel="iteration t", ylabel="singular value", yscale="log", title=f"σ_i(t) of W_{name}")
        ax[0].legend()
        for a, key, vec in ((ax[1], "angle_v", "v"), (ax[2], "angle_u", "u")):
            y = np.asarray(rec[key])
            for i in range(y.shape[1]):
                moving = i < y.shape[1] - (d - 2 * r)
                a.plot(t, y[:, i], lw=1.4 if moving else 2.5, color=f"C{1 + i % 8}" if moving else "k",
                       label=("the other 2r" if i == 0 else None) if moving else
                       (f"invariant d − 2r = {d - 2 * r}" if i == y.shape[1] - 1 else None))
            a.set(xlabel="iteration t", ylabel="angle (radians)",
                  title=f"∠({vec}_i(t), {vec}_i(1)) of W_{name}")
            a.legend(loc="best")
    return fig


def svd_evolution_check(data: dict, s: dict) -> list[Check]:
    d, r = s["d"], s["rank"]
    which = "W_1" if len(data["layers"]) == 1 else "every W_l"
    rule = "eq. 6 with momentum" if s.get("momentum") else "eq. 6"
    angles = np.asarray([a for rec in data["layers"].values() for a in rec["angle_v"] + rec["angle_u"]])
    moved = float(angles[:, : 2 * r].max()) if angles.shape[1] == d else 0.0
    stay = float(angles[:, 2 * r:].max()) if angles.shape[1] == d else float("inf")
    return [
        Check(f"{which}(t) keeps a singular value ρ(t) ({rule}) repeated d − 2r = {d - 2 * r} times",
              data["repeated_at_rho"] >= d - 2 * r,
              f"{data['repeated_at_rho']} singular values equal ρ(T) = {fmt(data['rho_final'])}"),
        Check("the invariant subspaces stay put: ‖W_l V_l,2 − ρ_l U_l,2‖ ≤ 1e-8·ρ√(d−2r) at every t",
              data["max_relative_residual"] <= 1e-8,
              f"largest relative residual {fmt(data['max_relative_residual'])}"),
        Check(f"the d − 2r = {d - 2 * r} invariant singular vectors keep their angle (≤ 1e-6 rad) while "
              "the others rotate (≥ 0.3 rad)", stay <= 1e-6 and moved >= 0.3,
              f"invariant vectors' angles ≤ {fmt(stay)} rad, the others' up to {fmt(moved)} rad"),
    ]


def _fig3_compute(s: dict, seed: int, progress: bool) -> dict:
    op = FullObservation(low_rank_matrix(s["d"], s["d"], s["rank"], random_state=seed))
    return svd_evolution(op, s, seed, progress, "deep matrix factorization")


_SVD_SIZES = {
    "paper": dict(d=30, rank=3, depth=3, scale=1.0, lr=0.1, steps=2000, every=10),
    "quick": dict(d=30, rank=3, depth=3, scale=1.0, lr=0.1, steps=1000, every=10),
    "test": dict(d=20, rank=2, depth=3, scale=1.0, lr=0.1, steps=300, every=10),
}

_register(Figure(
    id="003-fig3", paper=PAPER,
    caption="Evolution of SVD of weight matrices: the first layer of an L = 3 deep matrix factorization "
            "of a random matrix with d = 30, r* = 3, ε_l = 1, GD without weight decay. Left: σ_i(t). "
            "Middle: ∠(v_i(t), v_i(0)). Right: ∠(u_i(t), u_i(0)).",
    claim="Only 2r singular values and vectors of W_1 move: d − 2r singular values stay equal to ρ(t) of "
          "eq. 6 and their singular subspaces stay fixed (Theorem 2.1).",
    sizes=_SVD_SIZES, estimate={"quick": 5, "paper": 10},
    compute=_fig3_compute, plot=svd_evolution_plot, check=svd_evolution_check,
    notes="At t = 0 the factor is ε·orthogonal, so its singular vectors are not unique; angles are "
          "measured to the SVD at t = 1 (the first iterate with distinct values), and for repeated "
          "values to the span of their cluster. Step 0.1, σ_max(Φ) = 1.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 4 (and 004 Fig. 1)
def dmf_compression(s: dict, seed: int, progress: bool) -> dict:
    """Full-width vs compressed deep matrix factorization from the same Θ(0) (seed 003 Sec. 2.3)."""
    phi = low_rank_matrix(s["d"], s["d"], s["rank"], random_state=seed)
    op = FullObservation(phi)
    full = DeepFactorization([s["d"]] * (s["depth"] + 1), scale=s["scale"], random_state=seed)
    t0 = time.perf_counter()
    small = invariant_subspace_compression(full, op, s["rank"], gamma=0.0)
    setup = time.perf_counter() - t0
    common = dict(lr=s["lr"], max_iter=s["max_iter"], tol=s["tol"], eval_every=s["eval_every"],
                  snapshot_every=s["snapshot_every"])
    h_small, traj_small = run_recorded(small, op, **common)
    h_full, traj_full = run_recorded(full, op, progress=progress, **common)
    norm = float(torch.linalg.matrix_norm(phi))
    loss0 = 0.5 * norm**2
    return {
        "pca": joint_pca({"full": traj_full, "compressed": traj_small}),
        "full": history_data(h_full), "compressed": history_data(h_small),
        "compression_seconds": setup, "relative_loss_scale": loss0,
        "max_gap": max(gaps(traj_full, traj_small, norm)),
        "gap_bound": float(np.sqrt(compression_gap_bound(s["d"], s["rank"], [s["scale"]] * s["depth"])))
        / norm,
        "trained": {"full": full.num_trainable(), "compressed": small.num_trainable()},
    }


def _pca_panel(ax, pca: dict, labels: dict) -> None:
    for name, pts in pca.items():
        p = np.asarray(pts)
        style = dict(marker="o", ms=3, lw=1.5) if name != "full" else dict(lw=4, alpha=0.5)
        ax.plot(p[:, 0], p[:, 1], label=labels.get(name, name), color=COLORS.get(name), **style)
        ax.plot(p[0, 0], p[0, 1], "k*", ms=9)
    ax.set(xlabel="principal component 1", ylabel="principal component 2",
           title="end-to-end trajectories (★ start)")
    ax.legend()


def dmf_plot(data: dict, s: dict):
    fig, (a, b) = subplots(2)
    tr = data["trained"]
    _pca_panel(a, data["pca"], {"full": f"original ({tr['full']:,} params)",
                                "compressed": f"compressed ({tr['compressed']:,} params)"})
    for name, offset in (("full", 0.0), ("compressed", data["compression_seconds"])):
        h = data[name]
        b.semilogy(np.asarray(h["seconds"]) + offset, np.asarray(h["loss"]) / data["relative_loss_scale"],
                   label="original" if name == "full" else "compressed (incl. compression)",
                   color=COLORS[name])
    b.set(xlabel="wall time (s)", ylabel="training loss / ½‖Φ‖²", title="training loss vs wall time")
    b.legend()
    return fig


def dmf_check(data: dict, s: dict) -> list[Check]:
    f, c = data["full"], data["compressed"]
    t_full = f["seconds"][-1]
    t_small = c["seconds"][-1] + data["compression_seconds"]
    speed = t_full / t_small
    same = f["stop_reason"] == c["stop_reason"] == "tol" and abs(f["iterations"][-1] - c["iterations"][-1]) \
        <= 0.01 * f["iterations"][-1] + 1
    return [
        Check("the compressed trajectory equals the original (max ‖f − f_C‖_F/‖Φ‖_F ≤ 1e-4; Prop. 2.2 "
              "bounds it by √((d−2r)∏ε_l²)/‖Φ‖_F)", data["max_gap"] <= 1e-4,
              f"max gap {fmt(data['max_gap'])} (bound {fmt(data['gap_bound'])}, float32 snapshots)"),
        Check(f"both reach relative loss {s['tol']:g} in the same number of iterations (±1%)", same,
              f"original {f['iterations'][-1]} ({f['stop_reason']}), compressed {c['iterations'][-1]} "
              f"({c['stop_reason']})"),
        Check(f"compressed is ≥ {s['min_speedup']:g}× faster in wall time", speed >= s["min_speedup"],
              f"{fmt(t_full)} s vs {fmt(t_small)} s: {fmt(speed)}×"),
    ]


DMF_SIZES = {
    "paper": dict(d=1000, rank=5, depth=3, scale=1e-3, lr=0.6, tol=1e-10, max_iter=20000, eval_every=20,
                  snapshot_every=5, min_speedup=10.0),
    "quick": dict(d=200, rank=5, depth=3, scale=1e-3, lr=0.6, tol=1e-10, max_iter=20000, eval_every=20,
                  snapshot_every=5, min_speedup=2.0),
    "test": dict(d=60, rank=3, depth=3, scale=1e-2, lr=0.6, tol=1e-8, max_iter=5000, eval_every=10,
                 snapshot_every=5, min_speedup=1.0),
}

_register(Figure(
    id="003-fig4", paper=PAPER,
    caption="Network compression for deep matrix factorization: original problem (2) vs. compressed "
            "problem (9) with L = 3, d = 1000, r = r* = 5, ε_l = 1e-3. Left: principal components of "
            "end-to-end GD trajectories. Right: training loss vs. wall-time.",
    claim="The compressed factorization (4Lr² trained numbers) follows the original end-to-end trajectory "
          "(to Prop. 2.2's bound) and reaches the same loss in the same iterations, many times faster.",
    sizes=DMF_SIZES, estimate={"quick": 70, "paper": 900},
    compute=dmf_compression, plot=dmf_plot, check=dmf_check,
    notes="Step 0.6 on ½‖W − Φ‖² with σ_max(Φ) = 1; both start from the same Θ(0); the compressed "
          "model's bases are frozen (γ = 0, training on the folded 2r × 2r problem); its time includes "
          "the compression step.",
    module=__name__,
))


# ----------------------------------------------------------------------------- Fig. 5
def _completion_ops(s: dict, seed: int):
    from ..completion.sparse import SparseEntryObservation

    pb = completion_problem(s["d"], s["d"], s["rank"], s["fraction"], random_state=seed)
    dense = pb.operator()
    return pb, dense, SparseEntryObservation.from_operator(dense)


def _fig5_compute(s: dict, seed: int, progress: bool) -> dict:
    pb, dense, sparse = _completion_ops(s, seed)
    full = DeepFactorization([s["d"]] * (s["depth"] + 1), scale=s["scale"], random_state=seed)
    gamma = default_gamma(s["depth"]) if s["gamma"] == "default" else s["gamma"]
    models, setup = {}, {}
    for name, g in (("compressed", gamma), ("gamma0", 0.0)):
        t0 = time.perf_counter()
        models[name] = invariant_subspace_compression(full, sparse, s["rank"], gamma=g)
        setup[name] = time.perf_counter() - t0
    common = dict(lr=s["lr_times_p"] / s["fraction"], max_iter=s["max_iter"], truth=pb.truth,
                  target_error=s["target_error"], eval_every=s["eval_every"],
                  snapshot_every=s["snapshot_every"])
    out, traj = {"gamma": gamma, "compression_seconds": setup}, {}
    for name in ("compressed", "gamma0"):
        h, traj[name] = run_recorded(models[name], sparse, **common)
        out[name] = history_data(h)
    h, traj["full"] = run_recorded(full, dense, progress=progress, **common)
    out["full"] = history_data(h)
    norm = float(torch.linalg.matrix_norm(pb.truth))
    out["max_gap"] = max(gaps(traj["full"], traj["compressed"], norm))
    with torch.no_grad():  # each model where it stopped
        end = full.product() - models["compressed"].product()
    out["final_gap"] = float(torch.linalg.matrix_norm(end)) / norm
    out["pca"] = joint_pca({k: traj[k] for k in ("full", "compressed", "gamma0")})
    return out


def _labels5(data: dict) -> dict:
    return {"full": "original", "compressed": f"compressed, γ = {data['gamma']:.3g}",
            "gamma0": "compressed, γ = 0"}


def _fig5_plot(data: dict, s: dict):
    fig, (a, b, c) = subplots(3, width=4.3)
    labels = _labels5(data)
    _pca_panel(a, data["pca"], labels)
    for name in ("full", "compressed", "gamma0"):
        h = data[name]
        offset = data["compression_seconds"].get(name, 0.0)
        b.semilogy(h["iterations"], h["error"], label=labels[name], color=COLORS[name])
        c.semilogy(np.asarray(h["seconds"]) + offset, h["error"], label=labels[name], color=COLORS[name])
    b.set(xlabel="iteration", ylabel="relative recovery error", title="recovery error vs iteration")
    c.set(xlabel="wall time (s)", ylabel="relative recovery error", title="recovery error vs wall time")
    b.legend()
    return fig


def _fig5_check(data: dict, s: dict) -> list[Check]:
    thr = 1e-3
    it_f, t_f = reached(_hist(data["full"]), thr)
    it_c, t_c = reached(_hist(data["compressed"]), thr)
    t_c = None if t_c is None else t_c + data["compression_seconds"]["compressed"]
    e_c, e_0 = data["compressed"]["error"][-1], data["gamma0"]["error"][-1]
    speed = t_f / t_c if t_f and t_c else None
    return [
        Check(f"compressed (γ = {data['gamma']:.3g}) recovers the matrix (error ≤ {thr:g})", it_c is not None,
              f"final error {fmt(e_c)}"),
        Check("γ = 0 does not (its final error ≥ 10× that of γ > 0)", e_0 >= 10 * e_c,
              f"γ = 0 final error {fmt(e_0)}"),
        Check("the compressed trajectory ultimately aligns with the original (their end points differ by "
              "≤ 1% of ‖Φ‖_F)", data["final_gap"] <= 0.01,
              f"end-point gap {fmt(data['final_gap'])}, "
              f"largest gap at equal iterations {fmt(data['max_gap'])}"),
        Check(f"compressed reaches error {thr:g} faster in wall time", speed is not None and speed > 1,
              f"original {fmt(t_f)} s ({fmt(it_f)} it.), compressed {fmt(t_c)} s ({fmt(it_c)} it.)"
              + (f": {fmt(speed)}×" if speed else "")),
    ]


def _hist(d: dict):
    from ..training import History

    return History.from_dict(d)


_register(Figure(
    id="003-fig5", paper=PAPER,
    caption="Network compression for deep matrix completion: original problem (10) vs. compressed "
            "problem (11) with γ discrepant updates (γ = 0.01) and ablating γ (γ = 0), L = 3, d = 1000, "
            "r = r* = 5, ε_l = 1e-3, 20% of entries observed. Left: principal components of the "
            "trajectories. Middle: recovery error vs. iteration. Right: recovery error vs. wall-time.",
    claim="With γ > 0 the compressed factorization ultimately aligns with the original trajectory and "
          "recovers the matrix faster in wall time; with γ = 0 (frozen bases) it does not recover.",
    sizes={
        "paper": dict(d=1000, rank=5, fraction=0.2, depth=3, scale=1e-3, gamma="default", lr_times_p=0.5,
                      max_iter=6000, target_error=1e-4, eval_every=10, snapshot_every=5),
        "quick": dict(d=150, rank=5, fraction=0.2, depth=3, scale=1e-3, gamma="default", lr_times_p=0.5,
                      max_iter=6000, target_error=1e-4, eval_every=10, snapshot_every=5),
        "test": dict(d=60, rank=2, fraction=0.3, depth=3, scale=1e-2, gamma="default", lr_times_p=0.5,
                     max_iter=2000, target_error=1e-4, eval_every=10, snapshot_every=5),
    },
    estimate={"quick": 80, "paper": 1200},
    compute=_fig5_compute, plot=_fig5_plot, check=_fig5_check,
    notes="γ is lowdim.default_gamma(L) = 0.15 at L = 3: the paper's γ = 0.01 carried to σ_max(Φ) = 1 data "
          "(the paper does not state its target's scale). Step 0.5/p on ½Σ_Ω; the compressed models train "
          "on the observed entries only; times include the compression step.",
    module=__name__, depends=("lowdim.completion.sparse",),
))


# ----------------------------------------------------------------------------- Fig. 10
def _fig10_compute(s: dict, seed: int, progress: bool) -> dict:
    pb, dense, sparse = _completion_ops(s, seed)
    full = DeepFactorization([s["d"]] * (s["depth"] + 1), scale=s["scale"], random_state=seed)
    common = dict(lr=s["lr_times_p"] / s["fraction"], max_iter=s["max_iter"], truth=pb.truth,
                  target_error=s["target_error"], eval_every=s["eval_every"])
    rows = []
    for rhat in tqdm(s["ranks"], desc="003-fig10", disable=not progress):
        t0 = time.perf_counter()
        comp = invariant_subspace_compression(full, sparse, rhat, gamma=default_gamma(s["depth"]))
        setup = time.perf_counter() - t0
        hc = train(comp, sparse, **common)
        narrow = narrow_factorization((s["d"], s["d"]), 2 * rhat, s["depth"], scale=s["scale"],
                                      random_state=seed)
        hn = train(narrow, sparse, **common)
        rows.append({"rank": rhat, "width": 2 * rhat,
                     "compressed": {"iterations": hc.iterations[-1], "seconds": setup + hc.seconds[-1],
                                    "error": hc.error[-1], "converged": hc.stop_reason == "target_error"},
                     "narrow": {"iterations": hn.iterations[-1], "seconds": hn.seconds[-1],
                                "error": hn.error[-1], "converged": hn.stop_reason == "target_error"}})
    return {"rows": rows}


def _fig10_plot(data: dict, s: dict):
    fig, (a, b) = subplots(2)
    ranks = [r["rank"] for r in data["rows"]]
    for name in ("compressed", "narrow"):
        label = "compressed (width 2r̂)" if name == "compressed" else "narrow, random init (width 2r̂)"
        for ax, key in ((a, "iterations"), (b, "seconds")):
            ax.plot(ranks, [r[name][key] for r in data["rows"]], "o-", label=label, color=COLORS[name])
            capped = [(r["rank"], r[name][key]) for r in data["rows"] if not r[name]["converged"]]
            if capped:
                ax.plot(*zip(*capped), "x", ms=10, color="k")
    a.set(xlabel="r̂", ylabel=f"iterations to error {s['target_error']:g}", title="iterations to converge",
          yscale="log")
    b.set(xlabel="r̂", ylabel="wall time (s)", title="time to converge", yscale="log")
    a.legend()
    return fig


def _fig10_check(data: dict, s: dict) -> list[Check]:
    rows = data["rows"]
    its_c = [r["compressed"]["iterations"] for r in rows]
    its_n = [r["narrow"]["iterations"] for r in rows]
    sec_c = [r["compressed"]["seconds"] for r in rows]
    sec_n = [r["narrow"]["seconds"] for r in rows]
    conv = all(r["compressed"]["converged"] for r in rows)
    flat = max(its_c) / min(its_c)
    return [
        Check("compressed needs fewer iterations than narrow at every r̂",
              conv and all(c < n for c, n in zip(its_c, its_n)), f"compressed {its_c}, narrow {its_n}"),
        Check("compressed iterations almost unaffected by r̂ (max/min ≤ 1.5)", conv and flat <= 1.5,
              f"max/min {fmt(flat)}"),
        Check("compressed takes less wall time than narrow at every r̂",
              conv and all(c < n for c, n in zip(sec_c, sec_n)),
              f"compressed {[fmt(x) for x in sec_c]} s, narrow {[fmt(x) for x in sec_n]} s"),
    ]


_register(Figure(
    id="003-fig10", paper=PAPER,
    caption="Comparing efficiency of compressed networks vs. randomly initialized narrow networks for deep "
            "matrix completion with different overestimated r and L = 3, d = 1000, r* = 5, ε_l = 1e-3, 20% "
            "observed. Left: number of iterations to converge. Right: wall-time to converge.",
    claim="Compressed factorizations converge in fewer iterations and less time than narrow factorizations "
          "of the same width 2r̂, with an iteration count almost independent of r̂.",
    sizes={
        "paper": dict(d=1000, rank=5, fraction=0.2, depth=3, scale=1e-3, ranks=[5, 10, 15, 20, 25],
                      lr_times_p=0.5, max_iter=30000, target_error=1e-3, eval_every=10),
        "quick": dict(d=150, rank=5, fraction=0.2, depth=3, scale=1e-3, ranks=[5, 10, 15],
                      lr_times_p=0.5, max_iter=12000, target_error=1e-3, eval_every=10),
        "test": dict(d=60, rank=2, fraction=0.3, depth=3, scale=1e-2, ranks=[2, 4],
                     lr_times_p=0.5, max_iter=3000, target_error=1e-3, eval_every=10),
    },
    estimate={"quick": 90, "paper": 1500},
    compute=_fig10_compute, plot=_fig10_plot, check=_fig10_check,
    notes="'Converge' is relative recovery error ≤ 1e-3. The narrow baseline is lowdim.narrow_factorization "
          "(width 2r̂, N(0, ε²/d) initialization); both train on the observed entries only; the compressed "
          "time includes the compression step. × marks runs that hit the iteration cap.",
    module=__name__, depends=("lowdim.completion.sparse",),
))


# ----------------------------------------------------------------------------- Fig. 9
def _fig9_compute(s: dict, seed: int, progress: bool) -> dict:
    from ..nonlinear.measure import nonlinear_gradient_spectrum

    phi = low_rank_matrix(s["d"], s["d"], s["rank"], random_state=seed)
    sv = nonlinear_gradient_spectrum(phi, s["depth"], layer=s["layer"], scale=s["scale"],
                                     activation=s["activation"], random_state=seed)
    return {"singular_values": sv.tolist()}


def _fig9_plot(data: dict, s: dict):
    fig, (a, b) = subplots(2)
    sv = np.asarray(data["singular_values"])
    k = min(len(sv), 50)
    a.semilogy(np.arange(1, len(sv) + 1), sv, ".", ms=3, color="C0")
    b.semilogy(np.arange(1, k + 1), sv[:k], "o-", ms=4, color="C0")
    for ax in (a, b):
        ax.axvline(s["rank"] + 0.5, color="C3", ls="--", label=f"r* = {s['rank']}")
        ax.set(xlabel="index i", ylabel=f"σ_i(∇_W{s['layer']} ℓ(Θ(0)))")
    a.set_title(f"full spectrum (d = {s['d']})")
    b.set_title(f"top {k}")
    a.legend()
    return fig


def _gap(sv: np.ndarray, upto: int) -> tuple[int, float]:
    """Index (1-based) of the largest ratio σ_i/σ_(i+1) among i ≤ upto, and that ratio."""
    ratios = sv[:upto] / sv[1: upto + 1]
    i = int(np.argmax(ratios))
    return i + 1, float(ratios[i])


def _fig9_check(data: dict, s: dict) -> list[Check]:
    sv, r = np.asarray(data["singular_values"]), s["rank"]
    where, gap = _gap(sv, 20)
    at_r = float(sv[r - 1] / sv[r])
    return [
        Check("the gradient is low-rank: its largest spectral gap (≥ 2×) comes within the top r* + 1 values",
              where <= r + 1 and gap >= 2, f"largest gap σ_{where}/σ_{where + 1} = {fmt(gap)}"),
        Check(f"the gap is right after the top r* = {r} (σ_{r}/σ_{r + 1} ≥ 2)", at_r >= 2,
              f"σ_{r}/σ_{r + 1} = {fmt(at_r)}"),
    ]


_register(Figure(
    id="003-fig9", paper=PAPER,
    caption="Low-rank gradient of non-linear factorizations at initialization: singular values of "
            "∇_W2 ℓ(Θ) at initialization for a non-linear factorization (13) with L = 3, d = 1000, r* = 5 "
            "and ε_l = 1e-3. The top 5 singular values separate from the tail of the spectrum.",
    claim="The gradient of the middle factor of W_3 σ(W_2 σ(W_1)) (ReLU) at a small initialization is "
          "low-rank: its top r* = 5 singular values separate from the tail.",
    sizes={"paper": dict(d=1000, rank=5, depth=3, layer=2, scale=1e-3, activation="relu"),
           "quick": dict(d=500, rank=5, depth=3, layer=2, scale=1e-3, activation="relu"),
           "test": dict(d=100, rank=5, depth=3, layer=2, scale=1e-3, activation="relu")},
    estimate={"quick": 5, "paper": 15},
    compute=_fig9_compute, plot=_fig9_plot, check=_fig9_check,
    notes="lowdim.nonlinear.nonlinear_gradient_spectrum: ε-orthogonal square factors, ReLU, σ_max(Φ) = 1.",
    module=__name__, depends=("lowdim.nonlinear.measure", "lowdim.nonlinear.models"),
))
