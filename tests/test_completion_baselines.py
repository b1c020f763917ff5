"""Baselines share the estimator interface; AltMin recovers at the true rank; the CLI runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from lowdim.cli import main
from lowdim.completion import AltMin, BurerMonteiro, DeepMatrixCompletion, SoftImpute
from lowdim.datasets import completion_problem


def _err(est, pb):
    truth = pb.truth.numpy()
    return float(np.linalg.norm(est.complete() - truth) / np.linalg.norm(truth))


@pytest.fixture(scope="module")
def problem():
    return completion_problem(60, 80, 3, 0.35, random_state=0)


def test_altmin_exact_at_true_rank(problem):
    est = AltMin(rank=3, max_iter=100).fit((problem.rows, problem.cols), problem.values)
    assert _err(est, problem) < 1e-6
    assert est.loss_[-1] < 1e-12


def test_softimpute_and_burer_monteiro_improve_on_zero(problem):
    si = SoftImpute(shrinkage=0.02, max_rank=10, max_iter=60).fit(
        (problem.rows, problem.cols), problem.values
    )
    assert _err(si, problem) < 0.3
    assert si.rank_ <= 10
    bm = BurerMonteiro(rank=3, init_scale=1e-2, max_iter=1500, random_state=0).fit(
        (problem.rows, problem.cols), problem.values
    )
    assert _err(bm, problem) < 1e-2
    assert bm.model_.dims == [80, 3, 60]


@pytest.mark.parametrize("cls", [AltMin, SoftImpute, BurerMonteiro, DeepMatrixCompletion])
def test_same_interface(cls, problem):
    est = cls()
    assert clone(est).get_params() == est.get_params()
    df = pd.DataFrame({"row": problem.rows, "col": problem.cols, "value": problem.values})
    small = clone(est).set_params(max_iter=3)
    if "rank" in small.get_params():
        small.set_params(rank=3)
    if "max_rank" in small.get_params():
        small.set_params(max_rank=5)
    small.fit(df)
    pred = small.predict(df[["row", "col"]])
    assert pred.shape == (len(df),) and np.isfinite(pred).all()
    assert small.score(df) == pytest.approx(-small.rmse(df))
    assert small.mae(df) > 0
    with pytest.raises(ValueError, match="non-finite"):
        clone(est).fit((problem.rows, problem.cols), np.full(problem.values.shape, np.nan))


def test_baseline_bad_rank(problem):
    with pytest.raises(ValueError, match="smaller than"):
        AltMin(rank=60).fit((problem.rows, problem.cols), problem.values)


def test_cli_complete_writes_outputs(tmp_path, capsys):
    pb = completion_problem(40, 50, 2, 0.5, random_state=0)
    path = tmp_path / "ratings.tsv"
    pd.DataFrame({"u": pb.rows + 1, "i": pb.cols + 1, "r": 3 + pb.values * 10}).to_csv(
        path, sep="\t", header=False, index=False
    )
    out = tmp_path / "out"
    code = main(["complete", str(path), "--rank", "3", "--out", str(out), "--max-iter", "60",
                 "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "test" in text and "RMSE" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] + summary["n_test"] == len(pb.rows)
    assert summary["test"]["rmse"] > 0 and summary["iterations"] <= 60
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == len(pb.rows) and set(preds["split"]) == {"train", "test"}
    assert (out / "curves.png").stat().st_size > 1000


def test_cli_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("user,item,rating\n1,2,3\n1,3,nan\n")
    assert main(["complete", str(path), "--out", str(tmp_path / "o")]) == 1
    assert "not finite" in capsys.readouterr().err
    assert main(["complete", str(tmp_path / "missing.csv")]) == 1
