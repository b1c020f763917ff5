"""Scale of sparse compressed training: time and memory against the number of observed entries.

Rank-10 ``m × n`` matrices (``m = 10 n``) with σ_max = 1 given as factors ``Φ = P Qᵀ`` (never
formed), 100 observed entries per row drawn uniformly without repetition: 10⁴ × 10³ / 10⁶
entries, 10⁵ × 10⁴ / 10⁷, 10⁶ × 10⁵ / 10⁸. The model is the spectral compressed deep
factorization (C-DLN, seed 000 Algorithm 1; depth 3, width r̂ = 10) in **float32**, trained by GD
on the observed entries only (loss weight 1/p, see ``docs/completion.md``) with the fused kernels
of :mod:`lowdim.completion.sparse`; the relative recovery error ‖W − Φ‖_F/‖Φ‖_F comes from Gram
matrices of the factors. Each size runs in its own process (``--entries`` one value per process
when driven by the parent), so ``peak_gb`` is the peak resident memory of that size alone, data
generation included. ``seconds`` is compression + training to error 1e-2 (data generation and
the operator's index layout excluded, reported apart as ``setup_seconds``), or ``null`` with
``"reached": false``; ``cpu_seconds_run`` is the CPU time of compression and the whole training run
(evaluations of the error included), which on a shared machine says what an idle one would take.

Usage: ``python benchmarks/completion_scale.py [--entries 1e6 1e7 1e8]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from lowdim import train
from lowdim.completion import SparseEntryObservation
from lowdim.compression import spectral_compression

TARGET = 1e-2


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def make_problem(m: int, n: int, per_row: int, rank: int, seed: int):
    """``(rows, cols, values, P, Q)``: ``per_row`` distinct uniform columns in every row, sorted by
    (row, column), values ``⟨P[i], Q[j]⟩`` in float32; generated in row blocks."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((m, rank))
    q = rng.standard_normal((n, rank))
    smax = np.linalg.norm(np.linalg.qr(p, mode="r") @ np.linalg.qr(q, mode="r").T, 2)
    p /= np.sqrt(smax)
    q /= np.sqrt(smax)
    rows = np.empty(m * per_row, dtype=np.int64)
    cols = np.empty(m * per_row, dtype=np.int64)
    vals = np.empty(m * per_row, dtype=np.float32)
    block = max(1, (1 << 22) // per_row)
    for s in range(0, m, block):
        e = min(m, s + block)
        draw = np.sort(rng.integers(0, n, size=(e - s, per_row + per_row // 4 + 8)), axis=1)
        keep = np.ones(draw.shape, dtype=bool)
        keep[:, 1:] = draw[:, 1:] != draw[:, :-1]
        priority = np.where(keep, rng.random(draw.shape), 2.0)  # repeats last, else random
        order = np.argsort(priority, axis=1)[:, :per_row]  # per_row distinct, uniformly chosen
        if not np.take_along_axis(keep, order, 1).all():
            raise RuntimeError("too many repeated draws in a row; raise the oversampling")
        c = np.sort(np.take_along_axis(draw, order, 1), axis=1).reshape(-1)
        r = np.repeat(np.arange(s, e), per_row)
        lo, hi = s * per_row, e * per_row
        rows[lo:hi], cols[lo:hi] = r, c
        vals[lo:hi] = np.einsum("ij,ij->i", p[r], q[c])
    return rows, cols, vals, torch.as_tensor(p), torch.as_tensor(q)


def run(entries: int, args) -> dict:
    m = entries // args.per_row
    n = max(args.rank + 2, m // 10)
    t0 = time.perf_counter()
    r, c, v, p, q = make_problem(m, n, args.per_row, args.rank, args.seed)
    frac = r.size / (m * n)
    op = SparseEntryObservation(r, c, v, (m, n), dtype=torch.float32, weight=1.0 / frac)
    del r, c, v
    setup = time.perf_counter() - t0
    t0, cpu0 = time.perf_counter(), time.process_time()
    model = spectral_compression(op, args.rank, 3, scale=args.init_scale, alpha=args.alpha)
    model = model.to(torch.float32)
    build = time.perf_counter() - t0
    h = train(model, op, lr=args.lr, max_iter=args.max_iter, target_error=TARGET,
              truth=(p, q), eval_every=args.eval_every, max_time=args.max_time,
              progress=args.progress)
    cpu = time.process_time() - cpu0  # one thread: the seconds a quiet machine would take
    hit = h.first_below(TARGET)
    out = {
        "entries": int(op.y.numel()),
        "shape": [m, n],
        "seconds": round(build + hit[1], 2) if hit else None,
        "reached": hit is not None,
        "peak_gb": round(peak_gb(), 3),
        "error": h.error[-1],
        "iterations": hit[0] if hit else h.iterations[-1],
        "seconds_per_iter": h.seconds[-1] / max(h.iterations[-1], 1),
        "cpu_seconds_run": round(cpu, 2),
        "compression_seconds": round(build, 2),
        "setup_seconds": round(setup, 2),
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    ap.add_argument("--per-row", type=int, default=100)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--init-scale", type=float, default=0.3)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--max-iter", type=int, default=2000)
    ap.add_argument("--max-time", type=float, default=900.0)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true", help="tqdm bar over the iterations")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one size
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one:  # a child: its size's line only
        run(int(args.entries[0]), args)
        return 0
    if len(args.entries) == 1:
        sizes = [run(int(args.entries[0]), args)]
    else:  # one process per size: honest peak memory
        sizes = []
        for e in args.entries:
            child = _without_entries(list(argv if argv is not None else sys.argv[1:]))
            cmd = [sys.executable, __file__, *child, "--entries", str(e), "--one"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            sys.stderr.write(done.stderr[-3000:])
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            if done.returncode != 0 or not lines:
                sizes.append({"entries": int(e), "failed": done.stderr[-500:]})
            else:
                sizes.append(json.loads(lines[-1]))
            print(json.dumps(sizes[-1]), flush=True)
    print(json.dumps({"benchmark": "completion_scale", "dtype": "float32", "rank": args.rank,
                      "sizes": sizes}))
    return 0


def _without_entries(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if a == "--entries":
            skip = True
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
