"""Atomic writes of results: a reader sees the old file or the complete new one, never half of one.

Every file lowdim writes as a result (JSON summaries, CSV predictions, PNG figures, adapters) goes
through :func:`atomic_write`, which writes a temporary file in the same folder and renames it over
the target (``os.replace`` is atomic on POSIX and Windows). The temporary file is created with mode
``0o666`` filtered by the process umask (as ``open(path, "w")`` would), so results get the user's
usual permissions (``0644`` under the common umask ``022``), not ``tempfile``'s private ``0600``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        The destination; its folder is created if needed.
    write : callable
        ``write(tmp_path)`` writes the complete content to ``tmp_path`` (a path string in the same
        folder as ``path``, so the final rename never crosses file systems).

    Returns
    -------
    pathlib.Path
        ``path``. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # writers that recreate the file (safetensors) would leave 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _create_temporary(path: Path) -> str:
    """Create an empty, unique ``.<name>.<random>.tmp`` beside ``path``, mode ``0o666 & ~umask``."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies umask
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) as ``None``, so that ``json.dumps`` writes
    standard JSON (``null``) instead of ``NaN``: e.g. a correlation of constant predictions.

    Examples
    --------
    >>> strict_json({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    inexact = isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral)  # also numpy floats
    return None if inexact and not math.isfinite(obj) else obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (floats that JSON lacks, e.g. numpy scalars, via ``float``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def atomic_savefig(path: str | os.PathLike, fig, **kwargs) -> Path:
    """``fig.savefig`` to ``path`` atomically (the format follows ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))
