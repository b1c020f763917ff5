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
α = ``--alpha``; the same seed gives the same data order and the same other layers for the three
models; DLN/C-DLN factors are ε-orthogonal with ``--scale``. Per model, over ``--seeds`` seeds:
final test accuracy (mean ± std), seconds of training until the test accuracy (measured every
``--eval-every`` steps, evaluation not timed) first reaches 99% of its final value, median ms per
training step, MACs per example of the linear maps (attention score/value products excluded, the
same for the three), training memory (parameters, gradients and optimizer state, plus the tensors
autograd saves for backward on one batch), trained parameters. For the MLP at seed 0 also: the
singular values of the penultimate weight's update W(T) − W(0) (seed 000 Fig. 1), the subspace
distance (eq. 14, r = 10) between its top singular subspaces at consecutive evaluations (Fig. 20),
and D_l, S_l of the MLP's features on 2000 training images with the log-linear fit (seed 004
Sec. 4.2 on MNIST). ``--lowrank 10 1`` adds MLP rows whose last hidden layers W₂, W₃ are trained as
``B·A`` of rank 10 (= K) or 1 throughout (the talk, "Low-Rank Training of Nonlinear Networks?";
``DeepLinear(mode="narrow", depth=2)``, ``B·A`` initialized at scale ε = 1).

Usage: ``python benchmarks/nonlinear_table1.py [--arch mlp|vit|both] [--hidden 784 --epochs 5
--seeds 5]``; the defaults are a reduced run for 2 shared CPU cores. Ends with one JSON line
``{"benchmark": "nonlinear_table1", "mlp": {"original"|"dln"|"cdln": {"acc": [mean, std],
"time_s": [mean, std], "macs", "mem_mb", "params", …}}, "vit": {…} or null}``.
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
    VisionTransformer,
    compress_network,
    consecutive_subspace_distances,
    default_rank,
    mlp,
    param_groups,
    update_singular_values,
)

MODELS = ("original", "dln", "cdln")


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
    elif kind.startswith("lowrank"):  # B·A with r = K (or 1) for W₂, W₃ throughout (the talk)
        compress_network(net, x_cal, F.cross_entropy, y_cal, layers=["2", "4"], mode="narrow",
                         depth=2, rank=int(kind[len("lowrank"):]), scale=1.0, random_state=seed)
    return net


def macs(net: nn.Module, tokens: int = 1) -> int:
    """Multiply–accumulates per example of the linear maps (``tokens`` rows through each)."""
    total = 0
    for m in net.modules():
        if isinstance(m, DeepLinear):
            total += m.macs()
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
        elif isinstance(m, nn.MultiheadAttention):  # in_proj is a bare parameter
            total += m.in_proj_weight.numel()
    return total * tokens


def train_memory_mb(net: nn.Module, x: torch.Tensor, state: int) -> float:
    """Parameters, gradients and ``state`` optimizer buffers per parameter, plus the tensors autograd
    saves for backward on the batch ``x`` (``saved_tensors_hooks``; parameters not counted twice), MB."""
    params = {p.data_ptr() for p in net.parameters()}
    size = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x).sum()
    return (size * (2 + state) + sum(saved.values())) / 2**20


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


