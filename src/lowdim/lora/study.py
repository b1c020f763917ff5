"""The few-shot study: LoRA vs Deep LoRA with η chosen on held-out training data (seed 003, Fig. 6).

Design (issue 12): the head sits on the checkpoint's own pooling and both methods train it with the
same learning rate (:mod:`lowdim.lora.finetune`); a part of the *training* split is held out and,
for each method and n, η is chosen from a grid by the main metric on it (never on dev); then every
seed draws its n examples from the rest of the training split (the same subset for both methods)
and is evaluated on the dev split.  :func:`paired_difference` gives the mean Deep LoRA − LoRA
difference over seeds with a Student-t 95 % interval; :func:`zero_training_reference` the score of
no training at all (cosine of the checkpoint's sentence embeddings for a regression pair task such
as STS-B, the majority class of the training split for classification).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import strict_json
from .._validation import check_positive, fail
from .data import EncodedSplit
from .finetune import (
    FinetuneConfig,
    _append_record,
    adapter_dir,
    check_settings,
    load_task,
    read_results,
    run_one,
)
from .glue import GlueSplit, TaskSpec, compute_metrics
from .heads import checkpoint_pooling, pool

__all__ = [
    "LR_GRID",
    "holdout_split",
    "method_grids",
    "check_select_by",
    "paired_difference",
    "zero_training_reference",
    "run_study",
    "study_results",
    "format_results",
    "dumps_result_line",
]

#: The η grid of the study (issue 12).
LR_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


def holdout_split(n_total: int, n_holdout: int, seed: int = 2024) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint ``(pool, held_out)`` indices of a training split: η is selected on ``held_out``.

    Examples
    --------
    >>> pool, held = holdout_split(10, 3)
    >>> len(pool), len(held), len(set(pool) & set(held))
    (7, 3, 0)
    """
    if not 0 < n_holdout < n_total:
        raise ValueError(f"n_holdout must be in (0, {n_total}), got {n_holdout}")
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[n_holdout:]), np.sort(perm[:n_holdout])


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
                      ) -> tuple[float, float, float]:
    """Mean of ``b - a`` over paired seeds and its Student-t ``confidence`` interval.

    Examples
    --------
    >>> m, lo, hi = paired_difference([0.1, 0.2, 0.3], [0.2, 0.4, 0.3])
    >>> round(m, 4), lo < m < hi
    (0.1, True)
    """
    from scipy import stats

    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0:
        raise ValueError("no paired results")
    mean = float(d.mean())
    if d.size < 2:
        return mean, float("nan"), float("nan")
    sem = float(d.std(ddof=1) / np.sqrt(d.size))
    if sem == 0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, d.size - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


@torch.no_grad()
def _embed(model_path: str, texts: list[str], pooling: str, batch_size: int = 64) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    enc = AutoModel.from_pretrained(model_path).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), enc.config.hidden_size), dtype=np.float64)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=256,
                    return_tensors="pt")
        res = enc(**batch)
        emb = res.pooler_output if pooling == "pooler" else pool(res.last_hidden_state,
                                                                batch["attention_mask"], pooling)
        out[idx] = emb.double().numpy()
    return out


def zero_training_reference(model_path: str, train: GlueSplit, dev: GlueSplit) -> tuple[float, str]:
    """The main-metric score of no training at all, and what it is.

    A regression task on sentence pairs (STS-B) gets the cosine similarity of the two sentences'
    embeddings (the checkpoint's own pooling, :func:`lowdim.lora.heads.checkpoint_pooling`); a
    classification task the majority class of the training split.
    """
    task = dev.task
    if task.is_regression and dev.text_b is not None:
        mode = checkpoint_pooling(model_path)
        a = _embed(model_path, dev.text_a, mode)
        b = _embed(model_path, dev.text_b, mode)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        score = compute_metrics(task, cos, dev.labels)[task.main_metric]
        return score, f"cosine of {mode}-pooled embeddings, no training ({task.main_metric})"
    if task.is_regression:
        raise ValueError("no zero-training reference for a single-sentence regression task")
    majority = int(np.bincount(train.labels, minlength=task.num_labels).argmax())
    score = compute_metrics(task, np.full(len(dev), majority), dev.labels)[task.main_metric]
    return score, f"majority class of the training split ({task.labels[majority]!r}, {task.main_metric})"


def method_grids(grid: Sequence[float] | Mapping[str, Sequence[float]], methods: Sequence[str]
                 ) -> dict[str, tuple[float, ...]]:
    """The η grid of each method: one grid for all, or ``{method: grid}``; a one-value grid fixes η.

    Examples
    --------
    >>> method_grids({"lora": [1e-4], "deeplora": (1e-3, 1e-2)}, ["lora", "deeplora"])
    {'lora': (0.0001,), 'deeplora': (0.001, 0.01)}
    """
    grids = dict(grid) if isinstance(grid, Mapping) else {m: grid for m in methods}
    if sorted(grids) != sorted(methods):
        raise fail("grid", f"one grid for every method of the study {sorted(methods)}", sorted(grids))
    out = {}
    for m, g in grids.items():
        if isinstance(g, str | bytes) or not isinstance(g, Sequence) or not g:
            raise fail(f"grid[{m!r}]", "a non-empty sequence of learning rates", g)
        out[m] = tuple(check_positive(f"grid[{m!r}] learning rate", lr) for lr in g)
    return out


