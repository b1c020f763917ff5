"""Reproduce the papers' figures: a registry of figures, each with a claim checked on its numbers.

Each registered figure (``lowdim repro list``) runs the experiment of one figure or table of the
papers through lowdim's public API at a ``quick`` size (under two minutes on two CPU cores) or at
the ``paper`` size, writes ``ID.png`` and ``ID.json`` (every plotted number and the settings), and
states a verdict — ``held``, ``partly`` or ``did not hold`` — computed from the numbers.

Examples
--------
>>> from lowdim.repro import registry
>>> "003-fig2" in registry()
True
"""

from ._registry import SIZES, VERDICTS, Check, Figure, get_figure, register, registry, verdict_of
from ._report import collect_results, write_report
from ._runner import code_version, load_result, run_figure

__all__ = [
    "SIZES", "VERDICTS", "Check", "Figure", "code_version", "collect_results", "get_figure",
    "load_result", "register", "registry", "run_figure", "verdict_of", "write_report",
]
