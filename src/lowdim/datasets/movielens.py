"""MovieLens 100K (GroupLens; Harper & Konstan, ACM TiiS 5(4):19, 2015).

943 users × 1682 movies, 100 000 ratings on a 1–5 scale. The data is **not redistributable**
(GroupLens terms): lowdim never ships it. :func:`load_movielens_100k` reads it from a local folder
or, with ``download=True``, fetches the official ``ml-100k.zip`` from GroupLens, checks its MD5
(the checksum GroupLens publishes) and the SHA-256 of ``u.data``, and caches it.

Where the folder is looked for (first hit wins):

1. ``root`` — a folder holding ``u.data`` or a subfolder ``ml-100k/`` / ``movielens-100k/`` that does;
2. ``$LOWDIM_DATA/movielens-100k`` (the project's shared data folder);
3. the cache ``$LOWDIM_CACHE/ml-100k`` (default ``~/.cache/lowdim/ml-100k``), filled by ``download=True``.

Examples
--------
>>> from lowdim.datasets.movielens import load_movielens_100k
>>> ml = load_movielens_100k()                # doctest: +SKIP
>>> train, test = ml.u1()                     # official split: 80 000 / 20 000 ratings
>>> for train, test in ml.kfold(5, seed=0):   # seeded random 5-fold cross-validation
...     pass
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "MovieLens100K",
    "load_movielens_100k",
    "download_movielens_100k",
    "ML100K_URL",
    "ML100K_ZIP_MD5",
    "ML100K_UDATA_SHA256",
]

#: Official download address of the archive.
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
#: MD5 of ``ml-100k.zip`` as published by GroupLens (``ml-100k.zip.md5``).
ML100K_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"
#: SHA-256 of the extracted ``u.data`` (100 000 lines).
ML100K_UDATA_SHA256 = "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"

_COLS = ["row", "col", "value", "timestamp"]


def _cache_dir() -> Path:
    base = os.environ.get("LOWDIM_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "lowdim"


def _hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", header=None, names=_COLS, dtype={"value": np.float64})
    if df.shape[0] == 0 or df.isna().any().any():
        raise ValueError(f"{path} is empty or malformed (expected 4 tab-separated fields a line)")
    return df


def _find_folder(root: str | os.PathLike | None) -> Path | None:
    candidates: list[Path] = []
    if root is not None:
        r = Path(root)
        candidates += [r, r / "ml-100k", r / "movielens-100k"]
    else:
        env = os.environ.get("LOWDIM_DATA")
        if env:
            candidates += [Path(env) / "movielens-100k", Path(env) / "ml-100k"]
        candidates.append(_cache_dir() / "ml-100k")
    for c in candidates:
        if (c / "u.data").is_file():
            return c
    return None


def download_movielens_100k(
    cache: str | os.PathLike | None = None, url: str = ML100K_URL, timeout: float = 60.0
) -> Path:
    """Download ``ml-100k.zip`` from GroupLens, verify it, extract it, return the data folder.

    The archive's MD5 must equal :data:`ML100K_ZIP_MD5` and the extracted ``u.data`` must have
    SHA-256 :data:`ML100K_UDATA_SHA256`; otherwise nothing is kept and ``ValueError`` is raised.
    The extraction is atomic: the folder ``<cache>/ml-100k`` appears complete or not at all.
    """
    cache = Path(cache) if cache is not None else _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "ml-100k"
    if (target / "u.data").is_file():
        return target
    with tempfile.TemporaryDirectory(dir=cache, prefix=".ml-100k-") as tmp:
        tmp = Path(tmp)
        archive = tmp / "ml-100k.zip"
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
        got = _hash(archive, "md5")
        if got != ML100K_ZIP_MD5:
            raise ValueError(
                f"checksum mismatch for {url}: md5 {got}, expected {ML100K_ZIP_MD5}; "
                "the download is corrupt or the file changed upstream"
            )
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse path traversal
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"unsafe path {member!r} in {archive}")
            zf.extractall(tmp / "x")
        extracted = tmp / "x" / "ml-100k"
        got = _hash(extracted / "u.data", "sha256")
        if got != ML100K_UDATA_SHA256:
            raise ValueError(f"u.data in {url} has sha256 {got}, expected {ML100K_UDATA_SHA256}")
        try:
            os.replace(extracted, target)
        except OSError:
            if not (target / "u.data").is_file():
                raise
    return target


@dataclass
class MovieLens100K:
    """MovieLens 100K ratings with its official and random splits.

    Attributes
    ----------
    ratings:
        All 100 000 ratings as a table with columns ``row`` (user id, 1..943), ``col`` (movie id,
        1..1682), ``value`` (1..5, float) and ``timestamp``.
    root:
        The folder read from.
    """

    ratings: pd.DataFrame
    root: Path

    @property
    def shape(self) -> tuple[int, int]:
        """(number of users, number of movies) = (943, 1682)."""
        return int(self.ratings["row"].max()), int(self.ratings["col"].max())

    def split(self, name: str = "u1") -> tuple[pd.DataFrame, pd.DataFrame]:
        """Official split ``name`` (``u1``..``u5``, ``ua``, ``ub``): ``(train, test)`` tables.

        Reads ``<name>.base`` / ``<name>.test`` from the folder; ``FileNotFoundError`` if absent.
        """
        base, test = self.root / f"{name}.base", self.root / f"{name}.test"
        for p in (base, test):
            if not p.is_file():
                raise FileNotFoundError(f"split file {p} not found (MovieLens 100K folder {self.root})")
        return _read(base), _read(test)

    def u1(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The official 80/20 split 1 (``u1.base``: 80 000, ``u1.test``: 20 000 ratings)."""
        return self.split("u1")

    def random_split(
        self, test_fraction: float = 0.2, seed: int = 0
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A seeded random ``(train, test)`` split of all ratings (``test_fraction`` of them to test).

        The ratings are permuted with ``numpy.random.default_rng(seed)``; the first
        ``round(test_fraction · N)`` are the test set (rows keep their original order).
        """
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        n = len(self.ratings)
        perm = np.random.default_rng(seed).permutation(n)
        test = np.zeros(n, dtype=bool)
        test[perm[: int(round(test_fraction * n))]] = True
        return (self.ratings[~test].reset_index(drop=True),
                self.ratings[test].reset_index(drop=True))

    def users(self) -> pd.DataFrame:
        """Side information of the users (``u.user``), indexed by user id: ``age`` (years),
        ``gender`` (``M``/``F``), ``occupation`` and ``zip`` (text)."""
        return self._side("u.user", ["user", "age", "gender", "occupation", "zip"], "user")

    def items(self) -> pd.DataFrame:
        """Side information of the movies (``u.item``, latin-1), indexed by movie id: ``title``,
        ``release_date``, ``video_release_date``, ``url`` and one 0/1 column per genre."""
        genres = pd.read_csv(self.root / "u.genre", sep="|", header=None, names=["genre", "id"],
                             encoding="latin-1").dropna()["genre"].tolist()
        names = ["item", "title", "release_date", "video_release_date", "url", *genres]
        return self._side("u.item", names, "item")

    def _side(self, name: str, columns: list[str], index: str) -> pd.DataFrame:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (MovieLens 100K folder {self.root})")
        frame = pd.read_csv(path, sep="|", header=None, names=columns, encoding="latin-1",
                            dtype={"zip": str})
        if frame[index].duplicated().any() or frame.shape[1] != len(columns):
            raise ValueError(f"{path} is malformed (expected {len(columns)} '|'-separated fields "
                             f"and unique {index} ids)")
        return frame.set_index(index)

    def kfold(
        self, n_splits: int = 5, seed: int = 0
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """Seeded random ``n_splits``-fold cross-validation over all ratings: yields ``(train, test)``.

        The ratings are permuted with ``numpy.random.default_rng(seed)`` and cut into
        ``n_splits`` folds of (almost) equal size; fold ``k`` is the test set of split ``k``.
        """
        if not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        n = len(self.ratings)
        perm = np.random.default_rng(seed).permutation(n)
        folds = np.array_split(perm, int(n_splits))
        for k in range(int(n_splits)):
            test_idx = np.sort(folds[k])
            mask = np.ones(n, dtype=bool)
            mask[test_idx] = False
            yield (
                self.ratings.iloc[np.flatnonzero(mask)].reset_index(drop=True),
                self.ratings.iloc[test_idx].reset_index(drop=True),
            )


def load_movielens_100k(
    root: str | os.PathLike | None = None, download: bool = False
) -> MovieLens100K:
    """Load MovieLens 100K from ``root`` (or the data/cache folders), downloading it if asked.

    Parameters
    ----------
    root:
        Folder with ``u.data`` (and ``u1.base``/``u1.test`` for the official split), or its parent.
        ``None``: ``$LOWDIM_DATA/movielens-100k``, then the cache folder.
    download:
        If the data is not found, download it from GroupLens into the cache (``root`` if given),
        verifying the checksums (see :func:`download_movielens_100k`).

    Raises
    ------
    FileNotFoundError
        If the data is not found and ``download`` is false.
    """
    folder = _find_folder(root)
    if folder is None:
        if not download:
            where = f"under {root}" if root is not None else (
                "in $LOWDIM_DATA/movielens-100k or the cache " + str(_cache_dir() / "ml-100k")
            )
            raise FileNotFoundError(
                f"MovieLens 100K (u.data) not found {where}; pass download=True to fetch it "
                f"from {ML100K_URL} (research use only, see the GroupLens terms)"
            )
        folder = download_movielens_100k(cache=root)
    return MovieLens100K(ratings=_read(folder / "u.data"), root=folder)
