"""Low-rank training of an MLP's deeper layers (seed 002, "Low-Rank Training of Nonlinear Networks?").

An MLP with 3 hidden ReLU layers of width ``--hidden`` (:func:`lowdim.nonlinear.mlp`), trained
normally or with the weights of its last two hidden layers factorized as ``W = B·A`` of rank
``r = K = 10`` (the number of classes) or ``r = 1`` throughout training
(:func:`lowdim.nonlinear.factorize_layers`; each factor drawn as PyTorch draws an ``nn.Linear``).

Data (offline only): MNIST from ``$LOWDIM_DATA/mnist`` (the first ``--train-size`` of 55 000
training images, 5 000 validation = the last 5 000 training images, 10 000 test) and
scikit-learn's bundled 8×8 digits (UCI optdigits, 1 797 images; stratified 60/20/20 split with
``--seed-split``). The talk averages MNIST, FashionMNIST and USPS; FashionMNIST and USPS are not
available offline here (no installed package ships them), so the 8×8 digits stand in as the
second, USPS-like digit set.

Training: minibatch SGD (``--lr``, momentum ``--momentum``, batch ``--batch``) **to convergence**:
validation accuracy every ``--round-steps`` steps (whole epochs: one on MNIST, 50 on the 1 078
training digits); training stops when it has not improved by more than ``--min-delta`` points for
``--patience`` validations (or after ``--max-rounds``, reported as not converged), and the test
accuracy is that of the best-validation epoch (a run whose loss turns non-finite stops there,
keeps its best validated state and is reported as diverged). Per variant, over ``--seeds`` seeds:
test accuracy (mean ± std), epochs and seconds to convergence, trained
parameters, training memory (parameters, gradients, momentum, saved activations of one batch:
:func:`lowdim.nonlinear.training_memory`), forward MACs per example and forward+backward FLOPs per
example (``torch.utils.flop_counter.FlopCounterMode``), and the total training FLOPs to
convergence (per-example FLOPs × examples seen). Variants of one seed run one after another
(same data order and same first/last layers), so machine load affects them alike.

Usage: ``python benchmarks/lowrank_training.py [--datasets digits mnist] [--seeds 3]``. Ends with
one JSON line ``{"benchmark": "lowrank_training", "datasets": {name: {"normal"|"rank10"|"rank1":
{"acc": [mean, std], "params", "mem_mb", "macs", "train_flops_per_example", "train_tflops",
"epochs", "seconds", "converged"}}}, "average": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from lowdim.datasets.mnist import load_mnist
from lowdim.nonlinear import (
    count_macs,
    factorize_layers,
    mlp,
    num_parameters,
    train_until_plateau,
    training_flops,
    training_memory,
)


def load(name: str, args) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_val, y_val, x_test, y_test)`` as float32 / int64 tensors."""
    if name == "mnist":
        train, test = load_mnist("train", args.data), load_mnist("test", args.data)
        x, y = torch.as_tensor(train.images), torch.as_tensor(train.labels)
        parts = (x[: min(args.train_size, 55000)], y[: min(args.train_size, 55000)], x[-5000:], y[-5000:],
                 torch.as_tensor(test.images), torch.as_tensor(test.labels))
        return parts
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = digits.data.astype(np.float32) / 16.0, digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.4, stratify=y, random_state=args.seed_split)
    x_va, x_te, y_va, y_te = train_test_split(x_te, y_te, test_size=0.5, stratify=y_te,
                                              random_state=args.seed_split)
    return tuple(torch.as_tensor(a) for a in (x_tr, y_tr, x_va, y_va, x_te, y_te))


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return 100.0 * float((net(x).argmax(1) == y).float().mean())


