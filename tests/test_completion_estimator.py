"""DeepMatrixCompletion: recovery, depth vs overfitting, γ ablation, conventions, bad input, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from lowdim.completion import DeepMatrixCompletion
from lowdim.datasets import completion_problem


def _held_out_error(est, pb):
    truth = pb.truth.numpy()
    mask = np.zeros(truth.shape, dtype=bool)
    mask[pb.rows, pb.cols] = True
    diff = est.complete() - truth
    return float(np.linalg.norm(diff[~mask]) / np.linalg.norm(truth[~mask]))


def _train_error(est, pb):
    pred = est.predict(pb.rows, pb.cols)
    return float(np.linalg.norm(pred - pb.values) / np.linalg.norm(pb.values))


@pytest.fixture(scope="module")
def fig2_problem():
    """Seed 003 Fig. 2 (left) style: 200×300, rank 3, 30% observed, rank bound 10."""
    return completion_problem(200, 300, 3, 0.3, random_state=0)


@pytest.mark.parametrize("method", ["compressed", "spectral"])
def test_depth3_recovers_with_overestimated_rank(fig2_problem, method):
    pb = fig2_problem
    est = DeepMatrixCompletion(rank=10, depth=3, method=method, max_iter=4000, random_state=0)
    est.fit((pb.rows, pb.cols), pb.values)
    assert _held_out_error(est, pb) < 1e-3


def test_depth2_overfits_with_overestimated_rank(fig2_problem):
    """Same estimator with depth 2: fits the observed entries, fails on the held-out ones."""
    pb = fig2_problem
    est = DeepMatrixCompletion(rank=10, depth=2, method="spectral", max_iter=3000, random_state=0)
    est.fit((pb.rows, pb.cols), pb.values)
    assert _train_error(est, pb) < 1e-2
    assert _held_out_error(est, pb) > 5e-2


def test_frozen_bases_stall_discrepant_rate_converges():
    """Seed 003 Fig. 5: γ = 0 (bases frozen at the masked construction) plateaus, γ > 0 recovers."""
    pb = completion_problem(100, 150, 3, 0.3, random_state=0)
    errs = {}
    for gamma in (0.0, 0.15):
        est = DeepMatrixCompletion(
            rank=5, outer_ratio=gamma, init_scale=1e-2, max_iter=2000, random_state=0
        ).fit((pb.rows, pb.cols), pb.values)
        errs[gamma] = _held_out_error(est, pb)
    assert errs[0.0] > 0.1
    assert errs[0.15] < 1e-3


# ----------------------------------------------------------------------------- conventions
def test_sklearn_conventions():
    est = DeepMatrixCompletion(rank=3, depth=4, method="spectral", learning_rate=0.1)
    params = est.get_params()
    assert params["rank"] == 3 and params["depth"] == 4 and params["method"] == "spectral"
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    assert est.set_params(rank=5, bias="both") is est and est.rank == 5 and est.bias == "both"
    with pytest.raises(NotFittedError):
        est.predict([0], [0])
    pb = completion_problem(20, 25, 2, 0.5, random_state=0)
    fitted = DeepMatrixCompletion(rank=2, max_iter=20, random_state=0)
    assert fitted.fit((pb.rows, pb.cols), pb.values) is fitted
    assert not hasattr(clone(fitted), "model_")
    assert {"model_", "history_", "scale_", "shape_", "n_iter_"} <= set(vars(fitted))
    assert fitted.score((pb.rows, pb.cols), pb.values) == pytest.approx(
        -fitted.rmse((pb.rows, pb.cols), pb.values)
    )


def test_input_forms_agree():
    pb = completion_problem(15, 20, 2, 0.5, random_state=1)
    kw = dict(rank=2, max_iter=30, random_state=0, init_scale=0.1)
    ref = DeepMatrixCompletion(**kw).fit((pb.rows, pb.cols), pb.values)
    sp = scipy.sparse.coo_matrix((pb.values, (pb.rows, pb.cols)), shape=(15, 20))
    dense = np.full((15, 20), np.nan)
    dense[pb.rows, pb.cols] = pb.values
    arr = np.column_stack([pb.rows, pb.cols])
    df = pd.DataFrame({"row": [f"u{i:02d}" for i in pb.rows], "col": pb.cols + 100,
                       "value": pb.values})
    q_rows, q_cols = np.array([0, 3, 14]), np.array([19, 0, 7])
    expected = ref.predict(q_rows, q_cols)
    for X, y in [(sp, None), (dense, None), (arr, pb.values)]:
        got = DeepMatrixCompletion(**kw).fit(X, y).predict(q_rows, q_cols)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    labelled = DeepMatrixCompletion(**kw).fit(df)
    got = labelled.predict([f"u{i:02d}" for i in q_rows], q_cols + 100)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert labelled.complete().shape == (15, 20)


def test_biases_and_scale_make_defaults_scale_free():
    """Ratings on a 1..5-like scale: the fit in normalized units is the same problem."""
    pb = completion_problem(30, 40, 2, 0.5, random_state=2)
    kw = dict(rank=2, max_iter=200, random_state=0, init_scale=0.1)
    a = DeepMatrixCompletion(**kw).fit((pb.rows, pb.cols), pb.values)
    b = DeepMatrixCompletion(**kw).fit((pb.rows, pb.cols), 1000.0 * pb.values)
    np.testing.assert_allclose(b.predict(pb.rows, pb.cols), 1000 * a.predict(pb.rows, pb.cols),
                               rtol=1e-9, atol=1e-9)
    c = DeepMatrixCompletion(bias="both", **kw).fit((pb.rows, pb.cols), 3.5 + pb.values)
    assert c.bias_mean_ == pytest.approx(3.5 + pb.values.mean())
    assert c.rmse((pb.rows, pb.cols), 3.5 + pb.values) < 0.5 * np.std(pb.values)


def test_early_stopping_keeps_best_iterate():
    pb = completion_problem(40, 50, 2, 0.4, noise=0.5, random_state=3)
    est = DeepMatrixCompletion(rank=8, depth=2, method="spectral", validation_fraction=0.2,
                               n_iter_no_change=5, eval_every=10, max_iter=3000, random_state=0)
    est.fit((pb.rows, pb.cols), pb.values)
    assert est.history_.stop_reason == "callback"
    best = int(np.argmin(est.validation_rmse_))
    assert est.best_iteration_ == est.validation_iterations_[best]
    assert est.n_iter_ == est.validation_iterations_[-1] == est.best_iteration_ + 5 * 10


def _stars(seed=0):
    pb = completion_problem(60, 80, 2, 0.5, noise=0.1, random_state=seed)
    stars = np.clip(np.round(3 + 1.5 * pb.values / pb.values.std()), 1, 5)
    return pd.DataFrame({"user": pb.rows, "item": pb.cols, "rating": stars})


def test_refit_is_kept_only_if_it_fits_the_validation_entries(monkeypatch):
    """The refit on all entries replaces the early-stopped model only when it fits the former
    validation entries at least as well as they were predicted held out; else a warning and the
    early-stopped model stays, bit for bit."""
    df = _stars()
    kw = dict(random_state=0, max_iter=400)
    early = DeepMatrixCompletion(refit=False, **kw).fit(df)
    refit = DeepMatrixCompletion(**kw).fit(df)
    assert refit.refitted_ and not early.refitted_
    assert refit.n_iter_ == refit.best_iteration_ == early.best_iteration_
    assert refit.validation_rmse_ == early.validation_rmse_ and refit.settings_["refit"]
    assert not np.array_equal(refit.left_, early.left_)
    # the refit trains on the validation entries too: they are fitted better than held out
    vr, vc, vv = early._validation_entries
    assert np.sqrt(np.mean((refit.predict(vr, vc) - vv) ** 2)) < min(early.validation_rmse_)
    # a refit that went wrong (here: its low-rank term blown up 30 times) is refused
    original = DeepMatrixCompletion._fit_run

    def blown_refit(self, *args):
        original(self, *args)
        if self._refitting is not None:
            self.left_ = 30 * self.left_

    monkeypatch.setattr(DeepMatrixCompletion, "_fit_run", blown_refit)
    with pytest.warns(RuntimeWarning, match="keeping the early-stopped model"):
        kept = DeepMatrixCompletion(**kw).fit(df)
    assert not kept.refitted_ and kept.n_iter_ == early.n_iter_
    np.testing.assert_array_equal(kept.left_, early.left_)
    np.testing.assert_array_equal(kept.predict(df), early.predict(df))


def test_divergence_after_the_best_iterate_keeps_it():
    """η = 0.08 with implicit feedback blows up on these ratings after its best validated
    iterate: the run ends there with a warning (as a rising validation error would end it)."""
    df = _stars()
    with pytest.warns(RuntimeWarning, match="non-finite.*Kept the best validated iterate"):
        est = DeepMatrixCompletion(learning_rate=0.08, n_iter_no_change=1000, refit=False,
                                   random_state=0).fit(df)
    assert est.history_.stop_reason == "diverged" and est.best_iteration_ < est.n_iter_
    bias_only = DeepMatrixCompletion(max_iter=0, random_state=0).fit(df)
    assert np.isfinite(est.left_).all() and est.rmse(df) < 0.6 * bias_only.rmse(df)
    with pytest.raises(FloatingPointError, match="diverged"):  # no validation: nothing to keep
        DeepMatrixCompletion(learning_rate=0.08, validation_fraction=None, max_iter=1000,
                             random_state=0).fit(df)


# ----------------------------------------------------------------------------- bad input
def _obs():
    return np.array([0, 1, 2, 2]), np.array([1, 0, 2, 1]), np.array([1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda r, c, v: ((r, c), np.array([1.0, np.nan, 3.0, 4.0])), "non-finite"),
        (lambda r, c, v: ((r, c), np.array([1.0, np.inf, 3.0, 4.0])), "non-finite"),
        (lambda r, c, v: ((np.array([0, 1, 1, 2]), np.array([1, 0, 0, 1])), v), "more than once"),
        (lambda r, c, v: ((np.array([0, -1, 2, 2]), c), v), "non-negative"),
        (lambda r, c, v: ((r, c), v[:3]), "values"),
        (lambda r, c, v: ((np.array([], int), np.array([], int)), np.array([])), "no observed"),
        (lambda r, c, v: ((np.zeros(4, int), np.arange(4)), v), "at least 2 rows and 2 columns"),
        (lambda r, c, v: ((np.arange(4), np.zeros(4, int)), v), "at least 2 rows and 2 columns"),
        (lambda r, c, v: (np.full((3, 3), np.nan), None), "no observed"),
        (lambda r, c, v: (pd.DataFrame({"a": [1]}), None), "three columns"),
        (lambda r, c, v: (np.ones(5), None), "2-D"),
    ],
)
def test_bad_input_rejected(make, match):
    X, y = make(*_obs())
    with pytest.raises(ValueError, match=match):
        DeepMatrixCompletion(rank=1, max_iter=1).fit(X, y)


def test_out_of_range_and_duplicate_policy():
    r, c, v = _obs()
    with pytest.raises(ValueError, match="out of range"):
        DeepMatrixCompletion(rank=1, max_iter=1).fit((r, c), v, shape=(2, 5))
    with pytest.raises(ValueError, match="single row or a single column"):
        DeepMatrixCompletion(rank=1, max_iter=1).fit((np.zeros(4, int), np.arange(4)), v, shape=(5, 5))
    with pytest.raises(ValueError, match="single row or a single column"):
        DeepMatrixCompletion(rank=1, max_iter=1).fit((np.arange(4), np.ones(4, int)), v, shape=(5, 5))
    rr, cc = np.array([0, 1, 1, 2, 3]), np.array([1, 0, 0, 2, 3])
    vv = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    est = DeepMatrixCompletion(rank=1, max_iter=1, duplicates="mean").fit((rr, cc), vv)
    assert est.shape_ == (4, 4)
    with pytest.raises(ValueError, match="duplicates must be one of"):
        DeepMatrixCompletion(rank=1, max_iter=1, duplicates="sum").fit((rr, cc), vv)


def test_rank_too_large_and_bad_hyperparameters():
    pb = completion_problem(10, 12, 2, 0.5, random_state=0)
    X, y = (pb.rows, pb.cols), pb.values
    with pytest.raises(ValueError, match=r"too large.*d - 2r > 0"):
        DeepMatrixCompletion(rank=5).fit(X, y)
    for kw, match in [
        (dict(method="deep"), "method must be"),
        (dict(depth=0), "depth"),
        (dict(init_scale=0.0), "init_scale"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(bias="user"), "bias must be"),
        (dict(method="spectral", depth=1), "depth >= 2"),
        (dict(validation_fraction=1.5), "validation_fraction"),
    ]:
        with pytest.raises(ValueError, match=match):
            DeepMatrixCompletion(rank=2, **kw).fit(X, y)


def test_divergence_is_a_clear_error():
    pb = completion_problem(20, 25, 2, 0.5, random_state=0)
    with pytest.raises(FloatingPointError, match=r"lr=.*smaller step size"):
        DeepMatrixCompletion(rank=2, learning_rate=1e3, init_scale=0.5, max_iter=500).fit(
            (pb.rows, pb.cols), pb.values
        )


def test_unknown_labels_and_oversized_complete():
    df = pd.DataFrame({"row": ["a", "a", "b", "c"], "col": [1, 2, 2, 3], "value": [4.0, 3, 5, 1]})
    est = DeepMatrixCompletion(rank=1, max_iter=5, bias="both", unknown="error").fit(df)
    with pytest.raises(ValueError, match="not seen in fit"):
        est.predict(["zz"], [1])
    est.set_params(unknown="fallback")
    pred = est.predict(["zz", "a"], [1, 99])
    assert pred[0] == pytest.approx(est.bias_mean_ + est.col_bias_[0])
    assert pred[1] == pytest.approx(est.bias_mean_ + est.row_bias_[0])
    with pytest.raises(MemoryError, match="predict"):
        est.complete(max_entries=5)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_resume_gives_identical_result(tmp_path):
    pb = completion_problem(30, 40, 2, 0.4, random_state=4)
    X, y = (pb.rows, pb.cols), pb.values
    kw = dict(rank=3, init_scale=1e-2, momentum=0.5, validation_fraction=0.1,
              n_iter_no_change=1000, eval_every=10, checkpoint_every=50, random_state=0)
    ref = DeepMatrixCompletion(max_iter=300, **kw).fit(X, y)
    # an interrupted run (stopped at 170: checkpoint at 150 and at its end) ...
    DeepMatrixCompletion(max_iter=170, checkpoint_dir=str(tmp_path), **kw).fit(X, y)
    assert (tmp_path / "checkpoint.safetensors").is_file()
    # ... resumed in a fresh estimator
    res = DeepMatrixCompletion(max_iter=300, checkpoint_dir=str(tmp_path), **kw).fit(X, y)
    assert res.n_iter_ == ref.n_iter_ == 300
    for a, b in zip(res.model_.factors, ref.model_.factors):
        assert torch.equal(a, b)
    assert res.history_.loss == ref.history_.loss
    assert res.validation_rmse_ == ref.validation_rmse_
    np.testing.assert_array_equal(res.predict(*X), ref.predict(*X))
    # a checkpoint of other data is refused, not silently reused
    with pytest.raises(ValueError, match="other data or hyperparameters"):
        DeepMatrixCompletion(max_iter=300, checkpoint_dir=str(tmp_path), **kw).fit(X, 2 * y)
