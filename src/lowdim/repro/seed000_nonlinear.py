"""Seed 000's nonlinear-network figures on MNIST: Fig. 1, Fig. 20, Table 1 and Fig. 21.

* Figs. 1 and 20 (App. A.4): a DLN (784-784-784-784-10, linear, orthogonal ε = 1) and an MLP (three
  hidden ReLU layers of width 784, PyTorch's uniform initialization) trained with SGD (step 0.01,
  batch 128); the penultimate weight is kept every few steps (:func:`lowdim.nonlinear.track_weight`):
  the singular values of its update ``W(T) − W(0)`` (:func:`lowdim.nonlinear.update_singular_values`)
  and the subspace distance (eq. 14) between consecutive top-r singular subspaces
  (:func:`lowdim.nonlinear.consecutive_subspace_distances`).
* Table 1 and Fig. 21 (Sec. 4.2): the MLP with its penultimate layer original, a full-width depth-3 DLN
  or a C-DLN of width r̂ = 4·10 (:func:`lowdim.nonlinear.compress_network`), trained side by side on the
  same batches, each with its own clock (:func:`lowdim.nonlinear.train_side_by_side`), as
  ``benchmarks/nonlinear_table1.py``.

The paper's data (FashionMNIST, CIFAR-10) is not available offline: every figure runs on MNIST from
``$LOWDIM_DATA/mnist`` (default ``../shared/data/mnist``) and stops with a clear error where it is absent.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..datasets.mnist import load_mnist
from ..nonlinear import (
    SideBySideRun,
    VisionTransformer,
    compress_network,
    consecutive_subspace_distances,
    count_macs,
    deep_network,
    mlp,
    num_parameters,
    param_groups,
    track_weight,
    train_side_by_side,
    training_memory,
    update_singular_values,
)
from ._common import COLORS, fmt, subplots
from ._registry import Check, Figure, register

PAPER = "000 (Kwon et al., efficient compression)"
DEPENDS = ("lowdim.datasets.mnist", "lowdim.nonlinear.models", "lowdim.nonlinear.training",
           "lowdim.nonlinear.measure", "lowdim.nonlinear.convert", "lowdim.nonlinear.deep_linear",
           "lowdim.nonlinear.cost")
NAMES = {"dln": "DLN (linear)", "mlp": "MLP (ReLU)", "vit": "toy ViT"}
#: The penultimate layer of Table 1's MLP: kept, a full-width depth-3 DLN, or compressed.
T1_NAMES = {"original": "Original", "dln": "DLN", "cdln": "C-DLN"}
_COLORS = {"dln": COLORS["compressed"], "mlp": COLORS["original"], "vit": COLORS["narrow"]}
#: The paper's Fig. 21 colours: original green, DLN blue, C-DLN orange.
T1_COLORS = {"original": COLORS["narrow"], "dln": COLORS["original"], "cdln": COLORS["compressed"]}


def mnist_tensors(train_size: int | None, test_size: int | None = None) -> tuple[torch.Tensor, ...]:
    """MNIST ``(x_train, y_train, x_test, y_test)`` (first ``train_size`` / ``test_size`` images) from
    ``$LOWDIM_DATA/mnist`` (default ``../shared/data/mnist``); a clear error where it is absent."""
    root = os.environ.get("LOWDIM_DATA") or os.path.join("..", "shared", "data")
    try:
        train, test = load_mnist("train", root), load_mnist("test", root)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"this figure trains on MNIST, which is not available here: {err}") from err
    return (torch.as_tensor(train.images[:train_size]), torch.as_tensor(train.labels[:train_size]),
            torch.as_tensor(test.images[:test_size]), torch.as_tensor(test.labels[:test_size]))


# ----------------------------------------------------------------------------- Figs. 1 and 20
def _tracked_model(kind: str, s: dict, seed: int):
    """``(network, penultimate weight, optimizer)`` of the App. A.4 runs (and the talk's toy ViT)."""
    torch.manual_seed(seed)
    if kind == "dln":
        net = deep_network([784] * 4 + [10], activation="linear", scale=1.0, random_state=seed,
                           dtype=torch.float32)
    elif kind == "mlp":
        net = mlp(784, s["hidden"], 10)
    else:
        net = VisionTransformer(dim=s["vit_dim"], depth=s["vit_depth"], mlp_dim=s["vit_mlp"])
        weight = net.get_submodule(net.penultimate).weight
        return net, weight, torch.optim.Adam(net.parameters(), lr=s["vit_lr"])
    weight = [m for m in net if isinstance(m, torch.nn.Linear)][-2].weight
    return net, weight, torch.optim.SGD(net.parameters(), lr=s["lr"])


def update_runs(s: dict, seed: int, progress: bool) -> dict:
    """Train each model of ``s["models"]`` on MNIST, keep its penultimate weight every
    ``snapshot_every`` steps; the spectra of ``W(t) − W(0)`` and eq. 14's distances (r = ``rank``)."""
    x, y, _, _ = mnist_tensors(s["train_size"], 0)
    r, out = s["rank"], {}
    for kind in tqdm(s["models"], desc="penultimate updates", disable=not progress):
        net, weight, opt = _tracked_model(kind, s, seed)
        t0 = time.perf_counter()
        snaps, loss = track_weight(net, weight, opt, x, y, epochs=s["epochs"], every=s["snapshot_every"],
                                   batch_size=s["batch"], generator=torch.Generator().manual_seed(seed))
        sv = update_singular_values(snaps[-1], snaps[0])
        trajectory = [update_singular_values(w, snaps[0])[: s["keep"]].tolist() for w in snaps]
        dist = consecutive_subspace_distances(snaps[1:], r)  # W(0) of the DLN is isotropic: start at t = 1
        out[kind] = {"singular_values": sv[: s["keep"]].tolist(), "energy_top_r": float((sv[:r] ** 2).sum()
                                                                                       / (sv**2).sum()),
                     "ratio_r_plus_1": float(sv[r] / sv[0]), "shape": list(weight.shape),
                     "steps": [s["snapshot_every"] * i for i in range(len(snaps))], "trajectory": trajectory,
                     "subspace_distance": dist, "final_loss": loss, "seconds": time.perf_counter() - t0}
    return out


def _fig1_plot(data: dict, s: dict):
    fig, axes = subplots(1, width=6.5)
    ax = axes[0]
    for kind, run in data.items():
        sv = run["singular_values"]
        ax.semilogy(np.arange(1, len(sv) + 1), sv, "o-", ms=3, color=_COLORS[kind],
                    label=f"{NAMES[kind]}: top-{s['rank']} energy {run['energy_top_r']:.3f}")
    ax.axvline(s["rank"] + 0.5, color="k", ls=":", lw=1, label=f"K = {s['rank']} classes")
    ax.set(xlabel="index i", ylabel="σ_i(W(T) − W(0)), penultimate layer",
           title=f"MNIST, SGD η = {s['lr']}, {s['epochs']} epochs on {s['train_size']} images")
    ax.legend()
    return fig


def _fig1_check(data: dict, s: dict) -> list[Check]:
    r = s["rank"]
    return [Check(f"{NAMES[k]}: the update W(T) − W(0) is low-dimensional (top-{r} singular values hold "
                  f"≥ 95% of its energy, σ_{r + 1}/σ_1 ≤ 0.1)",
                  run["energy_top_r"] >= 0.95 and run["ratio_r_plus_1"] <= 0.1,
                  f"top-{r} energy {fmt(run['energy_top_r'])}, σ_{r + 1}/σ_1 = {fmt(run['ratio_r_plus_1'])}, "
                  f"σ_1 … σ_{r + 2}: {' '.join(fmt(v) for v in run['singular_values'][: r + 2])}")
            for k, run in data.items()]


_A4 = dict(models=["dln", "mlp"], hidden=784, lr=0.01, batch=128, rank=10, keep=30)
_A4_SIZES = {"paper": {**_A4, "train_size": 60000, "epochs": 3, "snapshot_every": 100},
             "quick": {**_A4, "train_size": 20000, "epochs": 3, "snapshot_every": 25},
             "test": {**_A4, "hidden": 128, "models": ["mlp"], "train_size": 2048, "epochs": 1,
                      "snapshot_every": 4}}
_NOTES_A4 = ("Seed 000 App. A.4: SGD with step 0.01 and batch 128; the DLN orthogonal (ε = 1), the MLP with "
             "PyTorch's uniform initialization. MNIST for both (the paper: MNIST for these two; VGG and "
             "ViT-B "
             "on CIFAR-10 are not run, CIFAR-10 is not available offline). ")

register(Figure(
    id="000-fig1", paper=PAPER,
    caption="Prevalence of low-dimensional weight updates across various networks: the singular values of "
            "the "
            "weight updates from initialization for the penultimate layer (DLN and MLP trained on MNIST): "
            "gradient descent only updates a small portion of the singular values, while the others remain "
            "small and almost unchanged.",
    claim="For the DLN and the MLP, the update W(T) − W(0) of the penultimate layer has about K = 10 large "
          "singular values: the top 10 hold ≥ 95% of its energy and σ_11 ≤ 0.1 σ_1.",
    sizes=_A4_SIZES,
    estimate={"quick": 75, "paper": 150},
    compute=update_runs, plot=_fig1_plot, check=_fig1_check,
    notes=_NOTES_A4 + "Quick: 3 epochs on the first 20 000 training images.",
    module=__name__, depends=DEPENDS,
))


def _fig20_plot(data: dict, s: dict):
    fig, axes = subplots(1, width=6.5)
    ax = axes[0]
    for kind, run in data.items():
        ax.semilogy(run["steps"][2:], np.maximum(run["subspace_distance"], 1e-12), "-", color=_COLORS[kind],
                    label=f"{NAMES[kind]}: median {np.median(run['subspace_distance']):.3g}")
    ax.axhline(s["rank"], color="k", ls=":", lw=1, label=f"largest possible (r = {s['rank']})")
    ax.set(xlabel="SGD step t", ylabel="r − ‖U_r(t)ᵀ U_r(t + Δ)‖_F²  (eq. 14)",
           title=f"consecutive top-{s['rank']} singular subspaces, every {s['snapshot_every']} steps")
    ax.legend()
    return fig


def _fig20_check(data: dict, s: dict) -> list[Check]:
    r = s["rank"]
    out = []
    for kind, run in data.items():
        d = np.asarray(run["subspace_distance"])
        med, p90 = float(np.median(d)), float(np.quantile(d, 0.9))
        out.append(Check(f"{NAMES[kind]}: consecutive top-{r} subspaces overlap (eq. 14's distance: median "
                         f"≤ {0.1 * r:g}, 90% of steps ≤ {0.25 * r:g}, of at most {r})",
                         med <= 0.1 * r and p90 <= 0.25 * r,
                         f"median {fmt(med)}, 90th percentile {fmt(p90)}, max {fmt(float(d.max()))}"))
    return out


register(Figure(
    id="000-fig20", paper=PAPER,
    caption="Distance between consecutive singular subspaces of the penultimate weight matrices: the "
            "subspace "
            "distance defined in Equation (14) is small, hinting that the training happens within an "
            "invariant subspace.",
    claim="Along SGD, the distance (14) between consecutive top-10 left singular subspaces of the "
          "penultimate "
          "weight stays small for the DLN and the MLP (median ≤ 1 and 90% of steps ≤ 2.5, of at most 10).",
    sizes=_A4_SIZES,
    estimate={"quick": 75, "paper": 150},
    compute=update_runs, plot=_fig20_plot, check=_fig20_check,
    notes=_NOTES_A4 + "r = 10. Distances start at the first snapshot after W(0): the DLN's W(0) is "
                      "orthogonal "
          "(all singular values equal), so its top-10 subspace at t = 0 is arbitrary.",
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Table 1 and Fig. 21
KINDS = ("original", "dln", "cdln")


def _side_by_side_model(kind: str, s: dict, x_cal, y_cal, seed: int) -> SideBySideRun:
    """The MLP with its penultimate layer (module "4") original, DLN or C-DLN; building time on its clock."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    net = mlp(784, s["hidden"], 10)
    if kind != "original":
        compress_network(net, x_cal, F.cross_entropy, y_cal, layers=["4"], rank=s["rank"],
                         mode="full" if kind == "dln" else "compressed", scale=s["scale"], alpha=s["alpha"],
                         random_state=seed)
    opt = torch.optim.SGD(param_groups(net, s["lr"]), momentum=s["momentum"])
    return SideBySideRun(kind, net, opt, seconds=time.perf_counter() - t0)


def _costs(run: SideBySideRun, s: dict, x, y) -> dict:
    batch, labels = x[: s["batch"]], y[: s["batch"]]
    mem = training_memory(run.model, lambda out: F.cross_entropy(out, labels), batch,
                          lambda m: torch.optim.SGD(param_groups(m, s["lr"]), momentum=s["momentum"]))
    return {"params": num_parameters(run.model), "macs": count_macs(run.model, x[:8]), "mem_mb": mem / 2**20}


def table1_runs(s: dict, seed: int, progress: bool) -> dict:
    """Per seed: the three MLPs trained side by side; accuracy curves, times, costs."""
    x, y, x_te, y_te = mnist_tensors(s["train_size"], s["test_size"])

    def accuracy(net) -> float:
        with torch.no_grad():
            return 100.0 * float((net(x_te).argmax(1) == y_te).float().mean())

    seeds = []
    for k in tqdm(range(s["seeds"]), desc="Table 1 seeds", disable=not progress):
        g = torch.Generator().manual_seed(seed + k)
        cal = torch.randperm(len(x), generator=g)[:512]
        runs = [_side_by_side_model(kind, s, x[cal], y[cal], seed + k) for kind in KINDS]
        train_side_by_side(runs, x, y, epochs=s["epochs"], eval_every=s["eval_every"], batch_size=s["batch"],
                           evaluate=accuracy, generator=g)
        seeds.append({r.name: {"acc": r.curve[-1][2], "time_to_99": r.first_reaching(0.99),
                               "total_s": r.seconds, "ms_per_step": 1e3 * float(np.median(r.step_seconds)),
                               "curve": [list(c) for c in r.curve], **_costs(r, s, x, y)} for r in runs})
    return {"seeds": seeds}


def _mean(data: dict, kind: str, key: str) -> float:
    return float(np.mean([sd[kind][key] for sd in data["seeds"]]))


def _ratio(data: dict, key: str) -> float:
    """Mean over seeds of the per-seed C-DLN / DLN ratio of ``key`` (the models of a seed ran side by "
      "side)."""
    return float(np.mean([sd["cdln"][key] / max(sd["dln"][key], 1e-9) for sd in data["seeds"]]))


def _table1_plot(data: dict, s: dict):
    fig, axes = subplots(3, width=4.3)
    x = np.arange(len(KINDS))
    for ax, key, label in ((axes[0], "acc", "test accuracy (%)"), (axes[1], "time_to_99", "seconds to 99% of "
                                                                  "final accuracy")):
        vals = [[sd[k][key] for sd in data["seeds"]] for k in KINDS]
        ax.bar(x, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], capsize=4,
               color=[T1_COLORS[k] for k in KINDS])
        for xi, v in zip(x, vals):
            ax.annotate(f"{np.mean(v):.2f}", (xi, np.mean(v)), ha="center", va="bottom", fontsize=9)
        ax.set(xticks=x, xticklabels=[T1_NAMES[k] for k in KINDS], ylabel=label)
    lo = min(sd[k]["acc"] for sd in data["seeds"] for k in KINDS)
    axes[0].set_ylim(lo - 2, 100)
    axes[0].set_title(f"MLP on MNIST ({s['seeds']} seed(s), {s['epochs']} epochs)")
    axes[1].set_title(f"C-DLN / DLN time: {_ratio(data, 'time_to_99'):.2f} (paper 0.57)")
    width = 0.27
    for j, (key, scale, unit) in enumerate((("params", 1e6, "params (M)"), ("macs", 1e6, "MACs (M)"),
                                            ("mem_mb", 1.0, "train memory (MB)"))):
        axes[2].bar(x + (j - 1) * width, [data["seeds"][0][k][key] / scale for k in KINDS], width,
                    label=unit, color=f"C{j + 3}")
    axes[2].set(xticks=x, xticklabels=[T1_NAMES[k] for k in KINDS], ylabel="cost", title="cost columns")
    axes[2].legend(fontsize=8)
    return fig


def _table1_check(data: dict, s: dict) -> list[Check]:
    ratio = _ratio(data, "time_to_99")
    acc = {k: _mean(data, k, "acc") for k in KINDS}
    first = data["seeds"][0]
    fewest = all(first["cdln"][c] < min(first["original"][c], first["dln"][c]) for c in ("params", "macs",
                                                                                          "mem_mb"))
    return [
        Check("C-DLN reaches 99% of its final test accuracy in ≤ 0.7 of the DLN's time (paper MLP 0.57)",
              ratio <= 0.7, f"C-DLN / DLN time {fmt(ratio)} (mean of per-seed ratios; "
              f"{fmt(_mean(data, 'cdln', 'time_to_99'))} s vs {fmt(_mean(data, 'dln', 'time_to_99'))} s)"),
        Check("C-DLN's accuracy is the best of the three or within 0.3 points of it (paper: the best)",
              acc["cdln"] >= max(acc.values()) - 0.3,
              ", ".join(f"{T1_NAMES[k]} {acc[k]:.2f}%" for k in KINDS)),
        Check("C-DLN has the fewest parameters, MACs and training memory (paper 1.30 M vs 1.85 M and 3.08 M)",
              fewest, "; ".join(f"{T1_NAMES[k]}: {first[k]['params'] / 1e6:.3f} M params, "
                                f"{first[k]['macs'] / 1e6:.3f}"
                                f" M MACs, {first[k]['mem_mb']:.1f} MB" for k in KINDS)),
    ]


_T1 = dict(hidden=784, rank=40, scale=1.0, alpha=1.0, lr=0.05, momentum=0.9, batch=128)
_T1_SIZES = {"paper": {**_T1, "train_size": 60000, "test_size": None, "epochs": 2, "eval_every": 50,
                       "seeds": 5},
             "quick": {**_T1, "train_size": 20000, "test_size": 5000, "epochs": 2, "eval_every": 10,
                       "seeds": 1}}
_T1_NOTES = ("MLP 784-784-784-784-10 on MNIST (the paper: FashionMNIST), SGD η = 0.05 with momentum 0.9, "
             "batch "
             "128, ε = 1, r̂ = 40, α = 1, C-DLN subspaces from the gradient at initialization on one "
             "batch of "
             "512 (compress_network; its time is on C-DLN's clock); the three models train side by side "
             "on the "
             "same batches (benchmarks/nonlinear_table1.py --arch mlp is the paper size). The ViT rows "
             "are left "
             "to that benchmark (about 30 minutes on one core). Quick: 2 epochs on 20 000 images, one seed, "
             "tested on 5 000 images.")

register(Figure(
    id="000-table1", paper=PAPER,
    caption="Quantitative results for deep nonlinear networks. DLN and C-DLN denote networks that are "
            "overparameterized using their respective models. The reported time is the amount of time taken "
            "for the models to achieve 99% test accuracy (of the final). The reduction in memory and MACs "
            "is not "
            "substantial as we only consider compressing the penultimate layer.",
    claim="With its penultimate layer compressed (C-DLN), the MLP reaches 99% of its final test accuracy "
          "in ≤ 0.7 "
          "of the DLN's time, at the best accuracy of the three (within 0.3 points), with the fewest "
          "parameters, "
          "MACs and training memory.",
    sizes=_T1_SIZES, estimate={"quick": 100, "paper": 900},
    compute=table1_runs, plot=_table1_plot, check=_table1_check, notes=_T1_NOTES,
    module=__name__, depends=DEPENDS,
))


def _fig21_plot(data: dict, s: dict):
    fig, axes = subplots(2, width=5.2)
    first = data["seeds"][0]
    for kind in KINDS:
        curve = np.asarray(first[kind]["curve"])
        for ax, col in ((axes[0], 0), (axes[1], 1)):
            ax.plot(curve[:, col], curve[:, 2], "-", color=T1_COLORS[kind], label=T1_NAMES[kind]
                    + ("" if kind == "original" else " penultimate layer"))
    axes[0].set(xlabel="SGD step", ylabel="test accuracy (%)", title="MLP on MNIST: accuracy vs step")
    axes[1].set(xlabel="training time (s, own clock)", ylabel="test accuracy (%)",
                title=f"accuracy vs time (C-DLN/DLN total {_ratio(data, 'total_s'):.2f})")
    lo = min(first[k]["curve"][len(first[k]["curve"]) // 4][2] for k in KINDS)
    for ax in axes:
        ax.set_ylim(lo - 1, 100)
        ax.legend()
    return fig


def _fig21_check(data: dict, s: dict) -> list[Check]:
    total = _ratio(data, "total_s")
    mean_gap, final_gap, max_gap, lower = [], [], [], []
    for sd in data["seeds"]:
        cd, dl, og = (np.asarray(sd[k]["curve"])[:, 2] for k in ("cdln", "dln", "original"))
        mean_gap.append(float((dl - cd).mean()))
        final_gap.append(float(dl[-1] - cd[-1]))
        max_gap.append(float((dl - cd).max()))
        lower.append(float((og < dl).mean()))
    similar = max(mean_gap) <= 1.0 and max(final_gap) <= 1.0
    return [
        Check("C-DLN trains in ≤ 0.65 of the DLN's time ('almost 2×' faster)", total <= 0.65,
              f"C-DLN / DLN total training time {fmt(total)}"),
        Check("C-DLN's test accuracy is similar to the DLN's throughout: DLN − C-DLN ≤ 1 point on average "
              "over the evaluations and at the end", similar,
              f"DLN − C-DLN: mean {fmt(max(mean_gap))}, final {fmt(max(final_gap))}, largest "
              f"{fmt(max(max_gap))} points (worst seed)"),
        Check("the original MLP (standard penultimate layer) is below the DLN at ≥ 75% of evaluations",
              min(lower) >= 0.75, f"below at {fmt(100 * min(lower))}% of evaluations"),
    ]


register(Figure(
    id="000-fig21", paper=PAPER,
    caption="Results on classification tasks with nonlinear networks with overparameterized penultimate "
            "layers "
            "(left: FashionMNIST with MLP): the compressed networks have similar test accuracy (if not "
            "better) "
            "than the original network throughout training, while reducing run-time by almost 2×; the "
            "network "
            "with a standard penultimate layer has lower test accuracy throughout.",
    claim="Along training, C-DLN's test accuracy is within 1 point of the DLN's (on average over the "
          "evaluations "
          "and at the end) while its training time is ≤ 0.65 of the DLN's, and the MLP with a standard "
          "penultimate layer is below the DLN at ≥ 75% of "
          "the evaluations.",
    sizes=_T1_SIZES, estimate={"quick": 100, "paper": 900},
    compute=table1_runs, plot=_fig21_plot, check=_fig21_check, notes=_T1_NOTES + " The curves are seed 0's.",
    module=__name__, depends=DEPENDS,
))
