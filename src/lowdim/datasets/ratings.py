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

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._io import atomic_write, atomic_write_json
from .._validation import check_choice

__all__ = ["load_ratings", "merge_duplicates", "column_roles", "ratings_to_arrays", "COLUMNS"]

#: Canonical column names of a ratings table.
COLUMNS = ("row", "col", "value")

#: Files larger than this are parsed in chunks of ``_CHUNK_LINES`` lines: the parser's temporary
#: memory is one chunk's, not the file's (and a progress bar over the bytes read can show).
CHUNK_BYTES = 64 << 20
_CHUNK_LINES = 1 << 21
_CACHE_VERSION = 1

_ROW_NAMES = ("row", "user", "user_id", "userid", "userId")
_COL_NAMES = ("col", "column", "item", "item_id", "itemid", "movie", "movie_id", "movieId")
_VALUE_NAMES = ("value", "rating", "score")


#: Separators tried, in this order; the first that splits every sample line into the same number
#: (at least three) of fields wins. ``None`` is any run of whitespace.
_SEPARATORS = ("\t", ";", ",", "::", "|", None)


def _fields(line: str, sep: str | None) -> list[str]:
    return [f.strip().strip('"') for f in (line.split(sep) if sep else line.split())]


def _sniff_separator(path: Path, sep: str | None = "auto") -> tuple[str | None, bool]:
    """Return (separator, has_header) from the first lines of ``path``; ``ValueError`` if none fits."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        head = [fh.readline() for _ in range(20)]
    head = [line.rstrip("\r\n") for line in head if line.strip()]
    if not head:
        raise ValueError(f"ratings file {path} is empty")
    if sep == "auto":
        sep = _detect_separator(path, head)
    fields = _fields(head[0], sep) + ["", "", ""]
    try:  # a header is a first line whose value field is not a number
        float(fields[2].replace(",", "."))
        has_header = False
    except ValueError:
        has_header = True
    return sep, has_header


def _detect_separator(path: Path, head: list[str]) -> str | None:
    for sep in _SEPARATORS:
        counts = {len(_fields(line, sep)) for line in head}
        if len(counts) == 1 and counts.pop() >= 3:
            return sep
    raise ValueError(
            f"ratings file {path}, line 1: cannot tell the field separator: {head[0][:80]!r} does "
            "not split into the same number (at least 3) of fields on every one of the first lines "
            "with tab, ';', ',', '::', '|' or whitespace; state it (sep= / --sep)"
        )


def _pick(names: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def column_roles(names, need_value: bool = True) -> tuple[str, ...] | None:
    """The (row, column[, value]) columns among ``names`` by their names, or ``None`` if none is named.

    Recognized names (case-insensitive): rows ``row``, ``user``, ``user_id``, ``userId``, ...;
    columns ``col``, ``item``, ``movie``, ``movieId``, ...; values ``value``, ``rating``, ``score``.
    ``ValueError`` when only some of them are named (a table cannot be read half by name).
    """
    names = [str(n) for n in names]
    wanted = (_ROW_NAMES, _COL_NAMES, _VALUE_NAMES)[: 3 if need_value else 2]
    found = [_pick(names, cands) for cands in wanted]
    if all(found) and len(set(found)) == len(found):
        return tuple(found)
    if not any(found):
        return None
    roles = ("row (user)", "column (item)", "value (rating)")
    missing = [role for role, f in zip(roles, found) if f is None]
    raise ValueError(
        f"columns {names}: found {[f for f in found if f]} by name but no {' / '.join(missing)} "
        "column; name all of them (e.g. user, item, rating) or none (then the first "
        f"{len(wanted)} are taken in order)"
    )


def load_ratings(
    path: str | os.PathLike,
    sep: str | None = "auto",
    header: bool | None = None,
    columns: tuple[int | str, int | str, int | str] | None = None,
    *,
    cache: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Read a ratings file into a table with columns ``row``, ``col``, ``value`` (and ``timestamp``).

    Parameters
    ----------
    path:
        CSV, TSV or whitespace separated file, one observed entry per line:
        ``row  col  value  [timestamp ...]`` (MovieLens ``u.data``, ``ratings.csv``, ...).
    sep:
        Field separator. ``"auto"`` (default) takes the first of tab, ``;``, ``,``, ``::``, ``|``
        and whitespace that splits each of the first 20 lines into the same number (at least 3)
        of fields, and raises ``ValueError`` naming the file if none does. With ``;``, decimal
        commas (``4,5``) are read as numbers.
    header:
        Whether the first line is a header. ``None`` (default) detects it: a first line whose third
        field is not a number is a header.
    columns:
        Which columns hold (row, col, value): positions or header names. Default: header names
        such as ``user``/``item``/``rating`` or ``userId``/``movieId``/``rating`` when there is a
        header, else the first three columns.
    cache:
        Keep a binary copy of the parsed table (``.npy`` arrays and a JSON description in the
        folder ``<path>.lowdim-cache``, numeric labels only) and read it instead of the text while
        the file keeps its size and modification time and the same ``sep`` / ``header`` /
        ``columns`` are asked for: 10⁸ ratings load in seconds instead of minutes. A folder that
        cannot be written only costs the cache (a warning).
    progress:
        Show a ``tqdm`` bar over the bytes of files larger than :data:`CHUNK_BYTES` (parsed in
        chunks, so the parser never holds more than one chunk's temporaries).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, has fewer than three columns, its separator cannot be told, or a
        value is not a finite number (the message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ratings file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"ratings file {path} is empty")
    key = {"sep": sep, "header": header, "columns": None if columns is None else list(columns)}
    if cache:
        cached = _cache_read(path, key)
        if cached is not None:
            return cached
    if sep == "auto" or header is None:
        sep, auto_header = _sniff_separator(path, sep)
        header = auto_header if header is None else header
    out = _parse(path, sep, header, columns, progress)
    if cache:
        _cache_write(path, key, out)
    return out


def _parse(path: Path, sep, header: bool, columns, progress: bool) -> pd.DataFrame:
    """The ratings table of ``path`` (separator and header known); errors name the file and line."""
    raw = _read_table(path, sep, header, progress)
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
    else:
        picked = list((header and column_roles(names)) or names[:3])
    offset = 2 if header else 1  # file line of data row 0
    for name in picked[:2]:
        if raw[name].isna().any():
            line = int(np.flatnonzero(raw[name].isna().to_numpy())[0]) + offset
            raise ValueError(f"ratings file {path}, line {line}: the {name!r} field is empty")
    out = pd.DataFrame({"row": raw[picked[0]].to_numpy(), "col": raw[picked[1]].to_numpy()})
    values = pd.to_numeric(raw[picked[2]], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"ratings file {path}, line {first + offset}: value {str(raw[picked[2]].iloc[first])!r} "
            f"is missing or not finite ({int(bad.sum())} such line(s)); fix or remove it"
        )
    out["value"] = values
    rest = [n for n in names if n not in picked]
    if rest:
        ts_name = _pick(rest, ("timestamp", "time", "ts")) or (rest[0] if not header else None)
        if ts_name is not None:
            out["timestamp"] = raw[ts_name].to_numpy()
    out.attrs.update(source=f"ratings file {path}", first_line=offset)
    return out


def _read_table(path: Path, sep: str | None, header: bool, progress: bool = False) -> pd.DataFrame:
    """``pandas.read_csv`` with the separator (decimal commas with ';'), errors naming the file;
    files over :data:`CHUNK_BYTES` in chunks of ``_CHUNK_LINES`` lines (progress over bytes)."""
    kwargs: dict = {"header": 0 if header else None, "skipinitialspace": True, "sep": sep or r"\s+"}
    if sep is not None and len(sep) > 1:
        kwargs["engine"] = "python"
    if sep == ";":
        kwargs["decimal"] = ","  # 1;2;4,5 — the European CSV convention (also reads 4.5)
    size = path.stat().st_size
    try:
        if size <= CHUNK_BYTES:
            return pd.read_csv(path, **kwargs)
        with open(path, "rb") as fh, tqdm(total=size, unit="B", unit_scale=True, leave=False,
                                          desc=f"reading {path.name}", disable=not progress) as bar:
            parts = []
            for chunk in pd.read_csv(fh, chunksize=_CHUNK_LINES, **kwargs):
                parts.append(chunk)
                bar.update(fh.tell() - bar.n)
        return pd.concat(parts, ignore_index=True)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"ratings file {path} is empty") from exc
    except pd.errors.ParserError as exc:
        raise ValueError(f"ratings file {path}: {exc} (separator {sep or 'whitespace'!r})") from exc


def _cache_dir(path: Path) -> Path:
    return path.with_name(path.name + ".lowdim-cache")


def _cache_read(path: Path, key: dict) -> pd.DataFrame | None:
    """The cached table of ``path`` if the cache describes this file and these options, else None."""
    folder = _cache_dir(path)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    st = path.stat()
    if (meta.get("version") != _CACHE_VERSION or meta.get("key") != key
            or meta.get("size") != st.st_size or meta.get("mtime_ns") != st.st_mtime_ns):
        return None
    try:
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in meta["columns"]}
    except (OSError, ValueError):
        return None
    if any(a.shape != (meta["n"],) for a in arrays.values()):
        return None
    out = pd.DataFrame({name: np.asarray(a) for name, a in arrays.items()})
    out.attrs.update(source=f"ratings file {path}", first_line=meta["first_line"])
    return out


def _cache_write(path: Path, key: dict, df: pd.DataFrame) -> None:
    """Store ``df`` as ``.npy`` columns beside ``path`` (numeric columns only; else nothing)."""
    if not all(np.issubdtype(df[c].dtype, np.number) for c in df.columns):
        return
    folder = _cache_dir(path)
    st = path.stat()
    try:
        for name in df.columns:
            arr = np.ascontiguousarray(df[name].to_numpy())

            def write(tmp, arr=arr):
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)

            atomic_write(folder / f"{name}.npy", write)
        atomic_write_json(folder / "meta.json", {  # written last: it marks a complete cache
            "version": _CACHE_VERSION, "key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "columns": list(df.columns), "n": len(df), "first_line": df.attrs.get("first_line", 1),
        })
    except OSError as exc:
        warnings.warn(f"could not write the ratings cache {folder}: {exc}", RuntimeWarning,
                      stacklevel=3)


def merge_duplicates(df: pd.DataFrame, policy: str = "error") -> pd.DataFrame:
    """Resolve repeated (row, col) pairs of a ratings table *before* any split.

    ``policy="error"`` raises ``ValueError`` naming the file and the lines of the first repeated
    pair; ``"mean"`` averages the values of each pair; ``"last"`` keeps its last line. The result
    keeps the first occurrence's position (and its timestamp).
    """
    check_choice("duplicates", policy, ("error", "mean", "last"))
    dup = df.duplicated(["row", "col"], keep=False).to_numpy()
    if not dup.any():
        return df
    if policy == "error":
        i0 = int(np.flatnonzero(dup)[0])
        r0, c0 = df["row"].iloc[i0], df["col"].iloc[i0]
        same = np.flatnonzero(dup & (df["row"] == r0).to_numpy() & (df["col"] == c0).to_numpy())
        where = df.attrs.get("source", "the ratings table")
        lines = (same + df.attrs.get("first_line", 1)).tolist()[:5]
        n_pairs = int(df[dup].drop_duplicates(["row", "col"]).shape[0])
        raise ValueError(
            f"{where}: {n_pairs} (row, column) pair(s) are rated more than once, e.g. "
            f"({r0}, {c0}) on lines {lines}; merge them with duplicates='mean' "
            "or 'last' (--duplicates mean|last), which is done before any train/test split"
        )
    grouped = df.groupby(["row", "col"], sort=False)
    out = grouped.first() if policy == "mean" else grouped.last()
    if policy == "mean":
        out["value"] = grouped["value"].mean()
    out = out.reset_index()[list(df.columns)]
    out.attrs.update(df.attrs)
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
