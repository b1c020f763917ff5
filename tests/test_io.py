"""Atomic writers: results follow the umask (not tempfile's 0600), are whole or absent."""

from __future__ import annotations

import os
import stat

import pytest

from lowdim._io import atomic_savefig, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _recreate_private(tmp):
    """A writer that replaces the file it is given by a new 0600 one (as safetensors does)."""
    os.unlink(tmp)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))


def test_every_writer_follows_the_umask(tmp_path, umask_022):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    written = [
        atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01"),
        atomic_write_text(tmp_path / "b.txt", "text"),
        atomic_write_json(tmp_path / "c.json", {"x": 1.0}),
        atomic_savefig(tmp_path / "d.png", fig),
        atomic_write(tmp_path / "e.txt", lambda tmp: open(tmp, "w").write("callable")),
        atomic_write(tmp_path / "f.bin", _recreate_private),
    ]
    plt.close(fig)
    assert [_mode(p) for p in written] == [0o644] * 6
    os.umask(0o077)
    assert _mode(atomic_write_text(tmp_path / "private.txt", "x")) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_failed_write_leaves_the_old_file(tmp_path):
    target = atomic_write_text(tmp_path / "r.json", "old")

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]


def test_strict_json_and_saved_activation_bytes():
    """Benchmark JSON lines stay standard JSON; saved activations count each storage once."""
    import json
    import math

    import torch

    from lowdim._io import strict_json
    from lowdim.memory import saved_activation_bytes

    line = json.dumps(strict_json({"r": {"16": [float("nan"), 0.5]}, "b": (math.inf, 1)}))
    assert line == '{"r": {"16": [null, 0.5]}, "b": [null, 1]}'
    x = torch.ones(10, 4, requires_grad=True)
    y = torch.ones(10, 4, requires_grad=True)
    out, saved = saved_activation_bytes(lambda: (x * x).sum())
    assert saved == 10 * 4 * 4 and float(out) == 40.0  # x is saved twice, one storage
    assert saved_activation_bytes(lambda: (x * y).sum())[1] == 2 * 10 * 4 * 4
