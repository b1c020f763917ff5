"""Full-width vs compressed deep matrix factorization (seed 003 Fig. 4 setting).

L = 3, d = 1000, r = r* = 5, ε_l = 1e-3, loss ½‖W_{L:1} − Φ‖_F² with σ_max(Φ) = 1, plain GD with
step η (default 0.6; stable up to ≈ 2/3 here). Both models start from the *same* initialization
Θ(0): the compressed one is ``invariant_subspace_compression(full, op, r, gamma=0)`` (seed 003
Sec. 2.3; 4Lr² trained numbers, frozen bases, so training runs on the folded 2r × 2r problem).

Reports, for each model, iterations and wall seconds to relative loss ``loss / ½‖Φ‖² ≤ 1e-10``
(compressed: including the compression step), seconds per iteration, the largest
‖f(Θ(t)) − f_C(Θ̃(t))‖_F² over the iterates checked (every ``--gap-every`` iterations, and all
iterations up to 50) against the bound (d − 2r)·∏ε_l² of Proposition 2.2, and the wall-time
speed-up. The gap checks run inside the full-width training callback; their time is measured and
subtracted from the full-width seconds.

Usage: ``python benchmarks/factorization.py [--d 1000] [--gap-every 25]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from lowdim import DeepFactorization, FullObservation, invariant_subspace_compression, train
from lowdim.datasets import low_rank_matrix
from lowdim.theory import compression_gap_bound


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--rank", type=int, default=5)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=0.6)
    ap.add_argument("--tol", type=float, default=1e-10, help="relative loss to reach")
    ap.add_argument("--max-iter", type=int, default=50000)
    ap.add_argument("--gap-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    d, r, depth, eps = args.d, args.rank, args.depth, args.scale
    op = FullObservation(low_rank_matrix(d, d, r, random_state=args.seed))
    full = DeepFactorization([d] * (depth + 1), init="orthogonal", scale=eps, random_state=args.seed)

    t0 = time.perf_counter()
    small = invariant_subspace_compression(full, op, r, gamma=0.0)
    compress_s = time.perf_counter() - t0
    common = dict(lr=args.lr, max_iter=args.max_iter, tol=args.tol)

    # Compressed first (cheap): keep every iterate's cores (4Lr² numbers each) for the gap checks.
    cores: list[list[torch.Tensor]] = []
    h_small = train(
        small, op, **common,
        callback=lambda t, m, loss: cores.append([f.detach().clone() for f in m.factors[1:-1]]),
    )
    v11t, u_l1 = small.factors[0].detach(), small.factors[-1].detach()
    print(f"compressed: {h_small.iterations[-1]} iterations, {h_small.seconds[-1]:.2f} s "
          f"(+ {compress_s:.2f} s compression), stop: {h_small.stop_reason}", flush=True)

    gap_max, gap_s, checked = 0.0, 0.0, 0

    def gap_check(t: int, model: DeepFactorization, loss: float) -> None:
        nonlocal gap_max, gap_s, checked
        if t >= len(cores) or (t > 50 and t % args.gap_every):
            return
        t1 = time.perf_counter()
        with torch.no_grad():
            inner = cores[t][0]
            for c in cores[t][1:]:
                inner = c @ inner
            f_c = u_l1 @ inner @ v11t
            gap_max = max(gap_max, float((model.product() - f_c).square().sum()))
        checked += 1
        gap_s += time.perf_counter() - t1

    h_full = train(full, op, **common, callback=gap_check, progress=sys.stderr.isatty())
    seconds_full = h_full.seconds[-1] - gap_s
    seconds_small = compress_s + h_small.seconds[-1]
    bound = compression_gap_bound(d, r, [eps] * depth)
    its_full, its_small = h_full.iterations[-1], h_small.iterations[-1]
    print(f"full width: {its_full} iterations, {seconds_full:.1f} s, stop: {h_full.stop_reason}")
    print()
    print(f"{'model':12s}{'trained':>10s}{'iters':>8s}{'seconds':>10s}{'ms/iter':>10s}")
    print(f"{'full':12s}{full.num_trainable():10d}{its_full:8d}{seconds_full:10.2f}"
          f"{1e3 * seconds_full / max(its_full, 1):10.3f}")
    print(f"{'compressed':12s}{small.num_trainable():10d}{its_small:8d}{seconds_small:10.3f}"
          f"{1e3 * h_small.seconds[-1] / max(its_small, 1):10.3f}")
    speedup = seconds_full / seconds_small
    print(f"speed-up (wall, to relative loss {args.tol:g}): {speedup:.0f}×; "
          f"per iteration {seconds_full / its_full / (h_small.seconds[-1] / its_small):.0f}×")
    print(f"max ‖f − f_C‖_F² over {checked} checked iterates: {gap_max:.3e} "
          f"(bound (d − 2r)∏ε² = {bound:.3e}, ratio {gap_max / bound:.4f})")
    ok = h_full.stop_reason == h_small.stop_reason == "tol"
    print(json.dumps({
        "benchmark": "factorization", "d": d, "iters_full": its_full, "iters_compressed": its_small,
        "seconds_full": round(seconds_full, 3), "seconds_compressed": round(seconds_small, 4),
        "speedup": round(speedup, 1), "max_gap": gap_max, "bound": bound, "converged": ok,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
