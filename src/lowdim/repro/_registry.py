"""The figure registry: one :class:`Figure` per figure or table of the papers, found by its id.

A figure is three small functions and its paper metadata:

* ``compute(settings, seed, progress) -> dict`` runs the experiment through the library and returns
  every number that is plotted (JSON-serializable);
* ``plot(data, settings) -> matplotlib.figure.Figure`` draws them;
* ``check(data, settings) -> list[Check]`` tests the paper's claim on those numbers.

The verdict is computed from the checks (:func:`verdict_of`), never written by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "Figure", "SIZES", "VERDICTS", "get_figure", "register", "registry", "verdict_of"]

#: Sizes every figure has ("test" is optional: a smaller setting for the test suite).
SIZES = ("quick", "paper")
VERDICTS = ("held", "partly", "did not hold")
#: Modules holding the figures, one per paper (imported on first use of the registry).
_FIGURE_MODULES = ("lowdim.repro.seed003", "lowdim.repro.seed004", "lowdim.repro.seed000",
                   "lowdim.repro.seed000_incremental", "lowdim.repro.seed004_collapse",
                   "lowdim.repro.seed000_nonlinear", "lowdim.repro.seed002",
                   "lowdim.repro.seed000_completion", "lowdim.repro.seed003_lora",
                   "lowdim.repro.seed003_lora_dynamics", "lowdim.repro.seed003_nlg")
_REGISTRY: dict[str, Figure] = {}


@dataclass(frozen=True)
class Check:
    """One computable part of a claim: what was checked, whether it held, and the measured numbers."""

    name: str
    passed: bool
    measured: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": bool(self.passed), "measured": self.measured}


def verdict_of(checks: list[Check]) -> str:
    """``"held"`` when every check passed, ``"did not hold"`` when none did, else ``"partly"``."""
    if not checks:
        raise ValueError("a claim needs at least one check")
    passed = sum(bool(c.passed) for c in checks)
    return "held" if passed == len(checks) else "did not hold" if passed == 0 else "partly"


@dataclass(frozen=True)
class Figure:
    """A registered figure (or table) of a paper.

    Attributes
    ----------
    id : str
        ``"<seed>-fig<N>"`` or ``"<seed>-table<N>"``, e.g. ``"003-fig2"``.
    paper : str
        The paper (seed file number and short title).
    caption : str
        The paper's caption, abridged.
    claim : str
        The claim as a computable check (what :attr:`check` tests).
    sizes : dict
        ``{"quick": settings, "paper": settings[, "test": settings]}``.
    estimate : dict
        Rough seconds per size on one CPU core (shown by ``lowdim repro list``).
    compute, plot, check : callable
        See the module docstring.
    notes : str
        Where lowdim's setting differs from the paper's and why.
    module : str
        The module defining the figure (its source is part of the code version).
    depends : tuple of str
        Other lowdim modules outside the core (``lowdim/*.py``, ``lowdim.datasets``) whose code the
        figure runs, e.g. ``"lowdim.completion.sparse"``; their sources are part of the code version.
    """

    id: str
    paper: str
    caption: str
    claim: str
    sizes: dict[str, dict[str, Any]]
    estimate: dict[str, float]
    compute: Callable[[dict, int, bool], dict]
    plot: Callable[[dict, dict], Any]
    check: Callable[[dict, dict], list[Check]]
    notes: str = ""
    module: str = field(default="", compare=False)
    depends: tuple[str, ...] = ()

    def settings(self, size: str) -> dict[str, Any]:
        """The settings of ``size`` (a copy)."""
        if size not in self.sizes:
            raise ValueError(f"size must be one of {sorted(self.sizes)} for {self.id}, got {size!r}")
        return dict(self.sizes[size])


def register(figure: Figure) -> Figure:
    """Add ``figure`` to the registry (its id must be new, its sizes and texts complete)."""
    missing = [s for s in SIZES if s not in figure.sizes]
    if missing or not figure.caption.strip() or not figure.claim.strip():
        raise ValueError(f"figure {figure.id} needs a caption, a claim and the sizes {SIZES}")
    if not figure.module.startswith("lowdim."):
        raise ValueError(f"figure {figure.id} needs module=__name__ (its source is hashed)")
    if figure.id in _REGISTRY:
        raise ValueError(f"figure id {figure.id!r} is registered twice")
    _REGISTRY[figure.id] = figure
    return figure


def registry() -> dict[str, Figure]:
    """Every registered figure by id, in paper order."""
    for name in _FIGURE_MODULES:
        importlib.import_module(name)
    return dict(sorted(_REGISTRY.items(), key=lambda kv: _order(kv[0])))


def _order(fig_id: str) -> tuple:
    seed, _, name = fig_id.partition("-")
    digits = "".join(ch for ch in name if ch.isdigit())
    return seed, name.rstrip("0123456789"), int(digits or 0)


def get_figure(fig_id: str) -> Figure:
    """The figure registered as ``fig_id`` (a clear error listing the ids otherwise)."""
    figures = registry()
    if fig_id not in figures:
        raise ValueError(f"unknown figure id {fig_id!r}; registered: {', '.join(figures)}")
    return figures[fig_id]
