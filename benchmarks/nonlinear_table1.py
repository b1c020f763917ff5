"""Seed 000 Table 1 (MLP rows) on MNIST: original vs DLN vs C-DLN penultimate layer, side by side.

The MLP of seed 000 Sec. 4.2, ``ψ = W₆ ρ(W̃₅W̃₄W̃₃ ρ(W₂ ρ(W₁x)))``: three hidden ReLU layers of
width ``--hidden`` (the paper's parameter counts fit 784), its penultimate layer ``W₃`` kept
("original"), replaced by a full-width depth-3 DLN ("dln") or compressed to width r̂ = 4·10 = 40
("cdln", :func:`lowdim.nonlinear.compress_network` on one calibration batch of 512 training
images: the layer is hidden, so its subspaces come from the engine's gradient-at-initialization
compression; the compression time is counted in the C-DLN's training time). Data: MNIST from
``$LOWDIM_DATA/mnist`` (the paper uses FashionMNIST, which is not available offline here).

Training: minibatch SGD (batch ``--batch``, step ``--lr``, momentum ``--momentum``, α = 1), the
same seed giving the same data order and the same W₁, W₂, W₆ for the three models; factors
ε-orthogonal with ``--scale``. Per model, over ``--seeds`` seeds: final test accuracy (mean ±
std), seconds of training until the test accuracy (measured every ``--eval-every`` steps, the
evaluation not timed) first reaches 99% of its final value, MACs per example, training memory
(parameters, gradients and momentum buffers, plus the tensors autograd saves for backward on one
batch), trained parameters. For seed 0 also: the singular values of the penultimate weight's update
W(T) − W(0) (seed 000 Fig. 1), the subspace distance (eq. 14, r = 10) between its top singular
subspaces at consecutive evaluations (Fig. 20), and D_l, S_l of the MLP's features on 2000 training
images with the log-linear fit (seed 004 Sec. 4.2 on MNIST).

Usage: ``python benchmarks/nonlinear_table1.py [--hidden 784 --epochs 5 --seeds 5]``; defaults
are a reduced run for 2 shared CPU cores. Ends with one JSON line ``{"benchmark":
"nonlinear_table1", "mlp": {"original"|"dln"|"cdln": {"acc": [mean, std], "time_s", "macs",
"mem_mb", "params"}}, "vit": null}`` (the ViT rows are not implemented yet).
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
    DeepLinear,
    compress_network,
    consecutive_subspace_distances,
    default_rank,
    mlp,
    param_groups,
    update_singular_values,
)

MODELS = ("original", "dln", "cdln")


def build(kind: str, args, x_cal: torch.Tensor, y_cal: torch.Tensor, seed: int) -> nn.Module:
    """The MLP with its penultimate layer (module "4") original, DLN or C-DLN."""
    torch.manual_seed(seed)
    net = mlp(784, args.hidden, 10)
    if kind == "dln":
        compress_network(net, x_cal, F.cross_entropy, y_cal, mode="full", scale=args.scale,
                         random_state=seed)
    elif kind == "cdln":
        compress_network(net, x_cal, F.cross_entropy, y_cal, rank=args.rank, scale=args.scale,
                         alpha=args.alpha, random_state=seed)
    return net


def macs(net: nn.Module) -> int:
    """Multiply–accumulates per example of the linear maps."""
    total = 0
    for m in net.modules():
        if isinstance(m, DeepLinear):
            total += m.macs()
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


def train_memory_mb(net: nn.Module, x: torch.Tensor, momentum: bool) -> float:
    """Parameters + gradients (+ momentum buffers) + the tensors autograd saves for backward on
    the batch ``x`` (recorded with ``saved_tensors_hooks``, parameters not counted twice), in MB."""
    params = {p.data_ptr() for p in net.parameters()}
    size = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x).sum()
    return (size * (3 if momentum else 2) + sum(saved.values())) / 2**20


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def penultimate_weight(net: nn.Module) -> torch.Tensor:
    """End-to-end weight of module "4" (an ``nn.Linear`` or a ``DeepLinear``), detached."""
    return net[4].weight.detach().clone()


def measurements(net: nn.Module, snapshots: list[torch.Tensor], x, y, rank: int = 10) -> dict:
    """Seed 000 Fig. 1 / Fig. 20 on the penultimate weight, and seed 004's D_l on MNIST features."""
    s = update_singular_values(snapshots[-1], snapshots[0])
    dist = consecutive_subspace_distances(snapshots[1:], rank)  # from the first evaluation on
    prof = collapse_profile(net, x, y)
    return {"update_sv_top": [float(f"{v:.3g}") for v in s[: 2 * rank]],
            "update_sv_ratio_10_to_1": float(s[rank] / s[0]),
            "subspace_distance_max": max(dist), "subspace_distance_median": float(np.median(dist)),
            "D": [float(f"{v:.4g}") for v in prof.collapse],
            "S": [round(float(v), 4) for v in prof.separation],
            "D_decay_ratio": round(prof.fit.decay_ratio, 4), "D_fit_r2": round(prof.fit.r2, 4)}


