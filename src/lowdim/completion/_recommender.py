"""What a recommender does with a fitted completer: top-N, similar items, fold-in, save / load.

Rows are users and columns items. Everything works from the fitted state every
:class:`~lowdim.completion.estimator.CompletionEstimator` has: the normalized low-rank term
``W = left_ @ right_``, the bias terms, ``scale_``, the labels and ``seen_`` (observed entries).
Files are one ``safetensors`` file: arrays as tensors, everything else (hyperparameters, labels,
scalars) as a JSON header — no pickle, so loading never runs code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse
import torch

from .._io import atomic_write
from .._validation import check_int, check_nonnegative
from ..linalg import factored_svd

FORMAT = "lowdim.completion.model/1"
_ARRAYS = ("left_", "right_", "row_bias_", "col_bias_")
_SCALARS = ("scale_", "bias_mean_", "global_mean_", "observed_fraction_", "n_iter_",
            "best_iteration_", "fit_seconds_")
_CHUNK = 1 << 22  # scores computed per block of users: at most this many numbers at once


def _top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``n`` largest finite scores of each row (descending) and the scores."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    top = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(top, order, axis=1)


def _long_table(key: str, keys, other: str, labels, idx, values, value_name: str) -> pd.DataFrame:
    """One row per (key, rank) pair, ``-inf`` scores (nothing left to recommend) dropped."""
    n = idx.shape[1]
    table = pd.DataFrame({
        key: np.repeat(np.asarray(keys, dtype=object), n),
        other: np.asarray(labels)[idx.reshape(-1)],
        value_name: values.reshape(-1),
        "rank": np.tile(np.arange(1, n + 1), len(keys)),
    })
    return table[np.isfinite(table[value_name])].reset_index(drop=True)


class RecommenderMixin:
    """``recommend``, ``similar_items``, ``fold_in``, ``save`` and ``load`` for completers."""

    def _labels(self, axis: int) -> np.ndarray:
        index = (self.row_labels_, self.col_labels_)[axis]
        return np.arange(self.shape_[axis]) if index is None else index.to_numpy()

    def _query_labels(self, labels, axis: int):
        """``(labels as a 1-D array, positions, known mask)`` of user (0) or item (1) labels."""
        index = (self.row_labels_, self.col_labels_)[axis]
        text = index is not None and index.dtype == object
        labels = np.atleast_1d(np.asarray(labels, dtype=object if text else None))
        return (labels, *self._encode(labels, index, self.shape_[axis], ("row", "column")[axis]))

    # ------------------------------------------------------------------------------ top-N
    def recommend(self, users, n: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """The ``n`` items with the highest predicted rating for each user, vectorized.

        Parameters
        ----------
        users : label or array-like of labels
            Row labels (positions for array inputs). Unknown users get the items with the highest
            bias terms when ``unknown="fallback"`` (else ``ValueError``).
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out the items the user rated in ``fit`` (or ``fold_in``).

        Returns
        -------
        pandas.DataFrame
            Columns ``user``, ``item``, ``score`` (the prediction, clipped like :meth:`predict`)
            and ``rank`` (1 = best), ``n`` rows per user (fewer if fewer items are left).

        Examples
        --------
        >>> top = est.recommend([1, 2], n=5)        # doctest: +SKIP
        >>> top[top.user == 1].item.tolist()        # doctest: +SKIP
        """
        self._check_fitted()
        n = check_int("n", n, 1)
        users, pos, ok = self._query_labels(users, 0)
        block = max(1, _CHUNK // self.shape_[1])
        idx, top = [], []
        for s in range(0, pos.size, block):
            i, k = self._top_items(pos[s:s + block], ok[s:s + block], n, exclude_seen)
            idx.append(i)
            top.append(k)
        idx, top = np.concatenate(idx), np.concatenate(top)
        return _long_table("user", users, "item", self._labels(1), idx, self._clip(top), "score")

    def _top_items(self, pos, ok, n, exclude_seen):
        scores = self._row_scores(pos, ok)
        if exclude_seen:
            seen = self.seen_[pos[ok]].tocoo()
            scores[np.flatnonzero(ok)[seen.row], seen.col] = -np.inf
        return _top_n(scores, n)

    # ------------------------------------------------------------------------------ item-item
    def item_embeddings(self) -> np.ndarray:
        """``n × k`` item vectors ``V Σ`` of the SVD ``U Σ Vᵀ`` of the low-rank term.

        Unlike the columns of ``right_``, they do not depend on how the factorization is split.
        """
        self._check_fitted()
        left, right = torch.as_tensor(self.left_), torch.as_tensor(self.right_)
        _, sv, vt = factored_svd(left, torch.eye(left.shape[1], dtype=left.dtype), right)
        return (vt.T * sv).numpy()

    def similar_items(self, items, n: int = 10) -> pd.DataFrame:
        """The ``n`` items most similar to each of ``items`` (cosine of :meth:`item_embeddings`).

        Returns
        -------
        pandas.DataFrame
            Columns ``item``, ``similar``, ``similarity`` (in [-1, 1]) and ``rank``.
        """
        n = check_int("n", n, 1)
        emb = self.item_embeddings()
        norms = np.linalg.norm(emb, axis=1)
        unit = emb / np.where(norms > 0, norms, 1.0)[:, None]
        items, pos, ok = self._query_labels(items, 1)
        if not ok.all():
            raise ValueError(f"similar_items: unknown item(s) {items[~ok][:5].tolist()}")
        sims = unit[pos] @ unit.T
        sims[np.arange(pos.size), pos] = -np.inf  # not itself
        idx, top = _top_n(sims, n)
        return _long_table("item", items, "similar", self._labels(1), idx, top, "similarity")

    # ------------------------------------------------------------------------------ fold-in
    def fold_in(self, items, values, user=None, reg: float = 1.0):
        """Add a new user from their ratings without refitting; returns the user's label.

        The user's bias is the regularized mean residual (``bias_reg`` pseudo-observations, as in
        ``fit``); the user's low-rank row ``x`` solves the ridge least-squares problem
        ``min Σ_j (x·r_j − y'_j)² + λ‖x‖²`` on the learned item side ``r_j`` (columns of
        ``right_``) with ``λ = reg`` times an average ``‖r_j‖²``. Then :meth:`predict` and
        :meth:`recommend` know the user.

        Parameters
        ----------
        items, values : array-like
            The user's rated items (column labels) and ratings; unknown items are ignored.
        user : label, optional
            The new row label (default: the next position, for unlabelled data).
        reg : float, default=1.0

        Returns
        -------
        label
        """
        self._check_fitted()
        check_nonnegative("reg", reg)
        cols, vals, user = self._fold_in_inputs(items, values, user)
        bias = self.settings_["bias"]
        mu = self.bias_mean_ + self.col_bias_[cols]
        a = 0.0
        if bias in ("row", "both"):
            a = float(np.sum(vals - mu)) / (cols.size + float(self.settings_["bias_reg"]))
        target = (vals - mu - a) / self.scale_
        side = self.right_[:, cols].T  # |items| × k
        lam = reg * float(np.mean(np.sum(self.right_**2, axis=0)))
        gram = side.T @ side + max(lam, 1e-12) * np.eye(side.shape[1])
        x = np.linalg.solve(gram, side.T @ target)
        self._append_row(user, x, a, cols)
        return user

    def _fold_in_inputs(self, items, values, user):
        items, pos, ok = self._query_labels(items, 1)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if items.size != vals.size or items.size == 0 or not np.isfinite(vals).all():
            raise ValueError(f"fold_in needs as many finite values as items, at least one; got "
                             f"{items.size} items and {vals.size} values")
        if self.row_labels_ is None:
            if user not in (None, self.shape_[0]):
                raise ValueError(f"user must be None or {self.shape_[0]} (the next position) for "
                                 f"a model fitted on positions, got {user!r}")
            user = self.shape_[0]
        elif user is None or user in self.row_labels_:
            raise ValueError(f"fold_in needs a new user label (user=...), got {user!r}")
        return pos[ok], vals[ok], user

    def _append_row(self, user, x, a, cols) -> None:
        m, n = self.shape_
        self.left_ = np.vstack([self.left_, x[None, :]])
        self.row_bias_ = np.append(self.row_bias_, a)
        if self.row_labels_ is not None:
            self.row_labels_ = self.row_labels_.append(pd.Index([user]))
        row = scipy.sparse.csr_matrix((np.ones(cols.size, bool), (np.zeros(cols.size, int), cols)),
                                      shape=(1, n))
        self.seen_ = scipy.sparse.vstack([self.seen_, row], format="csr")
        self.shape_ = (m + 1, n)

    # ------------------------------------------------------------------------------ save / load
    def save(self, path) -> Path:
        """Write the fitted model to one ``safetensors`` file, atomically (no pickle).

        Tensors: ``left_``, ``right_``, the biases and the observed pattern; JSON header: the class,
        its parameters, ``settings_``, scalars, shape, clip range and the row/column labels (which
        must be JSON values: ints, floats or strings). Estimators trained by gradient descent also
        keep their training state (last factors, momentum, history, early-stopping record), so
        ``type(est).load(path).set_params(warm_start=True, max_iter=...).fit(X)`` continues the
        run on the same data. Load with ``type(est).load(path)``.
        """
        from safetensors.numpy import save_file

        self._check_fitted()
        seen = self.seen_.tocsr()
        tensors = {name: np.ascontiguousarray(getattr(self, name), dtype=np.float64)
                   for name in _ARRAYS}
        tensors.update(seen_indptr=seen.indptr.astype(np.int64),
                       seen_indices=seen.indices.astype(np.int64))
        extra_meta, extra_tensors = self._extra_state()
        tensors.update(extra_tensors)
        meta = {
            **extra_meta,
            "format": FORMAT, "class": type(self).__name__, "params": self.get_params(),
            "settings": self.settings_, "shape": list(self.shape_),
            "clip_range": self.clip_range_, "degenerate": bool(getattr(self, "degenerate_", False)),
            "labels": [None if ix is None else ix.tolist()
                       for ix in (self.row_labels_, self.col_labels_)],
            **{name: float(getattr(self, name, 0.0)) for name in _SCALARS},
        }
        try:
            header = {"lowdim": json.dumps(meta, allow_nan=False)}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot save {type(self).__name__} to {path}: {exc}; row/column "
                             "labels and parameters must be JSON values (int, float, str)") from exc
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))

    @classmethod
    def load(cls, path):
        """Read a model written by :meth:`save`; all of it or ``ValueError`` naming the file."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = json.loads((fh.metadata() or {}).get("lowdim", "{}"))
            tensors = load_file(str(path))
        except (SafetensorError, OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a lowdim completion model file: {exc}") from exc
        if meta.get("format") != FORMAT or meta.get("class") != cls.__name__:
            raise ValueError(f"{path} holds {meta.get('class') or 'no lowdim model'} "
                             f"({meta.get('format')}), not a {cls.__name__} ({FORMAT})")
        est = cls(**meta["params"])
        for key, value in _restored_state(path, meta, tensors).items():
            setattr(est, key, value)
        est._restore_extra_state(meta, tensors)
        return est

    def _extra_state(self) -> tuple[dict, dict]:
        """``(meta, arrays)`` a subclass adds to the file (e.g. what resuming training needs)."""
        return {}, {}

    def _restore_extra_state(self, meta: dict, tensors: dict) -> None:
        """Read back what :meth:`_extra_state` wrote."""


def _restored_state(path: Path, meta: dict, tensors: dict) -> dict:
    """The fitted attributes of a saved model, checked for consistency before any is set."""
    m, n = meta["shape"]
    state = {name: tensors[name] for name in _ARRAYS}
    state.update({name: meta[name] for name in _SCALARS})
    state["n_iter_"], state["best_iteration_"] = int(state["n_iter_"]), int(state["best_iteration_"])
    labels = [None if lab is None else pd.Index(lab) for lab in meta["labels"]]
    state.update(shape_=(m, n), settings_=meta["settings"], row_labels_=labels[0],
                 col_labels_=labels[1], degenerate_=meta["degenerate"],
                 clip_range_=None if meta["clip_range"] is None else tuple(meta["clip_range"]))
    state["seen_"] = scipy.sparse.csr_matrix(
        (np.ones(tensors["seen_indices"].size, bool), tensors["seen_indices"],
         tensors["seen_indptr"]), shape=(m, n))
    k = state["left_"].shape[1]
    expect = {"left_": (m, k), "right_": (k, n), "row_bias_": (m,), "col_bias_": (n,)}
    bad = [name for name, shp in expect.items() if state[name].shape != shp]
    bad += [f"{w}_labels" for w, lab, size in (("row", labels[0], m), ("col", labels[1], n))
            if lab is not None and len(lab) != size]
    if bad:
        raise ValueError(f"{path} is inconsistent ({', '.join(bad)} disagree with shape {m}×{n})")
    return state
