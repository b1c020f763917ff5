"""MovieLens 100K: lowdim's deep compressed estimator vs baselines and scikit-surprise, u1, 5-fold, 80/20.

Official split u1 (u1.base / u1.test), a seeded random 5-fold cross-validation of u.data
(:meth:`lowdim.datasets.movielens.MovieLens100K.kfold`, seed 0) and three seeded random 80/20 splits
of u.data (``random80``: seeds 1, 2, 3, a fresh permutation each). For each method: test RMSE, MAE and
fit seconds, wall (``fit_s``) and CPU of this one-thread process (``cpu_s``: what the fit takes on an
otherwise idle core; wall seconds grow with the machine's load) — means over folds / splits.
scikit-surprise's SVD and SVD++ (default settings) run in the same process when the optional
package is installed (``pip install scikit-surprise``); otherwise they are reported as null.

``lowdim`` is the estimator as a user calls it for ratings: ``DeepMatrixCompletion(random_state=0)``
— the ``"ratings"`` preset (:data:`lowdim.defaults.COMPLETION_PRESETS`, every value chosen on a 10%
inner validation split of u1.base, never on u1.test or a test fold): C-DLN of seed 000, depth 3,
rank bound 40, biases, implicit feedback on both sides (which items a user rated, which users rated
an item — from the training ratings only), early stopping on 10% of the training ratings, then a
refit on all of them, float32, predictions clipped to the observed range. ``lowdim_side`` is the
same call given the side information of ``u.user`` (age, gender, occupation) and ``u.item`` (19
genres) as ``row_features`` / ``col_features``. ``lowdim_plain`` is the previous ratings preset
(no implicit feedback, no refit, η = 0.1; in float32 like the new one); ``lowdim_compressed`` the
invariant-subspace compressed model with it (``method="compressed", rank=10``). Users/movies absent
from training fall back to the biases.

Usage: ``python benchmarks/movielens.py [--data DIR] [--skip-cv]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lowdim.completion import AltMin, DeepMatrixCompletion, SoftImpute
from lowdim.datasets.movielens import load_movielens_100k

# The estimator with its defaults (the ratings preset) is what users get; nothing here is tuned.
LOWDIM = dict(random_state=0)
#: The ratings preset before implicit feedback and the refit (u1 0.926), for comparison (float32).
PLAIN = dict(implicit=0.0, refit=False, learning_rate=0.1)


def lowdim_methods():
    """``name -> (make, with side information)``."""
    return {
        "lowdim": (lambda: DeepMatrixCompletion(**LOWDIM), False),
        "lowdim_side": (lambda: DeepMatrixCompletion(**LOWDIM), True),
        "lowdim_plain": (lambda: DeepMatrixCompletion(**LOWDIM, **PLAIN), False),
        "lowdim_compressed": (lambda: DeepMatrixCompletion(
            **LOWDIM, **PLAIN, method="compressed", rank=10, eval_every=5), False),
        "altmin": (lambda: AltMin(rank=3, reg=0.05, max_iter=30, bias="both", unknown="fallback"),
                   False),
        "softimpute": (lambda: SoftImpute(shrinkage=0.25, max_rank=20, max_iter=50, bias="both",
                                          unknown="fallback"), False),
    }


def run_lowdim(make, side, train, test, features):
    kw = dict(row_features=features[0], col_features=features[1]) if side else {}
    t0, c0 = time.perf_counter(), time.process_time()
    est = make().fit(train[["row", "col", "value"]], **kw)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"rmse": est.rmse(test), "mae": est.mae(test), "fit_s": round(fit_s, 3),
            "cpu_s": round(cpu_s, 3)}


def run_surprise(kind, train, test):
    try:
        from surprise import SVD, Dataset, Reader, SVDpp, accuracy
    except ImportError:
        return None
    reader = Reader(rating_scale=(1, 5))
    data = Dataset.load_from_df(train[["row", "col", "value"]], reader)
    trainset = data.build_full_trainset()
    algo = SVD(random_state=0) if kind == "svd" else SVDpp(random_state=0)
    t0, c0 = time.perf_counter(), time.process_time()
    algo.fit(trainset)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    preds = algo.test(list(zip(test["row"], test["col"], test["value"])))
    return {"rmse": accuracy.rmse(preds, verbose=False), "mae": accuracy.mae(preds, verbose=False),
            "fit_s": round(fit_s, 3), "cpu_s": round(cpu_s, 3)}


def evaluate(train, test, methods, features, with_surprise=True):
    out = {}
    for name, (make, side) in methods.items():
        out[name] = run_lowdim(make, side, train, test, features)
        print(f"  {name:18s} RMSE {out[name]['rmse']:.4f}  MAE {out[name]['mae']:.4f}  "
              f"fit {out[name]['fit_s']:.2f} s ({out[name]['cpu_s']:.2f} CPU s)", flush=True)
    if with_surprise:
        for kind in ("svd", "svdpp"):
            out[kind] = run_surprise(kind, train, test)
            if out[kind]:
                print(f"  {kind:18s} RMSE {out[kind]['rmse']:.4f}  MAE {out[kind]['mae']:.4f}  "
                      f"fit {out[kind]['fit_s']:.2f} s ({out[kind]['cpu_s']:.2f} CPU s)", flush=True)
    return out


def mean_table(runs: list[dict]) -> dict:
    """Per method, the mean RMSE, MAE and fit seconds over ``runs`` (null where not run)."""
    return {name: None if runs[0][name] is None else
            {key: float(np.mean([r[name][key] for r in runs]))
             for key in ("rmse", "mae", "fit_s", "cpu_s")}
            for name in runs[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("LOWDIM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--data", default=str(default / "movielens-100k"))
    ap.add_argument("--skip-cv", action="store_true", help="only u1 (no 5-fold, no random 80/20)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ml = load_movielens_100k(args.data)
    features = (ml.users()[["age", "gender", "occupation"]], ml.items().iloc[:, 4:])  # genres
    methods = lowdim_methods()
    print("u1 split:", flush=True)
    u1 = evaluate(*ml.u1(), methods, features)
    cv, r80 = {}, {}
    if not args.skip_cv:
        folds = []
        for k, (train, test) in enumerate(ml.kfold(5, seed=0)):
            print(f"fold {k + 1}/5:", flush=True)
            folds.append(evaluate(train, test, methods, features))
        cv = mean_table(folds)
        splits = []
        for seed in (1, 2, 3):  # seed 0 would repeat the first 5-fold test set
            print(f"random 80/20 split, seed {seed}:", flush=True)
            splits.append(evaluate(*ml.random_split(0.2, seed=seed), methods, features))
        r80 = mean_table(splits)
    print(json.dumps({"benchmark": "movielens", "u1": u1, "cv5": cv, "random80": r80}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