def build(variant: str, inputs: int, args, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = mlp(inputs, args.hidden, 10)
    if variant != "normal":
        factorize_layers(net, int(variant[len("rank"):]), random_state=seed)
    return net


def train(net, data, args, seed: int) -> dict:
    """SGD until the validation accuracy stops improving; the best-validation state is tested."""
    x_tr, y_tr, x_va, y_va, x_te, y_te = data
    make_opt = lambda m: torch.optim.SGD(m.parameters(), lr=args.lr, momentum=args.momentum)  # noqa: E731
    opt, g = make_opt(net), torch.Generator().manual_seed(seed)
    per_epoch = len(x_tr) // args.batch
    epochs_per_round = max(1, round(args.round_steps / per_epoch))  # one MNIST epoch; 50 on 8×8 digits
    fit = train_until_plateau(net, opt, x_tr, y_tr, lambda m: accuracy(m, x_va, y_va),
                              epochs_per_round=epochs_per_round, patience=args.patience,
                              min_delta=args.min_delta, max_rounds=args.max_rounds, batch_size=args.batch,
                              generator=g)
    batch_x, batch_y = x_tr[: args.batch], y_tr[: args.batch]
    flops = training_flops(net, lambda out: F.cross_entropy(out, batch_y), batch_x)
    return {"acc": accuracy(net, x_te, y_te), "val": fit.best, "epochs": fit.epochs, "seconds": fit.seconds,
            "converged": fit.converged, "diverged_at_epoch": fit.diverged_at_epoch,
            "params": num_parameters(net), "macs": count_macs(net, x_te[:8]),
            "mem_mb": training_memory(net, lambda out: F.cross_entropy(out, batch_y), batch_x,
                                      make_opt) / 2**20,
            "train_flops_per_example": flops, "train_tflops": flops * fit.steps * args.batch / 1e12}


def summarize(name: str, results: dict[str, list[dict]]) -> dict:
    print(f"\n{name}: {'variant':8s}{'test acc (%)':>16s}{'params':>11s}{'mem (MB)':>10s}{'MACs':>11s}"
          f"{'train TFLOPs':>14s}{'epochs':>8s}{'seconds':>9s}")
    table = {}
    for variant, rs in results.items():
        acc = np.array([r["acc"] for r in rs])
        row = {"acc": [round(acc.mean(), 2), round(acc.std(), 2)], "params": rs[0]["params"],
               "mem_mb": round(rs[0]["mem_mb"], 2), "macs": rs[0]["macs"],
               "train_flops_per_example": rs[0]["train_flops_per_example"],
               "train_tflops": round(float(np.mean([r["train_tflops"] for r in rs])), 3),
               "epochs": [r["epochs"] for r in rs],
               "seconds": round(float(np.mean([r["seconds"] for r in rs])), 1),
               "converged": all(r["converged"] for r in rs),
               "diverged_at_epoch": [r["diverged_at_epoch"] for r in rs if r["diverged_at_epoch"]]}
        table[variant] = row
        print(f"{'':{len(name) + 2}s}{variant:8s}{acc.mean():9.2f} ± {acc.std():4.2f}{row['params']:11d}"
              f"{row['mem_mb']:10.2f}{row['macs']:11.3e}{row['train_tflops']:14.3f}"
              f"{np.mean(row['epochs']):8.1f}{row['seconds']:9.1f}{'' if row['converged'] else '  (cap)'}"
              + (f"  (diverged at epochs {row['diverged_at_epoch']}; best validated state kept)"
                 if row["diverged_at_epoch"] else ""))
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("LOWDIM_DATA", "../shared/data"))
    ap.add_argument("--datasets", nargs="+", choices=("mnist", "digits"), default=["digits", "mnist"])
    ap.add_argument("--hidden", type=int, default=784)
    ap.add_argument("--train-size", type=int, default=55000, help="MNIST training images used")
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 1], help="r = K = 10 and r = 1 (the talk)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--round-steps", type=int, default=400,
                    help="validate every this many steps, rounded to whole epochs (≥ 1)")
    ap.add_argument("--patience", type=int, default=3, help="validations without improvement")
    ap.add_argument("--min-delta", type=float, default=0.05, help="improvement in accuracy points")
    ap.add_argument("--max-rounds", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-split", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = ["normal"] + [f"rank{r}" for r in args.ranks]
    out: dict = {"benchmark": "lowrank_training", "datasets": {}}
    for name in args.datasets:
        data = load(name, args)
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for seed in range(args.seeds):
            for v in variants:
                r = train(build(v, data[0].shape[1], args, seed), data, args, seed)
                results[v].append(r)
                print(f"{name} seed {seed} {v:7s} test {r['acc']:.2f}% (val {r['val']:.2f}%) after "
                      f"{r['epochs']} epochs, {r['seconds']:.1f}s{'' if r['converged'] else ' (cap)'}  "
                      + json.dumps(r), flush=True)
        out["datasets"][name] = summarize(name, results)
    tables = list(out["datasets"].values())
    out["average"] = {v: {"acc": round(float(np.mean([t[v]["acc"][0] for t in tables])), 2),
                          "params": int(np.mean([t[v]["params"] for t in tables])),
                          "mem_mb": round(float(np.mean([t[v]["mem_mb"] for t in tables])), 2)}
                      for v in variants}
    print("\naverage over " + ", ".join(out["datasets"]) + ": " + "; ".join(
        f"{v} {a['acc']:.2f}%" for v, a in out["average"].items()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
