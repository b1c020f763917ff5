"""GLUE tasks in the standard directory layout: readers and metrics.

``root/<TASK>/{train,dev}.tsv`` as produced by the usual GLUE download script (MNLI's dev splits are
``dev_matched.tsv`` and ``dev_mismatched.tsv``; the latter is the split ``"dev_mismatched"``, scored
as ``accuracy_mismatched``).  Files are tab-separated with quoting disabled (``csv.QUOTE_NONE``) and read
as ``utf-8-sig`` (MRPC starts with a byte-order mark).  Metrics are computed with scipy and
scikit-learn: Pearson/Spearman (STS-B), Matthews correlation (CoLA), accuracy, F1 (MRPC, QQP) and
macro-F1 (user tasks with more than two classes).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TaskSpec", "GlueSplit", "TASKS", "get_task", "load_split", "compute_metrics"]


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is stored and scored.

    Attributes
    ----------
    name : str
        Canonical lower-case name (``"stsb"``).
    folder : str
        Folder under the GLUE root (``"STS-B"``).
    header : bool
        Whether the TSV files start with a header row.
    text_a, text_b, label : int or str
        Column of the first/second sentence and of the label: an index for header-less files or a
        header name.  ``text_b`` is ``None`` for single-sentence tasks.
    labels : tuple of str or None
        Class labels as written in the file (their order gives the class ids); ``None`` for
        regression.
    metrics : tuple of str
        Reported metrics; the first is the task's main metric.
    dev_file : str
        File name of the evaluation split.
    mismatched_file : str or None
        File of a second evaluation split (MNLI's mismatched genres), read as ``"dev_mismatched"``.
    skip_short_rows : bool
        Skip (with a warning) rows with missing columns instead of refusing the file: the released
        QQP ``train.tsv`` has a few such rows, which the reference GLUE readers skip too.
    """

    name: str
    folder: str
    header: bool
    text_a: int | str
    text_b: int | str | None
    label: int | str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    dev_file: str = "dev.tsv"
    mismatched_file: str | None = None
    skip_short_rows: bool = False

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """Names of the evaluation splits (``"dev"``, and ``"dev_mismatched"`` for MNLI)."""
        return ("dev",) if self.mismatched_file is None else ("dev", "dev_mismatched")

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("cola", "CoLA", False, 3, None, 1, ("0", "1"), ("matthews", "accuracy")),
        TaskSpec("sst2", "SST-2", True, "sentence", None, "label", ("0", "1"), ("accuracy",)),
        TaskSpec("mrpc", "MRPC", True, "#1 String", "#2 String", "Quality", ("0", "1"),
                 ("f1", "accuracy")),
        TaskSpec("stsb", "STS-B", True, "sentence1", "sentence2", "score", None,
                 ("pearson", "spearman")),
        TaskSpec("qqp", "QQP", True, "question1", "question2", "is_duplicate", ("0", "1"),
                 ("f1", "accuracy"), skip_short_rows=True),
        TaskSpec("mnli", "MNLI", True, "sentence1", "sentence2", "gold_label",
                 ("contradiction", "entailment", "neutral"), ("accuracy",), "dev_matched.tsv",
                 "dev_mismatched.tsv"),
        TaskSpec("qnli", "QNLI", True, "question", "sentence", "label",
                 ("entailment", "not_entailment"), ("accuracy",)),
        TaskSpec("rte", "RTE", True, "sentence1", "sentence2", "label",
                 ("entailment", "not_entailment"), ("accuracy",)),
        TaskSpec("wnli", "WNLI", True, "sentence1", "sentence2", "label", ("0", "1"), ("accuracy",)),
    )
}


