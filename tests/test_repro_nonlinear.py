"""lowdim.repro's nonlinear-network and collapse figures (seed 004 Sec. 4.2, seed 000 Sec. 4.2, the talk),
and the library pieces they run (lowdim.nonlinear training loops, orthogonal class data, Theorem 2's ε)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from lowdim import DivergenceError
from lowdim.collapse import theorem2_bound, theorem2_max_scale
from lowdim.datasets import orthogonal_classes
from lowdim.factorization import init_factor
from lowdim.nonlinear import (
    SideBySideRun,
    fit_least_squares,
    hybrid_network,
    track_weight,
    train_side_by_side,
    train_until_plateau,
)
from lowdim.repro import get_figure, run_figure, verdict_of


def test_004_fig7_collapse_and_theorem2(tmp_path):
    rec = run_figure("004-fig7", size="test", out=tmp_path)
    runs = rec["data"]["runs"]
    paper_runs = [r for r in runs if not r.get("theorem_run")]
    theorem = [r for r in runs if r.get("theorem_run")]
    assert len(paper_runs) == 4 and len(theorem) == 1
    for r in paper_runs:                       # D_l falls every layer, log-linearly
        assert all(q < 1 for q in r["ratios"]) and r["r2"] > 0.99 and r["decay_ratio"] < 0.2
        assert r["D"][0] == pytest.approx(11.25, rel=1e-9)   # orthonormal inputs: Tr Σ_W / Tr Σ_B = 45/4
    t = theorem[0]
    assert t["theorem2_conditions"] and t["rel_loss"] < 1e-12
    assert t["eps"] == pytest.approx(0.9 * theorem2_max_scale(5, 10, 50, t["depth"]))
    assert t["bound"] == pytest.approx(theorem2_bound(5, t["eps"]))
    assert max(t["ratios"]) <= t["bound"]       # (15) where its conditions hold
    assert rec["verdict"] == "held"
    spoiled = copy.deepcopy(rec["data"])        # the verdict follows the numbers
    spoiled["runs"][-1]["ratios"][-1] = 2 * spoiled["runs"][-1]["bound"]
    fig = get_figure("004-fig7")
    assert verdict_of(fig.check(spoiled, rec["settings"])) == "partly"


@pytest.fixture
def mnist_env(shared_data, monkeypatch):
    if not (shared_data / "mnist").is_dir():
        pytest.skip(f"{shared_data / 'mnist'} is absent")
    monkeypatch.setenv("LOWDIM_DATA", str(shared_data))


def test_000_fig1_low_dimensional_update(tmp_path, mnist_env):
    rec = run_figure("000-fig1", size="test", out=tmp_path)
    mlp = rec["data"]["mlp"]
    sv = mlp["singular_values"]
    assert sv == sorted(sv, reverse=True) and mlp["shape"] == [128, 128]
    assert mlp["energy_top_r"] > 0.95 and sv[10] < 0.1 * sv[0]
    assert len(mlp["subspace_distance"]) == len(mlp["steps"]) - 2
    assert rec["verdict"] == "held"


def test_mnist_figures_name_the_missing_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWDIM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="trains on MNIST.*LOWDIM_DATA"):
        run_figure("002-hybrid", size="test", out=tmp_path)


def test_orthogonal_classes_and_theorem2_scale():
    x, labels = orthogonal_classes(5, 10, random_state=3)
    assert torch.allclose(x @ x.T, torch.eye(50, dtype=x.dtype), atol=1e-12)
    assert torch.equal(x, init_factor(50, 50, 1.0, generator=torch.Generator().manual_seed(3)))
    assert labels.bincount().tolist() == [10] * 5
    wide, _ = orthogonal_classes(3, 4, 30, random_state=0)
    assert wide.shape == (12, 30) and torch.allclose(wide @ wide.T, torch.eye(12, dtype=x.dtype), atol=1e-12)
    with pytest.raises(ValueError, match="dim"):
        orthogonal_classes(5, 10, 20)
    k, n, d, depth = 5, 10, 50, 6   # the three conditions of Theorem 2 (ii), written out
    direct = min(n ** (1 / 12) / (math.sqrt(180) * 45 ** 0.25), (n / 2) ** (1 / 24) / 45 ** 0.25,
                 1 / math.sqrt(2 * (math.sqrt(k) + 1)))
    assert theorem2_max_scale(k, n, d, depth) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match="d > 2K"):
        theorem2_max_scale(5, 10, 10, 4)


def test_fit_least_squares_reaches_the_tolerance_or_reports_divergence():
    torch.manual_seed(0)
    x, y = torch.eye(6, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    net = torch.nn.Linear(6, 3, bias=False, dtype=torch.float64)
    iters, rel = fit_least_squares(net, x, y, lr=0.5, tol=1e-10)
    with torch.no_grad():
        assert rel < 1e-10 and float((net(x) - y).square().sum()) < 1e-9 * float(y.square().sum())
    assert iters < 100
    with pytest.raises(DivergenceError, match="smaller lr"):
        fit_least_squares(torch.nn.Linear(6, 3, dtype=torch.float64), 100 * x, y, lr=10.0)


def test_train_side_by_side_gives_twins_the_same_curve():
    torch.manual_seed(0)
    x, y = torch.randn(96, 5), torch.randint(0, 3, (96,))
    a = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    b = copy.deepcopy(a)
    runs = [SideBySideRun(name, m, torch.optim.SGD(m.parameters(), lr=0.2), seconds=0.5)
            for name, m in (("a", a), ("b", b))]
    train_side_by_side(runs, x, y, epochs=3, eval_every=5, batch_size=16,
                       generator=torch.Generator().manual_seed(1),
                       evaluate=lambda m: float((m(x).argmax(1) == y).float().mean()))
    assert [c[0] for c in runs[0].curve] == [5, 10, 15, 18]          # every 5 steps and the last (3 × 6)
    assert [c[2] for c in runs[0].curve] == [c[2] for c in runs[1].curve]   # same batches, same numbers
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert len(runs[0].step_seconds) == 18 and runs[0].seconds > 0.5   # building time + its own steps
    final = runs[0].curve[-1][2]
    assert runs[0].first_reaching(0.99) == next(t for _, t, m in runs[0].curve if m >= 0.99 * final)


def test_train_until_plateau_keeps_the_best_state_and_track_weight_snapshots():
    torch.manual_seed(0)
    x, y = torch.randn(128, 6), torch.randint(0, 2, (128,))
    net = torch.nn.Linear(6, 2)
    scores = []

    def validate(m):
        scores.append(float((m(x).argmax(1) == y).float().mean()))
        return scores[-1]

    out = train_until_plateau(net, torch.optim.SGD(net.parameters(), lr=0.5), x, y, validate, patience=2,
                              min_delta=0.01, batch_size=32, max_rounds=40)
    kept = -1.0
    for sc in scores:                                 # a score is kept when it beats the last kept by > 0.01
        kept = sc if sc > kept + 0.01 else kept
    assert out.best == kept and validate(net) == out.best              # best validated state restored
    assert out.converged and out.epochs == len(scores) - 1 and out.steps == 4 * out.epochs
    with pytest.raises(DivergenceError, match="before its first validation"):
        bad = torch.nn.Linear(6, 2)
        train_until_plateau(bad, torch.optim.SGD(bad.parameters(), lr=1e30), 1e20 * x, y, validate,
                            batch_size=32)
    w0 = net.weight.detach().clone()
    snaps, loss = track_weight(net, net.weight, torch.optim.SGD(net.parameters(), lr=0.1), x, y, epochs=2,
                               every=3, batch_size=32)
    assert len(snaps) == 1 + 8 // 3 and math.isfinite(loss)      # W(0), then steps 3 and 6 of 8
    assert torch.equal(snaps[0], w0) and not torch.equal(snaps[1], w0)
    assert not torch.equal(snaps[-1], net.weight.detach())       # steps 7 and 8 came after the last


def test_hybrid_network_layout():
    net = hybrid_network(20, 8, 3, nonlinear_layers=2, linear_layers=3)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Linear", "Linear", "Linear"]
    assert net(torch.zeros(4, 20)).shape == (4, 3)
