"""Seed 003's figures on *why* Deep LoRA works and what it costs: Fig. 1 (the full-width adaptation's
invariant low-dimensional subspaces), Fig. 11 / App. D.2 (original vs compressed vs random narrow
factorizations) and Table 2 (step time and memory of LoRA vs Deep LoRA).

All three fine-tune the local all-MiniLM-L6-v2 checkpoint on STS-B with 16 examples through
:func:`lowdim.lora.finetune.run_one` (its ``observe`` hook records the measurements during training,
its ``deep_variant`` picks App. D.2's variant). The uncompressed "original" is
:func:`lowdim.lora.widen_deep_lora`: ``k × k`` factors per adapted layer, so the quick sizes adapt
only ``query`` and ``value`` (the paper adapts every attention and feed-forward weight; the paper
sizes do).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from ..lora.finetune import eval_subset, evaluate, run_one, sample_indices, step_progress
from ..lora.layers import DeepLoRALinear
from ..memory import saved_activation_bytes
from ._common import fmt, subplots
from ._registry import Check, Figure, register
from .seed003_lora import METHODS, NAMES, PAPER, SELECTED_LR, _config, _splits

DEPENDS = ("lowdim.lora.finetune", "lowdim.lora.study", "lowdim.lora.model", "lowdim.lora.layers",
           "lowdim.lora.compression", "lowdim.lora.heads", "lowdim.repro.seed003_lora")
VARIANTS = ("full", "compressed", "random")
VARIANT_NAMES = {"full": "original (full width)", "compressed": "compressed (Deep LoRA)",
                 "random": "random narrow"}
#: The paper gives no η for the uncompressed original. Adam moves every entry of a k × k factor by
#: about η, so Deep LoRA's η = 1e-2 diverges there (loss 2.2 → 19.7 in 3 steps on STS-B); the
#: original uses LoRA's η.
FULL_LR = 1e-4


def _deep_layers(model: torch.nn.Module) -> dict[str, DeepLoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, DeepLoRALinear)}


def _run(s: dict, splits: tuple, seed: int, variant: str, observe=None, progress: bool = False) -> dict:
    """One Deep LoRA run of ``variant`` on the figure's STS-B subset (the η of :data:`SELECTED_LR`);
    ``splits`` are :func:`_splits`' tokenized splits, shared by the figure's runs; ``progress`` shows a
    bar over its steps."""
    cfg = dataclasses.replace(_config(s, seed), target_modules=tuple(s["targets"]),
                              deeplora_lr=s.get("full_lr", FULL_LR) if variant == "full"
                              else SELECTED_LR["deeplora"])
    _, pool, _, evals = splits
    with step_progress(f"{variant} seed={seed}", cfg.max_steps, progress) as on_step:
        return run_one(cfg, "deeplora", s["n"][0], seed, train=pool, dev=evals, observe=observe,
                       deep_variant=variant, on_step=on_step)


# ----------------------------------------------------------------------------- Fig. 1
def _svd(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values of ``delta`` and its top-``k`` right singular vectors (d_in × k)."""
    _, sv, vh = torch.linalg.svd(delta, full_matrices=False)
    return sv, vh[:k].T


def _delta(layer: DeepLoRALinear) -> torch.Tensor:
    return layer.delta_weight().detach().double()


def _fig1_compute(s: dict, seed: int, progress: bool) -> dict:
    k, every = s["top"], s["every"]
    bases: dict[int, dict[str, torch.Tensor]] = {}
    last = {}

    def observe(step: int, model) -> None:
        last["model"] = model
        if step % every == 0:
            bases[step] = {n: _svd(_delta(layer), k)[1] for n, layer in _deep_layers(model).items()}

    rec = _run(s, _splits(_config(s, seed), s), seed, "full", observe, progress)
    delta = {n: _delta(layer) for n, layer in _deep_layers(last["model"]).items()}
    final = {n: _svd(d, k) for n, d in delta.items()}
    steps = sorted(bases)
    # alignment of span(V_t) with the final update: the share of ‖ΔW_final‖_F² in span(V_t) ∈ [0, 1];
    # unweighted ‖V_tᵀ V_final‖_F² / k also counts the final top-k directions beyond ΔW's numerical rank
    norm2 = {n: torch.linalg.matrix_norm(d) ** 2 for n, d in delta.items()}
    align = {n: [float(torch.linalg.matrix_norm(delta[n] @ bases[t][n]) ** 2 / norm2[n]) for t in steps]
             for n in delta}
    plain = {n: [float(torch.linalg.matrix_norm(bases[t][n].T @ final[n][1]) ** 2 / k) for t in steps]
             for n in delta}
    spectra = {n: (sv / sv[0]).tolist()[: s["spectrum"]] for n, (sv, _) in final.items()}
    energy = {n: float((sv[:k] ** 2).sum() / (sv**2).sum()) for n, (sv, _) in final.items()}
    return {"steps": steps, "alignment": align, "alignment_unweighted": plain, "spectra": spectra,
            "top_energy": energy,
            "loss": rec["loss_curve"], "stopped": rec["stopped"], "ranks": rec["ranks"],
            "main": rec["main"], "top": k}


