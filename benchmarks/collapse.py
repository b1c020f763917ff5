"""Progressive feature collapse in trained deep networks (seed 004 Sec. 4.2, Figs. 7, 11, 12).

K = 5 classes, n = 10 samples each, d = N = 50 inputs with X Xᵀ = I (a random orthogonal matrix),
one-hot targets, loss ½‖f(X) − Y‖_F² (eq. 2), full-batch GD (step ``--lr``, default 0.2/L) from ε-scaled
initialization until the relative loss falls below ``--tol`` (or ``--max-iter``). Networks:
``W_L σ(W_{L−1} ⋯ σ(W_1 x))`` with hidden width d, σ linear (DLN) or ReLU.

Runs: Fig. 7 — ε = 0.5 orthogonal, L ∈ {6, 8, 10}, linear and ReLU; Fig. 11 — L = 4,
ε ∈ {0.5, 0.25, 0.125}; Fig. 12 — L = 8, init ∈ {orthogonal, normal, uniform}. For each: D_l
(eqs. 13–14) and S_l (the talk) at layers 0…L−1, the best log-linear fit of D_l over layers 1…L−1
(per-layer decay ratio, R²), and the largest D_{l+1}/D_l against Theorem 2's 2(√K + 1)ε² (the
theorem's conditions need ε ≲ 0.06 here, so at ε = 0.5 this is a measurement, not a check).

``--hybrid``: the talk's hybrid network ("Implication II"; there 4-layer MLP + 6-layer linear on
CIFAR-10), here 4 ReLU layers then 6 linear layers of width ``--hybrid-width`` and a linear head,
trained with Adam (1e-3, cross-entropy, batch 128) for ``--hybrid-epochs`` (10) epochs on the first
``--hybrid-train`` (all 60 000) MNIST training images, where its training accuracy has saturated;
D_l and S_l at every layer on 2000 of them, with separate log-linear fits over the ReLU and the
linear layers; test accuracy on the 10 000 test images.

Usage: ``python benchmarks/collapse.py [--quick] [--hybrid]`` (~40 s; hybrid ~2 min more on a
quiet core). Ends with
one JSON line ``{"benchmark": "collapse", "runs": [{"L", "activation", "decay_ratio", "fit_r2",
"max_ratio_vs_bound", …}], "hybrid": {…}}`` (hybrid only with ``--hybrid``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from lowdim.collapse import collapse_profile, theorem2_bound
from lowdim.datasets import orthogonal_classes
from lowdim.nonlinear import deep_network, fit_least_squares, hybrid_network, train_epoch


def run(depth: int, activation: str, init: str, scale: float, args) -> dict:
    x, labels = orthogonal_classes(args.classes, args.per_class, random_state=args.seed)
    y = torch.nn.functional.one_hot(labels, args.classes).double()
    d = x.shape[1]
    net = deep_network([d] * depth + [args.classes], activation=activation, init=init, scale=scale,
                       random_state=args.seed + 1)
    t0 = time.perf_counter()
    lr = args.lr or 0.2 / depth  # the curvature grows like L σ^(2(L−1)/L)
    iters, rel = fit_least_squares(net, x, y, lr=lr, tol=args.tol, max_iter=args.max_iter)
    prof = collapse_profile(net, x, labels)
    bound = theorem2_bound(args.classes, scale)
    out = {
        "L": depth, "activation": activation, "init": init, "eps": scale,
        "decay_ratio": round(prof.fit.decay_ratio, 4), "fit_r2": round(prof.fit.r2, 4),
        "max_ratio_vs_bound": round(float(prof.ratios.max()) / bound, 4),
        "iterations": iters, "rel_loss": rel, "seconds": round(time.perf_counter() - t0, 2),
        "D": [float(f"{v:.4g}") for v in prof.collapse], "S": [round(float(v), 4) for v in prof.separation],
    }
    print(f"L={depth:2d} {activation:6s} {init:10s} ε={scale:<5g} iters={iters:6d} "
          f"decay/layer={out['decay_ratio']:.3f} R²={out['fit_r2']:.3f} "
          f"max D_(l+1)/D_l ÷ 2(√K+1)ε² = {out['max_ratio_vs_bound']:.3f}  "
          f"D: {' '.join(f'{v:.2e}' for v in prof.collapse)}")
    return out


def hybrid(args) -> dict:
    """The talk's hybrid network on MNIST: where compression (D_l) and separation (S_l) happen."""
    from lowdim.collapse import log_linear_fit
    from lowdim.datasets.mnist import load_mnist

    torch.manual_seed(args.seed)
    train, test = load_mnist("train", args.data), load_mnist("test", args.data)
    x = torch.as_tensor(train.images[: args.hybrid_train])
    y = torch.as_tensor(train.labels[: args.hybrid_train])
    w = args.hybrid_width
    net = hybrid_network(784, w, 10, nonlinear_layers=4, linear_layers=6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.hybrid_epochs):
        train_epoch(net, opt, x, y, batch_size=128, generator=g)
    with torch.no_grad():
        acc = float((net(x[:2000]).argmax(1) == y[:2000]).float().mean())
        test_acc = float((net(torch.as_tensor(test.images)).argmax(1) == torch.as_tensor(test.labels))
                         .float().mean())
    prof = collapse_profile(net, x[:2000], y[:2000])
    relu_fit = log_linear_fit(prof.collapse[1:5], range(1, 5))
    linear_fit = log_linear_fit(prof.collapse[4:], range(4, len(prof.collapse)))
    print(f"hybrid (4 ReLU + 6 linear, width {w}, {args.hybrid_epochs} epochs on {len(x)} images, "
          f"train acc {100 * acc:.1f}%, test acc {100 * test_acc:.2f}%)")
    print("  D_l:", " ".join(f"{v:.3g}" for v in prof.collapse))
    print("  S_l:", " ".join(f"{v:.2f}" for v in prof.separation))
    print(f"  D decay per layer: ReLU layers 1–4 {relu_fit.decay_ratio:.3f} (R² {relu_fit.r2:.3f}), "
          f"linear layers 4–10 {linear_fit.decay_ratio:.3f} (R² {linear_fit.r2:.3f})")
    return {"train_acc": acc, "test_acc": test_acc, "D": [float(f"{v:.4g}") for v in prof.collapse],
            "S": [round(float(v), 4) for v in prof.separation],
            "relu_decay_ratio": round(relu_fit.decay_ratio, 4),
            "linear_decay_ratio": round(linear_fit.decay_ratio, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--lr", type=float, default=None, help="GD step (default 0.2 / L)")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative loss to stop at")
    ap.add_argument("--max-iter", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="Fig. 7 only, L ∈ {6, 8}")
    ap.add_argument("--hybrid", action="store_true", help="also the talk's hybrid network on MNIST")
    ap.add_argument("--hybrid-width", type=int, default=256)
    ap.add_argument("--hybrid-train", type=int, default=60000)
    ap.add_argument("--hybrid-epochs", type=int, default=10)
    ap.add_argument("--data", default=os.environ.get("LOWDIM_DATA", "../shared/data"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    runs = []
    print("Fig. 7: ε = 0.5 orthogonal")
    for depth in (6, 8) if args.quick else (6, 8, 10):
        for act in ("linear", "relu"):
            runs.append(run(depth, act, "orthogonal", 0.5, args))
    if not args.quick:
        print("Fig. 11: L = 4, ε sweep")
        for eps in (0.5, 0.25, 0.125):
            for act in ("linear", "relu"):
                runs.append(run(4, act, "orthogonal", eps, args))
        print("Fig. 12: L = 8, initialization sweep (ε = 0.5)")
        for init in ("normal", "uniform"):
            for act in ("linear", "relu"):
                runs.append(run(8, act, init, 0.5, args))
    out = {"benchmark": "collapse", "runs": runs}
    if args.hybrid:
        out["hybrid"] = hybrid(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
