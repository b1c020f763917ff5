"""``lowdim complete`` as a tool people trust: duplicates, output folder, separators, permissions,
degenerate data, clipping."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from lowdim.cli import main
from lowdim.datasets.ratings import load_ratings


def _star_file(path, sep="\t", repeat=0, decimal=".", seed=0):
    """Star ratings of 30 users × 40 items (half observed) from a rank-2 matrix; ``repeat`` pairs
    are rated a second time (with another value) at the end of the file."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((30, 2)), rng.standard_normal((2, 40))
    rows, cols = np.nonzero(rng.random((30, 40)) < 0.5)
    stars = np.clip(np.round(3 + (u @ v)[rows, cols]), 1, 5) - 0.5 * (rng.random(rows.size) < 0.2)
    df = pd.DataFrame({"user": rows + 1, "item": cols + 1, "rating": stars})
    df = pd.concat([df, df.iloc[:repeat].assign(rating=1.0)])
    df.to_csv(path, sep=sep, index=False, decimal=decimal)
    return df


def _run(*args):
    return main(["complete", *map(str, args), "--no-progress", "--max-iter", "200"])


def test_duplicates_are_an_error_or_merged_before_the_split(tmp_path, capsys):
    path = tmp_path / "r.tsv"
    data = _star_file(path, repeat=40)
    assert _run(path, "--out", tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert f"{path}: 40 (row, column) pair(s) are rated more than once" in err
    first = data.iloc[0]
    assert f"e.g. ({int(first.user)}, {int(first['item'])}) on lines [2, {len(data) - 40 + 2}]" in err
    assert "--duplicates mean" in err
    assert not (tmp_path / "o").exists()
    half = tmp_path / "half.tsv"
    data.iloc[:30].to_csv(half, sep="\t", index=False)
    with pytest.warns(RuntimeWarning, match="30 .* pair.s. are in both .* optimistic"):
        assert _run(path, "--test", half, "--out", tmp_path / "t", "--duplicates", "last") == 0
    assert _run(path, "--out", tmp_path / "o", "--duplicates", "mean") == 0
    preds = pd.read_csv(tmp_path / "o" / "predictions.csv")
    keys = preds["row"].astype(str) + ":" + preds["col"].astype(str)
    assert len(preds) == len(data) - 40 and keys.is_unique  # no pair in train and test
    merged = preds[(preds.row == first.user) & (preds.col == first["item"])]["value"].item()
    assert merged == (first.rating + 1.0) / 2


def test_outputs_refuse_an_existing_folder_and_follow_the_umask(tmp_path, capsys):
    path = tmp_path / "r.csv"
    _star_file(path, sep=",")
    out = tmp_path / "o"
    old = os.umask(0o022)
    try:
        assert _run(path, "--out", out) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {"predictions.csv": 0o644, "summary.json": 0o644, "curves.png": 0o644}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["preset"] == "ratings" and summary["test"]["rmse"] < 1.0
    preds = pd.read_csv(out / "predictions.csv")
    assert preds["prediction"].between(0.5, 5.0).all()  # clipped to the observed range
    before = (out / "summary.json").read_bytes()
    assert _run(path, "--out", out, "--seed", "1") == 1
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--force" in err
    assert (out / "summary.json").read_bytes() == before
    assert _run(path, "--out", out, "--seed", "1", "--force") == 0


def test_separators_detected_or_a_clear_error(tmp_path, capsys):
    semi = tmp_path / "r.csv"
    data = _star_file(semi, sep=";", decimal=",")  # 4,5 stars: the European convention
    assert _run(semi, "--out", tmp_path / "o") == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_train"] + summary["n_test"] == len(data) and summary["shape"] == [30, 40]
    odd = tmp_path / "odd.txt"
    odd.write_text("1/2/5\n2/3/4\n")
    assert _run(odd, "--out", tmp_path / "o2") == 1
    assert f"ratings file {odd}, line 1: cannot tell the field separator" in capsys.readouterr().err
    stated = load_ratings(odd, sep="/")
    assert stated["value"].tolist() == [5.0, 4.0] and stated["col"].tolist() == [2, 3]


def test_constant_ratings_are_explained_not_a_crash(tmp_path, capsys):
    path = tmp_path / "const.tsv"
    _star_file(path).assign(rating=4.0).to_csv(path, sep="\t", index=False)
    with pytest.warns(RuntimeWarning, match="constant or fully explained by the bias terms"):
        assert _run(path, "--out", tmp_path / "o") == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["test"]["rmse"] == 0.0 and summary["iterations"] == 0


def test_large_files_in_chunks_and_the_binary_cache(tmp_path, monkeypatch):
    """Chunked parsing gives the table of one read; the cache gives it back without parsing, and
    is ignored once the file changes."""
    import lowdim.datasets.ratings as ratings

    path = tmp_path / "r.csv"
    data = _star_file(path, sep=",")
    whole = load_ratings(path)
    monkeypatch.setattr(ratings, "CHUNK_BYTES", 100)  # this small file is "large" now
    monkeypatch.setattr(ratings, "_CHUNK_LINES", 97)
    chunked = load_ratings(path, cache=True, progress=False)
    pd.testing.assert_frame_equal(chunked, whole)
    assert (tmp_path / "r.csv.lowdim-cache" / "meta.json").is_file()

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed although the cache is valid")

    monkeypatch.setattr(ratings, "_parse", no_parse)
    cached = load_ratings(path, cache=True)
    pd.testing.assert_frame_equal(cached, whole)
    assert cached.attrs["first_line"] == 2 and len(cached) == len(data)
    monkeypatch.undo()
    data.iloc[:10].to_csv(path, index=False)  # the file changed: parsed again, cache renewed
    assert len(load_ratings(path, cache=True)) == 10
    assert json.loads((tmp_path / "r.csv.lowdim-cache" / "meta.json").read_text())["n"] == 10
