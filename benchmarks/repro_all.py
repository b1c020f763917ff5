"""Every registered figure of ``lowdim.repro`` at one size, then the report page; one JSON line at the end.

Runs ``lowdim repro all`` (quick size by default) into ``--out`` with one torch thread, prints each
figure's verdict and checks, writes ``OUT/report.html`` and ``OUT/report.md``, and ends with
``{"benchmark": "repro", "size": ..., "figures": {"003-fig2": {"verdict": ..., "seconds": ...}, ...}}``.
Figures whose settings and code are unchanged since the last run in ``--out`` are reused (their
recorded seconds and torch threads are reported) unless ``--force``.

Usage: ``python benchmarks/repro_all.py [--size quick|paper] [--out repro-quick] [--only ID ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from lowdim.repro import registry, run_figure, write_report
from lowdim.repro.cli import quiet_transformers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("quick", "paper", "test"), default="quick")
    ap.add_argument("--out", default=None, help="results folder (default repro-<size>)")
    ap.add_argument("--only", nargs="+", default=None, help="figure ids (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or f"repro-{args.size}"
    progress = sys.stderr.isatty()
    if not progress:
        quiet_transformers()
    figures = {}
    start = time.perf_counter()
    for fig_id in args.only or list(registry()):
        rec = run_figure(fig_id, size=args.size, out=out, seed=args.seed, force=args.force, progress=progress)
        figures[fig_id] = {"verdict": rec["verdict"], "seconds": rec["seconds"], "reused": rec["reused"],
                           "threads": int(rec["versions"]["torch_threads"])}  # of the run that computed it
        print(f"{fig_id:10s} {rec['verdict']:13s} {rec['seconds']:8.1f} s", flush=True)
        for c in rec["checks"]:
            print(f"    {'✔' if c['passed'] else '✘'} {c['name']}: {c['measured']}", flush=True)
    html, _ = write_report(out, elapsed=time.perf_counter() - start)
    print(f"report: {html}")
    print(json.dumps({"benchmark": "repro", "size": args.size, "threads": args.threads, "figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