def _fig1_plot(data: dict, s: dict):
    fig, axes = subplots(3, width=4.4)
    for sp in data["spectra"].values():
        axes[0].semilogy(np.arange(1, len(sp) + 1), sp, lw=0.8, alpha=0.6)
    axes[0].set(xlabel="index i", ylabel="σ_i / σ_1",
                title=f"final ΔW spectra, {len(data['spectra'])} layers")
    align = np.array(list(data["alignment"].values()))
    for row in align:
        axes[1].plot(data["steps"], row, color="tab:blue", lw=0.6, alpha=0.35)
    axes[1].plot(data["steps"], align.mean(0), color="black", lw=2, label="mean over layers")
    axes[1].set(xlabel="iteration", ylabel="share of final ΔW in span(V_t)", ylim=(0, 1.05),
                title=f"alignment of the top-{data['top']} right subspace")
    axes[1].legend(fontsize=8)
    axes[2].semilogy(np.arange(1, len(data["loss"]) + 1), data["loss"])
    axes[2].set(xlabel="iteration", ylabel="batch MSE", title="training loss")
    return fig


def _fig1_check(data: dict, s: dict) -> list[Check]:
    k = data["top"]
    energy = np.array(list(data["top_energy"].values()))
    mean_align = np.array(list(data["alignment"].values())).mean(0)
    loss = np.asarray(data["loss"])
    hit = next((t for t, a in zip(data["steps"], mean_align, strict=True) if a >= 0.9), None)
    loss_at = loss[max(hit - 1, 0)] if hit is not None else np.nan
    return [
        Check(f"the converged updates ΔW are very low-rank: in every layer the top {k} singular values hold "
              "≥ 90% of ‖ΔW‖_F²", bool(energy.min() >= 0.9),
              f"top-{k} energy: min {fmt(energy.min())}, median {fmt(np.median(energy))}; numerical ranks "
              f"{min(data['ranks'])}–{max(data['ranks'])}"),
        Check("the dynamics stay in the final subspace early: the mean alignment reaches 0.9 while the "
              "training loss is still at least 10× its final value",
              bool(hit is not None and loss_at >= 10 * loss[-1]),
              f"mean alignment ≥ 0.9 from iteration {hit} (loss there {fmt(loss_at)}, final "
              f"{fmt(loss[-1])}); alignment at iteration {data['steps'][1]}: {fmt(mean_align[1])}"),
    ]


