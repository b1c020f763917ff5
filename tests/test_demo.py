"""``lowdim demo``: both models recover the matrix; the command writes its table, PNG and JSON."""

from __future__ import annotations

import json

import pytest

from lowdim.cli import main
from lowdim.demo import run_demo


def test_demo_full_and_compressed_recover_the_matrix():
    result = run_demo(size=60, rank=2, fraction=0.3, target_error=1e-4, max_iter=6000)
    full, comp = result["runs"]["full"], result["runs"]["compressed"]
    assert full["width"] == 60 and comp["width"] == 4
    assert full["error"] <= 1e-4 and comp["error"] <= 1e-4
    assert full["stop_reason"] == comp["stop_reason"] == "target_error"
    # the compressed model trains 2·(2r)·d basis numbers at rate γ and L (2r)² core numbers
    assert comp["trainable"] == 2 * 60 * 4 + 3 * 16
    assert full["trainable"] == 3 * 60 * 60
    # it follows the full-width dynamics (γ > 0 moves the bases a little): iterations to 1e-3 within 30%
    assert abs(comp["iters_to_1e-3"] - full["iters_to_1e-3"]) <= 0.3 * full["iters_to_1e-3"]


def test_demo_command_writes_outputs(tmp_path, capsys):
    code = main(["demo", "--size", "40", "--rank", "2", "--fraction", "0.4", "--target-error", "1e-3",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "compressed" in out and "full" in out
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["runs"]["compressed"]["error"] <= 1e-3
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_demo_rejects_impossible_compression():
    with pytest.raises(ValueError, match="d - 2r"):
        run_demo(size=10, rank=5, max_iter=10)