def run(kind: str, arch: str, data, args, seed: int, measure: bool = False) -> dict:
    x_tr, y_tr, x_te, y_te = data
    g = torch.Generator().manual_seed(seed)
    cal = torch.randperm(len(x_tr), generator=g)[:512]
    t0 = time.perf_counter()
    net = build(kind, arch, args, x_tr[cal], y_tr[cal], seed)
    if arch == "mlp":
        opt, state = torch.optim.SGD(param_groups(net, args.lr), momentum=args.momentum), 1
    else:
        opt, state = torch.optim.Adam(param_groups(net, args.vit_lr)), 2
    elapsed, curve, steps = time.perf_counter() - t0, [], []
    snapshots = [net[4].weight.detach().clone()] if measure else []
    for _ in range(args.epochs):
        order = torch.randperm(len(x_tr), generator=g)
        for i in range(0, len(order) - args.batch + 1, args.batch):
            t0 = time.perf_counter()
            idx = order[i : i + args.batch]
            opt.zero_grad()
            F.cross_entropy(net(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
            steps.append(time.perf_counter() - t0)
            elapsed += steps[-1]
            if len(steps) % args.eval_every == 0:
                curve.append((elapsed, accuracy(net, x_te, y_te)))
                if measure:
                    snapshots.append(net[4].weight.detach().clone())
    final = accuracy(net, x_te, y_te)
    curve.append((elapsed, final))
    to_99 = next(t for t, a in curve if a >= 0.99 * final)
    extra = measurements(net, snapshots, x_tr[:2000], y_tr[:2000]) if measure else {}
    tokens = 1 if arch == "mlp" else 17
    return {**extra, "acc": final, "time_s": to_99, "total_s": elapsed,
            "ms_per_step": 1e3 * float(np.median(steps)), "macs": macs(net, tokens),
            "mem_mb": train_memory_mb(net, x_tr[: args.batch], state),
            "params": sum(p.numel() for p in net.parameters() if p.requires_grad)}


def summarize(arch: str, results: dict[str, list[dict]], args) -> dict:
    """Print the Table 1 rows of one architecture and return them for the JSON line."""
    print(f"\n{arch.upper()} on MNIST, {args.seeds} seeds, {args.epochs} epochs, batch {args.batch}, "
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
                       "macs": rs[0]["macs"], "mem_mb": round(rs[0]["mem_mb"], 2), "params": rs[0]["params"]}
        print(f"{kind:10s}{acc.mean():9.2f} ± {acc.std():4.2f}{t.mean():9.1f} ± {t.std():4.1f}{ms:9.1f}"
              f"{rs[0]['macs']:11.3e}{rs[0]['mem_mb']:10.2f}{rs[0]['params']:10d}")
    if "dln" in table and "cdln" in table:
        ratio = table["cdln"]["time_s"][0] / table["dln"]["time_s"][0]
        step_ratio = table["cdln"]["ms_per_step"] / table["dln"]["ms_per_step"]
        print(f"C-DLN / DLN: time to 99% of final accuracy {ratio:.2f} (paper MLP 0.57, ViT 0.69; "
              f"target ≤ 0.6), per training step {step_ratio:.2f}")
        table["cdln_over_dln_time"], table["cdln_over_dln_step"] = round(ratio, 3), round(step_ratio, 3)
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
    ap.add_argument("--vit-mlp", type=int, default=256)
    ap.add_argument("--vit-train-size", type=int, default=10000)
    ap.add_argument("--vit-test-size", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--lowrank", type=int, nargs="*", default=[],
                    help="also train the MLP with W₂, W₃ as B·A of these ranks (the talk: 10 and 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kinds = tuple(args.models) + tuple(f"lowrank{r}" for r in args.lowrank)

    train, test = load_mnist("train", args.data), load_mnist("test", args.data)
    out: dict = {"benchmark": "nonlinear_table1", "mlp": None, "vit": None}
    for arch in ("mlp", "vit") if args.arch == "both" else (args.arch,):
        n, m = (args.train_size, None) if arch == "mlp" else (args.vit_train_size, args.vit_test_size)
        data = (torch.as_tensor(train.images[:n]), torch.as_tensor(train.labels[:n]),
                torch.as_tensor(test.images[:m]), torch.as_tensor(test.labels[:m]))
        arch_kinds = kinds if arch == "mlp" else tuple(args.models)
        results: dict[str, list[dict]] = {k: [] for k in arch_kinds}
        for seed in range(args.seeds):
            for kind in arch_kinds:  # interleaved, so machine load affects them alike
                r = run(kind, arch, data, args, seed, measure=arch == "mlp" and seed == 0)
                results[kind].append(r)
                print(f"{arch} seed {seed} {kind:9s} acc {100 * r['acc']:.2f}%  time→99% "
                      f"{r['time_s']:.1f}s  total {r['total_s']:.1f}s  {r['ms_per_step']:.1f} ms/step",
                      flush=True)
        out[arch] = summarize(arch, results, args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