def check_select_by(task: TaskSpec, select_by: str | None) -> None:
    """``ValueError`` unless ``select_by`` is ``None`` (the main metric) or one of ``task``'s metrics."""
    if select_by is not None and select_by not in task.metrics:
        raise ValueError(f"select_by={select_by!r} is not a metric of task {task.name!r}; "
                         f"choose one of {list(task.metrics)}")


def _score(record: dict[str, Any], metric: str | None = None) -> float:
    """The record's ``metric`` (default its main metric); a constant predictor's NaN correlation is −∞."""
    value = float(record["main"] if metric is None else record["metrics"][metric])
    return value if np.isfinite(value) else -np.inf


def _best_lrs(grids: dict[str, tuple[float, ...]], sel: dict[tuple[str, float], dict[str, Any]],
              metric: str, label: str, log: Callable[[str], None] | None) -> dict[str, float]:
    """η per method: its one-value grid's, or the best held-out ``metric`` of its selection runs
    ``sel`` (``{(method, η): record}``; ties go to the smaller η)."""
    best = {}
    for method, g in grids.items():
        if len(g) == 1:
            best[method], said = g[0], f"η fixed at {g[0]:g} (a one-value grid: no selection)"
        else:
            scores = {lr: _score(sel[method, lr], metric) for lr in g}
            best[method] = max(g, key=lambda lr, s=scores: (s[lr], -lr))
            said = f"held-out {metric} by η {scores} -> η = {best[method]:g}"
        if log:
            log(f"{label} {method}: {said}")
    return best


def run_study(
    cfg: FinetuneConfig,
    folder: str | Path,
    *,
    grid: Sequence[float] | Mapping[str, Sequence[float]] = LR_GRID,
    n_holdout: int = 500,
    selection_seed: int = 1000,
    select_by: str | None = None,
    log: Callable[[str], None] | None = print,
    poll_seconds: float = 20.0,
) -> list[dict[str, Any]]:
    """Select η per (method, n) on held-out training data, then run every seed; resumable.

    For each n of ``cfg.n_train`` (in order) and each method, one run per η of ``grid`` (one grid
    for all methods, or ``{method: grid}``; a method whose grid holds one η skips the selection)
    trains on ``n`` examples (seed ``selection_seed``) of the pool and is scored on the held-out
    part; the best η (by ``select_by``, one of the task's metrics, default its main metric: MRPC's F1 rewards
    always answering "paraphrase", so choose it by ``"accuracy"`` there) then trains every seed of
    ``cfg.seeds`` (subsets of the pool, the same for both methods)
    and is scored on the dev split(s).  Records (``"phase": "select"`` or ``"final"``) are appended
    to ``folder/records.jsonl``; adapters of the final runs go to ``folder/adapters``.  A rerun
    skips what is done; other settings are refused (:func:`lowdim.lora.finetune.check_settings`).
    Several processes may work on one folder at once (each claims a run before starting it, see
    :func:`_claim`; a process waits for selection runs that another one is doing).
    """
    grids = method_grids(grid, cfg.methods)  # validated before any data is read
    train, pool_data, held, evals = study_splits(cfg, n_holdout)
    check_select_by(train.task, select_by)  # before any run or file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"grid": {m: list(g) for m, g in grids.items()} if isinstance(grid, Mapping) else list(grid),
             "n_holdout": n_holdout, "selection_seed": selection_seed}
    if select_by is not None:  # absent from the settings of studies that chose by the main metric
        extra["select_by"] = select_by
    check_settings(cfg, folder, extra)
    path = folder / "records.jsonl"

    def run(phase, method, n, seed, lr, dev, save):
        """The record of one run: done here, found in the file, or ``None`` (another process runs it)."""
        key = (phase, method, n, seed, lr)
        found = [r for r in read_results(path) if _study_key(r) == key]  # other processes' too
        if found:
            return found[0]
        claim = _claim(folder / "claims", key)
        if claim is None:
            return None
        try:
            lrs = {"lora_lr": lr} if method == "lora" else {"deeplora_lr": lr}
            rec = run_one(dataclasses.replace(cfg, **lrs), method, n, seed, train=pool_data, dev=dev,
                          save_to=adapter_dir(folder, train.task.name, method, n, seed) if save else None)
            rec["phase"] = phase
            _append_record(path, rec)
        finally:
            claim.unlink(missing_ok=True)
        if log:
            log(f"{phase:6s} {method:8s} n={n:<4d} seed={seed:<5d} lr={lr:.0e} "
                f"main={rec['main']:.4f} steps={rec['steps']} ({rec['stopped']}) "
                f"loss={rec['final_train_loss']:.4g}/{rec['baseline_loss']:.4g}")
        return rec

    def selection(n):
        """The selection runs at ``n`` (``None`` where another process runs one)."""
        return {(m, lr): run("select", m, n, selection_seed, lr, held, False)
                for m, g in grids.items() if len(g) > 1 for lr in g}

    for n in cfg.n_train:  # every selection run this process can claim, all sizes first
        selection(n)
    for n in cfg.n_train:
        while None in (sel := selection(n)).values():  # runs claimed by other processes: wait
            time.sleep(poll_seconds)
        best = _best_lrs(grids, sel, select_by or train.task.main_metric, f"n={n}", log)
        for seed in cfg.seeds:
            for method in cfg.methods:
                run("final", method, n, seed, best[method], evals, cfg.save_adapters)
    return read_results(path)


