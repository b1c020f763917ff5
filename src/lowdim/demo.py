"""``lowdim demo``: deep matrix completion trained full width and compressed, side by side.

The main job of the README. A synthetic rank-``r*`` ``d × d`` matrix with a fraction ``p`` of its
entries observed (seed 003 Sec. 3) is completed by gradient descent on

* the **full-width** depth-``L`` factorization ``W_L ⋯ W_1`` (``d × d`` factors, ε-orthogonal
  initialization, seed 003 eq. 3), and
* its **compression** onto the invariant subspace of width ``2r*`` (seed 003 Sec. 2.3 and eq. 11,
  bases trained at ``γη``), built from the *same* initialization and trained on the observed
  entries only (:mod:`lowdim.completion.sparse`).

Both start from the same Θ(0) and use the same step size; the demo prints iterations, seconds and
the relative recovery error ``‖W_{L:1} − Φ‖_F / ‖Φ‖_F`` of each, and saves ``demo.png`` (error
against iterations and against seconds) and ``demo.json`` (the curves and the table).

.. code-block:: bash

    lowdim demo                         # d = 400, r* = 5, 25% observed, L = 3, ε = 1e-3
    lowdim demo --size 200 --out demo/  # smaller and faster
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_savefig, atomic_write_json
from .compression import invariant_subspace_compression
from .defaults import DEPTH, INIT_SCALE, default_gamma
from .factorization import DeepFactorization
from .training import History, train

__all__ = ["register", "run", "run_demo"]


def run_demo(
    *,
    size: int = 400,
    rank: int = 5,
    fraction: float = 0.25,
    depth: int = DEPTH,
    scale: float = INIT_SCALE,
    gamma: float | None = None,
    lr: float | None = None,
    target_error: float = 1e-4,
    max_iter: int = 20000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Train the full-width and the compressed factorization on one completion problem.

    Parameters
    ----------
    size : int, default=400
        ``d``: the matrix is ``d × d`` and so is every full-width factor.
    rank : int, default=5
        ``r*``, the rank of the truth and the ``r`` of the compression (width ``2r``).
    fraction : float, default=0.25
        Observed fraction ``p``.
    depth : int, default=3
        ``L``.
    scale : float, default=1e-3
        ε of the orthogonal initialization.
    gamma : float, optional
        Learning-rate ratio of the compressed model's bases (seed 003 eq. 11); default
        :func:`lowdim.defaults.default_gamma` ``(depth)`` (0.15 at L = 3), the rescaling law for
        ``σ_max(Φ) = 1``.
    lr : float, optional
        Step size η of the summed loss ``½‖P_Ω(W − Φ)‖²``; default ``0.5 / p`` (stable: the
        effective step on the mean loss is 0.5).
    target_error : float, default=1e-4
        Stop each run when its relative recovery error reaches this.
    max_iter : int, default=20000
        Iteration cap of each run.
    seed : int, default=0
        Seeds the problem and the initialization.
    progress : bool, default=False
        ``tqdm`` progress bars.

    Returns
    -------
    dict
        ``{"settings": {...}, "runs": {"full": {...}, "compressed": {...}}}``; each run has
        ``iterations``, ``seconds``, ``error`` (final), ``iters_to_1e-3``, ``seconds_to_1e-3``,
        ``seconds_per_iter``, ``trainable`` (numbers trained) and ``history``.
    """
    from .completion.sparse import SparseEntryObservation
    from .datasets import completion_problem

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    lr = 0.5 / fraction if lr is None else lr
    problem = completion_problem(size, size, rank, fraction, random_state=seed)
    dense_op = problem.operator()
    sparse_op = SparseEntryObservation.from_operator(dense_op)  # same entries, observed-only loss
    full = DeepFactorization([size] * (depth + 1), init="orthogonal", scale=scale, random_state=seed)

    t0 = time.perf_counter()
    gamma = default_gamma(depth) if gamma is None else gamma
    compressed = invariant_subspace_compression(full, sparse_op, rank, gamma=gamma)
    compress_seconds = time.perf_counter() - t0
    common = dict(lr=lr, max_iter=max_iter, target_error=target_error, truth=problem.truth,
                  eval_every=10, progress=progress)
    runs = {  # ``full`` is trained in place after ``compressed`` was built from its Θ(0)
        "full": (full, train(full, dense_op, **common), 0.0),
        "compressed": (compressed, train(compressed, sparse_op, **common), compress_seconds),
    }

    def summary(model: DeepFactorization, history: History, setup: float) -> dict[str, Any]:
        reached = history.first_below(1e-3)
        return {
            "width": min(model.dims[1:-1]),
            "trainable": sum(f.numel() for f, m in zip(model.factors, model.lr_multipliers) if m > 0),
            "iterations": history.iterations[-1],
            "seconds": setup + history.seconds[-1],
            "setup_seconds": setup,
            "seconds_per_iter": history.seconds_per_iteration,
            "error": history.error[-1],
            "iters_to_1e-3": reached[0] if reached else None,
            "seconds_to_1e-3": setup + reached[1] if reached else None,
            "stop_reason": history.stop_reason,
            "history": history.to_dict(),
        }

    settings = dict(size=size, rank=rank, fraction=fraction, depth=depth, scale=scale, gamma=gamma,
                    lr=lr, target_error=target_error, max_iter=max_iter, seed=seed,
                    observed=int(problem.rows.size), threads=torch.get_num_threads())
    return {"settings": settings, "runs": {k: summary(*v) for k, v in runs.items()}}


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, run in result["runs"].items():
        h = run["history"]
        label = f"{name} (width {run['width']})"
        axes[0].semilogy(h["iterations"], h["error"], label=label)
        axes[1].semilogy(h["seconds"], h["error"], label=label)
    for ax, xlabel in zip(axes, ("iteration", "seconds")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("relative recovery error")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.suptitle(
        f"deep matrix completion: d = {s['size']}, r* = {s['rank']}, p = {s['fraction']:g}, "
        f"L = {s['depth']}, ε = {s['scale']:g}"
    )
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def format_table(result: dict[str, Any]) -> str:
    """The demo's table: one row per model."""
    head = f"{'model':12s}{'width':>7s}{'trained':>10s}{'iters':>8s}{'seconds':>9s}{'ms/iter':>9s}"
    head += f"{'iters→1e-3':>12s}{'s→1e-3':>9s}{'final error':>13s}"
    lines = [head]
    for name, r in result["runs"].items():
        to_it = "never" if r["iters_to_1e-3"] is None else str(r["iters_to_1e-3"])
        to_s = "—" if r["seconds_to_1e-3"] is None else f"{r['seconds_to_1e-3']:.2f}"
        lines.append(
            f"{name:12s}{r['width']:7d}{r['trainable']:10d}{r['iterations']:8d}{r['seconds']:9.2f}"
            f"{1e3 * r['seconds_per_iter']:9.2f}{to_it:>12s}{to_s:>9s}{r['error']:13.2e}"
        )
    full, comp = result["runs"]["full"], result["runs"]["compressed"]
    if full["seconds_to_1e-3"] and comp["seconds_to_1e-3"]:
        lines.append(
            f"compressed is {full['seconds_to_1e-3'] / comp['seconds_to_1e-3']:.1f}× faster to error "
            f"1e-3 ({full['seconds_per_iter'] / comp['seconds_per_iter']:.1f}× per iteration)"
        )
    return "\n".join(lines)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command to ``lowdim``'s sub-parsers."""
    p = subparsers.add_parser(
        "demo",
        help="deep matrix completion on built-in synthetic data: full width vs compressed",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--size", type=int, default=400, help="d: the matrix is d × d (default 400)")
    p.add_argument("--rank", type=int, default=5, help="rank r* of the truth (default 5)")
    p.add_argument("--fraction", type=float, default=0.25, help="observed fraction (default 0.25)")
    p.add_argument("--depth", type=int, default=DEPTH, help=f"depth L (default {DEPTH})")
    p.add_argument("--scale", type=float, default=INIT_SCALE,
                   help=f"initialization scale ε (default {INIT_SCALE:g})")
    p.add_argument("--gamma", type=float, default=None,
                   help="learning-rate ratio of the bases (default: default_gamma(depth), 0.15 at L = 3)")
    p.add_argument("--lr", type=float, default=None, help="step size (default 0.5 / fraction)")
    p.add_argument("--target-error", type=float, default=1e-4, help="stop at this recovery error")
    p.add_argument("--max-iter", type=int, default=20000, help="iteration cap per model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="lowdim-demo", help="output folder (demo.png, demo.json)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``lowdim demo`` (returns the exit code)."""
    print(
        f"lowdim demo: completing a {args.size}×{args.size} rank-{args.rank} matrix from "
        f"{args.fraction:.0%} of its entries, depth {args.depth}, ε = {args.scale:g}"
    )
    result = run_demo(
        size=args.size, rank=args.rank, fraction=args.fraction, depth=args.depth, scale=args.scale,
        gamma=args.gamma, lr=args.lr, target_error=args.target_error, max_iter=args.max_iter,
        seed=args.seed, progress=not args.no_progress,
    )
    out = Path(args.out)
    _plot(result, out / "demo.png")
    atomic_write_json(out / "demo.json", result)
    print(format_table(result))
    print(f"wrote {out / 'demo.png'} and {out / 'demo.json'}")
    return 0
