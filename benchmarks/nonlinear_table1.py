"""Seed 000 Table 1 on MNIST: original vs DLN vs C-DLN penultimate layer, MLP and small ViT.

MLP (seed 000 Sec. 4.2), ``ψ = W₆ ρ(W̃₅W̃₄W̃₃ ρ(W₂ ρ(W₁x)))``: three hidden ReLU layers of width
``--hidden`` (the paper's parameter counts fit 784), its penultimate layer ``W₃`` (module "4")
kept ("original"), replaced by a full-width depth-3 DLN ("dln") or compressed to width
r̂ = 4·10 = 40 ("cdln"). ViT: :class:`lowdim.nonlinear.VisionTransformer` (7×7 patches, ``--vit-dim``,
``--vit-depth`` blocks, MLP width ``--vit-mlp``), the last linear layer of its last block
overparameterized the same way (the paper: 6 blocks, dim 512, MLP 3072, CIFAR-10, a GPU); it trains
on the first ``--vit-train-size`` training images and is tested on the first ``--vit-test-size``
test images.
C-DLN layers come from :func:`lowdim.nonlinear.compress_network` on one calibration batch of 512
training images: the layers are hidden, so their subspaces come from the engine's
gradient-at-initialization compression; that time is counted in the C-DLN's training time. Data:
MNIST from ``$LOWDIM_DATA/mnist`` (the paper uses FashionMNIST / CIFAR-10, not available offline).

Training: MLP minibatch SGD (``--lr``, ``--momentum``), ViT Adam (``--vit-lr``), batch ``--batch``,
α = ``--alpha`` (the ViT's step follows a cosine annealing to 0, as the paper's). The three models
of a seed train **side by side**: the same calibration batch, the same other layers and the same
batches, one training step of each in turn, so the load of a shared machine falls on them alike;
each model's clock counts only its own building (for C-DLN: the compression) and training steps.
DLN/C-DLN factors are ε-orthogonal with ``--scale``. Per model, over ``--seeds`` seeds: final test
accuracy (mean ± std), seconds of training until the test accuracy (measured every
``--eval-every`` steps, evaluation not timed) first reaches 99% of its final value, the per-seed
ratio C-DLN / DLN of that time (mean ± std), median ms per training step, MACs per example
(``torch.utils.flop_counter.FlopCounterMode``, attention's products included:
:func:`lowdim.nonlinear.count_macs`), training memory (parameters, gradients and optimizer state,
plus the tensors autograd saves for backward on one batch: :func:`lowdim.nonlinear.training_memory`),
trained parameters. For the MLP at seed 0 also: the
singular values of the penultimate weight's update W(T) − W(0) (seed 000 Fig. 1), the subspace
distance (eq. 14, r = 10) between its top singular subspaces at consecutive evaluations (Fig. 20),
and D_l, S_l of the MLP's features on 2000 training images with the log-linear fit (seed 004
Sec. 4.2 on MNIST). Low-rank training of deeper layers (the talk) is ``benchmarks/lowrank_training.py``.

Usage: ``python benchmarks/nonlinear_table1.py [--arch mlp|vit|both] [--seeds 5]``; the defaults
(5 seeds, 2 epochs each) take about 10 minutes for the MLP and 30 for the ViT on one quiet core
(a step of the three ViTs: 74 / 114 / 71 ms). ``--summarize LOG …`` rebuilds the tables and the
JSON line from the per-seed lines of (possibly unfinished) runs. Ends with one JSON line
``{"benchmark": "nonlinear_table1", "mlp": {"original"|"dln"|"cdln": {"acc": [mean, std],
"time_s": [mean, std], "macs", "mem_mb", "params", …}, "cdln_over_dln_time": [mean, std],
"cdln_minus_dln_acc": [mean, std], "target_met": bool, …}, "vit": {…} or null}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowdim.collapse import collapse_profile
from lowdim.datasets.mnist import load_mnist
from lowdim.nonlinear import (
    SideBySideRun,
    VisionTransformer,
    compress_network,
    consecutive_subspace_distances,
    count_macs,
    default_rank,
    mlp,
    num_parameters,
    param_groups,
    train_side_by_side,
    training_memory,
    update_singular_values,
)

MODELS = ("original", "dln", "cdln")
ROW_KEYS = ("acc", "time_s", "total_s", "ms_per_step", "macs", "mem_mb", "params", "curve")


def build(kind: str, arch: str, args, x_cal: torch.Tensor, y_cal: torch.Tensor, seed: int) -> nn.Module:
    """The MLP or ViT with its penultimate layer original, DLN or C-DLN."""
    torch.manual_seed(seed)
    if arch == "mlp":
        net, layer = mlp(784, args.hidden, 10), "4"
    else:
        net = VisionTransformer(dim=args.vit_dim, depth=args.vit_depth, mlp_dim=args.vit_mlp)
        layer = net.penultimate
    if kind in ("dln", "cdln"):
        compress_network(net, x_cal, F.cross_entropy, y_cal, layers=[layer],
                         mode="full" if kind == "dln" else "compressed", rank=args.rank,
                         scale=args.scale, alpha=args.alpha, random_state=seed)
    return net


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def measurements(net: nn.Module, snapshots: list[torch.Tensor], x, y, rank: int = 10) -> dict:
    """Seed 000 Fig. 1 / Fig. 20 on the penultimate weight, and seed 004's D_l on MNIST features."""
    s = update_singular_values(snapshots[-1], snapshots[0])
    dist = consecutive_subspace_distances(snapshots[1:] if len(snapshots) > 2 else snapshots, rank)
    prof = collapse_profile(net, x, y)
    return {"update_sv_top": [float(f"{v:.3g}") for v in s[: 2 * rank]],
            "update_sv_ratio_10_to_1": float(s[rank] / s[0]),
            "subspace_distance_max": max(dist), "subspace_distance_median": float(np.median(dist)),
            "D": [float(f"{v:.4g}") for v in prof.collapse],
            "S": [round(float(v), 4) for v in prof.separation],
            "D_decay_ratio": round(prof.fit.decay_ratio, 4), "D_fit_r2": round(prof.fit.r2, 4)}


