"""Figures of the talk (seed 002, Qu 2023): layer-wise separation S_l, penultimate-layer singular values
across models, the low-rank training table, and the hybrid network's compression and separation.

The talk's slides show plots without settings (and its data, CIFAR-10, FashionMNIST and USPS, is not
available offline), so each figure states the setting lowdim chose in its notes: synthetic data for
the theory slides, MNIST (``$LOWDIM_DATA/mnist``, default ``../shared/data/mnist``) for the rest.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..collapse import collapse_profile, log_linear_fit
from ..nonlinear import (
    factorize_layers,
    hybrid_network,
    mlp,
    num_parameters,
    train_epoch,
    train_until_plateau,
    training_flops,
    training_memory,
)
from ._common import fmt, subplots
from ._registry import Check, Figure, register
from .seed000_nonlinear import DEPENDS as DEPENDS_000
from .seed000_nonlinear import NAMES, mnist_tensors, update_runs
from .seed004_collapse import DEPENDS as DEPENDS_004
from .seed004_collapse import collapse_run

PAPER = "002 (Qu, talk: low-dim invariant subspaces in GD)"


# ----------------------------------------------------------------------------- separation S_l
def _separation_compute(s: dict, seed: int, progress: bool) -> dict:
    """DLNs and ReLU networks trained on near-orthonormal Gaussian samples (d ≥ N); S_l, D_l per layer."""
    k, n = s["classes"], s["per_class"]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(k * n, s["dim"], generator=gen, dtype=torch.float64) / s["dim"] ** 0.5
    data = (x, torch.arange(k).repeat_interleave(n))
    configs = [(L, act) for act in ("linear", "relu") for L in s["depths"]]
    runs = [collapse_run(s, seed, L, act, "orthogonal", s["eps"], data=data)
            for L, act in tqdm(configs, desc="002-separation", disable=not progress)]
    return {"runs": runs, "simplex_max": 1.0 - 1.0 / (k - 1)}


def _separation_plot(data: dict, s: dict):
    fig, axes = subplots(2, width=5.0)
    for ax, act in zip(axes, ("linear", "relu")):
        for i, r in enumerate(x for x in data["runs"] if x["activation"] == act):
            ax.plot(np.arange(len(r["S"])), r["S"], "o-", color=f"C{i}", label=f"L = {r['depth']}")
        ax.axhline(data["simplex_max"], color="k", ls=":", lw=1,
                   label=f"largest possible, 1 − 1/(K−1) = {data['simplex_max']:.2f}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="layer l (0 = input)", ylabel="S_l = 1 − max |cos(μ_k, μ_k')|",
               title=f"{'linear network' if act == 'linear' else 'ReLU network'}: separation S_l")
        ax.legend(fontsize=8)
    return fig


def _rises(r: dict, tol: float = 0.01) -> bool:
    """S_l non-decreasing over the hidden layers l = 1 … L − 1 (up to ``tol``)."""
    sep = r["S"][1:]
    return all(b >= a - tol for a, b in zip(sep, sep[1:]))


def _separation_check(data: dict, s: dict) -> list[Check]:
    top = data["simplex_max"]
    lin = [r for r in data["runs"] if r["activation"] == "linear"]
    relu = [r for r in data["runs"] if r["activation"] == "relu"]

    def show(rs):
        return "; ".join(f"L = {r['depth']}: " + " ".join(f"{v:.2f}" for v in r["S"]) for r in rs)

    return [
        Check("linear networks: S_l grows layer by layer (non-decreasing over l ≥ 1, 0.01 slack) to ≥ "
              "0.95 of "
              "its largest possible value at the penultimate layer",
              all(_rises(r) and r["S"][-1] >= 0.95 * top for r in lin), show(lin) + f" (largest {top:.2f})"),
        Check("ReLU networks: S_l grows layer by layer (non-decreasing over l ≥ 1, 0.01 slack)",
              all(_rises(r) for r in relu), show(relu)),
        Check("ReLU networks: the penultimate layer is the best separated hidden layer",
              all(r["S"][-1] >= max(r["S"][1:]) for r in relu), show(relu)),
    ]


_SEP = dict(classes=5, per_class=10, dim=100, eps=0.5, depths=[6, 8], lr_times_depth=0.2, tol=1e-4,
            max_iter=30000)

register(Figure(
    id="002-separation", paper=PAPER,
    caption="Progressive feature separation with sub-linear rate. Feature separation in trained deep "
            "networks: "
            "linear network (left) vs. nonlinear (right); S_l := 1 − max_{k≠k'} |⟨μ_k, μ_k'⟩| / "
            "(‖μ_k‖‖μ_k'‖) "
            "with centred class means μ_k.",
    claim="In trained deep networks the between-class separation S_l improves from shallow to deep layers: "
          "non-decreasing over the hidden layers, in linear networks up to ≥ 0.95 of its largest possible "
          "value 1 − 1/(K−1), in ReLU networks at least ending at its best hidden layer.",
    sizes={"paper": _SEP, "quick": _SEP},
    estimate={"quick": 10, "paper": 10},
    compute=_separation_compute, plot=_separation_plot, check=_separation_check,
    notes="The talk's theorem assumes near-orthonormal samples in R^d, d ≥ N; lowdim draws K = 5 classes of "
          "n = 10 Gaussian samples N(0, I/d) in d = 100 (with exactly orthonormal samples S_0 is already the "
          "largest possible value 1 − 1/(K−1) = 0.75 for centred means) and trains the networks of seed 004 "
          "Sec. 4.2 (ε = 0.5 orthogonal, GD step 0.2/L to relative loss 1e-4). Quick = paper (seconds).",
    module=__name__, depends=("lowdim.repro.seed004_collapse", *DEPENDS_004),
))


# ----------------------------------------------------------------------------- penultimate singular values
def _penultimate_plot(data: dict, s: dict):
    fig, axes = subplots(len(data), width=4.4)
    for ax, (kind, run) in zip(axes, data.items()):
        traj = np.asarray(run["trajectory"])
        for i in range(traj.shape[1]):
            ax.semilogy(run["steps"][1:], np.maximum(traj[1:, i], 1e-12), lw=1.3 if i < s["rank"] else 0.6,
                        color=f"C{i % 10}" if i < s["rank"] else "0.65")
        ax.set(xlabel="training step t", ylabel="σ_i(W(t) − W(0))",
               title=f"{NAMES[kind]} {run['shape'][0]}×{run['shape'][1]}: top-{s['rank']} "
                     f"energy {run['energy_top_r']:.3f}")
    axes[0].plot([], [], color="0.65", label=f"σ_i, i > {s['rank']}")
    axes[0].plot([], [], color="C0", label=f"σ_1 … σ_{s['rank']}")
    axes[0].legend(fontsize=8)
    return fig


def _penultimate_check(data: dict, s: dict) -> list[Check]:
    from .seed000_nonlinear import _fig1_check, _fig20_check

    return _fig1_check(data, s) + _fig20_check(data, s)


_PEN = dict(models=["dln", "mlp", "vit"], hidden=784, lr=0.01, batch=128, rank=10, keep=30, vit_dim=64,
            vit_depth=4, vit_mlp=256, vit_lr=1e-3)

register(Figure(
    id="002-penultimate", paper=PAPER,
    caption="Implication I: invariant subspaces in deeper layers. The learning dynamics of the singular "
            "values "
            "in the penultimate layer for a wide range of models (linear model, MLP, toy ViT, ViT-B): in the "
            "deeper layers, feature learning only happens in a low-dimensional invariant subspace of the "
            "weight "
            "matrices.",
    claim="For a DLN, an MLP and a toy ViT on MNIST, the penultimate layer's update W(t) − W(0) has about "
          "K = 10 "
          "growing singular values (top 10 hold ≥ 95% of the energy, σ_11 ≤ 0.1 σ_1) and its top-10 subspace "
          "barely moves between snapshots (eq. 14 distance: median ≤ 1, 90% ≤ 2.5).",
    sizes={"paper": {**_PEN, "train_size": 60000, "epochs": 3, "snapshot_every": 100},
           "quick": {**_PEN, "train_size": 20000, "epochs": 2, "snapshot_every": 25}},
    estimate={"quick": 90, "paper": 400},
    compute=update_runs, plot=_penultimate_plot, check=_penultimate_check,
    notes="The runs of 000-fig1 (DLN and MLP: SGD 0.01, batch 128) plus a toy ViT (7×7 patches, dim 64, 4 "
          "blocks, "
          "MLP 256; its penultimate weight is the last block's fc2, 64×256; Adam 1e-3). ViT-B on CIFAR-10 is "
          "not run (no GPU, no CIFAR-10 offline).",
    module=__name__, depends=("lowdim.repro.seed000_nonlinear", *DEPENDS_000),
))


# ----------------------------------------------------------------------------- low-rank training table
VARIANTS = ("normal", "rank10", "rank1")


def _lowrank_compute(s: dict, seed: int, progress: bool) -> dict:
    x, y, x_te, y_te = mnist_tensors(s["train_size"] + s["val_size"], s["test_size"])
    n = s["train_size"]
    x_tr, y_tr, x_va, y_va = x[:n], y[:n], x[n:], y[n:]
    bx, by = x_tr[: s["batch"]], y_tr[: s["batch"]]

    def batch_loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, by)

    def accuracy(net, a, b) -> float:
        with torch.no_grad():
            return 100.0 * float((net(a).argmax(1) == b).float().mean())

    out = {}
    for variant in tqdm(VARIANTS, desc="002-lowrank", disable=not progress):
        torch.manual_seed(seed)
        net = mlp(784, s["hidden"], 10)
        if variant != "normal":
            factorize_layers(net, int(variant[len("rank"):]), random_state=seed)
        make_opt = lambda m: torch.optim.SGD(m.parameters(), lr=s["lr"], momentum=s["momentum"])  # noqa: E731
        rounds = max(1, round(s["round_steps"] / (n // s["batch"])))  # validate every ~round_steps steps
        fit = train_until_plateau(net, make_opt(net), x_tr, y_tr, lambda m: accuracy(m, x_va, y_va),
                                  epochs_per_round=rounds, patience=s["patience"], min_delta=s["min_delta"],
                                  max_rounds=s["max_rounds"], batch_size=s["batch"],
                                  generator=torch.Generator().manual_seed(seed))
        flops = training_flops(net, batch_loss, bx)
        out[variant] = {"acc": accuracy(net, x_te, y_te), "val": fit.best, "epochs": fit.epochs,
                        "seconds": fit.seconds, "converged": fit.converged,
                        "diverged_at_epoch": fit.diverged_at_epoch, "params": num_parameters(net),
                        "mem_mb": training_memory(net, batch_loss, bx, make_opt) / 2**20,
                        "train_tflops": flops * fit.steps * s["batch"] / 1e12}
    return out


_VLABEL = {"normal": "normal", "rank10": "B·A, r = 10", "rank1": "B·A, r = 1"}


def _lowrank_plot(data: dict, s: dict):
    fig, axes = subplots(4, width=3.6)
    x = np.arange(len(VARIANTS))
    for ax, key, label in zip(axes, ("acc", "params", "mem_mb", "train_tflops"),
                              ("test accuracy (%)", "trained parameters (millions)", "training memory (MB)",
                               "training TFLOPs to convergence")):
        vals = [data[v][key] / (1e6 if key == "params" else 1.0) for v in VARIANTS]
        ax.bar(x, vals, color=["C0", "C1", "C3"])
        for xi, v in zip(x, vals):
            ax.annotate(f"{v:.4g}", (xi, v), ha="center", va="bottom", fontsize=9)
        ax.set(xticks=x, xticklabels=[_VLABEL[v] for v in VARIANTS], ylabel=label)
    axes[0].set_ylim(min(data[v]["acc"] for v in VARIANTS) - 5, 100)
    axes[0].set_title(f"MLP 3×{s['hidden']} on MNIST")
    axes[1].set_title("last two hidden layers as B·A")
    return fig


def _lowrank_check(data: dict, s: dict) -> list[Check]:
    n, r10, r1 = (data[v] for v in VARIANTS)
    return [
        Check("rank K = 10 trains ≤ half the parameters with less training memory than normal training "
              "(talk: 1.67 M vs 5.59 M, 0.113 vs 0.376 GiB)",
              r10["params"] <= 0.5 * n["params"] and r10["mem_mb"] < n["mem_mb"],
              f"{fmt(r10['params'] / 1e6)} M vs {fmt(n['params'] / 1e6)} M parameters, "
              f"{fmt(r10['mem_mb'])} vs "
              f"{fmt(n['mem_mb'])} MB"),
        Check("rank K = 10 keeps the accuracy within 1 point of normal training (talk: 94.57 vs 95.09%)",
              r10["acc"] >= n["acc"] - 1.0, f"{r10['acc']:.2f}% vs {n['acc']:.2f}%"),
        Check("rank 1 (below K) loses accuracy: ≥ 1 point below rank 10 (talk: 90.86%)",
              r1["acc"] <= r10["acc"] - 1.0, f"rank 1 {r1['acc']:.2f}% vs rank 10 {r10['acc']:.2f}%"),
        Check("every run reached its validation plateau (not the round cap, no divergence)",
              all(data[v]["converged"] for v in VARIANTS),
              ", ".join(f"{v}: {data[v]['epochs']} epochs{'' if data[v]['converged'] else ' (cap)'}"
                        for v in VARIANTS)),
    ]


_LR = dict(hidden=784, lr=0.05, momentum=0.9, batch=128, patience=3, min_delta=0.05, val_size=5000,
           round_steps=400)

register(Figure(
    id="002-lowrank", paper=PAPER,
    caption="Low-rank training of nonlinear networks: comparison between normal training and low-rank "
            "training "
            "(W = B·A for the last two hidden layers of an MLP with 3 hidden layers), which reduces the "
            "memory "
            "and latency with comparable accuracy: # params 5.59 M / 1.67 M / 1.59 M, memory 0.376 / 0.113 / "
            "0.108 GiB, average accuracy 95.09 / 94.57 / 90.86% for normal / r = 10 / r = 1.",
    claim="Factorizing the last two hidden layers at rank r = K = 10 keeps the MLP's test accuracy within 1 "
          "point of normal training with at most half the parameters and less training memory; at r = 1 the "
          "accuracy drops (≥ 1 point below r = 10).",
    sizes={"paper": {**_LR, "train_size": 55000, "test_size": None, "max_rounds": 50},
           "quick": {**_LR, "train_size": 8000, "test_size": 5000, "round_steps": 200, "max_rounds": 10}},
    estimate={"quick": 100, "paper": 300},
    compute=_lowrank_compute, plot=_lowrank_plot, check=_lowrank_check,
    notes="benchmarks/lowrank_training.py's setting on MNIST only (the talk averages MNIST, FashionMNIST and "
          "USPS; the latter two are not available offline): MLP 784-784-784-784-10, SGD η = 0.05, "
          "momentum 0.9, batch 128, validation on the last 5 000 training images every ~400 steps (whole "
          "epochs), stop after 3 validations without a 0.05-point gain, best validated state tested. Quick: "
          "8 000 training images, validation every 3 epochs (~200 steps), at most 30 epochs, tested on 5 000 "
          "test images. Rank 1 sits at chance for its first ~4 epochs: validating every epoch with patience "
          "2 stopped it there (11%).",
    module=__name__, depends=("lowdim.repro.seed000_nonlinear", *DEPENDS_000),
))


# ----------------------------------------------------------------------------- hybrid network
def _hybrid_compute(s: dict, seed: int, progress: bool) -> dict:
    x, y, x_te, y_te = mnist_tensors(s["train_size"], s["test_size"])
    torch.manual_seed(seed)
    nl = s["nonlinear_layers"]
    net = hybrid_network(784, s["width"], 10, nonlinear_layers=nl, linear_layers=s["linear_layers"])
    opt, gen = torch.optim.Adam(net.parameters(), lr=s["lr"]), torch.Generator().manual_seed(seed)
    for _ in tqdm(range(s["epochs"]), desc="002-hybrid", disable=not progress):
        train_epoch(net, opt, x, y, batch_size=s["batch"], generator=gen)
    with torch.no_grad():
        train_acc = 100.0 * float((net(x[: s["probe"]]).argmax(1) == y[: s["probe"]]).float().mean())
        test_acc = 100.0 * float((net(x_te).argmax(1) == y_te).float().mean())
    prof = collapse_profile(net, x[: s["probe"]], y[: s["probe"]])
    d = prof.collapse
    relu, linear = log_linear_fit(d[1: nl + 1], range(1, nl + 1)), log_linear_fit(d[nl:], range(nl, len(d)))
    return {"D": d.tolist(), "S": prof.separation.tolist(), "train_acc": train_acc, "test_acc": test_acc,
            "relu_fit": vars(relu), "linear_fit": vars(linear)}


def _hybrid_plot(data: dict, s: dict):
    fig, axes = subplots(2, width=5.2)
    nl = s["nonlinear_layers"]
    layers = np.arange(len(data["D"]))
    for ax, key, ylabel, log in ((axes[0], "D", "D_l = Tr(Σ_W) / Tr(Σ_B) (compression)", True),
                                 (axes[1], "S", "S_l (separation)", False)):
        ax.plot(layers, data[key], "o-", color="C0")
        ax.axvspan(0.5, nl + 0.5, color="C1", alpha=0.12, label=f"ReLU layers 1–{nl}")
        ax.axvspan(nl + 0.5, layers[-1] + 0.5, color="C2", alpha=0.12,
                   label=f"linear layers {nl + 1}–{layers[-1]}")
        ax.set(xlabel="layer l (0 = input)", ylabel=ylabel, yscale="log" if log else "linear")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    axes[0].set_title(f"D_l: ×{data['relu_fit']['decay_ratio']:.2f}/ReLU layer, "
                      f"×{data['linear_fit']['decay_ratio']:.2f}/linear layer")
    axes[1].set_title(f"hybrid {nl} ReLU + {s['linear_layers']} linear, width {s['width']}: test "
                      f"{data['test_acc']:.1f}%")
    return fig


def _hybrid_check(data: dict, s: dict) -> list[Check]:
    nl, d, sep = s["nonlinear_layers"], data["D"], data["S"]
    relu, lin = data["relu_fit"]["decay_ratio"], data["linear_fit"]["decay_ratio"]
    return [
        Check("the ReLU layers compress: D_l falls through them (log-linear fit ≤ ×0.8 per "
              "layer)", relu <= 0.8,
              f"×{fmt(relu)} per ReLU layer: D = " + " ".join(fmt(v) for v in d[: nl + 1])),
        Check("compression goes on through the linear layers (fit ≤ ×0.9 per layer)", lin <= 0.9,
              f"×{fmt(lin)} per linear layer: D = " + " ".join(fmt(v) for v in d[nl:])),
        Check("separation improves from shallow to deep: S at the last feature layer ≥ S at layer 1",
              sep[-1] >= sep[1], "S = " + " ".join(f"{v:.2f}" for v in sep)),
    ]


_HY = dict(width=256, nonlinear_layers=4, linear_layers=6, lr=1e-3, batch=128, probe=2000)

register(Figure(
    id="002-hybrid", paper=PAPER,
    caption="Implication II: linear separability in deeper layers. Training a hybrid (4-layer MLP + 6-layer "
            "linear) network: progressive 'compression' and 'linear separation' from shallow to deep layers.",
    claim="In the trained hybrid network D_l falls through the ReLU layers (≤ ×0.8 per layer) and goes on "
          "falling through the linear layers (≤ ×0.9 per layer), and the separation S_l at the last feature "
          "layer is at least that of layer 1.",
    sizes={"paper": {**_HY, "train_size": 60000, "test_size": None, "epochs": 10},
           "quick": {**_HY, "train_size": 20000, "test_size": 5000, "epochs": 3},
           "test": {**_HY, "width": 64, "train_size": 3000, "test_size": 1000, "epochs": 1, "probe": 1000}},
    estimate={"quick": 30, "paper": 200},
    compute=_hybrid_compute, plot=_hybrid_plot, check=_hybrid_check,
    notes="The talk trains on CIFAR-10 (not available offline); lowdim: MNIST, width 256, Adam 1e-3, "
          "batch 128 "
          "(benchmarks/collapse.py --hybrid is the paper size: 10 epochs on all 60 000 images); D_l and "
          "S_l of "
          "every layer (post-activation in the ReLU part) on 2 000 training images, with separate log-linear "
          "fits over the ReLU layers 1–4 and the linear layers 4–10.",
    module=__name__, depends=("lowdim.repro.seed000_nonlinear", *DEPENDS_000),
))