def run(kind: str, data, args, seed: int, measure: bool = False) -> dict:
    x_tr, y_tr, x_te, y_te = data
    g = torch.Generator().manual_seed(seed)
    cal = torch.randperm(len(x_tr), generator=g)[:512]
    t0 = time.perf_counter()
    net = build(kind, args, x_tr[cal], y_tr[cal], seed)
    opt = torch.optim.SGD(param_groups(net, args.lr), lr=args.lr, momentum=args.momentum)
    elapsed, curve, step = time.perf_counter() - t0, [], 0
    snapshots = [penultimate_weight(net)] if measure else []
    for _ in range(args.epochs):
        order = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(order) - args.batch + 1, args.batch):
            t0 = time.perf_counter()
            idx = order[i : i + args.batch]
            opt.zero_grad()
            F.cross_entropy(net(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
            elapsed += time.perf_counter() - t0
            step += 1
            if step % args.eval_every == 0:
                curve.append((elapsed, accuracy(net, x_te, y_te)))
                if measure:
                    snapshots.append(penultimate_weight(net))
    final = accuracy(net, x_te, y_te)
    curve.append((elapsed, final))
    to_99 = next(t for t, a in curve if a >= 0.99 * final)
    extra = measurements(net, snapshots, x_tr[:2000], y_tr[:2000]) if measure else {}
    return {**extra, "acc": final, "time_s": to_99, "total_s": elapsed, "macs": macs(net),
            "mem_mb": train_memory_mb(net, x_tr[: args.batch], args.momentum > 0),
            "params": sum(p.numel() for p in net.parameters() if p.requires_grad)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("LOWDIM_DATA", "../shared/data"))
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--rank", type=int, default=default_rank(10), help="r̂ (default 4·10)")
    ap.add_argument("--scale", type=float, default=1.0, help="ε of the DLN / C-DLN factors")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    train, test = load_mnist("train", args.data), load_mnist("test", args.data)
    n = args.train_size
    data = (torch.as_tensor(train.images[:n]), torch.as_tensor(train.labels[:n]),
            torch.as_tensor(test.images), torch.as_tensor(test.labels))
    results: dict[str, list[dict]] = {k: [] for k in MODELS}
    for seed in range(args.seeds):
        for kind in MODELS:  # interleaved, so machine load affects the three alike
            r = run(kind, data, args, seed, measure=seed == 0)
            results[kind].append(r)
            print(f"seed {seed} {kind:9s} acc {100 * r['acc']:.2f}%  time→99% {r['time_s']:.1f}s  "
                  f"total {r['total_s']:.1f}s", flush=True)

    print(f"\nMNIST MLP 784-{args.hidden}-{args.hidden}-{args.hidden}-10, {args.epochs} epochs, "
          f"{args.seeds} seeds, SGD lr {args.lr} momentum {args.momentum} batch {args.batch}, "
          f"ε = {args.scale}, r̂ = {args.rank}, α = {args.alpha}, {args.threads} thread(s)")
    print(f"{'model':10s}{'test acc (%)':>18s}{'time→99% (s)':>18s}{'MACs':>12s}{'mem (MB)':>10s}"
          f"{'params':>10s}")
    table = {}
    for kind in MODELS:
        rs = results[kind]
        acc, t = np.array([r["acc"] for r in rs]) * 100, np.array([r["time_s"] for r in rs])
        table[kind] = {"acc": [round(acc.mean(), 2), round(acc.std(), 2)],
                       "time_s": [round(t.mean(), 2), round(t.std(), 2)], "macs": rs[0]["macs"],
                       "mem_mb": round(rs[0]["mem_mb"], 2), "params": rs[0]["params"]}
        print(f"{kind:10s}{acc.mean():11.2f} ± {acc.std():4.2f}{t.mean():11.1f} ± {t.std():4.1f}"
              f"{rs[0]['macs']:12.3e}{rs[0]['mem_mb']:10.2f}{rs[0]['params']:10d}")
    print("\nseed 0, penultimate weight W(t) (end-to-end for DLN / C-DLN) and MNIST features:")
    for kind in MODELS:
        m = results[kind][0]
        print(f"{kind:9s} σ(W(T) − W(0)) top: {' '.join(f'{v:.2g}' for v in m['update_sv_top'][:12])}"
              f"  (σ_11/σ_1 = {m['update_sv_ratio_10_to_1']:.3f}); consecutive top-10 subspace "
              f"distance: median {m['subspace_distance_median']:.2e}, max {m['subspace_distance_max']:.2e}")
        print(f"{'':9s} D_l: {' '.join(f'{v:.3g}' for v in m['D'])}  decay/layer "
              f"{m['D_decay_ratio']:.3f} (R² {m['D_fit_r2']:.3f}); "
              f"S_l: {' '.join(f'{v:.2f}' for v in m['S'])}")
        keys = ("update_sv_top", "update_sv_ratio_10_to_1", "subspace_distance_median",
                "subspace_distance_max", "D", "S", "D_decay_ratio", "D_fit_r2")
        table[kind]["seed0"] = {k: m[k] for k in keys}
    ratio = table["cdln"]["time_s"][0] / table["dln"]["time_s"][0]
    print(f"C-DLN / DLN time to 99% of final accuracy: {ratio:.2f} (paper 0.57; target ≤ 0.6)")
    print(json.dumps({"benchmark": "nonlinear_table1", "mlp": table, "vit": None,
                      "cdln_over_dln_time": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