def get_task(name: str) -> TaskSpec:
    """Task by name, case and punctuation insensitive (``"STS-B"``, ``"sts_b"``, ``"stsb"``)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[key]


@dataclass
class GlueSplit:
    """One split of a task: sentence pairs and labels (float for regression, int class ids)."""

    task: TaskSpec
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, indices) -> GlueSplit:
        idx = [int(i) for i in indices]
        return GlueSplit(
            self.task,
            [self.text_a[i] for i in idx],
            None if self.text_b is None else [self.text_b[i] for i in idx],
            self.labels[idx],
        )


def _column(spec: int | str, header: list[str] | None, path: Path) -> int:
    if isinstance(spec, int):
        return spec
    assert header is not None
    if spec not in header:
        raise ValueError(f"{path}: header lacks the column {spec!r} (header: {header})")
    return header.index(spec)


def load_split(root: str | Path, task: str | TaskSpec, split: str = "train") -> GlueSplit:
    """Read ``train``, ``dev`` or (MNLI) ``dev_mismatched`` of a GLUE task.

    Raises
    ------
    FileNotFoundError
        If the folder or file is missing.
    ValueError
        If a row has the wrong number of columns, a label is unknown or not a number, or the file
        has no examples.
    """
    spec = get_task(task) if isinstance(task, str) else task
    if split not in ("train",) + spec.eval_splits:
        raise ValueError(f"split of {spec.name} must be one of {('train',) + spec.eval_splits}, "
                         f"got {split!r}")
    folder = Path(root) / spec.folder
    if not folder.is_dir():
        raise FileNotFoundError(f"GLUE folder {folder} is missing (expected <root>/{spec.folder}/)")
    path = folder / {"train": "train.tsv", "dev": spec.dev_file,
                     "dev_mismatched": spec.mismatched_file}[split]
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file {path} is missing")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows.pop(0) if spec.header and rows else None
    n_cols = len(header) if header is not None else (len(rows[0]) if rows else 0)
    cols = [_column(c, header, path) for c in (spec.text_a, spec.label)]
    col_b = None if spec.text_b is None else _column(spec.text_b, header, path)
    need = max(cols + ([col_b] if col_b is not None else [])) + 1
    if n_cols < need:
        raise ValueError(f"{path}: rows have {n_cols} columns, {spec.name} needs at least {need}")
    text_a, text_b, labels = [], [], []
    label_ids = {lab: i for i, lab in enumerate(spec.labels or ())}
    first_line = 2 if header is not None else 1
    skipped = []
    for offset, row in enumerate(rows):
        line = first_line + offset
        if not row:
            continue
        if len(row) < n_cols and spec.skip_short_rows:
            skipped.append(line)
            continue
        if len(row) != n_cols:
            raise ValueError(f"{path}:{line}: expected {n_cols} tab-separated columns, got {len(row)}")
        raw = row[cols[1]].strip()
        if spec.is_regression:
            try:
                labels.append(float(raw))
            except ValueError:
                raise ValueError(f"{path}:{line}: label {raw!r} is not a number") from None
        else:
            if raw not in label_ids:
                raise ValueError(f"{path}:{line}: unknown label {raw!r}; expected one of {spec.labels}")
            labels.append(label_ids[raw])
        text_a.append(row[cols[0]])
        if col_b is not None:
            text_b.append(row[col_b])
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} rows with missing columns (lines "
                      f"{', '.join(map(str, skipped[:5]))}{', ...' if len(skipped) > 5 else ''})",
                      stacklevel=2)
    if not text_a:
        raise ValueError(f"{path} holds no examples")
    return GlueSplit(
        spec, text_a, text_b if col_b is not None else None,
        np.asarray(labels, dtype=np.float64 if spec.is_regression else np.int64),
    )


def compute_metrics(task: str | TaskSpec, predictions, labels) -> dict[str, float]:
    """The task's metrics (:attr:`TaskSpec.metrics`) for predictions (scores or class ids)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    spec = get_task(task) if isinstance(task, str) else task
    pred = np.asarray(predictions)
    gold = np.asarray(labels)
    if pred.shape != gold.shape or pred.size == 0:
        raise ValueError(f"predictions {pred.shape} and labels {gold.shape} must be non-empty and alike")
    out: dict[str, float] = {}
    for name in spec.metrics:
        if name == "pearson":
            out[name] = float(pearsonr(pred, gold)[0]) if np.std(pred) > 0 else float("nan")
        elif name == "spearman":
            out[name] = float(spearmanr(pred, gold)[0]) if np.std(pred) > 0 else float("nan")
        elif name == "accuracy":
            out[name] = float(accuracy_score(gold, pred))
        elif name == "f1":
            out[name] = float(f1_score(gold, pred))
        elif name == "macro_f1":
            out[name] = float(f1_score(gold, pred, average="macro"))
        elif name == "matthews":
            out[name] = float(matthews_corrcoef(gold, pred))
        else:  # pragma: no cover - registry is closed
            raise ValueError(f"unknown metric {name}")
    return out
