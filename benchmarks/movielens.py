"""MovieLens 100K: lowdim's deep compressed estimator vs baselines and scikit-surprise, u1 and 5-fold.

Official split u1 (u1.base / u1.test) and a seeded random 5-fold cross-validation of u.data
(:meth:`lowdim.datasets.movielens.MovieLens100K.kfold`, seed 0). For each method: test RMSE, MAE and
fit seconds (mean over folds for ``cv5``). scikit-surprise's SVD and SVD++ (default settings) run in
the same process when the optional package is installed (``pip install scikit-surprise``);
otherwise they are reported as null.

``lowdim`` is the estimator as a user calls it for ratings: ``DeepMatrixCompletion(random_state=0)``
— the ``"ratings"`` preset (:data:`lowdim.defaults.COMPLETION_PRESETS`, chosen on a 10% inner
validation split of u1.base, never on u1.test): C-DLN of seed 000, depth 3, rank bound 40, biases,
early stopping on 10% of the training ratings, predictions clipped to the observed range;
``lowdim_compressed`` is the invariant-subspace compressed model with the same preset
(``method="compressed", rank=10``). Users/movies absent from training fall back to the biases.

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


def lowdim_methods():
    return {
        "lowdim": lambda: DeepMatrixCompletion(**LOWDIM),
        "lowdim_compressed": lambda: DeepMatrixCompletion(
            **LOWDIM, method="compressed", rank=10, eval_every=5
        ),
        "altmin": lambda: AltMin(rank=3, reg=0.05, max_iter=30, bias="both", unknown="fallback"),
        "softimpute": lambda: SoftImpute(shrinkage=0.25, max_rank=20, max_iter=50, bias="both",
                                         unknown="fallback"),
    }


def run_lowdim(make, train, test):
    t0 = time.perf_counter()
    est = make().fit(train[["row", "col", "value"]])
    fit_s = time.perf_counter() - t0
    return {"rmse": est.rmse(test), "mae": est.mae(test), "fit_s": round(fit_s, 3)}


def run_surprise(kind, train, test):
    try:
        from surprise import SVD, Dataset, Reader, SVDpp, accuracy
    except ImportError:
        return None
    reader = Reader(rating_scale=(1, 5))
    data = Dataset.load_from_df(train[["row", "col", "value"]], reader)
    trainset = data.build_full_trainset()
    algo = SVD(random_state=0) if kind == "svd" else SVDpp(random_state=0)
    t0 = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - t0
    preds = algo.test(list(zip(test["row"], test["col"], test["value"])))
    return {"rmse": accuracy.rmse(preds, verbose=False), "mae": accuracy.mae(preds, verbose=False),
            "fit_s": round(fit_s, 3)}


def evaluate(train, test, methods, with_surprise=True):
    out = {}
    for name, make in methods.items():
        out[name] = run_lowdim(make, train, test)
        print(f"  {name:16s} RMSE {out[name]['rmse']:.4f}  MAE {out[name]['mae']:.4f}  "
              f"fit {out[name]['fit_s']:.2f} s", flush=True)
    if with_surprise:
        for kind in ("svd", "svdpp"):
            out[kind] = run_surprise(kind, train, test)
            if out[kind]:
                print(f"  {kind:16s} RMSE {out[kind]['rmse']:.4f}  MAE {out[kind]['mae']:.4f}  "
                      f"fit {out[kind]['fit_s']:.2f} s", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("LOWDIM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--data", default=str(default / "movielens-100k"))
    ap.add_argument("--skip-cv", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ml = load_movielens_100k(args.data)
    methods = lowdim_methods()
    print("u1 split:", flush=True)
    train, test = ml.u1()
    u1 = evaluate(train, test, methods)
    cv = {}
    if not args.skip_cv:
        folds = []
        for k, (train, test) in enumerate(ml.kfold(5, seed=0)):
            print(f"fold {k + 1}/5:", flush=True)
            folds.append(evaluate(train, test, methods))
        for name in folds[0]:
            if folds[0][name] is None:
                cv[name] = None
                continue
            cv[name] = {key: float(np.mean([f[name][key] for f in folds]))
                        for key in ("rmse", "mae", "fit_s")}
    print(json.dumps({"benchmark": "movielens", "u1": u1, "cv5": cv}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