def study_splits(cfg: FinetuneConfig, n_holdout: int):
    """``(train, pool, held, evals)``: the tokenized training split, its pool of few-shot subsets,
    the held-out part that chooses η (as ``{"dev": …}``) and the tokenized dev split(s)."""
    from transformers import AutoTokenizer

    train_split, eval_splits = load_task(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    train = EncodedSplit.encode(train_split, tok, cfg.max_length)
    evals = {k: EncodedSplit.encode(v, tok, cfg.max_length) for k, v in eval_splits.items()}
    pool_idx, held_idx = holdout_split(len(train), n_holdout)
    pool = train.subset(pool_idx)
    for n in cfg.n_train:
        if n > len(pool):
            raise ValueError(f"n = {n} is larger than the training pool ({len(pool)} examples)")
    return train, pool, {"dev": train.subset(held_idx)}, evals


def _claim(folder: Path, key: tuple) -> Path | None:
    """Claim run ``key`` for this process (a file created exclusively, holding the process id).

    Several processes can share one study folder: each runs only what it claimed.  A claim whose
    process is gone (interrupted run) is taken over.  Returns ``None`` when a live process holds it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("-".join(str(k) for k in key) + ".claim")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                pid = int(path.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return None
            path.unlink(missing_ok=True)  # stale: its process ended
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return path
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _study_key(record: dict[str, Any]) -> tuple:
    return (record.get("phase", "final"), record["method"], int(record["n"]), int(record["seed"]),
            float(record["lr"]))


def study_results(records: list[dict[str, Any]], methods: Sequence[str] = ("lora", "deeplora")
                  ) -> dict[str, dict[str, Any]]:
    """The benchmark's ``results``: per n, mean/std per method, paired difference, convergence.

    ``diff`` is ``methods[1] − methods[0]`` over the seeds both finished (mean, 95 % interval).
    """
    final = [r for r in records if r.get("phase", "final") == "final"]
    out: dict[str, dict[str, Any]] = {}
    for n in sorted({int(r["n"]) for r in final}):
        by = {m: {int(r["seed"]): r for r in final if r["n"] == n and r["method"] == m} for m in methods}
        seeds = sorted(set.intersection(*(set(v) for v in by.values())))
        if not seeds:
            continue
        row: dict[str, Any] = {}
        for m in methods:
            v = [float(by[m][s]["main"]) for s in seeds]
            row[m] = [round(float(np.mean(v)), 4), round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, 4)]
        diff = paired_difference(*([float(by[m][s]["main"]) for s in seeds] for m in methods))
        row["diff"] = [round(x, 4) for x in diff]
        row["converged"] = [round(float(np.mean([by[m][s]["converged"] for s in seeds])), 3) for m in methods]
        row["lr"] = [by[m][seeds[0]]["lr"] for m in methods]
        row["seeds"] = len(seeds)
        out[str(n)] = row
    return out


def format_results(results: dict[str, dict[str, Any]], reference: float, metric: str) -> str:
    """Markdown table of :func:`study_results` with the zero-training reference."""
    lines = [f"| n | LoRA {metric} | Deep LoRA {metric} | Deep − LoRA (95 % CI) | converged (LoRA / Deep) "
             f"| η (LoRA / Deep) | seeds |", "|---|---|---|---|---|---|---|"]
    for n, row in results.items():
        (lm, ls), (dm, ds), (d, lo, hi) = row["lora"], row["deeplora"], row["diff"]
        lines.append(f"| {n} | {lm:.3f} ± {ls:.3f} | {dm:.3f} ± {ds:.3f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                     f"| {row['converged'][0]:.0%} / {row['converged'][1]:.0%} "
                     f"| {row['lr'][0]:g} / {row['lr'][1]:g} | {row['seeds']} |")
    lines.append(f"| zero-training reference | {reference:.3f} | | | | | |")
    return "\n".join(lines)


def dumps_result_line(task: str, reference: float, results: dict[str, Any], **extra) -> str:
    """The benchmark's one JSON line."""
    return json.dumps(strict_json({"benchmark": "fewshot", "task": task, "reference": round(reference, 4),
                                   "results": results, **extra}))

