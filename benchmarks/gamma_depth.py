"""The bases' learning-rate ratio γ across depths: ``default_gamma(L)`` against a fixed γ = 0.15.

Seed 003 eq. 11 trains the compressed model's bases at γη. ``lowdim.defaults.default_gamma`` carries
one measured γ (0.15 at L = 3, σ_max = 1) to every depth by the rescaling law γ' = γ·s^{2/L}. This
benchmark checks it: a synthetic completion problem normalized as the estimator does (surrogate
σ_max = 1, loss weight 1/p), the full-width model and its compression built from the *same*
virtual initialization Θ(0) (signed permutations, ``ImplicitOrthogonalInit(block_size=1)``), GD at
η = 0.5 for each depth. Reports, per depth and γ, the largest relative gap
‖f_full(t) − f_comp(t)‖_F / ‖Φ‖_F over the run, the final recovery error and the iterations to
error 1e-3 (the full model's too).

Usage: ``python benchmarks/gamma_depth.py [--depths 2 3 4] [--size 150]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lowdim import ImplicitOrthogonalInit, default_gamma, invariant_subspace_compression, train
from lowdim.completion.sparse import SparseEntryObservation
from lowdim.datasets import completion_problem
from lowdim.gradients import observed_gradient
from lowdim.linalg import top_singular


def _run(model, op, truth, iters: int):
    trajectory = []
    history = train(model, op, lr=0.5, max_iter=iters, truth=truth, eval_every=10,
                    callback=lambda t, m, loss: trajectory.append(m.product().detach().clone()))
    return trajectory, history


def _reached(history) -> int | None:
    hit = history.first_below(1e-3)
    return None if hit is None else hit[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--true-rank", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--iters", type=int, default=4000)
    ap.add_argument("--scale", type=float, nargs="+", default=[1e-3, 1e-3, 0.03],
                    help="ε per depth (L = 4 needs a larger ε: its plateau at 1e-3 lasts ~1e6 steps)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    d, r = args.size, args.true_rank
    pb = completion_problem(d, d, r, args.fraction, random_state=0)
    p = pb.values.size / (d * d)
    rows, cols = torch.as_tensor(pb.rows), torch.as_tensor(pb.cols)
    values = torch.as_tensor(pb.values, dtype=torch.float64)
    s = float(top_singular(observed_gradient(rows, cols, values / p, (d, d)), 1)[1][0])
    op = SparseEntryObservation(pb.rows, pb.cols, pb.values / s, (d, d), weight=1 / p)
    truth = torch.as_tensor(pb.truth) / s
    norm = float(torch.linalg.matrix_norm(truth))
    out = {}
    for depth, eps in zip(args.depths, args.scale):
        init = ImplicitOrthogonalInit((d, d), depth, eps, block_size=1, random_state=0)
        full_traj, full = _run(init.to_model(), op, truth, args.iters)
        res = {"eps": eps, "full": {"final_error": full.error[-1], "iters_to_1e-3": _reached(full)}}
        for name, gamma in (("default_gamma", default_gamma(depth)), ("gamma_0.15", 0.15)):
            small = invariant_subspace_compression(init, op, r, gamma=gamma)
            traj, hist = _run(small, op, truth, args.iters)
            gap = max(float(torch.linalg.matrix_norm(a - b)) / norm for a, b in zip(full_traj, traj))
            res[name] = {"gamma": round(gamma, 4), "max_gap": gap, "final_error": hist.error[-1],
                         "iters_to_1e-3": _reached(hist)}
            print(f"L = {depth}  {name:14s} γ = {gamma:.4f}  max gap {gap:.3f}  final error "
                  f"{hist.error[-1]:.1e}  iterations to 1e-3 {_reached(hist)}  (full: "
                  f"{_reached(full)}, {full.error[-1]:.1e})", flush=True)
        out[str(depth)] = res
    print(json.dumps({"benchmark": "gamma_depth", "size": d, "depths": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
