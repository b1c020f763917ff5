"""``lowdim complete``: fit a ratings file with deep (compressed) matrix completion.

.. code-block:: bash

    lowdim complete u.data                               # rank bound 40, 20% random test split
    lowdim complete u1.base --test u1.test --rank 20 --out results/
    lowdim complete ratings.csv --test-frac 0.1 --method spectral --max-time 60
    torchrun --nproc-per-node 2 -m lowdim.cli complete ratings.csv --distributed  # docs/scale.md

Defaults are ``DeepMatrixCompletion``'s ``"ratings"`` preset (:data:`lowdim.defaults.COMPLETION_PRESETS`):
spectral C-DLN (seed 000 Algorithm 1), depth 3, row/column biases, ε = 0.1, weight decay 0.03, rank
bound 40, early stopping on 10% of the training ratings, predictions clipped to the observed range
(see docs/completion.md). Repeated (row, column) pairs are an error unless ``--duplicates mean|last``
merges them, before any split; an existing, non-empty ``--out`` folder is refused unless ``--force``.

Writes to ``--out`` (default ``lowdim-complete``): ``predictions.csv`` (``row,col,value,prediction,
split`` for every train and test entry), ``summary.json`` (settings, train/test RMSE and MAE,
timings, iterations) and ``curves.png`` (training/validation RMSE against iterations and seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_savefig, atomic_write_text
from .._validation import check_fraction
from ..cli import add_threads_option, set_threads
from ..defaults import COMPLETION_PRESETS, DEPTH

RATINGS = COMPLETION_PRESETS["ratings"]

__all__ = ["register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``complete`` sub-command to ``lowdim``'s sub-parsers."""
    p = subparsers.add_parser(
        "complete",
        help="complete a ratings matrix (CSV/TSV of row, column, value) with a deep compressed model",
        description=(
            "Fit DeepMatrixCompletion to a ratings file (one 'row col value [timestamp]' line per "
            "observed entry; tab, comma or whitespace separated, optional header) and report "
            "train/test RMSE and MAE."
        ),
    )
    _add_data_options(p)
    _add_model_options(p)
    _add_run_options(p)
    p.set_defaults(func=run)
    return p


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """Input files, test split, separators, duplicates and the output folder."""
    p.add_argument("ratings", help="ratings file (e.g. MovieLens u.data or ratings.csv)")
    p.add_argument("--sep", default="auto",
                   help="field separator (default: detected among tab ; , :: | and whitespace)")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test-frac", type=float, default=None,
                      help="random fraction of the ratings held out for testing (default 0.2)")
    test.add_argument("--test", default=None, help="separate test ratings file (same format)")
    p.add_argument("--out", default="lowdim-complete", help="output folder (default lowdim-complete)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it exists and is not empty")
    p.add_argument("--duplicates", default="error", choices=["error", "mean", "last"],
                   help="repeated (row, column) pairs: an error (default), or merged before any split")
    p.add_argument("--cache", action="store_true",
                   help="keep a binary copy of the parsed ratings beside each file "
                        "(FILE.lowdim-cache/, numeric labels) and read it instead of the text "
                        "while the file is unchanged: large files load in seconds")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The model and its training (each default is the ratings preset's)."""
    p.add_argument("--rank", type=int, default=None,
                   help="rank upper bound; over-estimating is fine, depth regularizes "
                        f"(default {RATINGS['rank']})")
    p.add_argument("--method", default=None,
                   choices=["compressed", "spectral", "full", "narrow"],
                   help="spectral (C-DLN, default: best on ratings data) or compressed "
                        "(invariant-subspace), full, narrow")
    p.add_argument("--depth", type=int, default=DEPTH, help=f"depth L (default {DEPTH})")
    p.add_argument("--init-scale", type=float, default=None,
                   help=f"initialization scale ε (default {RATINGS['init_scale']}: noisy ratings "
                        "need no long small-initialization plateau; early stopping regularizes)")
    p.add_argument("--lr", type=float, default=None,
                   help="step size in normalized units (default 0.1 spectral, 0.2 otherwise)")
    p.add_argument("--outer-ratio", type=float, default=None, help="γ (compressed) or α (spectral)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"λ of the GD update (default {RATINGS['weight_decay']})")
    p.add_argument("--bias", default=None, choices=["none", "global", "row", "col", "both"],
                   help=f"bias terms (default {RATINGS['bias']})")
    p.add_argument("--bias-reg", type=float, default=None,
                   help=f"bias ridge, in pseudo-observations (default {RATINGS['bias_reg']})")
    p.add_argument("--eval-every", type=int, default=None,
                   help=f"validation every this many iterations (default {RATINGS['eval_every']})")
    p.add_argument("--validation-frac", type=float, default=None,
                   help="fraction of the training ratings used for early stopping (default "
                        f"{RATINGS['validation_fraction']}; 0 disables)")
    p.add_argument("--max-iter", type=int, default=None,
                   help=f"iteration cap (default {RATINGS['max_iter']})")
    p.add_argument("--max-time", type=float, default=None, help="time budget of fitting (s)")
    p.add_argument("--no-clip", action="store_true",
                   help="do not clip predictions to the observed rating range")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Checkpoints, seed, precision, progress and several processes."""
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (resume if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default=None, choices=["float64", "float32"],
                   help=f"precision (default {RATINGS['dtype']}, the ratings preset's)")
    add_threads_option(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data parallel over the processes that torchrun starts (each fits a shard "
                        "of the training ratings; gloo on CPUs, NCCL on GPUs; rank 0 writes --out): "
                        "torchrun --nproc-per-node N -m lowdim.cli complete FILE --distributed "
                        "(docs/scale.md)")


def _split(df: pd.DataFrame, frac: float, seed: int):
    check_fraction("--test-frac", frac)
    perm = np.random.default_rng(seed).permutation(len(df))
    n_test = int(round(frac * len(df)))
    if n_test < 1 or n_test >= len(df):
        raise ValueError(f"--test-frac {frac} leaves no train or no test ratings ({len(df)} in all)")
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return df.iloc[tr].reset_index(drop=True), df.iloc[te].reset_index(drop=True)


def _plot(path: Path, est, train_rmse_curve) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = est.history_
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, x, label in ((axes[0], h.iterations, "iteration"), (axes[1], h.seconds, "seconds")):
        ax.plot(x, train_rmse_curve, label="train RMSE")
        if est.validation_rmse_:
            pos = {it: i for i, it in enumerate(h.iterations)}
            xs = [x[pos[it]] for it in est.validation_iterations_ if it in pos]
            ys = [r for it, r in zip(est.validation_iterations_, est.validation_rmse_) if it in pos]
            ax.plot(xs, ys, label="validation RMSE")
        ax.set_xlabel(label)
        ax.set_ylabel("RMSE")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"lowdim complete: {est.method}, rank {est.rank}, depth {est.depth}")
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ValueError(f"--out {out} exists and is not empty; choose another folder or pass "
                         "--force to overwrite its files")


def _load(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test tables, each with repeated pairs resolved (``--duplicates``) before the split."""
    from ..datasets.ratings import load_ratings, merge_duplicates

    opts = {"sep": args.sep, "cache": bool(getattr(args, "cache", False)),
            "progress": not args.no_progress}
    data = merge_duplicates(load_ratings(args.ratings, **opts), args.duplicates)
    if args.test is None:
        return _split(data, 0.2 if args.test_frac is None else args.test_frac, args.seed)
    test = merge_duplicates(load_ratings(args.test, **opts), args.duplicates)
    both = data[["row", "col"]].merge(test[["row", "col"]]).drop_duplicates()
    if len(both):
        warnings.warn(f"{len(both)} (row, column) pair(s) are in both {args.ratings} and "
                      f"{args.test} (e.g. {tuple(both.iloc[0])}): the test RMSE is optimistic",
                      RuntimeWarning, stacklevel=2)
    return data, test


def _estimator(args):
    from .estimator import DeepMatrixCompletion

    vf = "auto" if args.validation_frac is None else (args.validation_frac or None)
    return DeepMatrixCompletion(
        preset="ratings", rank=args.rank, depth=args.depth, method=args.method,
        init_scale=args.init_scale, learning_rate=args.lr, outer_ratio=args.outer_ratio,
        weight_decay=args.weight_decay, bias=args.bias, bias_reg=args.bias_reg,
        eval_every=args.eval_every, max_iter=args.max_iter, max_time=args.max_time,
        validation_fraction=vf, clip=False if args.no_clip else None, unknown="fallback",
        checkpoint_dir=args.checkpoint, random_state=args.seed, dtype=args.dtype,
        verbose=not args.no_progress, distributed=bool(getattr(args, "distributed", False)),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``lowdim complete`` (returns the exit code)."""
    from .distributed import init_from_env, is_main_process

    t0 = time.perf_counter()
    set_threads(args)
    out = Path(args.out)
    _check_out(out, args.force)
    distributed = bool(getattr(args, "distributed", False)) and init_from_env()
    try:
        main = is_main_process()
        args.no_progress = args.no_progress or not main
        train, test = _load(args)
        est = _estimator(args)
        load_s = time.perf_counter() - t0
        est.fit(train[["row", "col", "value"]])
        if main:
            _report(args, out, est, train, test, load_s, distributed)
    finally:
        if distributed:  # leave together: a rank that exits while gloo still runs aborts the job
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    return 0


def _report(args, out: Path, est, train: pd.DataFrame, test: pd.DataFrame, load_s: float,
            distributed: bool) -> None:
    """Predictions, summary and curves in ``out``; the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    pred_tr = est.predict(train["row"], train["col"])
    pred_te = est.predict(test["row"], test["col"])

    def metrics(pred, vals):
        err = pred - vals
        return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))

    tr_rmse, tr_mae = metrics(pred_tr, train["value"].to_numpy())
    te_rmse, te_mae = metrics(pred_te, test["value"].to_numpy())
    preds = pd.concat([
        pd.DataFrame({"row": train["row"], "col": train["col"], "value": train["value"],
                      "prediction": pred_tr, "split": "train"}),
        pd.DataFrame({"row": test["row"], "col": test["col"], "value": test["value"],
                      "prediction": pred_te, "split": "test"}),
    ])
    atomic_write_text(out / "predictions.csv", preds.to_csv(index=False))
    # Training RMSE curve from the normalized loss (1/p)·½Σ r'²: RMSE = s·sqrt(2·p·loss/|Ω_train|)
    vf = est.settings_["validation_fraction"]
    n_fit = len(train) - (int(round(vf * len(train))) if vf else 0)
    curve = [
        est.scale_ * math.sqrt(max(2 * est.observed_fraction_ * loss / n_fit, 0.0))
        for loss in est.history_.loss
    ]
    _plot(out / "curves.png", est, curve)
    summary = {
        "ratings": str(args.ratings),
        "test_source": str(args.test) if args.test else f"random {args.test_frac or 0.2:g} split",
        "shape": list(est.shape_),
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "params": {k: v for k, v in est.get_params().items()},
        "train": {"rmse": tr_rmse, "mae": tr_mae},
        "test": {"rmse": te_rmse, "mae": te_mae},
        "fit_seconds": est.fit_seconds_,
        "load_seconds": load_s,
        "iterations": est.n_iter_,
        "best_iteration": est.best_iteration_,
        "stop_reason": est.history_.stop_reason,
        "refitted": bool(est.refitted_),
        "processes": _world_size() if distributed else 1,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    print(f"{len(train)} train / {len(test)} test ratings, {est.shape_[0]}×{est.shape_[1]} matrix")
    print(f"{'':8s}{'RMSE':>8s}{'MAE':>8s}")
    print(f"{'train':8s}{tr_rmse:8.4f}{tr_mae:8.4f}")
    print(f"{'test':8s}{te_rmse:8.4f}{te_mae:8.4f}")
    how = (f"best validated iteration {est.best_iteration_}, then refitted on all training "
           f"ratings for as many iterations" if est.refitted_ else
           f"{est.n_iter_} iterations (best {est.best_iteration_}, stopped: "
           f"{est.history_.stop_reason})")
    print(f"fit {est.fit_seconds_:.2f} s, {how}; outputs in {out}/")


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size()
