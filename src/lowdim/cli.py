"""The ``lowdim`` command line.

Each sub-command lives next to the feature it drives and registers itself through a
``register(subparsers)`` function; this module only collects them.

Examples
--------
.. code-block:: bash

    lowdim demo                      # deep matrix completion, full width vs compressed
    lowdim complete u.data --rank 10 # fit a ratings file (see ``lowdim complete -h``)
    lowdim finetune --help           # few-shot GLUE fine-tuning with LoRA / Deep LoRA
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, attribute) of each sub-command's ``register`` function, in the order shown by --help.
_COMMANDS = (
    "lowdim.demo",
    "lowdim.completion.cli",
    "lowdim.lora.cli",
    "lowdim.repro.cli",
)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's intra-op threads (shared by the sub-commands that train)."""
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, one per core; use 1 on a machine shared "
                        "with other jobs, where more threads than free cores slow every step down)")


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (validated) before any work starts."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="lowdim",
        description="Compressed training of deep overparameterized factorizations.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # optional feature not installed / not present
            if exc.name and exc.name.startswith("lowdim"):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lowdim`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"lowdim {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
