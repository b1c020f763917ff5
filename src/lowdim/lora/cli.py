"""``lowdim finetune``: few-shot fine-tuning with LoRA (peft) and Deep LoRA on GLUE or user data.

Examples
--------
.. code-block:: bash

    lowdim finetune --data-root ../shared/data/glue --task stsb --n 16 64 --seeds 5 --out runs/stsb
    lowdim finetune --train-file train.csv --dev-file dev.csv --n 64 --threads 1 --out runs/mine
    lowdim finetune --model bert-base-cased --task mrpc --method deeplora --n 1024 --max-steps 2000
    # data-parallel over 2 processes (DDP; gloo on CPUs), results written by the main process
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no -m lowdim.cli finetune --task stsb --n 16 --out runs/stsb
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._config import add_config_options, config_kwargs
from ..cli import add_threads_option, set_threads
from .finetune import FinetuneConfig, default_glue_root, default_model_path

#: FinetuneConfig fields offered as options (their defaults and help come from the config).
_CONFIG_OPTIONS = (
    "train_file", "dev_file", "rank", "lora_alpha", "lora_lr", "deeplora_lr", "gamma", "depth",
    "init_scale", "head_lr", "pooling", "target_modules", "batch_size", "max_length", "max_steps",
    "converged_fraction", "max_eval",
)


def register(subparsers) -> None:
    """Add the ``finetune`` sub-command to ``subparsers``."""
    p = subparsers.add_parser(
        "finetune",
        help="few-shot fine-tuning (GLUE or CSV/JSONL data): LoRA (peft) vs Deep LoRA",
        description=(
            "Fine-tune a pretrained encoder on n examples of a GLUE task (or of --train-file) for "
            "each seed with vanilla LoRA (through peft) and/or Deep LoRA, evaluate on the full dev "
            "split, append one JSON line per run to OUT/results.jsonl, save each run's adapters in "
            "OUT/adapters/ and write OUT/summary.txt. A rerun with the same settings resumes; "
            "other settings are refused (OUT/settings.json)."
        ),
    )
    default_model = default_model_path()
    p.add_argument("--model", default=default_model, required=default_model is None,
                   help="model path or name for from_pretrained (default: the local MiniLM-L6)")
    p.add_argument("--data-root", default=default_glue_root(),
                   help="GLUE root folder with the standard layout (default: $LOWDIM_DATA/glue or "
                        "../shared/data/glue)")
    p.add_argument("--task", default="stsb", help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli")
    p.add_argument("--method", nargs="+", default=["lora", "deeplora"], choices=["lora", "deeplora"])
    p.add_argument("--n", type=int, nargs="+", default=[16], help="training-set sizes")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..SEEDS-1)")
    add_config_options(p, FinetuneConfig, _CONFIG_OPTIONS)
    p.add_argument("--out", default="finetune-runs", help="output folder")
    add_threads_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the study described by ``args``; returns the exit status."""

    from .._io import atomic_write_text
    from .finetune import finish, format_summary, make_accelerator, run_finetune

    set_threads(args)
    if args.seeds < 1:
        raise ValueError("--seeds must be >= 1")
    out = Path(args.out)
    cfg = FinetuneConfig(
        model=args.model, data_root=args.data_root, task=args.task, methods=tuple(args.method),
        n_train=tuple(args.n), seeds=tuple(range(args.seeds)),
        output=str(out / "results.jsonl"), progress=not args.no_progress,
        **config_kwargs(args, _CONFIG_OPTIONS),
    )
    acc = make_accelerator()  # accelerate's under `accelerate launch` with several processes
    records = run_finetune(cfg, accelerator=acc)
    if acc.is_main_process:
        table = format_summary(records)
        print(table)
        atomic_write_text(out / "summary.txt", table + "\n")
    finish(acc)
    return 0
