"""Run a registered figure: compute, check, plot, and write ``ID.png`` + ``ID.json`` atomically.

A result is reused (not recomputed) when its JSON records the same *key*: the hash of the figure
id, its settings and seed, and the code version (:func:`code_version`, a hash of the library's
sources). ``force=True`` recomputes regardless.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._io import atomic_savefig, atomic_write_json, strict_json
from ._registry import Figure, get_figure, verdict_of

__all__ = ["code_version", "load_result", "result_paths", "run_figure", "software_versions"]

_PACKAGE = Path(__file__).resolve().parents[1]  # src/lowdim
#: The machinery every figure runs through (besides lowdim's core modules and its own module).
_REPRO_CORE = ("repro/_common.py", "repro/_registry.py", "repro/_runner.py")


def _source_files(figure: Figure) -> list[Path]:
    """The sources a figure's numbers depend on: lowdim's core modules (``lowdim/*.py`` and
    ``lowdim/datasets``), the repro machinery, the figure's module and its declared ``depends``."""
    files = [p for p in _PACKAGE.glob("*.py") if p.name != "cli.py"]
    files += list((_PACKAGE / "datasets").glob("*.py")) + [_PACKAGE / f for f in _REPRO_CORE]
    for module in (figure.module, *figure.depends):
        files.append(_PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py"))
    return sorted(set(files))


def code_version(figure: Figure) -> str:
    """Hash (12 hex digits) of the sources ``figure``'s numbers depend on (:func:`_source_files`):
    a change elsewhere in lowdim (Deep LoRA, the command line, the report) does not rerun it."""
    digest = hashlib.sha256()
    for path in _source_files(figure):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def software_versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries the figures use."""
    import matplotlib
    import numpy
    import torch

    from .. import __version__

    return {"lowdim": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "matplotlib": matplotlib.__version__,
            "platform": platform.platform(), "torch_threads": str(torch.get_num_threads())}


def _warm_up() -> None:
    """Pay torch's one-time imports (the first ``torch.optim`` optimizer imports ``torch._dynamo``,
    seconds) before anything is timed, so they do not land in the first training run's clock."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)


def _key(figure: Figure, settings: dict, seed: int, version: str) -> str:
    blob = json.dumps({"id": figure.id, "settings": settings, "seed": seed, "code": version},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_paths(out: str | Path, fig_id: str) -> tuple[Path, Path]:
    """``(png, json)`` paths of a figure's result under ``out``."""
    folder = Path(out) / fig_id
    return folder / f"{fig_id}.png", folder / f"{fig_id}.json"


def load_result(out: str | Path, fig_id: str) -> dict[str, Any] | None:
    """The stored result of ``fig_id`` under ``out`` (None when absent or unreadable)."""
    _, path = result_paths(out, fig_id)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _draw(figure: Figure, data: dict, settings: dict, size: str, verdict: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure.plot(data, settings)
    fig.suptitle(f"{figure.id} ({size} size): {verdict}", fontsize=12, fontweight="bold")
    fig.tight_layout()
    atomic_savefig(png, fig, dpi=100)
    plt.close(fig)


def run_figure(
    fig_id: str,
    *,
    size: str = "quick",
    out: str | Path = "lowdim-repro",
    seed: int = 0,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run (or reuse) one figure and return its result record.

    Parameters
    ----------
    fig_id : str
        A registered id (``lowdim repro list``).
    size : {"quick", "paper", "test"}
        Which settings to run.
    out : path-like
        Results go to ``out/ID/ID.png`` and ``out/ID/ID.json``.
    seed : int
        Seeds the data and the initializations.
    force : bool
        Recompute even when a result with the same settings and code version exists.
    progress : bool
        ``tqdm`` progress bars.

    Returns
    -------
    dict
        The JSON record, with ``"reused": True`` when nothing was recomputed.

    Examples
    --------
    >>> from lowdim.repro import run_figure
    >>> rec = run_figure("004-fig3", size="test", out=getfixture("tmp_path"))  # doctest: +SKIP
    >>> rec["verdict"]  # doctest: +SKIP
    'held'
    """
    figure = get_figure(fig_id)
    settings = figure.settings(size)
    version = code_version(figure)
    key = _key(figure, settings, seed, version)
    png, path = result_paths(out, fig_id)
    old = load_result(out, fig_id)
    if not force and old is not None and old.get("key") == key and png.exists():
        return {**old, "reused": True}
    _warm_up()
    start = time.perf_counter()
    data = figure.compute(settings, seed, progress)
    seconds = time.perf_counter() - start
    checks = figure.check(data, settings)
    verdict = verdict_of(checks)
    _draw(figure, data, settings, size, verdict, png)
    record = {
        "id": figure.id, "paper": figure.paper, "caption": figure.caption, "claim": figure.claim,
        "notes": figure.notes, "size": size, "seed": seed, "settings": settings,
        "verdict": verdict, "checks": [c.to_dict() for c in checks],
        "seconds": round(seconds, 3), "key": key, "code_version": version,
        "versions": software_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": data,
    }
    atomic_write_json(path, strict_json(record))  # NaN / inf (e.g. a one-seed interval) as null
    return {**record, "reused": False}
