"""Scale of sparse compressed training: cost per iteration against the number of observed entries.

Square rank-5 matrices with σ_max = 1 given as factors ``Φ = P Qᵀ`` (never formed), 100 observed
entries per row drawn uniformly: 10⁴ rows / 10⁶ entries, 3·10⁴ / 3·10⁶, 10⁵ / 10⁷. The model is the
spectral compressed deep factorization (C-DLN, seed 000 Algorithm 1; depth 3, width r̂ = 5) trained
by GD on the observed entries only (loss weight 1/p, see ``docs/completion.md``); the relative
recovery error ‖W − Φ‖_F/‖Φ‖_F is computed from Gram matrices of the factors. Reports seconds per
iteration, total seconds (data set-up excluded, compression included) to error 1e-2, the final
error and the peak resident memory of the process.

Usage: ``python benchmarks/completion_scale.py [--entries 1e6 3e6 1e7]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from lowdim import train
from lowdim.completion import SparseEntryObservation
from lowdim.compression import spectral_compression


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def make_problem(rows: int, entries: int, rank: int, seed: int):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((rows, rank))
    q = rng.standard_normal((rows, rank))
    # σ_max(P Qᵀ) = 1
    rp = np.linalg.qr(p, mode="r")
    rq = np.linalg.qr(q, mode="r")
    smax = np.linalg.norm(rp @ rq.T, 2)
    p /= np.sqrt(smax)
    q /= np.sqrt(smax)
    flat = np.unique(rng.integers(0, rows * rows, size=int(entries * 1.1), dtype=np.int64))
    while flat.size < entries:
        more = rng.integers(0, rows * rows, size=entries, dtype=np.int64)
        flat = np.unique(np.concatenate([flat, more]))
    flat = rng.permutation(flat)[:entries]
    flat.sort()
    r, c = flat // rows, flat % rows
    vals = np.empty(entries)
    step = 1 << 20
    for s in range(0, entries, step):
        vals[s : s + step] = np.einsum("ij,ij->i", p[r[s : s + step]], q[c[s : s + step]])
    return r, c, vals, torch.as_tensor(p), torch.as_tensor(q)


def run(rows: int, entries: int, args) -> dict:
    r, c, v, p, q = make_problem(rows, entries, args.rank, args.seed)
    frac = entries / rows**2
    op = SparseEntryObservation(r, c, v, (rows, rows), weight=1.0 / frac)
    del r, c, v
    t0 = time.perf_counter()
    model = spectral_compression(op, args.rank, 3, scale=args.init_scale, alpha=args.alpha)
    build = time.perf_counter() - t0
    h = train(model, op, lr=args.lr, max_iter=args.max_iter, target_error=1e-2,
                     truth=(p, q), eval_every=args.eval_every, max_time=args.max_time)
    hit = h.first_below(1e-2)
    out = {
        "rows": rows,
        "entries": entries,
        "seconds_per_iter": h.seconds[-1] / max(h.iterations[-1], 1),
        "seconds_total": round(build + hit[1], 2) if hit else None,
        "iterations": hit[0] if hit else h.iterations[-1],
        "compression_seconds": round(build, 2),
        "error": h.error[-1],
        "peak_mem_gb": round(peak_gb(), 3),
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=float, nargs="+", default=[1e6, 3e6, 1e7])
    ap.add_argument("--per-row", type=int, default=100)
    ap.add_argument("--rank", type=int, default=5)
    ap.add_argument("--init-scale", type=float, default=0.3)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--max-iter", type=int, default=2000)
    ap.add_argument("--max-time", type=float, default=900.0)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [run(int(e) // args.per_row, int(e), args) for e in args.entries]
    print(json.dumps({"benchmark": "completion_scale", "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
