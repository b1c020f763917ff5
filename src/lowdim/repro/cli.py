"""``lowdim repro``: list, run and report the papers' figures.

.. code-block:: bash

    lowdim repro list                          # ids, papers, captions, runtimes, last verdicts
    lowdim repro 003-fig2 004-fig3             # quick size, results in lowdim-repro/
    lowdim repro 003-fig3 --paper --out runs/  # the paper's settings
    lowdim repro all --quick --out runs/       # every figure, then runs/report.html and report.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["quiet_transformers", "register", "run"]

DEFAULT_OUT = "lowdim-repro"


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``repro`` sub-command to ``lowdim``'s sub-parsers."""
    p = subparsers.add_parser(
        "repro",
        help="reproduce the papers' figures, each with a verdict on its claim, and a report page",
        description="List, run and report the papers' figures, each with a verdict on its claim computed "
                    "from the measured numbers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="ids: 'list' shows them; 'all' runs every figure",
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="'list', 'all', or figure ids such as 003-fig2")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="quick settings, under 2 minutes each on 2 cores (default)")
    size.add_argument("--paper", dest="size", action="store_const", const="paper",
                      help="the paper's settings (can take long)")
    size.add_argument("--size", dest="size", choices=("quick", "paper", "test"),
                      help="explicit size ('test' is the test suite's smaller setting)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0, help="seed of data and initializations (default 0)")
    p.add_argument("--force", action="store_true", help="recompute even if settings and code are unchanged")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run, size="quick")
    return p


def _list(out: Path) -> int:
    from ._registry import registry
    from ._runner import load_result

    print(f"{'id':15s} {'paper':6s} {'quick':>7s} {'paper':>7s}  {'last verdict':24s} caption")
    for fig_id, fig in registry().items():
        rec = load_result(out, fig_id)
        last = f"{rec['verdict']} ({rec['size']})" if rec else "—"
        caption = fig.caption if len(fig.caption) <= 70 else fig.caption[:67] + "..."
        print(f"{fig_id:15s} {fig.paper.split()[0]:6s} {fig.estimate['quick']:6.0f}s "
              f"{fig.estimate['paper']:6.0f}s  {last:24s} {caption}")
    return 0


def quiet_transformers() -> None:
    """Hide ``transformers``' own progress bars (one per checkpoint load) where lowdim's are off."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the figures that need it say so when they run
        return
    hf_logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    """Run ``lowdim repro`` (returns the exit code)."""
    import torch

    from .._validation import check_int
    from ._registry import get_figure, registry
    from ._report import write_report
    from ._runner import run_figure

    out = Path(args.out)
    if args.ids == ["list"]:
        return _list(out)
    check_int("--seed", args.seed, 0)
    if args.threads is not None:
        torch.set_num_threads(check_int("--threads", args.threads, 1))
    if args.ids == ["all"]:
        ids = [i for i, fig in registry().items() if args.size in fig.sizes]
        skipped = sorted(set(registry()) - set(ids))
        if skipped:
            print(f"no {args.size} size for {', '.join(skipped)}: skipped")
    else:
        ids = args.ids
    for fig_id in ids:
        get_figure(fig_id).settings(args.size)  # unknown ids and sizes fail before anything runs
    progress = not args.no_progress and sys.stderr.isatty()
    if not progress:
        quiet_transformers()
    start = time.perf_counter()
    for fig_id in ids:
        rec = run_figure(fig_id, size=args.size, out=out, seed=args.seed, force=args.force, progress=progress)
        how = "reused (settings and code unchanged)" if rec["reused"] else f"{rec['seconds']:.1f} s"
        print(f"{fig_id:15s} {rec['verdict']:13s} {how}", flush=True)
        for c in rec["checks"]:
            print(f"    {'✔' if c['passed'] else '✘'} {c['name']}: {c['measured']}")
    html_path, md_path = write_report(out, elapsed=time.perf_counter() - start)
    print(f"wrote {html_path} and {md_path}")
    return 0
