"""MNIST (LeCun et al. 1998) from its four IDX files, read with NumPy.

The folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``).
Where it is looked for: ``root`` (or ``root/mnist``), else ``$LOWDIM_DATA/mnist``. lowdim never
downloads or ships it.

Examples
--------
>>> from lowdim.datasets.mnist import load_mnist
>>> train = load_mnist("train", root="../shared/data")          # doctest: +SKIP
>>> train.images.shape, train.labels.shape                       # doctest: +SKIP
((60000, 784), (60000,))
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import check_choice

__all__ = ["MNIST", "load_mnist", "read_idx"]

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class MNIST:
    """One split: ``images`` (``N × 784`` float32 in [0, 1]) and ``labels`` (``N`` int64)."""

    images: np.ndarray
    labels: np.ndarray


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (magic ``0 0 type ndim``, big-endian sizes, then the data); ``.gz`` allowed."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, offset=4))
    data = np.frombuffer(raw, _DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values")
    return data.reshape(shape)


def _find(name: str, root: str | os.PathLike | None) -> Path:
    folders = []
    if root is not None:
        folders += [Path(root), Path(root) / "mnist"]
    elif os.environ.get("LOWDIM_DATA"):
        folders.append(Path(os.environ["LOWDIM_DATA"]) / "mnist")
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    where = ", ".join(str(f) for f in folders) or "nowhere (no root given and $LOWDIM_DATA unset)"
    raise FileNotFoundError(
        f"MNIST file {name}[.gz] not found in {where}; pass root= the folder holding the four IDX "
        "files, or set LOWDIM_DATA to the shared data folder (which has mnist/)"
    )


def load_mnist(split: str = "train", root: str | os.PathLike | None = None) -> MNIST:
    """Load the ``"train"`` (60 000) or ``"test"`` (10 000) split, pixels scaled to [0, 1]."""
    split = check_choice("split", split, tuple(FILES))
    images_file, labels_file = FILES[split]
    images = read_idx(_find(images_file, root))
    labels = read_idx(_find(labels_file, root))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return MNIST(images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int64))
