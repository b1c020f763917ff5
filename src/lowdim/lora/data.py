"""Fine-tuning data: user tables (CSV / JSON lines), tokenized-once splits and length-grouped batches.

A user task is two files with a ``text`` column, an optional ``text_pair`` column and a ``label``
column (CSV with a header row, or JSON lines with those keys).  Labels that are all numbers with at
least one non-integer value (``3.8``, ``1e-2``; JSON floats) make a regression task scored by
Pearson/Spearman; any other labels are classes (sorted; numerically when they are integers), scored
by accuracy and F1 (binary) or accuracy and macro-F1.  Errors name the file and line.

:class:`EncodedSplit` tokenizes a split once (no padding); :meth:`EncodedSplit.batch` pads only the
examples of one batch, and :func:`length_grouped_order` puts examples of similar length together
(the ``group_by_length`` of ``transformers``: shuffled, sorted within chunks of 50 batches, batch
order shuffled) so that little padding is computed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .glue import GlueSplit, TaskSpec

__all__ = ["load_user_task", "read_table", "EncodedSplit", "length_grouped_order"]


def read_table(path: str | Path) -> tuple[list[str], list[str] | None, list, list[int]]:
    """``(text, text_pair or None, raw labels, line numbers)`` of a ``.csv`` or ``.jsonl`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} is missing")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    else:
        raise ValueError(f"{path}: use a .csv file (header text,text_pair,label) or .jsonl "
                         f"(one object per line with keys text, text_pair, label)")
    if not rows:
        raise ValueError(f"{path} holds no examples")
    has_pair = "text_pair" in rows[0][1]
    text, pair, labels, lines = [], [], [], []
    for line, row in rows:
        for key in ("text", "label") + (("text_pair",) if has_pair else ()):
            value = row.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ValueError(f"{path}:{line}: missing or empty {key!r}")
        if not isinstance(row["text"], str) or (has_pair and not isinstance(row["text_pair"], str)):
            raise ValueError(f"{path}:{line}: 'text' and 'text_pair' must be strings")
        text.append(row["text"])
        if has_pair:
            pair.append(row["text_pair"])
        labels.append(row["label"])
        lines.append(line)
    return text, (pair if has_pair else None), labels, lines


def _csv_rows(path: Path) -> list[tuple[int, dict]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        missing = [k for k in ("text", "label") if k not in fields]
        if missing:
            raise ValueError(f"{path}:1: the header lacks {missing} (header: {fields}); "
                             f"expected text, optional text_pair, label")
        rows = []
        for row in reader:
            if None in row:
                raise ValueError(f"{path}:{reader.line_num}: more fields than the header has")
            rows.append((reader.line_num, row))
    return rows


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8-sig") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{line}: expected a JSON object with text, label")
            rows.append((line, obj))
    if rows and "text_pair" in rows[0][1]:
        for line, obj in rows:
            if "text_pair" not in obj:
                raise ValueError(f"{path}:{line}: missing 'text_pair' (the first line has one)")
    return rows


def _as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _is_float_label(value) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, str) and any(c in value for c in ".eE") and _as_number(value) is not None


def _class_names(labels: list) -> tuple[str, ...]:
    names = {str(v).strip() for v in labels}
    if all(_as_number(v) is not None for v in names):
        return tuple(sorted(names, key=float))
    return tuple(sorted(names))


def load_user_task(train: str | Path, dev: str | Path, name: str = "custom") -> tuple[GlueSplit, GlueSplit]:
    """Training and evaluation splits of a user task from two CSV / JSON-lines files.

    The task kind and the classes come from the training file; the evaluation file must use the
    same columns and only known classes.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    >>> _ = (d / "train.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> tr, dv = load_user_task(d / "train.jsonl", d / "train.jsonl")
    >>> tr.task.labels, tr.labels.tolist(), tr.task.metrics
    (('neg', 'pos'), [1, 0], ('accuracy', 'f1'))
    """
    text, pair, raw, lines = read_table(train)
    regression = all(_as_number(v) is not None for v in raw) and any(_is_float_label(v) for v in raw)
    classes = None if regression else _class_names(raw)
    if classes is not None and len(classes) < 2:
        raise ValueError(f"{train}: every label is {classes[0]!r}; a classification task needs >= 2 "
                         f"classes (write float labels such as 1.0 for a regression task)")
    metrics = ("pearson", "spearman") if regression else \
        ("accuracy", "f1") if len(classes) == 2 else ("accuracy", "macro_f1")
    spec = TaskSpec(name, str(Path(train).parent), True, "text", "text_pair" if pair else None,
                    "label", classes, metrics)
    splits = [_user_split(spec, text, pair, raw, lines, train)]
    dtext, dpair, draw, dlines = read_table(dev)
    if (dpair is None) != (pair is None):
        raise ValueError(f"{dev}: has {'no ' if dpair is None else ''}'text_pair' column but {train} "
                         f"has {'one' if pair else 'none'}; use the same columns in both files")
    splits.append(_user_split(spec, dtext, dpair, draw, dlines, dev))
    return splits[0], splits[1]


def _user_split(spec: TaskSpec, text, pair, raw, lines, path) -> GlueSplit:
    if spec.is_regression:
        values = []
        for v, line in zip(raw, lines, strict=True):
            x = _as_number(v)
            if x is None or not np.isfinite(x):
                raise ValueError(f"{path}:{line}: label {v!r} is not a finite number (regression task)")
            values.append(x)
        return GlueSplit(spec, text, pair, np.asarray(values, dtype=np.float64))
    ids = {c: i for i, c in enumerate(spec.labels)}
    out = []
    for v, line in zip(raw, lines, strict=True):
        key = str(v).strip()
        if key not in ids:
            raise ValueError(f"{path}:{line}: label {v!r} is not a class of the training file "
                             f"{spec.labels}")
        out.append(ids[key])
    return GlueSplit(spec, text, pair, np.asarray(out, dtype=np.int64))


@dataclass
class EncodedSplit:
    """A split tokenized once: per-example token ids (unpadded), lengths and labels."""

    split: GlueSplit
    features: list[dict[str, list[int]]]
    lengths: np.ndarray
    pad_id: int

    @classmethod
    def encode(cls, split: GlueSplit, tokenizer, max_length: int) -> EncodedSplit:
        """Tokenize every example of ``split`` (truncated to ``max_length`` tokens)."""
        enc = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
        features = [{k: enc[k][i] for k in keys} for i in range(len(split))]
        lengths = np.asarray([len(f["input_ids"]) for f in features])
        return cls(split, features, lengths, tokenizer.pad_token_id or 0)

    @property
    def task(self) -> TaskSpec:
        return self.split.task

    @property
    def labels(self) -> np.ndarray:
        return self.split.labels

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, indices) -> EncodedSplit:
        idx = [int(i) for i in indices]
        return EncodedSplit(self.split.subset(idx), [self.features[i] for i in idx],
                            self.lengths[idx], self.pad_id)

    def batch(self, indices, labels: bool = True) -> dict[str, torch.Tensor]:
        """The examples ``indices`` padded to their longest, as tensors (with ``labels``)."""
        idx = [int(i) for i in indices]
        width = int(self.lengths[idx].max())
        out = {}
        for key in self.features[idx[0]]:
            fill = self.pad_id if key == "input_ids" else 0
            rows = [self.features[i][key] + [fill] * (width - len(self.features[i][key])) for i in idx]
            out[key] = torch.tensor(rows, dtype=torch.long)
        if labels:
            y = torch.as_tensor(self.labels[idx])
            out["labels"] = y.float() if self.task.is_regression else y.long()
        return out


def length_grouped_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                         chunk_batches: int = 50) -> np.ndarray:
    """A random order of the examples in which each run of ``batch_size`` has similar lengths.

    Examples are shuffled, sorted by length (longest first) within chunks of ``chunk_batches``
    batches, and the batches are then shuffled: every epoch still visits every example once.

    Examples
    --------
    >>> order = length_grouped_order(np.array([5, 50, 6, 49]), 2, np.random.default_rng(0))
    >>> sorted(order.tolist()), sorted(sorted(np.array([5, 50, 6, 49])[order[i:i+2]].tolist())
    ...                                    for i in (0, 2))
    ([0, 1, 2, 3], [[5, 6], [49, 50]])
    """
    perm = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    parts = []
    for start in range(0, len(perm), chunk):
        block = perm[start : start + chunk]
        parts.append(block[np.argsort(-lengths[block], kind="stable")])
    ordered = np.concatenate(parts) if parts else perm
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))]) if batches else ordered
