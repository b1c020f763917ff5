"""Few-shot NLG on E2E: LoRA vs Deep LoRA on a seq2seq model (seed 003, App. C, Table 3).

The paper fine-tunes T5-base on n = 16 E2E examples over 10 seeds and reports Deep LoRA − LoRA in
BLEU, ROUGE and METEOR.  No pretrained seq2seq weights can be downloaded here, so the default model
is all-MiniLM-L6-v2 warm-started as an encoder–decoder ("BERT2BERT", :func:`lowdim.lora.nlg.
load_seq2seq`: the cross-attention and LM-head transform are new and train in full as
modules_to_save beside the adapters on every pretrained linear layer); ``--model`` takes a local
T5/BART checkpoint instead.

Protocol.  64 training MRs are held out; for each method η is chosen from ``--grid`` by the
teacher-forced loss (nats/token) on them (one run per η at the selection seed; never the test
split).  Then every seed draws n = 16 distinct MRs of the rest with one random reference each (the
same pairs for both methods) and trains with batch 16 until the mean loss over 10 steps is below
``--stop-loss`` or ``--max-steps``; a run counts as converged when its final loss is below 10 % of
the token entropy of its targets (the loss of a context-free prediction).  Outputs (beam 4, at most
64 new tokens) are scored on a seeded random subset of ``--n-test`` test MRs against all their
references, after the tokenizer's own normalisation of the references (all-MiniLM-L6-v2 is uncased:
lower case, accents stripped).  The copy baseline (the MR's values, comma-separated) is scored the
same way.  Records go to OUT/records.jsonl as runs finish; a rerun resumes.  Prints a table, three
sample outputs per method, and ends with one JSON line
{"benchmark": "nlg_e2e", "results": {"lora": {metric: [mean, std]}, "deeplora": {...},
"diff": {metric: [mean, lo95, hi95]}, "copy_baseline": {metric: score}, ...}, ...}.

    OMP_NUM_THREADS=1 python benchmarks/nlg_e2e.py --out /tmp/nlg_e2e
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lowdim.lora.finetune import default_model_path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("lora", "deeplora")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=default_model_path() or "t5-base", help="local checkpoint folder")
    data = os.environ.get("LOWDIM_DATA", str(REPO.parent / "shared" / "data"))
    p.add_argument("--data-root", default=str(Path(data) / "e2e"))
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--grid", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    p.add_argument("--head-lr", type=float, default=1e-3, help="lr of the new modules (both methods)")
    p.add_argument("--max-steps", type=int, default=120)
    p.add_argument("--stop-loss", type=float, default=0.1)
    p.add_argument("--holdout", type=int, default=64, help="held-out training MRs that choose η")
    p.add_argument("--n-test", type=int, default=100, help="seeded random test MRs (all references)")
    p.add_argument("--out", default="/tmp/nlg_e2e")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _append(path: Path, record: dict) -> None:
    from lowdim.lora.finetune import _append_record

    _append_record(path, record)


def _one_run(args, splits, method, seed, lr, phase):
    """Train one (method, seed, η) run; score it on the held-out loss or the test subset."""
    from lowdim.lora import numerical_ranks
    from lowdim.lora.nlg import (
        NLGConfig,
        adapt_seq2seq,
        few_shot_pairs,
        generate,
        normalizer,
        sequence_loss,
        token_entropy,
        train_seq2seq,
    )
    from lowdim.lora.nlg_metrics import METRICS, nlg_scores, unavailable_metrics

    train, pool, held, test = splits
    cfg = NLGConfig(lr=lr, head_lr=args.head_lr, max_steps=args.max_steps, stop_loss=args.stop_loss)
    torch.manual_seed(seed)  # the new modules start the same for both methods
    model, tok = adapt_seq2seq(args.model, method, seed=seed)
    src, tgt = few_shot_pairs(train, args.n, seed, pool)
    t0 = time.perf_counter()
    try:
        fit = train_seq2seq(model, tok, src, tgt, cfg, seed=seed)
    except FloatingPointError as err:  # a diverging η loses the selection; a final run must not diverge
        if phase != "select":
            raise
        print(f"select {method} lr={lr:g}: {err}", flush=True)
        return {"phase": phase, "method": method, "seed": seed, "lr": lr, "held_loss": float("inf"),
                "diverged": True, "steps": 0, "stopped": "diverged", "final_loss": float("inf"),
                "train_s": time.perf_counter() - t0}
    rec = {"phase": phase, "method": method, "seed": seed, "lr": lr, "steps": fit["steps"],
           "stopped": fit["stopped"], "final_loss": fit["final_loss"], "losses": fit["losses"],
           "entropy": token_entropy(tok, tgt), "train_s": time.perf_counter() - t0}
    rec["converged"] = rec["final_loss"] < 0.1 * rec["entropy"]
    if phase == "select":
        rec["held_loss"] = sequence_loss(model, tok, *held, cfg)
        return rec
    t0 = time.perf_counter()
    hyps = generate(model, tok, list(test.mrs), cfg)
    norm = normalizer(tok)
    metrics = [m for m in METRICS if m not in unavailable_metrics()]
    rec["scores"] = nlg_scores(hyps, [[norm(r) for r in rs] for rs in test.refs], metrics)
    rec["generate_s"] = time.perf_counter() - t0
    rec["ranks"] = sorted(numerical_ranks(model).values())
    rec["samples"] = [[test.mrs[i], hyps[i]] for i in range(3)]
    rec["empty_outputs"] = sum(not h for h in hyps)
    return rec


def _splits(args):
    from lowdim.lora.finetune import sample_indices
    from lowdim.lora.nlg import read_e2e
    from lowdim.lora.study import holdout_split

    root = Path(args.data_root)
    train = read_e2e(root / "trainset.csv")
    test = read_e2e(root / "testset_w_refs.csv")
    pool, held_idx = holdout_split(len(train), args.holdout)
    rng = np.random.default_rng(7)
    held = ([train.mrs[i] for i in held_idx], [train.refs[i][rng.integers(len(train.refs[i]))]
                                                for i in held_idx])
    return train, pool, held, test.subset(sample_indices(len(test), args.n_test, seed=12345))


def _run_all(args, splits, path: Path) -> list[dict]:
    from lowdim.lora.finetune import read_results

    def run(phase, method, seed, lr):
        for r in read_results(path):
            if (r["phase"], r["method"], r["seed"], r["lr"]) == (phase, method, seed, lr):
                return r
        rec = _one_run(args, splits, method, seed, lr, phase)
        _append(path, rec)
        what = f"held-out loss {rec['held_loss']:.3f}" if phase == "select" else \
            " ".join(f"{k}={v:.4f}" for k, v in rec["scores"].items())
        print(f"{phase:6s} {method:8s} seed={seed} lr={lr:.0e} steps={rec['steps']} ({rec['stopped']}) "
              f"loss={rec['final_loss']:.3f} train {rec['train_s']:.0f}s: {what}", flush=True)
        return rec

    best = {}
    for method in METHODS:
        held = {lr: run("select", method, 1000, lr)["held_loss"] for lr in args.grid}
        best[method] = min(args.grid, key=lambda lr, h=held: (h[lr], lr))
        print(f"{method}: held-out loss by η {held} -> η = {best[method]:g}", flush=True)
    for seed in range(args.seeds):
        for method in METHODS:
            run("final", method, seed, best[method])
    return [r for r in read_results(path) if r["phase"] == "final" and r["lr"] == best[r["method"]]]


def _summary(final: list[dict], copy: dict[str, float]) -> dict:
    from lowdim.lora.nlg_metrics import METRICS
    from lowdim.lora.study import paired_difference

    by = {m: {r["seed"]: r for r in final if r["method"] == m} for m in METHODS}
    seeds = sorted(set(by["lora"]) & set(by["deeplora"]))
    metrics = [k for k in METRICS if k in by["lora"][seeds[0]]["scores"]]
    out: dict = {}
    for m in METHODS:
        out[m] = {k: [round(float(np.mean(v)), 4), round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else 0.0]
                  for k in metrics for v in [[by[m][s]["scores"][k] for s in seeds]]}
    out["diff"] = {k: [round(x, 4) for x in paired_difference(
        [by["lora"][s]["scores"][k] for s in seeds], [by["deeplora"][s]["scores"][k] for s in seeds])]
        for k in metrics}
    out["copy_baseline"] = {k: round(v, 4) for k, v in copy.items()}
    out["converged"] = {m: round(float(np.mean([by[m][s]["converged"] for s in seeds])), 3) for m in METHODS}
    out["lr"] = {m: by[m][seeds[0]]["lr"] for m in METHODS}
    out["steps"] = {m: [by[m][s]["steps"] for s in seeds] for m in METHODS}
    out["mean_rank"] = {m: round(float(np.mean([np.mean(by[m][s]["ranks"]) for s in seeds])), 2)
                        for m in METHODS}
    out["seeds"] = len(seeds)
    return out


def _finite(obj):
    """``obj`` with NaN (a metric undefined for these outputs) as ``None`` (JSON ``null``)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def _table(res: dict) -> str:
    rows = ["| metric | LoRA | Deep LoRA | Deep − LoRA (95 % CI) | copy baseline |", "|---|---|---|---|---|"]
    for k, (lm, ls) in res["lora"].items():
        (dm, ds), (d, lo, hi) = res["deeplora"][k], res["diff"][k]
        rows.append(f"| {k} | {lm:.4f} ± {ls:.4f} | {dm:.4f} ± {ds:.4f} | {d:+.4f} [{lo:+.4f}, {hi:+.4f}] "
                    f"| {res['copy_baseline'][k]:.4f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from lowdim.lora.nlg import copy_baseline, normalizer
    from lowdim.lora.nlg_metrics import METRICS, nlg_scores, unavailable_metrics

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # EncoderDecoderModel's note on labels
    start = time.perf_counter()
    missing = unavailable_metrics()
    for m, why in missing.items():
        print(f"metric {m} unavailable: {why}", flush=True)
    splits = _splits(args)
    test = splits[3]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"E2E: {len(splits[0])} training MRs ({len(splits[1])} in the few-shot pool, {args.holdout} held "
          f"out for η), test subset {len(test)} of 630 MRs with {sum(map(len, test.refs))} references",
          flush=True)
    final = _run_all(args, splits, out / "records.jsonl")
    from transformers import AutoTokenizer

    norm = normalizer(AutoTokenizer.from_pretrained(args.model))
    metrics = [m for m in METRICS if m not in missing]
    copy = nlg_scores([norm(copy_baseline(mr)) for mr in test.mrs],
                      [[norm(r) for r in rs] for rs in test.refs], metrics)
    res = _summary(final, copy)
    print(f"\nE2E test subset ({len(test)} MRs, all references), n = {args.n}, mean ± std over "
          f"{res['seeds']} seeds; η {res['lr']}, steps {res['steps']}, converged {res['converged']}, "
          f"mean numerical rank of ΔW {res['mean_rank']}:")
    print(_table(res))
    for r in final[:2]:
        for mr, hyp in r["samples"]:
            print(f"  {r['method']} seed {r['seed']}: {mr} -> {hyp!r}")
    print(json.dumps(_finite({"benchmark": "nlg_e2e", "model": args.model, "n": args.n,
                      "n_test_mrs": len(test), "grid": args.grid, "unavailable": missing,
                      "seconds": round(time.perf_counter() - start), "results": res})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
