"""Data-parallel completion on torch.distributed: 1 process against 2 (gloo, loopback), same fit.

The problem of ``benchmarks/completion_scale.py`` (rank 10, ``m = 10 n``, 100 observed entries per
row) at 10⁷ entries by default, fitted in **float64** by spectral C-DLN (seed 000 Algorithm 1,
depth 3, width 10) for a fixed number of GD iterations: once in this process, once by
``torchrun --nproc-per-node 2`` (each process keeps half of the rows' entries; loss, gradients and
the surrogate's products are all-reduced, :mod:`lowdim.completion.distributed`). Reports the
largest absolute difference between the two fitted matrices on 10⁶ random entries (factors
themselves may differ by a rotation inside a cluster of near-equal singular values, the matrix
may not), and the seconds of each (compression
and training; data generation excluded), measured side by side in one run. Every process runs one
torch thread, so on a machine with fewer free cores than processes the 2-process time shows the
contention, not the method.

Usage: ``python benchmarks/completion_distributed.py [--entries 1e7] [--iters 30]``. Ends with one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from completion_scale import make_problem  # noqa: E402

from lowdim import train  # noqa: E402
from lowdim.completion import SparseEntryObservation  # noqa: E402
from lowdim.completion.distributed import data_parallel, init_from_env, is_main_process  # noqa: E402
from lowdim.completion.sparse import entries_chunked  # noqa: E402
from lowdim.compression import spectral_compression  # noqa: E402


def fit(args, out: Path) -> float:
    """Fit (sharded when torchrun started this process); rank 0 writes the factors; seconds."""
    started = init_from_env()
    warm_up()
    m = int(args.entries) // args.per_row
    n = m // 10
    r, c, v, p, q = make_problem(m, n, args.per_row, args.rank, args.seed)
    with data_parallel(started):
        op = SparseEntryObservation(r, c, v, (m, n), weight=m * n / r.size)
    del r, c, v
    if started:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    model = spectral_compression(op, args.rank, 3, scale=args.init_scale, alpha=1.0)
    h = train(model, op, lr=args.lr, max_iter=args.iters)
    seconds = time.perf_counter() - t0
    if is_main_process():
        left, right = model.split()
        tensors = {"left": left.detach().contiguous(), "right": right.detach().contiguous()}
        tensors["loss"] = torch.tensor(h.loss, dtype=torch.float64)
        tensors["seconds"] = torch.tensor([seconds], dtype=torch.float64)
        save_file(tensors, str(out))
    if started:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return seconds


def warm_up() -> None:
    """A tiny fit, so that one-off lazy imports are not timed."""
    op = SparseEntryObservation([0, 1, 2, 2], [0, 1, 0, 2], [1.0, 2.0, 0.5, 1.0], (3, 3))
    train(spectral_compression(op, 1, 3, scale=0.3), op, lr=0.1, max_iter=2)


def compare(a: dict, b: dict, probes: int, seed: int) -> tuple[float, float]:
    """``(max |W₁ − W₂|, max |W₁|)`` over ``probes`` uniformly random entries of the two fits'
    end-to-end matrices ``W = left @ right`` (never formed)."""
    (l1, r1), (l2, r2) = (a["left"], a["right"]), (b["left"], b["right"])
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, l1.shape[0], (probes,), generator=g)
    cols = torch.randint(0, r1.shape[1], (probes,), generator=g)
    w1 = entries_chunked(l1, r1, rows, cols)
    w2 = entries_chunked(l2, r2, rows, cols)
    return float((w1 - w2).abs().max()), float(w1.abs().max())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=float, default=1e7)
    ap.add_argument("--per-row", type=int, default=100)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--init-scale", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--probes", type=int, default=1_000_000,
                    help="random entries on which the two fits are compared")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # set for torchrun's children
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.worker:
        fit(args, Path(args.worker))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one.safetensors", Path(tmp) / "two.safetensors"
        seconds_1 = fit(args, one)
        print(f"1 process: {seconds_1:.2f} s", flush=True)
        own = [a for a in (argv if argv is not None else sys.argv[1:])]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.processes),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               str(Path(__file__).resolve()), *own, "--worker", str(two)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
            return 1
        a, b = load_file(str(one)), load_file(str(two))
    seconds_2 = float(b.pop("seconds")[0])
    a.pop("seconds")
    diff, scale = compare(a, b, args.probes, args.seed)
    loss_diff = float((a["loss"] - b["loss"]).abs().max())
    print(f"{args.processes} processes: {seconds_2:.2f} s; max |ΔW| over {args.probes} random "
          f"entries {diff:.2e} (max |W| {scale:.2e}), max |Δ loss| {loss_diff:.2e}; loss "
          f"{float(a['loss'][0]):.3e} → {float(a['loss'][-1]):.3e}")
    print(json.dumps({"benchmark": "completion_distributed", "entries": int(args.entries),
                      "processes": args.processes, "iterations": args.iters,
                      "max_abs_diff": diff, "max_abs_entry": scale,
                      "max_abs_loss_diff": loss_diff,
                      "seconds_1": round(seconds_1, 3), "seconds_2": round(seconds_2, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
