"""Shared pieces of the figures: plotting style, recorded training runs, trajectory PCA, number formats."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..dynamics import trajectory_pca
from ..factorization import DeepFactorization
from ..operators import MeasurementOperator
from ..training import History, train

#: One colour per model kind, the same in every figure.
COLORS = {"full": "#1f77b4", "original": "#1f77b4", "compressed": "#ff7f0e", "narrow": "#2ca02c",
          "gamma0": "#d62728", "L=2": "#9467bd", "L=3": "#1f77b4"}


def subplots(ncols: int, nrows: int = 1, width: float = 4.6, height: float = 3.7):
    """A matplotlib figure with readable fonts (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 11, "legend.fontsize": 9})
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.grid(alpha=0.3, which="both")
    return fig, axes.ravel()


def fmt(x: float | None) -> str:
    """A number for a verdict line: 3 significant digits, 'never' for None."""
    if x is None:
        return "never"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def fmt_diff(d: list | tuple) -> str:
    """A paired difference ``(mean, low, high)`` with its 95% interval; one seed has none."""
    if not all(math.isfinite(x) for x in d[1:]):
        return f"{fmt(d[0])} (one seed: no interval)"
    return f"{fmt(d[0])} [{fmt(d[1])}, {fmt(d[2])}]"


def run_recorded(
    model: DeepFactorization,
    op: MeasurementOperator,
    *,
    snapshot_every: int | None = None,
    snapshot_dtype: torch.dtype = torch.float32,
    **train_kwargs: Any,
) -> tuple[History, list[torch.Tensor]]:
    """:func:`lowdim.train` that also keeps ``W_{L:1}`` every ``snapshot_every`` recorded iterations.

    Snapshots are stored in ``snapshot_dtype`` (float32 halves the memory of a trajectory; its
    principal components are unchanged to plotting precision).
    """
    snaps: list[torch.Tensor] = []
    count = [0]

    def keep(t: int, m: DeepFactorization, loss: float) -> None:
        if snapshot_every and count[0] % snapshot_every == 0:
            with torch.no_grad():
                snaps.append(m.product().to(snapshot_dtype).clone())
        count[0] += 1

    return train(model, op, callback=keep, **train_kwargs), snaps


def joint_pca(trajectories: dict[str, Sequence[torch.Tensor]]) -> dict[str, list[list[float]]]:
    """Top-2 principal components of several trajectories in one frame (:func:`trajectory_pca`)."""
    names = list(trajectories)
    coords = trajectory_pca([t for n in names for t in trajectories[n]], components=2)
    out, start = {}, 0
    for n in names:
        k = len(trajectories[n])
        out[n] = coords[start:start + k].tolist()
        start += k
    return out


def gaps(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], norm: float) -> list[float]:
    """``‖a_t − b_t‖_F / norm`` at the common snapshots of two trajectories."""
    return [float(torch.linalg.matrix_norm(x.double() - y.double())) / norm for x, y in zip(a, b)]


def history_data(h: History) -> dict[str, Any]:
    """The recorded numbers of a run (for the figure's JSON)."""
    return h.to_dict()


def reached(h: History, threshold: float, key: str = "error") -> tuple[int | None, float | None]:
    """``(iteration, seconds)`` when ``key`` first drops to ``threshold`` (Nones if never)."""
    hit = h.first_below(threshold, key)
    return (None, None) if hit is None else hit