register(Figure(
    id="003-fig1", paper=PAPER,
    caption="Invariant low-dimensional subspaces in deep overparameterized adaptation: fine-tuning with the"
            " full-width depth-3 factorization on STS-B. Left: singular value spectra of every adapted ΔW "
            "at the end. Middle: alignment of the top-8 right singular subspaces with the final ΔW's "
            "through training. Right: the training loss.",
    claim="The converged updates are very low-rank, and their top subspaces align with the final ones "
          "early, while the training loss still has far to fall.",
    sizes={
        "paper": dict(task="stsb", n=[16], seeds=1, max_steps=300, max_eval=500, top=8, every=2, spectrum=64,
                      targets=["query", "key", "value", "attention.output.dense", "intermediate.dense",
                               "output.dense"]),
        "quick": dict(task="stsb", n=[16], seeds=1, max_steps=80, max_eval=64, top=8, every=4, spectrum=64,
                      targets=["query", "value"]),
        "test": dict(task="stsb", n=[8], seeds=1, max_steps=3, max_eval=16, top=8, every=1, spectrum=16,
                     targets=["query"]),
    },
    estimate={"quick": 70, "paper": 1000},
    compute=_fig1_compute, plot=_fig1_plot, check=_fig1_check,
    notes=f"MiniLM-L6 instead of BERT-base. The original's factors are k × k (k = max(d_in, d_out)), which "
          f"on one CPU core costs several seconds per step with every layer adapted, so quick adapts query "
          f"and value only. Adam at η = {FULL_LR:g} (the paper gives none for the original; Deep LoRA's 1e-2"
          f" diverges at full width). Alignment = ‖ΔW_final V_t‖_F² / ‖ΔW_final‖_F² with V_t the top-8 right"
          f" singular vectors of ΔW(t): the paper's unweighted ‖V_tᵀ V_final‖_F² / 8 (kept in the JSON) also"
          f" counts the final top-8 directions beyond ΔW's numerical rank, which are numerical noise when "
          f"that rank is below 8.",
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Fig. 11 / App. D.2
def _fig11_compute(s: dict, seed: int, progress: bool) -> dict:
    cfg = _config(s, seed)
    splits = _splits(cfg, s)
    dev = eval_subset(splits[3]["dev"], cfg)
    out = {v: {"loss": [], "eval_steps": [], "metric": [], "steps": [], "params": []} for v in VARIANTS}
    for sd in range(seed, seed + s["seeds"]):
        for v in VARIANTS:
            curve: dict[int, float] = {}
            size = {}

            def observe(step: int, model, curve=curve, size=size) -> None:
                if step == 0:
                    size["p"] = sum(p.numel() for layer in _deep_layers(model).values()
                                    for p in layer.lora_factors.parameters())
                if step % s["eval_every"] == 0:
                    curve[step] = evaluate(model, dev)["pearson"]

            rec = _run(s, splits, sd, v, observe, progress)
            out[v]["loss"].append(rec["loss_curve"])
            out[v]["eval_steps"].append(sorted(curve))
            out[v]["metric"].append([curve[t] for t in sorted(curve)])
            out[v]["steps"].append(rec["steps"] if rec["stopped"] == "target" else None)
            out[v]["params"].append(size["p"])
    return out


def _fig11_plot(data: dict, s: dict):
    fig, axes = subplots(2, width=5.2)
    for i, v in enumerate(VARIANTS):
        color = f"C{i}"
        for j, loss in enumerate(data[v]["loss"]):
            axes[0].semilogy(np.arange(1, len(loss) + 1), loss, color=color, lw=1,
                             label=VARIANT_NAMES[v] if j == 0 else None)
        for j, (t, m) in enumerate(zip(data[v]["eval_steps"], data[v]["metric"], strict=True)):
            axes[1].plot(t, m, color=color, marker=".", lw=1, label=VARIANT_NAMES[v] if j == 0 else None)
    axes[0].set(xlabel="iteration", ylabel="batch training loss (MSE)", title=f"STS-B, n = {s['n'][0]}")
    axes[1].set(xlabel="iteration", ylabel="dev Pearson", title="evaluation metric")
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def _steps_to_target(data: dict, v: str) -> float:
    """Median steps to the loss target; a run that never reached it counts as its step cap + 1."""
    return float(np.median([x if x is not None else np.inf for x in data[v]["steps"]]))


def _fig11_check(data: dict, s: dict) -> list[Check]:
    steps = {v: _steps_to_target(data, v) for v in VARIANTS}
    params = {v: int(np.median(data[v]["params"])) for v in VARIANTS}
    final = {v: float(np.mean([m[-1] for m in data[v]["metric"]])) for v in VARIANTS}
    said = ", ".join(f"{VARIANT_NAMES[v]} {steps[v]:g}" for v in VARIANTS)
    return [
        Check("compression keeps the original's convergence: Deep LoRA reaches the loss target within 1.25× "
              "the original's iterations, with far fewer parameters",
              bool(np.isfinite(steps["compressed"]) and steps["compressed"] <= 1.25 * steps["full"]
                   and params["compressed"] * 10 <= params["full"]),
              f"median iterations to the target: {said} (inf = not reached in {s['max_steps']}); adapter "
              f"parameters {params['compressed']:,} vs {params['full']:,}"),
        Check("the randomly initialized narrow factorization takes longer to train than the compressed one",
              bool(np.isfinite(steps["compressed"]) and steps["random"] > steps["compressed"]),
              f"median iterations: random {steps['random']:g}, compressed {steps['compressed']:g}; final dev "
              f"Pearson: " + ", ".join(f"{v} {fmt(final[v])}" for v in VARIANTS)),
    ]


register(Figure(
    id="003-fig11", paper=PAPER,
    caption="Compression enables faster convergence of Deep LoRA (App. D.2): the full-width original, the "
            "compressed (Deep LoRA) and a randomly initialized narrow deep factorization adapting to STS-B "
            "with 16 samples. Left: batch training loss against iterations. Right: dev Pearson against "
            "iterations.",
    claim="Deep LoRA converges like the full-width original with a small fraction of its parameters, while "
          "the random narrow factorization takes longer to train.",
    sizes={
        "paper": dict(task="stsb", n=[16], seeds=3, max_steps=200, max_eval=500, eval_every=10,
                      targets=["query", "key", "value", "attention.output.dense", "intermediate.dense",
                               "output.dense"]),
        "quick": dict(task="stsb", n=[8], seeds=1, max_steps=100, max_eval=64, eval_every=20,
                      targets=["query", "value"]),
        "test": dict(task="stsb", n=[8], seeds=1, max_steps=3, max_eval=16, eval_every=1, targets=["query"]),
    },
    estimate={"quick": 60, "paper": 4200},
    compute=_fig11_compute, plot=_fig11_plot, check=_fig11_check,
    notes=f"MiniLM-L6 instead of BERT-base. A run stops at the loss target (windowed loss below 1% of the "
          f"constant prediction's) or the step cap. Deep LoRA and random narrow at η = 1e-2, the original at"
          f" η = {FULL_LR:g} (see 003-fig1). Random narrow = the same rank-8 chain with random orthonormal "
          f"outer bases and ε·I cores, never compressed. Quick fits 8 examples (query and value only) so "
          f"that all three runs fit in under 2 minutes on 2 cores; the paper size uses the paper's 16.",
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Table 2
def _table2_compute(s: dict, seed: int, progress: bool) -> dict:
    cfg = dataclasses.replace(_config(s, seed), stop_fraction=1e-9, converged_fraction=1e-8)
    _, pool, _, evals = _splits(cfg, s)
    batch = pool.subset(sample_indices(len(pool), s["n"][0], seed)[: cfg.batch_size]).batch(
        np.arange(cfg.batch_size))
    out = {}
    for m in METHODS:
        stamps: list[float] = []
        mem: dict[str, int] = {}

        def observe(step: int, model, stamps=stamps, mem=mem) -> None:
            stamps.append(time.perf_counter())
            if step == 0:
                trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
                mem["weights"] = sum(p.numel() * p.element_size() for p in model.parameters())
                mem["trainable"] = trainable
                mem["grads_and_adam"] = 3 * trainable
                mem["activations"] = saved_activation_bytes(lambda: model(**batch))[1]
                stamps.append(time.perf_counter())  # the step clock starts after this measurement

        run_one(cfg, m, s["n"][0], seed, train=pool, dev=evals, observe=observe)
        step_ms = 1000 * np.diff(stamps[1:])[s["warmup"]:]
        out[m] = {"step_ms": step_ms.tolist(), "median_ms": float(np.median(step_ms)), **mem,
                  "total_bytes": mem["weights"] + mem["grads_and_adam"] + mem["activations"]}
    return out


def _table2_plot(data: dict, s: dict):
    fig, axes = subplots(2, width=4.6)
    for i, m in enumerate(METHODS):
        label = f"{NAMES[m]} (median {data[m]['median_ms']:.0f} ms)"
        axes[0].plot(data[m]["step_ms"], label=label, color=f"C{i}")
        axes[1].bar([i], [data[m]["total_bytes"] / 2**20], color=f"C{i}", label=NAMES[m])
    axes[0].set(xlabel="step (after warm-up)", ylabel="wall time per step (ms)",
                title="step time, one CPU thread")
    axes[1].set(ylabel="MiB", title="weights + grads + Adam + activations", xticks=[0, 1],
                xticklabels=[NAMES[m] for m in METHODS])
    axes[0].legend(fontsize=8)
    return fig


def _table2_check(data: dict, s: dict) -> list[Check]:
    deep, lora = data["deeplora"], data["lora"]
    t = deep["median_ms"] / lora["median_ms"]
    mem = deep["total_bytes"] / lora["total_bytes"]
    return [
        Check("a Deep LoRA step costs about as much time as a LoRA step (paper: 106 vs 102 ms, 1.04×); "
              "here at most 1.25×", t <= 1.25,
              f"median step {deep['median_ms']:.0f} vs {lora['median_ms']:.0f} ms: {t:.3f}×"),
        Check("and about as much memory (paper: 12.648 vs 12.526 GB, 1.01×); here at most 1.05×", mem <= 1.05,
              f"weights + grads + Adam state + saved activations: {deep['total_bytes'] / 2**20:.1f} vs "
              f"{lora['total_bytes'] / 2**20:.1f} MiB: {mem:.3f}×"),
    ]


register(Figure(
    id="003-table2", paper=PAPER,
    caption="Step wall time and memory of vanilla LoRA (peft) and Deep LoRA at rank 8 (App. B, Table 2).",
    claim="Deep LoRA costs about the same time per step and the same memory as vanilla LoRA.",
    sizes={
        "paper": dict(task="stsb", n=[16], seeds=1, max_steps=60, warmup=10, max_eval=16),
        "quick": dict(task="stsb", n=[16], seeds=1, max_steps=25, warmup=5, max_eval=16),
        "test": dict(task="stsb", n=[16], seeds=1, max_steps=4, warmup=1, max_eval=16),
    },
    estimate={"quick": 40, "paper": 150},
    compute=_table2_compute, plot=_table2_plot, check=_table2_check,
    notes="One CPU thread and MiniLM-L6 (the paper: one V100 and BERT-base), batch 16, every attention and "
          "feed-forward weight adapted. Step time is the median over the steps after the warm-up, measured "
          "in the same process for both methods. Memory is counted, not sampled: all weights, gradients and"
          " Adam's two states of the trainable parameters, and the bytes one forward pass saves for "
          "backward.",
    module=__name__, depends=DEPENDS,
))
