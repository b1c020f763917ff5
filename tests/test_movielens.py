"""MovieLens 100K loader (shared data folder), splits, download verification, ratings files."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from lowdim.datasets.movielens import download_movielens_100k, load_movielens_100k
from lowdim.datasets.ratings import load_ratings


@pytest.fixture(scope="module")
def ml(shared_data):
    folder = shared_data / "movielens-100k"
    if not (folder / "u.data").is_file():
        pytest.skip(f"{folder} has no u.data")
    return load_movielens_100k(folder)


def test_counts_and_split(ml):
    r = ml.ratings
    assert len(r) == 100_000 and ml.shape == (943, 1682)
    assert r["row"].nunique() == 943 and r["col"].nunique() == 1682
    assert sorted(r["value"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    train, test = ml.u1()
    assert (len(train), len(test)) == (80_000, 20_000)
    key = lambda d: set(zip(d["row"], d["col"]))  # noqa: E731
    assert not key(train) & key(test)


def test_kfold_is_seeded_partition(ml):
    folds = list(ml.kfold(5, seed=0))
    assert len(folds) == 5
    test_sizes = [len(te) for _, te in folds]
    assert sum(test_sizes) == 100_000 and max(test_sizes) - min(test_sizes) <= 1
    keys = np.concatenate([te["row"].to_numpy() * 10_000 + te["col"].to_numpy() for _, te in folds])
    assert np.unique(keys).size == 100_000  # the test folds partition the ratings
    tr0, te0 = folds[0]
    assert len(tr0) + len(te0) == 100_000
    again = list(ml.kfold(5, seed=0))
    assert folds[2][1].equals(again[2][1])
    other = list(ml.kfold(5, seed=1))
    assert not folds[0][1].equals(other[0][1])
    with pytest.raises(ValueError, match="n_splits"):
        next(ml.kfold(1))


def test_random_split_and_side_information(ml):
    train, test = ml.random_split(0.2, seed=1)
    assert (len(train), len(test)) == (80_000, 20_000)
    keys = lambda d: set(zip(d["row"], d["col"]))  # noqa: E731
    assert not keys(train) & keys(test) and len(keys(train) | keys(test)) == 100_000
    assert ml.random_split(0.2, seed=1)[1].equals(test)
    assert not ml.random_split(0.2, seed=2)[1].equals(test)
    with pytest.raises(ValueError, match="test_fraction"):
        ml.random_split(1.0)
    users, items = ml.users(), ml.items()
    assert users.shape == (943, 4) and list(users.index[:2]) == [1, 2]
    assert users.loc[1].tolist() == [24, "M", "technician", "85711"]  # u.user line 1
    assert set(users["gender"]) == {"M", "F"} and users["occupation"].nunique() == 21
    genres = items.columns[4:]
    assert items.shape == (1682, 23) and len(genres) == 19 and genres[0] == "unknown"
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, genres].sum() == 3 and items.loc[1, "Animation"] == 1  # Animation|Children's|Comedy
    assert items.loc[267, "title"] == "unknown"  # the one movie without a title stays a row


def test_root_lookup_and_missing(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("LOWDIM_DATA", str(shared_data))
    monkeypatch.setenv("LOWDIM_CACHE", str(tmp_path / "cache"))
    assert len(load_movielens_100k().ratings) == 100_000  # found via $LOWDIM_DATA
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_movielens_100k(tmp_path / "nowhere")


def test_download_rejects_bad_checksum(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t0\n")
    archive = tmp_path / "fake.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_movielens_100k(cache=tmp_path / "cache", url=archive.as_uri())
    assert not (tmp_path / "cache" / "ml-100k").exists()


def test_ratings_loader_formats(tmp_path, shared_data):
    udata = shared_data / "movielens-100k" / "u.data"
    if udata.is_file():
        df = load_ratings(udata)
        assert list(df.columns) == ["row", "col", "value", "timestamp"] and len(df) == 100_000
    csv = tmp_path / "r.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,10,4.5,0\nab,cd,3,1\n")
    df = load_ratings(csv)
    assert len(df) == 2 and df["col"].astype(str).tolist() == ["10", "cd"]
    assert df["value"].tolist() == [4.5, 3.0]
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=r"bad.txt, line 1: cannot tell the field separator"):
        load_ratings(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_ratings(empty)
