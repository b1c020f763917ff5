"""Input parsing and validation shared by the completion estimators.

Accepted inputs of ``fit(X, y=None)``:

* a ``scipy.sparse`` matrix — its *stored* entries are the observations (explicit zeros included;
  call ``eliminate_zeros()`` first if zeros mean "missing"); positions are the indices;
* a :class:`pandas.DataFrame` — three columns ``(row, column, value)`` or two columns
  ``(row, column)`` with ``y`` the values, taken **by name** when they are named (``row``/``user``/
  ``userId``…, ``col``/``item``/``movieId``…, ``value``/``rating``…, in any order; see
  :func:`lowdim.datasets.ratings.column_roles`), else the first columns in order; row and column
  *labels* may be any hashable values (user ids, strings) and are encoded;
* index arrays — ``X`` of shape ``(N, 2)`` (integer positions ``(i, j)``) with ``y`` of shape
  ``(N,)``, or ``X = (rows, cols)``; the matrix shape is ``shape=`` or ``(max i + 1, max j + 1)``.
  Without ``shape=``, ids far sparser than positions (largest id above ``max(10⁶, 10 ×`` the number
  of distinct ids``)``, e.g. ids near 10⁹) are encoded as labels, as a DataFrame's are;
* an ``(N, 3)`` array of ``(row, column, value)`` triplets (no ``NaN``, whole non-negative indices
  in the first two columns);
* a dense 2-D array with ``NaN`` for the missing entries (``y`` must be ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse

from .._validation import check_choice
from ..datasets.ratings import column_roles

DUPLICATE_POLICIES = ("error", "mean", "last")


@dataclass
class Observations:
    rows: np.ndarray  # int64 positions
    cols: np.ndarray
    values: np.ndarray  # float64
    shape: tuple[int, int]
    row_labels: pd.Index | None  # None: positions are the labels
    col_labels: pd.Index | None


def _finite(values: np.ndarray, what: str = "observed values") -> np.ndarray:
    if np.iscomplexobj(values):
        raise ValueError(f"{what}: complex data not supported; give real numbers")
    try:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numbers: {exc}") from exc
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(
            f"{what} contain {int(bad.sum())} non-finite value(s) (NaN or inf), first at position "
            f"{int(np.flatnonzero(bad)[0])}; remove them (NaN marks a missing entry only in a "
            "dense matrix)"
        )
    return v


def _positions(idx, name: str) -> np.ndarray:
    a = np.asarray(idx).reshape(-1)
    if a.size and not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} indices must be integers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name} indices must be whole numbers")
        a = a.astype(np.int64)
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(
            f"{name} indices must be non-negative (0-based positions), got {int(a.min())}; "
            "pass a DataFrame to use arbitrary labels"
        )
    return a


def _dedupe(rows, cols, values, n_cols: int, policy: str):
    check_choice("duplicates", policy, DUPLICATE_POLICIES)
    flat = rows.astype(np.int64) * int(n_cols) + cols
    uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if uniq.size == flat.size:
        return rows, cols, values
    if policy == "error":
        k = int(np.flatnonzero(counts > 1)[0])
        raise ValueError(
            f"{int((counts > 1).sum())} (row, column) pair(s) are observed more than once, e.g. "
            f"({int(uniq[k] // n_cols)}, {int(uniq[k] % n_cols)}) in positions; set "
            "duplicates='mean' (average them) or 'last' (keep the last one)"
        )
    if policy == "mean":
        sums = np.bincount(inverse, weights=values, minlength=uniq.size)
        vals = sums / counts
    else:  # last occurrence wins
        last = np.zeros(uniq.size, dtype=np.int64)
        np.maximum.at(last, inverse, np.arange(flat.size))
        vals = values[last]
    return (uniq // n_cols).astype(np.int64), (uniq % n_cols).astype(np.int64), vals


def _frame_triples(df: pd.DataFrame, y):
    """``(row labels, column labels, values)`` of a DataFrame: named columns by name, else in order."""
    if len(df) == 0:
        raise ValueError("no observed entries: the DataFrame is empty")
    need = 3 if y is None else 2
    if df.shape[1] < need:
        raise ValueError(
            f"a DataFrame needs three columns (row, column, value), or two (row, column) with y; "
            f"got {df.shape[1]} column(s) {list(df.columns)}" + ("" if y is None else " and y")
        )
    picked = column_roles(df.columns, need_value=y is None)
    cols = [df[name] for name in picked] if picked else [df.iloc[:, i] for i in range(need)]
    if cols[0].isna().any() or cols[1].isna().any():
        raise ValueError("row/column labels contain missing values (NaN/None)")
    values = _finite(np.asarray(y) if y is not None else cols[2].to_numpy())
    if values.size != len(df):
        raise ValueError(f"X has {len(df)} rows but y has {values.size} values")
    return cols[0].to_numpy(), cols[1].to_numpy(), values


def _encode_labels(labels) -> tuple[np.ndarray, pd.Index]:
    """Positions of ``labels`` in their sorted unique index."""
    index = pd.Index(pd.unique(np.asarray(labels))).sort_values()
    return index.get_indexer(labels).astype(np.int64), index


def _relabel_if_sparse(idx: np.ndarray) -> tuple[np.ndarray, pd.Index | None]:
    """Ids far sparser than positions (e.g. near 10⁹) become labels, so memory is O(distinct ids)."""
    distinct = np.unique(idx)
    if int(idx.max()) + 1 <= max(1_000_000, 10 * distinct.size):
        return idx, None
    return np.searchsorted(distinct, idx).astype(np.int64), pd.Index(distinct)


def _is_triplets(arr: np.ndarray) -> bool:
    """An ``(N, 3)`` numeric array without NaN whose first two columns are whole and non-negative."""
    if arr.shape[1] != 3 or not np.issubdtype(arr.dtype, np.number):
        return False
    a = arr.astype(np.float64)
    idx = a[:, :2]
    return bool(np.isfinite(a).all() and (idx >= 0).all() and (idx == np.round(idx)).all())


def _from_sparse(X, y, shape):
    """Entries of a ``scipy.sparse`` matrix (its stored entries are the observations)."""
    if y is not None:
        raise ValueError("y must be None when X is a sparse matrix (its entries are the values)")
    coo = scipy.sparse.coo_matrix(X)
    if shape is not None and tuple(shape) != coo.shape:
        raise ValueError(f"shape={tuple(shape)} disagrees with the sparse matrix shape {coo.shape}")
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    return rows, cols, _finite(coo.data), coo.shape, None, None


def _from_frame(X, y, shape):
    """Entries of a DataFrame of (row, column, value); the labels define the shape."""
    if shape is not None:
        raise ValueError("shape= applies to index arrays only; DataFrame labels define the shape")
    r_lab, c_lab, values = _frame_triples(X, y)
    (rows, row_labels), (cols, col_labels) = _encode_labels(r_lab), _encode_labels(c_lab)
    return rows, cols, values, (len(row_labels), len(col_labels)), row_labels, col_labels


def _array_entries(X, y, shape):
    """``(rows, cols, values, shape)`` of index arrays, an (N, 3) triplet array or a dense array."""
    if isinstance(X, tuple) and len(X) == 2:
        rows, cols = _positions(X[0], "row"), _positions(X[1], "column")
        if rows.size != cols.size:
            raise ValueError(f"rows and cols differ in length: {rows.size} vs {cols.size}")
        if y is None:
            raise ValueError("index arrays (rows, cols) need the observed values y")
        return rows, cols, _finite(y), shape
    arr = np.asarray(X)
    if arr.dtype == object:
        raise ValueError("X must be numeric (or a DataFrame for labelled rows/columns)")
    if arr.ndim != 2:
        raise ValueError(
            f"X must be 2-D: an (N, 2) array of (row, col) indices with y, or a dense "
            f"matrix with NaN for missing entries; got shape {arr.shape}"
        )
    if y is None and _is_triplets(arr):
        return _positions(arr[:, 0], "row"), _positions(arr[:, 1], "column"), _finite(arr[:, 2]), shape
    if y is None:  # dense with NaN
        dense = arr.astype(np.float64)
        if np.isinf(dense).any():
            raise ValueError("the dense matrix contains inf; only NaN may mark missing entries")
        if shape is not None and tuple(shape) != dense.shape:
            raise ValueError(f"shape={tuple(shape)} disagrees with X.shape {dense.shape}")
        rows, cols = (i.astype(np.int64) for i in np.nonzero(~np.isnan(dense)))
        return rows, cols, dense[rows, cols], dense.shape
    if arr.shape[1] != 2:
        raise ValueError(f"with y, X must be an (N, 2) array of (row, col) indices; got {arr.shape}")
    return _positions(arr[:, 0], "row"), _positions(arr[:, 1], "column"), _finite(y), shape


def _from_arrays(X, y, shape):
    """Entries of array inputs; without ``shape``, sparse huge IDs are relabelled."""
    rows, cols, values, shape = _array_entries(X, y, shape)
    if values.size != rows.size:
        raise ValueError(f"{rows.size} index pairs but {values.size} values")
    if rows.size == 0:
        raise ValueError("no observed entries (empty input: 0 sample(s))")
    if shape is None:
        rows, row_labels = _relabel_if_sparse(rows)
        cols, col_labels = _relabel_if_sparse(cols)
        return rows, cols, values, (int(rows.max()) + 1, int(cols.max()) + 1), row_labels, col_labels
    m, n = (int(s) for s in shape)
    if rows.max() >= m or cols.max() >= n:
        raise ValueError(
            f"index out of range for shape {(m, n)}: max row {int(rows.max())}, max column "
            f"{int(cols.max())}"
        )
    return rows, cols, values, (m, n), None, None


def parse_observations(X, y=None, shape=None, duplicates: str = "error") -> Observations:
    """Normalize every accepted input form to positions, values and labels (see module docstring)."""
    if X is None:
        raise ValueError("X is None: give observed entries (sparse matrix, DataFrame, index arrays "
                         "or a dense array with NaN)")
    if scipy.sparse.issparse(X):
        parts = _from_sparse(X, y, shape)
    elif isinstance(X, pd.DataFrame):
        parts = _from_frame(X, y, shape)
    else:
        parts = _from_arrays(X, y, shape)
    rows, cols, values, (m, n), row_labels, col_labels = parts
    if rows.size == 0:
        raise ValueError("no observed entries (empty input: 0 sample(s))")
    rows, cols, values = _dedupe(rows, cols, values, n, duplicates)
    if min(m, n) < 2:
        raise ValueError(f"the matrix is {m}×{n}; completion needs at least 2 rows and 2 columns")
    if np.unique(rows).size < 2 or np.unique(cols).size < 2:
        raise ValueError(
            "all observations lie in a single row or a single column; completion needs observed "
            "entries in at least two rows and two columns"
        )
    return Observations(rows, cols, values, (int(m), int(n)), row_labels, col_labels)


def parse_query(X, cols=None) -> tuple[np.ndarray, np.ndarray]:
    """``(row labels, column labels)`` from ``predict(X)``/``predict(rows, cols)`` arguments."""
    if cols is not None:
        r, c = np.asarray(X).reshape(-1), np.asarray(cols).reshape(-1)
    elif isinstance(X, pd.DataFrame):
        if X.shape[1] < 2:
            raise ValueError("predict needs (row, column) pairs: a DataFrame with two columns")
        picked = column_roles(X.columns, need_value=False)
        frame = X[list(picked)] if picked else X
        r, c = frame.iloc[:, 0].to_numpy(), frame.iloc[:, 1].to_numpy()
    elif isinstance(X, tuple) and len(X) == 2:
        r, c = np.asarray(X[0]).reshape(-1), np.asarray(X[1]).reshape(-1)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise ValueError(
                f"predict needs (row, column) pairs: rows and cols arrays, an (N, 2) array or a "
                f"DataFrame; got shape {arr.shape}"
            )
        r, c = arr[:, 0], arr[:, 1]
    if r.size != c.size:
        raise ValueError(f"rows and cols differ in length: {r.size} vs {c.size}")
    return r, c
