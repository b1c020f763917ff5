"""MNIST IDX loading (lowdim.datasets.mnist): real files when the shared data is there, a written
IDX file always, and the error when files are missing."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from lowdim.datasets.mnist import load_mnist, read_idx


def test_read_idx_roundtrip(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + np.array(data.shape, ">u4").tobytes() + data.tobytes()
    (tmp_path / "a.idx").write_bytes(raw)
    with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
        f.write(raw)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), data)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), data)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


def test_missing_files_say_where_to_look(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass root= the folder holding the four IDX"):
        load_mnist("test", root=tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist("valid", root=tmp_path)


def test_shared_mnist(shared_data):
    if not (shared_data / "mnist").is_dir():
        pytest.skip(f"{shared_data / 'mnist'} is absent")
    test = load_mnist("test", root=shared_data)
    assert test.images.shape == (10000, 784) and test.images.dtype == np.float32
    assert 0.0 <= test.images.min() and test.images.max() == 1.0
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
