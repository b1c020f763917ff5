"""The few-shot NLG study: LoRA vs Deep LoRA on E2E (seed 003, App. C, Table 3).

Protocol (the few-shot GLUE study's, :mod:`lowdim.lora.study`, for generation): ``holdout``
training MRs are held out and, for each method, η is chosen from a grid by the teacher-forced loss
(nats per token) on them, one run per η at the selection seed, never on the test split. Then every
seed draws ``n`` distinct MRs of the rest with one random reference each (the same pairs for both
methods) and trains (:func:`lowdim.lora.nlg.train_seq2seq`); a run counts as converged when its
final loss is below 10 % of the token entropy of its targets (the loss of a context-free
prediction). Outputs (beam 4, at most 64 new tokens) are scored on a seeded random subset of test
MRs against all their references after the tokenizer's own normalisation
(:func:`lowdim.lora.nlg.normalizer`); the copy baseline (the MR's values) is scored the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .finetune import _append_record, read_results, sample_indices
from .io import numerical_ranks
from .nlg import (
    E2ESplit,
    NLGConfig,
    adapt_seq2seq,
    copy_baseline,
    few_shot_pairs,
    generate,
    normalizer,
    read_e2e,
    sequence_loss,
    token_entropy,
    train_seq2seq,
)
from .nlg_metrics import METRICS, nlg_scores, unavailable_metrics
from .study import holdout_split, paired_difference

__all__ = ["NLG_METHODS", "E2EStudySplits", "e2e_study_splits", "nlg_run", "run_nlg_study", "nlg_summary",
           "copy_scores"]

NLG_METHODS = ("lora", "deeplora")


@dataclass(frozen=True)
class E2EStudySplits:
    """The training split, its few-shot pool, the held-out ``(MRs, references)`` that choose η, and
    the scored test MRs."""

    train: E2ESplit
    pool: np.ndarray
    held: tuple[list[str], list[str]]
    test: E2ESplit


def e2e_study_splits(root: str | Path, holdout: int = 64, n_test: int = 100) -> E2EStudySplits:
    """Read E2E under ``root`` and split it as the study does (seeded: the same for every run)."""
    root = Path(root)
    train = read_e2e(root / "trainset.csv")
    test = read_e2e(root / "testset_w_refs.csv")
    pool, held_idx = holdout_split(len(train), holdout)
    rng = np.random.default_rng(7)
    held = ([train.mrs[i] for i in held_idx],
            [train.refs[i][rng.integers(len(train.refs[i]))] for i in held_idx])
    return E2EStudySplits(train, pool, held, test.subset(sample_indices(len(test), n_test, seed=12345)))


def nlg_run(model_path: str, splits: E2EStudySplits, method: str, seed: int, cfg: NLGConfig, n: int,
            phase: str = "final") -> dict[str, Any]:
    """One run: train on ``n`` pairs of seed ``seed``; score the held-out loss (``phase="select"``)
    or the test MRs (``"final"``). A diverging selection run is recorded with an infinite loss."""
    torch.manual_seed(seed)  # the new modules start the same for both methods
    model, tok = adapt_seq2seq(model_path, method, seed=seed)
    src, tgt = few_shot_pairs(splits.train, n, seed, splits.pool)
    base = {"phase": phase, "method": method, "seed": seed, "lr": cfg.lr}
    t0 = time.perf_counter()
    try:
        fit = train_seq2seq(model, tok, src, tgt, cfg, seed=seed)
    except FloatingPointError:
        if phase != "select":  # a final run must not diverge
            raise
        return {**base, "held_loss": float("inf"), "diverged": True, "steps": 0, "stopped": "diverged",
                "final_loss": float("inf"), "train_s": time.perf_counter() - t0}
    rec = {**base, "steps": fit["steps"], "stopped": fit["stopped"], "final_loss": fit["final_loss"],
           "losses": fit["losses"], "entropy": token_entropy(tok, tgt), "train_s": time.perf_counter() - t0}
    rec["converged"] = rec["final_loss"] < 0.1 * rec["entropy"]
    if phase == "select":
        rec["held_loss"] = sequence_loss(model, tok, *splits.held, cfg)
        return rec
    t0 = time.perf_counter()
    test = splits.test
    hyps = generate(model, tok, list(test.mrs), cfg)
    norm = normalizer(tok)
    metrics = [m for m in METRICS if m not in unavailable_metrics()]
    rec["scores"] = nlg_scores(hyps, [[norm(r) for r in rs] for rs in test.refs], metrics)
    rec["generate_s"] = time.perf_counter() - t0
    rec["ranks"] = sorted(numerical_ranks(model).values())
    rec["samples"] = [[test.mrs[i], hyps[i]] for i in range(min(3, len(test)))]
    rec["empty_outputs"] = sum(not h for h in hyps)
    return rec


def run_nlg_study(model_path: str, splits: E2EStudySplits, cfg: NLGConfig, *, n: int = 16,
                  seeds: Sequence[int] = (0, 1, 2),
                  grid: Sequence[float] | dict[str, float] = (1e-4, 1e-3, 1e-2),
                  path: str | Path | None = None, log: Callable[[str], None] | None = print
                  ) -> list[dict[str, Any]]:
    """Select η per method on the held-out MRs (a ``grid``, or fixed ``{method: η}``), then run
    every seed; returns the final records. With ``path`` (JSON lines) records are appended as runs
    finish and a rerun resumes."""
    done = read_results(path) if path is not None and Path(path).is_file() else []

    def run(phase, method, seed, lr):
        for r in done:
            if (r["phase"], r["method"], r["seed"], r["lr"]) == (phase, method, seed, lr):
                return r
        rec = nlg_run(model_path, splits, method, seed, dataclasses.replace(cfg, lr=lr), n, phase)
        done.append(rec)
        if path is not None:
            _append_record(Path(path), rec)
        if log:
            what = (f"held-out loss {rec['held_loss']:.3f}" if phase == "select"
                    else " ".join(f"{k}={v:.4f}" for k, v in rec["scores"].items()))
            log(f"{phase:6s} {method:8s} seed={seed} lr={lr:.0e} steps={rec['steps']} ({rec['stopped']}) "
                f"loss={rec['final_loss']:.3f} train {rec['train_s']:.0f}s: {what}")
        return rec

    best = {}
    for method in NLG_METHODS:
        if isinstance(grid, dict):
            best[method] = grid[method]
            continue
        held = {lr: run("select", method, 1000, lr)["held_loss"] for lr in grid}
        best[method] = min(grid, key=lambda lr, h=held: (h[lr], lr))
        if log:
            log(f"{method}: held-out loss by η {held} -> η = {best[method]:g}")
    return [run("final", m, seed, best[m]) for seed in seeds for m in NLG_METHODS]


def copy_scores(model_path: str, test: E2ESplit) -> dict[str, float]:
    """Scores of the copy baseline (each MR's values, comma-separated) on ``test``."""
    from transformers import AutoTokenizer

    norm = normalizer(AutoTokenizer.from_pretrained(model_path))
    metrics = [m for m in METRICS if m not in unavailable_metrics()]
    return nlg_scores([norm(copy_baseline(mr)) for mr in test.mrs],
                      [[norm(r) for r in rs] for rs in test.refs], metrics)


def nlg_summary(final: list[dict[str, Any]], copy: dict[str, float]) -> dict[str, Any]:
    """Per metric: mean ± std per method, the paired Deep LoRA − LoRA difference (95 % interval),
    the copy baseline; convergence, η, steps and mean numerical rank per method."""
    by = {m: {r["seed"]: r for r in final if r["method"] == m} for m in NLG_METHODS}
    seeds = sorted(set(by["lora"]) & set(by["deeplora"]))
    if not seeds:
        raise ValueError("no seed has finished runs of both methods")
    metrics = [k for k in METRICS if k in by["lora"][seeds[0]]["scores"]]
    out: dict[str, Any] = {}
    for m in NLG_METHODS:
        out[m] = {k: [round(float(np.mean(v)), 4), round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else 0.0]
                  for k in metrics for v in [[by[m][s]["scores"][k] for s in seeds]]}
    out["diff"] = {k: [round(x, 4) for x in paired_difference(
        [by["lora"][s]["scores"][k] for s in seeds], [by["deeplora"][s]["scores"][k] for s in seeds])]
        for k in metrics}
    out["copy_baseline"] = {k: round(v, 4) for k, v in copy.items()}
    out["converged"] = {m: round(float(np.mean([by[m][s]["converged"] for s in seeds])), 3)
                        for m in NLG_METHODS}
    out["lr"] = {m: by[m][seeds[0]]["lr"] for m in NLG_METHODS}
    out["steps"] = {m: [by[m][s]["steps"] for s in seeds] for m in NLG_METHODS}
    out["mean_rank"] = {m: round(float(np.mean([np.mean(by[m][s]["ranks"]) for s in seeds])), 2)
                        for m in NLG_METHODS}
    out["seeds"] = len(seeds)
    return out
