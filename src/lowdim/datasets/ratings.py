"""Generic loader for ratings files (CSV/TSV/whitespace separated ``row, column, value`` triples).

A *ratings table* here is a :class:`pandas.DataFrame` with the three columns ``row``, ``col`` and
``value`` (plus ``timestamp`` when the file has one). Row and column labels are kept as they are in
the file (integers or strings); :class:`lowdim.completion.DeepMatrixCompletion` encodes them.

Examples
--------
>>> from lowdim.datasets.ratings import load_ratings
>>> df = load_ratings("u.data")                        # doctest: +SKIP
>>> df.columns.tolist()                                # doctest: +SKIP
['row', 'col', 'value', 'timestamp']
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["load_ratings", "ratings_to_arrays", "COLUMNS"]

#: Canonical column names of a ratings table.
COLUMNS = ("row", "col", "value")

_ROW_NAMES = ("row", "user", "user_id", "userid", "userId", "i")
_COL_NAMES = ("col", "column", "item", "item_id", "itemid", "movie", "movie_id", "movieId", "j")
_VALUE_NAMES = ("value", "rating", "score", "y")


def _sniff_separator(path: Path) -> tuple[str | None, bool]:
    """Return (separator, has_header) from the first lines of ``path``."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = [fh.readline() for _ in range(5)]
    head = [line for line in head if line.strip()]
    if not head:
        raise ValueError(f"ratings file {path} is empty")
    sample = "".join(head)
    if "\t" in head[0]:
        sep: str | None = "\t"
    elif "," in head[0]:
        sep = ","
    elif ";" in head[0]:
        sep = ";"
    elif "::" in head[0]:
        sep = "::"
    else:
        sep = None  # any whitespace
    first = head[0].strip()
    fields = first.split(sep) if sep not in (None,) else first.split()
    fields = [f.strip().strip('"') for f in fields if f.strip()]
    # A header is a first line whose value field is not a number.
    has_header = False
    if len(fields) >= 3:
        try:
            float(fields[2])
        except ValueError:
            has_header = True
    else:
        try:
            has_header = csv.Sniffer().has_header(sample)
        except csv.Error:
            has_header = False
    return sep, has_header


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def load_ratings(
    path: str | os.PathLike,
    sep: str | None = "auto",
    header: bool | None = None,
    columns: tuple[int | str, int | str, int | str] | None = None,
) -> pd.DataFrame:
    """Read a ratings file into a table with columns ``row``, ``col``, ``value`` (and ``timestamp``).

    Parameters
    ----------
    path:
        CSV, TSV or whitespace separated file, one observed entry per line:
        ``row  col  value  [timestamp ...]`` (MovieLens ``u.data``, ``ratings.csv``, ...).
    sep:
        Field separator. ``"auto"`` (default) detects tab, comma, semicolon, ``::`` or whitespace.
    header:
        Whether the first line is a header. ``None`` (default) detects it: a first line whose third
        field is not a number is a header.
    columns:
        Which columns hold (row, col, value): positions or header names. Default: header names
        such as ``user``/``item``/``rating`` or ``userId``/``movieId``/``rating`` when there is a
        header, else the first three columns.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, has fewer than three columns, or a value is not a finite number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"ratings file {path} is empty")
    auto_sep, auto_header = _sniff_separator(path)
    if sep == "auto":
        sep = auto_sep
    if header is None:
        header = auto_header
    kwargs: dict = {"header": 0 if header else None, "skipinitialspace": True}
    if sep is None:
        kwargs["sep"] = r"\s+"
    elif len(sep) > 1:
        kwargs["sep"] = sep
        kwargs["engine"] = "python"
    else:
        kwargs["sep"] = sep
    try:
        raw = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"ratings file {path} is empty") from exc
    if raw.shape[1] < 3:
        raise ValueError(
            f"ratings file {path} has {raw.shape[1]} column(s); expected at least three "
            "(row, column, value)"
        )
    if raw.shape[0] == 0:
        raise ValueError(f"ratings file {path} has no rows")
    names = [str(c) for c in raw.columns]
    raw.columns = names
    if columns is not None:
        picked = [names[c] if isinstance(c, int) else str(c) for c in columns]
        for p in picked:
            if p not in names:
                raise ValueError(f"column {p!r} not found in {path}; columns are {names}")
    elif header:
        r, c, v = _pick(names, _ROW_NAMES), _pick(names, _COL_NAMES), _pick(names, _VALUE_NAMES)
        picked = [r or names[0], c or names[1], v or names[2]]
    else:
        picked = names[:3]
    out = pd.DataFrame(
        {"row": raw[picked[0]].to_numpy(), "col": raw[picked[1]].to_numpy()}
    )
    values = pd.to_numeric(raw[picked[2]], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"ratings file {path}: {int(bad.sum())} value(s) are missing or not finite numbers "
            f"(first at data line {first + 1}: {raw[picked[2]].iloc[first]!r})"
        )
    out["value"] = values
    rest = [n for n in names if n not in picked]
    if rest:
        ts_name = _pick(rest, ("timestamp", "time", "ts")) or (rest[0] if not header else None)
        if ts_name is not None:
            out["timestamp"] = raw[ts_name].to_numpy()
    return out


def ratings_to_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(rows, cols, values)`` numpy arrays of a ratings table (labels kept as they are)."""
    for name in COLUMNS:
        if name not in df.columns:
            raise ValueError(f"ratings table lacks column {name!r}; has {list(df.columns)}")
    return (
        df["row"].to_numpy(),
        df["col"].to_numpy(),
        df["value"].to_numpy(dtype=np.float64),
    )
