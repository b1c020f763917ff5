"""Few-shot GLUE: vanilla LoRA (peft) vs Deep LoRA, η chosen on held-out training data (seed 003, Fig. 6, 7).

For each n (default {16, 64, 256}) and each method, η is chosen from {1e-5, 1e-4, 1e-3, 1e-2} by
the main metric on a held-out part of the *training* split (never dev); then every seed draws n
examples from the rest (the same subset and head initialisation for both methods), trains the
adapters and a head on the checkpoint's own pooling (mean pooling for all-MiniLM-L6-v2) with the
same head learning rate, and is scored on the dev split (all of it, or a seeded random subset with
--max-eval).  A run counts as converged only when its final training loss is below 10 % of the best
constant prediction's (label variance / entropy).  Prints the table with the zero-training
reference, the paired Deep LoRA − LoRA difference with a Student-t 95 % interval and the numerical
ranks of ΔW (Fig. 7), and ends with one JSON line:
{"benchmark": "fewshot", "task": ..., "reference": ..., "results": {"16": {"lora": [mean, std],
"deeplora": [mean, std], "diff": [mean, lo95, hi95], "converged": [lora, deeplora], "lr": [...],
"seeds": k}, ...}, ...}.  Records go to OUT/records.jsonl as they finish; rerunning resumes.

    OMP_NUM_THREADS=1 python benchmarks/fewshot_glue.py --task stsb --out /tmp/fewshot_stsb
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import torch

from lowdim.lora.finetune import default_model_path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=default_model_path() or "sentence-transformers/all-MiniLM-L6-v2")
    data = os.environ.get("LOWDIM_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data-root", default=str(Path(data) / "glue"))
    parser.add_argument("--task", default="stsb")
    parser.add_argument("--n", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--grid", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3, 1e-2],
                        help="η grid of both methods, selected on held-out training data")
    for m in ("lora", "deeplora"):
        parser.add_argument(f"--{m}-grid", type=float, nargs="+", default=None,
                            help=f"η grid of {m} alone (default --grid); one value fixes η (no selection)")
    parser.add_argument("--holdout", type=int, default=500, help="held-out training examples for η")
    parser.add_argument("--select-by", default=None,
                        help="held-out metric that chooses η (default the task's main metric; "
                             "MRPC: accuracy, since its F1 rewards the majority class)")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="head lr (both methods)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=8,
                        help="adapter rank r of both methods (Fig. 8 sweeps it; Deep LoRA needs it even)")
    parser.add_argument("--max-eval", type=int, default=None, help="seeded random dev subset")
    parser.add_argument("--out", default=None, help="folder (default /tmp/fewshot_<task>)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--report-only", action="store_true",
                        help="print the table and JSON line of the runs already in OUT; train nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from lowdim.lora.finetune import METHODS
    from lowdim.lora.glue import get_task
    from lowdim.lora.study import check_select_by, method_grids

    grid = args.grid
    if args.lora_grid or args.deeplora_grid:
        grid = {"lora": args.lora_grid or args.grid, "deeplora": args.deeplora_grid or args.grid}
    try:  # wrong options: a usage error before any data is read
        check_select_by(get_task(args.task), args.select_by)
        method_grids(grid, METHODS)
    except ValueError as err:
        parser.error(str(err))

    from lowdim._io import atomic_write_json
    from lowdim.lora.finetune import FinetuneConfig, load_task, read_results
    from lowdim.lora.study import (
        dumps_result_line,
        format_results,
        run_study,
        study_results,
        zero_training_reference,
    )

    cfg = FinetuneConfig(
        model=args.model, data_root=args.data_root, task=args.task, n_train=tuple(args.n),
        seeds=tuple(range(args.seeds)), max_steps=args.max_steps, head_lr=args.head_lr,
        max_eval=args.max_eval, progress=False, rank=args.rank,
    )
    out = Path(args.out or f"/tmp/fewshot_{cfg.task}")
    train, evals = load_task(cfg)
    cache = out / "reference.json"  # computed once per folder (several processes may share it)
    if cache.is_file():
        reference, what = json.loads(cache.read_text())
    else:
        reference, what = zero_training_reference(cfg.model, train, evals["dev"])
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, [reference, what])
    metric = train.task.main_metric
    print(f"zero-training reference on {train.task.name} dev: {reference:.4f} ({what})", flush=True)
    if args.report_only:
        records = [r for r in read_results(out / "records.jsonl") if r["n"] in args.n]
    else:
        records = run_study(cfg, out, grid=grid, n_holdout=args.holdout, select_by=args.select_by,
                            log=lambda s: print(s, flush=True))
    results = study_results(records)
    final = [r for r in records if r.get("phase") == "final"]
    print(f"\n{train.task.name} dev {metric}, mean ± std over seeds (step cap {args.max_steps}, "
          f"dev {'all' if args.max_eval is None else f'random {args.max_eval}'}):")
    print(format_results(results, reference, metric))
    for r in final:
        if not r["converged"]:
            curve = r["loss_curve"]
            pts = ", ".join(f"{curve[i]:.3g}" for i in range(0, len(curve), max(1, len(curve) // 8)))
            print(f"  not converged: {r['method']} n={r['n']} seed={r['seed']} lr={r['lr']:g}: "
                  f"loss {pts} ... {curve[-1]:.3g} (constant-prediction loss {r['baseline_loss']:.3g}, "
                  f"{r['stopped']})")
    ranks = {}
    if final:
        biggest = max(r["n"] for r in final)
        for m in ("lora", "deeplora"):
            ranks[m] = dict(sorted(Counter(k for r in final if r["n"] == biggest and r["method"] == m
                                           for k in r["ranks"]).items()))
            print(f"numerical ranks of ΔW, n = {biggest}, {m} (rank: layers, all seeds): {ranks[m]}")
    print(dumps_result_line(train.task.name, reference, results, reference_kind=what,
                            max_steps=args.max_steps, max_eval=args.max_eval, ranks=ranks,
                            adapter_rank=args.rank))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