def optimizer_for(arch: str, args):
    """MLP: SGD with momentum; ViT: Adam (the paper: Adam with cosine annealing)."""
    if arch == "mlp":
        return lambda net: torch.optim.SGD(param_groups(net, args.lr), momentum=args.momentum)
    return lambda net: torch.optim.Adam(param_groups(net, args.vit_lr))


def trainee(kind: str, arch: str, args, x_cal, y_cal, seed: int, total_steps: int,
            measure: bool) -> SideBySideRun:
    """One model of the comparison with its optimizer; its clock starts with its building time
    (for C-DLN: the compression). ``measure``: keep the MLP's penultimate weight at every evaluation."""
    t0 = time.perf_counter()
    net = build(kind, arch, args, x_cal, y_cal, seed)
    make_opt = optimizer_for(arch, args)
    opt = make_opt(net)
    sched = None if arch == "mlp" else torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
    run = SideBySideRun(kind, net, opt, sched, seconds=time.perf_counter() - t0)
    run.make_opt = make_opt
    run.snapshots = [net[4].weight.detach().clone()] if measure else []
    return run


def run_seed(kinds, arch: str, data, args, seed: int, measure: bool = False) -> dict[str, dict]:
    """Train the models of ``kinds`` side by side (:func:`lowdim.nonlinear.train_side_by_side`): the
    same batches, one step of each in turn, so machine load falls on them alike; each clock counts
    only its own building and steps."""
    x_tr, y_tr, x_te, y_te = data
    epochs, every = ((args.epochs, args.eval_every) if arch == "mlp"
                     else (args.vit_epochs, args.vit_eval_every))
    g = torch.Generator().manual_seed(seed)
    cal = torch.randperm(len(x_tr), generator=g)[:512]
    total = epochs * (len(x_tr) // args.batch)
    models = [trainee(k, arch, args, x_tr[cal], y_tr[cal], seed, total, measure) for k in kinds]

    def snapshot(run: SideBySideRun) -> None:
        if run.snapshots:
            run.snapshots.append(run.model[4].weight.detach().clone())

    train_side_by_side(models, x_tr, y_tr, epochs=epochs, eval_every=every, batch_size=args.batch,
                       evaluate=lambda net: accuracy(net, x_te, y_te), generator=g, on_eval=snapshot)
    return {m.name: result(m, data, args, measure) for m in models}


def result(m: SideBySideRun, data, args, measure: bool) -> dict:
    x_tr, y_tr, x_te, _ = data
    extra = measurements(m.model, m.snapshots, x_tr[:2000], y_tr[:2000]) if measure else {}
    return {**extra, "acc": m.curve[-1][2], "time_s": m.first_reaching(0.99), "total_s": m.seconds,
            "ms_per_step": 1e3 * float(np.median(m.step_seconds)),
            **costs(m.model, m.make_opt, data, args),
            "curve": [(round(t, 2), round(a, 4)) for _, t, a in m.curve]}


def costs(net, make_opt, data, args) -> dict:
    """MACs per example, training memory (MB) on one batch, trained parameters."""
    x_tr, y_tr, x_te, _ = data
    batch, labels = x_tr[: args.batch], y_tr[: args.batch]
    mem = training_memory(net, lambda out: F.cross_entropy(out, labels), batch, make_opt)
    return {"macs": count_macs(net, x_te[:8]), "mem_mb": mem / 2**20, "params": num_parameters(net)}


def summarize(arch: str, results: dict[str, list[dict]], args) -> dict:
    """Print the Table 1 rows of one architecture and return them for the JSON line."""
    epochs = args.epochs if arch == "mlp" else args.vit_epochs
    print(f"\n{arch.upper()} on MNIST, {args.seeds} seeds, {epochs} epochs, batch {args.batch}, "
          f"ε = {args.scale}, r̂ = {args.rank}, α = {args.alpha}, {args.threads} thread(s)")
    print(f"{'model':10s}{'test acc (%)':>16s}{'time→99% (s)':>16s}{'ms/step':>9s}{'MACs':>11s}"
          f"{'mem (MB)':>10s}{'params':>10s}")
    table = {}
    for kind in results:
        rs = results[kind]
        acc, t = np.array([r["acc"] for r in rs]) * 100, np.array([r["time_s"] for r in rs])
        ms = float(np.median([r["ms_per_step"] for r in rs]))
        table[kind] = {"acc": [round(acc.mean(), 2), round(acc.std(), 2)],
                       "time_s": [round(t.mean(), 2), round(t.std(), 2)], "ms_per_step": round(ms, 2),
                       "macs": rs[0]["macs"], "mem_mb": round(rs[0]["mem_mb"], 2), "params": rs[0]["params"],
                       "acc_per_seed": [round(a, 2) for a in acc], "time_per_seed": [round(v, 1) for v in t]}
        print(f"{kind:10s}{acc.mean():9.2f} ± {acc.std():4.2f}{t.mean():9.1f} ± {t.std():4.1f}{ms:9.1f}"
              f"{rs[0]['macs']:11.3e}{rs[0]['mem_mb']:10.2f}{rs[0]['params']:10d}")
    if "dln" in table and "cdln" in table:  # per seed: the models of one seed trained side by side
        ratios = np.array(table["cdln"]["time_per_seed"]) / np.array(table["dln"]["time_per_seed"])
        gap = np.array(table["cdln"]["acc_per_seed"]) - np.array(table["dln"]["acc_per_seed"])
        step_ratio = table["cdln"]["ms_per_step"] / table["dln"]["ms_per_step"]
        met = ratios.mean() <= 0.6 and table["cdln"]["acc"][0] >= table["dln"]["acc"][0]
        print(f"C-DLN / DLN: time to 99% of final accuracy {ratios.mean():.2f} ± {ratios.std():.2f} over "
              f"seeds (paper MLP 0.57, ViT 0.69; target ≤ 0.6 at no lower accuracy: "
              f"{'met' if met else 'NOT met'}), per training step {step_ratio:.2f}; accuracy "
              f"C-DLN − DLN {gap.mean():+.2f} ± {gap.std():.2f} points")
        table["cdln_over_dln_time"] = [round(float(ratios.mean()), 3), round(float(ratios.std()), 3)]
        table["cdln_over_dln_step"] = round(step_ratio, 3)
        table["cdln_minus_dln_acc"] = [round(float(gap.mean()), 2), round(float(gap.std()), 2)]
        table["target_met"] = bool(met)
    if all("update_sv_top" in rs[0] for rs in results.values()):
        print("seed 0, penultimate weight W(t) (end-to-end for DLN / C-DLN) and MNIST features:")
        for kind in results:
            m = results[kind][0]
            print(f"{kind:9s} σ(W(T) − W(0)): {' '.join(f'{v:.2g}' for v in m['update_sv_top'][:12])}"
                  f" (σ_11/σ_1 = {m['update_sv_ratio_10_to_1']:.3f}); consecutive top-10 subspace "
                  f"distance: median {m['subspace_distance_median']:.2e}, "
                  f"max {m['subspace_distance_max']:.2e}")
            print(f"{'':9s} D_l: {' '.join(f'{v:.3g}' for v in m['D'])}  decay/layer "
                  f"{m['D_decay_ratio']:.3f} (R² {m['D_fit_r2']:.3f}); "
                  f"S_l: {' '.join(f'{v:.2f}' for v in m['S'])}")
            keys = ("update_sv_top", "update_sv_ratio_10_to_1", "subspace_distance_median",
                    "subspace_distance_max", "D", "S", "D_decay_ratio", "D_fit_r2")
            table[kind]["seed0"] = {k: m[k] for k in keys}
    return table


def load_data(arch: str, args) -> tuple[torch.Tensor, ...]:
    """MNIST ``(x_train, y_train, x_test, y_test)`` cut to the sizes of ``arch``."""
    train, test = load_mnist("train", args.data), load_mnist("test", args.data)
    n, m = (args.train_size, None) if arch == "mlp" else (args.vit_train_size, args.vit_test_size)
    return (torch.as_tensor(train.images[:n]), torch.as_tensor(train.labels[:n]),
            torch.as_tensor(test.images[:m]), torch.as_tensor(test.labels[:m]))


def summarize_logs(args) -> int:
    """The tables and JSON line from the per-seed lines ``{arch} seed {s} {kind} … {json}`` of logs."""
    out: dict = {"benchmark": "nonlinear_table1", "mlp": None, "vit": None}
    for arch in ("mlp", "vit"):
        results: dict[str, list[dict]] = {}
        for log in args.summarize:
            for line in open(log, encoding="utf-8"):
                if line.startswith(f"{arch} seed ") and "{" in line:
                    kind = line.split()[3]
                    results.setdefault(kind, []).append(json.loads(line[line.index("{"):]))
        if results:  # the cost columns do not depend on training: measured again on fresh models
            data = load_data(arch, args)
            for kind, rs in results.items():
                net = build(kind, arch, args, data[0][:512], data[1][:512], 0)
                new = costs(net, optimizer_for(arch, args), data, args)
                for r in rs:
                    r.update(new)
            args.seeds = min(len(rs) for rs in results.values())
            out[arch] = summarize(arch, {k: rs[: args.seeds] for k, rs in results.items()}, args)
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("LOWDIM_DATA", "../shared/data"))
    ap.add_argument("--arch", choices=("mlp", "vit", "both"), default="both")
    ap.add_argument("--hidden", type=int, default=784)
    ap.add_argument("--rank", type=int, default=default_rank(10), help="r̂ (default 4·10)")
    ap.add_argument("--scale", type=float, default=1.0, help="ε of the DLN / C-DLN factors")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.05, help="MLP SGD step")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--vit-lr", type=float, default=1e-3, help="ViT Adam step")
    ap.add_argument("--vit-dim", type=int, default=64)
    ap.add_argument("--vit-depth", type=int, default=4)
    ap.add_argument("--vit-mlp", type=int, default=384, help="MLP width (6 × dim, as the paper's 3072/512)")
    ap.add_argument("--vit-epochs", type=int, default=2)
    ap.add_argument("--vit-eval-every", type=int, default=104)
    ap.add_argument("--vit-train-size", type=int, default=60000)
    ap.add_argument("--vit-test-size", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first-seed … first-seed + seeds − 1 (split a run over processes, "
                         "then --summarize their logs)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--summarize", nargs="+", default=None, metavar="LOG",
                    help="rebuild the tables and the JSON line from the per-seed lines of logs of "
                         "earlier (possibly unfinished) runs with the same settings, and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        return summarize_logs(args)
    torch.set_num_threads(args.threads)

    out: dict = {"benchmark": "nonlinear_table1", "mlp": None, "vit": None}
    for arch in ("mlp", "vit") if args.arch == "both" else (args.arch,):
        data = load_data(arch, args)
        results: dict[str, list[dict]] = {k: [] for k in args.models}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            first = seed == args.first_seed
            runs = run_seed(args.models, arch, data, args, seed, measure=arch == "mlp" and first)
            for kind, r in runs.items():
                results[kind].append(r)
                print(f"{arch} seed {seed} {kind:9s} acc {100 * r['acc']:.2f}%  time→99% "
                      f"{r['time_s']:.1f}s  total {r['total_s']:.1f}s  {r['ms_per_step']:.1f} ms/step  "
                      + json.dumps({k: v for k, v in r.items() if k in ROW_KEYS}), flush=True)
        out[arch] = summarize(arch, results, args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
