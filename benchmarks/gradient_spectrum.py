"""Low-dimensional gradients and updates in nonlinear networks, at the papers' settings.

1. Seed 003 Fig. 9: singular values of ``∇_{W_2} ½‖W_3 σ(W_2 σ(W_1)) − Φ‖_F²`` at initialization
   for the nonlinear factorization (13) with ``L = 3``, ``d = 1000``, ``r* = 5``, ``ε_l = 1e-3``
   (ε-orthogonal factors; Φ a random rank-5 matrix with σ_max = 1,
   :func:`lowdim.datasets.low_rank_matrix`), with σ = ReLU and, for comparison, σ = identity
   (the deep matrix factorization, whose gradient has rank exactly r*). Computed by
   :func:`lowdim.nonlinear.nonlinear_gradient_spectrum` (autograd, float64).
2. Seed 000 Fig. 1 and Fig. 20 (App. A.4 training details): an MLP with 3 hidden ReLU layers of
   width 784 (PyTorch's default uniform initialization) and a DLN of the same widths (linear,
   orthogonal initialization, ε = 1), trained on MNIST with SGD, step 0.01, batch 128
   (``--epochs``). For the penultimate weight ``W``: the singular values of ``W(T) − W(0)`` (Fig. 1)
   and the subspace distance ``r − ‖U_r(t)ᵀU_r(t+1)‖_F²`` (eq. 14, r = 10) between consecutive
   snapshots every ``--snapshot-every`` steps (Fig. 20).

Usage: ``python benchmarks/gradient_spectrum.py [--d 1000] [--epochs 3] [--out DIR]`` (``--out``
writes ``gradient_spectrum.png`` and ``gradient_spectrum.json`` there). Ends with one JSON line
``{"benchmark": "gradient_spectrum", "fig9": {"relu": {...}, "linear": {...}}, "updates": {"mlp":
{...}, "dln": {...}}}``.
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

from lowdim._io import atomic_savefig, atomic_write_json
from lowdim.datasets import low_rank_matrix
from lowdim.datasets.mnist import load_mnist
from lowdim.nonlinear import (
    consecutive_subspace_distances,
    deep_network,
    mlp,
    nonlinear_gradient_spectrum,
    track_weight,
    update_singular_values,
)


def fig9(args) -> dict:
    """Spectrum of ∇_{W_2} at Θ(0) for ReLU and linear factorizations (seed 003 Fig. 9)."""
    phi = low_rank_matrix(args.d, args.d, args.rank, random_state=args.seed)
    out = {}
    for act in ("relu", "linear"):
        t0 = time.perf_counter()
        s = nonlinear_gradient_spectrum(phi, depth=3, layer=2, scale=args.scale, activation=act,
                                        random_state=args.seed)
        r = args.rank
        out[act] = {"top": [float(f"{v:.4g}") for v in s[: 2 * r + 2]],
                    "gap_r": float(s[r - 1] / s[r]), "gap_r_plus_1": float(s[r] / s[r + 1]),
                    "tail_median": float(s[r + 1 :].median()),
                    "top_over_tail": float(s[r - 1] / s[r + 1 :].median()),
                    "spectrum": [float(v) for v in s], "seconds": round(time.perf_counter() - t0, 2)}
        print(f"seed 003 Fig. 9, σ = {act}: top {2 * r + 2} singular values of ∇W₂ at Θ(0): "
              + " ".join(f"{v:.3g}" for v in s[: 2 * r + 2])
              + f"; σ_{r}/σ_{r + 1} = {out[act]['gap_r']:.3g}, σ_{r + 1}/σ_{r + 2} = "
              f"{out[act]['gap_r_plus_1']:.3g}, σ_{r}/median(tail) = {out[act]['top_over_tail']:.3g}",
              flush=True)
    return out


def updates(kind: str, data, args) -> dict:
    """Seed 000 Fig. 1 / Fig. 20 for the MLP or the DLN on MNIST (App. A.4 settings)."""
    x_tr, y_tr = data
    torch.manual_seed(args.seed)
    if kind == "mlp":
        net = mlp(784, 784, 10)
    else:
        net = deep_network([784] * 4 + [10], activation="linear", scale=1.0, random_state=args.seed,
                           dtype=torch.float32)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    layer = linears[-2]  # the penultimate weight
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    snaps, loss = track_weight(net, layer.weight, opt, x_tr, y_tr, epochs=args.epochs,
                               every=args.snapshot_every, batch_size=args.batch, generator=g)
    steps = args.epochs * (len(x_tr) // args.batch)
    s = update_singular_values(snaps[-1], snaps[0])
    dist = consecutive_subspace_distances(snaps, args.subspace_rank)
    energy = float((s[: args.subspace_rank] ** 2).sum() / (s**2).sum())
    r = args.subspace_rank
    row = {"update_sv": [float(f"{v:.4g}") for v in s[: 3 * r]], "top_r_energy": energy,
           "sv_r_plus_1_over_1": float(s[r] / s[0]), "subspace_distance": [float(f"{v:.3g}") for v in dist],
           "subspace_distance_median": float(np.median(dist)), "subspace_distance_max": float(max(dist)),
           "final_loss": loss, "steps": steps, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"seed 000 Fig. 1, {kind}: σ(W(T) − W(0)) top {3 * r}: "
          + " ".join(f"{v:.2g}" for v in s[: 3 * r])
          + f"; top-{r} energy {energy:.3f}, σ_{r + 1}/σ_1 = {row['sv_r_plus_1_over_1']:.3f}. Fig. 20: "
          f"consecutive top-{r} subspace distance median {row['subspace_distance_median']:.2e}, max "
          f"{row['subspace_distance_max']:.2e} (of at most {r}); {steps} steps, "
          f"final loss {row['final_loss']:.3f}",
          flush=True)
    return row


def plot(out: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for act, row in out["fig9"].items():
        axes[0].semilogy(np.arange(1, 41), row["spectrum"][:40], "o-", ms=3, label=f"σ = {act}")
    axes[0].set(title="∇W₂ at init, L=3, d=1000, r*=5 (seed 003 Fig. 9)", xlabel="index",
                ylabel="singular value")
    for kind, row in out["updates"].items():
        axes[1].semilogy(np.arange(1, len(row["update_sv"]) + 1), row["update_sv"], "o-", ms=3, label=kind)
        axes[2].plot(row["subspace_distance"], label=kind)
    axes[1].set(title="σ(W(T) − W(0)), penultimate (seed 000 Fig. 1)", xlabel="index")
    axes[2].set(title="consecutive top-10 subspace distance (Fig. 20)", xlabel="snapshot")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    atomic_savefig(folder / "gradient_spectrum.png", fig, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("LOWDIM_DATA", "../shared/data"))
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--rank", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--snapshot-every", type=int, default=100)
    ap.add_argument("--subspace-rank", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-updates", action="store_true", help="only Fig. 9")
    ap.add_argument("--out", type=Path, default=None, help="folder for the PNG and the JSON numbers")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out: dict = {"benchmark": "gradient_spectrum", "fig9": fig9(args), "updates": {}}
    if not args.skip_updates:
        train = load_mnist("train", args.data)
        data = (torch.as_tensor(train.images), torch.as_tensor(train.labels))
        out["updates"] = {kind: updates(kind, data, args) for kind in ("mlp", "dln")}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "gradient_spectrum.json", out)
        plot(out, args.out)
    for row in out["fig9"].values():
        del row["spectrum"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
