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

import torch

from lowdim.lora.finetune import default_model_path

REPO = Path(__file__).resolve().parents[1]


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

    from lowdim._io import strict_json
    from lowdim.lora.nlg import NLGConfig
    from lowdim.lora.nlg_metrics import unavailable_metrics
    from lowdim.lora.nlg_study import copy_scores, e2e_study_splits, nlg_summary, run_nlg_study

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # EncoderDecoderModel's note on labels
    start = time.perf_counter()
    missing = unavailable_metrics()
    for m, why in missing.items():
        print(f"metric {m} unavailable: {why}", flush=True)
    splits = e2e_study_splits(args.data_root, args.holdout, args.n_test)
    test = splits.test
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"E2E: {len(splits.train)} training MRs ({len(splits.pool)} in the few-shot pool, {args.holdout} "
          f"held out for η), test subset {len(test)} of 630 MRs with {sum(map(len, test.refs))} references",
          flush=True)
    cfg = NLGConfig(head_lr=args.head_lr, max_steps=args.max_steps, stop_loss=args.stop_loss)
    final = run_nlg_study(args.model, splits, cfg, n=args.n, seeds=range(args.seeds), grid=args.grid,
                          path=out / "records.jsonl", log=lambda s: print(s, flush=True))
    res = nlg_summary(final, copy_scores(args.model, test))
    print(f"\nE2E test subset ({len(test)} MRs, all references), n = {args.n}, mean ± std over "
          f"{res['seeds']} seeds; η {res['lr']}, steps {res['steps']}, converged {res['converged']}, "
          f"mean numerical rank of ΔW {res['mean_rank']}:")
    print(_table(res))
    for r in final[:2]:
        for mr, hyp in r["samples"]:
            print(f"  {r['method']} seed {r['seed']}: {mr} -> {hyp!r}")
    print(json.dumps(strict_json({"benchmark": "nlg_e2e", "model": args.model, "n": args.n,
                      "n_test_mrs": len(test), "grid": args.grid, "unavailable": missing,
                      "seconds": round(time.perf_counter() - start), "results": res})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
