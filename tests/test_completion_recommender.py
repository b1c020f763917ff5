"""Recommender use of the completers: presets, input forms, recommend / similar_items / fold_in,
save / load, model selection and scikit-learn's estimator checks."""

from __future__ import annotations

import copy
import os
import stat
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.utils import estimator_checks

from lowdim.completion import AltMin, BurerMonteiro, DeepMatrixCompletion, SoftImpute
from lowdim.datasets import completion_problem


def _ratings(m=60, n=80, fraction=0.5, seed=0) -> pd.DataFrame:
    """1–5 star ratings from a rank-2 matrix (user labels are strings, items ids from 1000)."""
    pb = completion_problem(m, n, 2, fraction, noise=0.1, random_state=seed)
    stars = np.clip(np.round(3 + 1.5 * pb.values / pb.values.std()), 1, 5)
    return pd.DataFrame({"user": [f"u{i:02d}" for i in pb.rows], "item": pb.cols + 1000,
                         "rating": stars})


@pytest.fixture(scope="module")
def ratings():
    return _ratings()


@pytest.fixture(scope="module")
def fitted(ratings):
    return DeepMatrixCompletion(random_state=0).fit(ratings)


# ----------------------------------------------------------------------------- defaults
def test_preset_auto_reads_ratings_and_exact_data(fitted, ratings):
    st = fitted.settings_
    assert (st["preset"], st["method"], st["bias"], st["clip"]) == ("ratings", "spectral", "both", True)
    assert st["validation_fraction"] == 0.1 and st["rank"] == 40
    assert (st["implicit"], st["side_weight"], st["refit"]) == (5.0, 3.0, True)
    # early stopping watched the first run; the refit on all entries ran to its best iteration
    its = fitted.validation_iterations_
    assert its == list(range(0, its[-1] + 1, 2)) and fitted.refitted_
    assert fitted.n_iter_ == fitted.best_iteration_ == its[int(np.argmin(fitted.validation_rmse_))]
    pred = fitted.complete()
    assert pred.min() >= 1 and pred.max() <= 5
    bias_only = DeepMatrixCompletion(max_iter=0, random_state=0).fit(ratings)
    assert fitted.rmse(ratings) < 0.8 * bias_only.rmse(ratings)
    pb = completion_problem(30, 40, 2, 0.5, random_state=0)
    exact = DeepMatrixCompletion(rank=2, max_iter=10).fit((pb.rows, pb.cols), pb.values)
    assert exact.settings_["preset"] == "exact" and exact.clip_range_ is None
    assert exact.settings_["method"] == "compressed" and exact.settings_["bias"] == "none"


def test_range_guard_and_constant_data(fitted, ratings):
    """A fit whose predictions leave the data's range by far warns with advice (checked at the
    end of every fit; here on a copy whose low-rank term is blown up 30 times)."""
    blown = copy.deepcopy(fitted)
    blown.left_ = 30 * blown.left_
    r, c = blown.seen_.nonzero()
    with pytest.warns(RuntimeWarning, match=r"overfits or diverges.*validation_fraction=0.1"):
        blown._check_range(r, c, ratings["rating"].to_numpy())
    const = ratings.assign(rating=4.0)
    with pytest.warns(RuntimeWarning, match="constant or fully explained by the bias"):
        est = DeepMatrixCompletion().fit(const)
    assert est.n_iter_ == 0 and np.allclose(est.complete(), 4.0)


# ----------------------------------------------------------------------------- input forms
def test_dataframe_columns_by_name_triplets_and_sparse_ids(fitted, ratings):
    shuffled = ratings[["rating", "item", "user"]]
    assert fitted.rmse(shuffled) == fitted.rmse(ratings)
    np.testing.assert_array_equal(fitted.predict(ratings[["item", "user"]]),
                                  fitted.predict(ratings[["user", "item"]]))
    with pytest.raises(ValueError, match="by name but no"):
        fitted.rmse(ratings.rename(columns={"rating": "stars"}))
    pb = completion_problem(20, 25, 2, 0.6, random_state=0)
    kw = dict(rank=2, max_iter=30, init_scale=0.1, random_state=0)
    triplets = np.column_stack([pb.rows, pb.cols, pb.values])
    a = DeepMatrixCompletion(**kw).fit(triplets)
    b = DeepMatrixCompletion(**kw).fit((pb.rows, pb.cols), pb.values)
    assert a.shape_ == (20, 25) and a.rmse(triplets) == b.rmse((pb.rows, pb.cols), pb.values)
    big = DeepMatrixCompletion(**kw).fit((pb.rows * 10**8 + 7, pb.cols), pb.values)
    assert big.shape_ == (20, 25)  # ids near 2e9 are encoded as labels: no 16 GiB allocation
    np.testing.assert_allclose(big.predict(pb.rows * 10**8 + 7, pb.cols),
                               b.predict(pb.rows, pb.cols), rtol=1e-10)


# ----------------------------------------------------------------------------- recommender
def test_recommend_is_vectorized_and_excludes_seen(fitted, ratings):
    users = ["u00", "u07", "u33"]
    top = fitted.recommend(users, n=5)
    assert list(top.columns) == ["user", "item", "score", "rank"] and len(top) == 15
    for user in users:
        mine = top[top.user == user]
        single = fitted.recommend(user, n=5)
        assert mine["item"].tolist() == single["item"].tolist()
        np.testing.assert_allclose(mine["score"], fitted.predict([user] * 5, mine["item"]))
        assert mine["score"].is_monotonic_decreasing
        rated = set(ratings.loc[ratings.user == user, "item"])
        assert not rated & set(mine["item"])
        everything = fitted.recommend(user, n=80, exclude_seen=False)
        assert len(everything) == 80 and rated & set(everything["item"])
    newcomer = fitted.recommend("nobody", n=3)  # unknown="fallback": the best-liked items
    assert newcomer["item"].tolist() == list(fitted.col_labels_[np.argsort(-fitted.col_bias_)[:3]])


def test_similar_items_are_cosines_of_the_completed_columns(fitted):
    sim = fitted.similar_items([1000, 1005], n=4)
    assert len(sim) == 8 and not (sim["item"] == sim["similar"]).any()
    low_rank = fitted.left_ @ fitted.right_
    unit = low_rank / np.linalg.norm(low_rank, axis=0)
    cols = fitted.col_labels_.get_indexer(sim["similar"])
    own = fitted.col_labels_.get_indexer(sim["item"])
    np.testing.assert_allclose(sim["similarity"], np.sum(unit[:, own] * unit[:, cols], axis=0),
                               atol=1e-10)


def test_fold_in_a_new_user_recovers_their_row():
    pb = completion_problem(80, 100, 2, 0.4, random_state=3)
    df = pd.DataFrame({"row": pb.rows, "col": pb.cols, "value": pb.values})
    est = DeepMatrixCompletion(rank=4, random_state=0).fit(df[df.row != 0])
    mine = df[df.row == 0]
    assert est.fold_in(mine.col, mine.value, user=0, reg=1e-8) == 0
    truth = pb.truth.numpy()[0]
    err = np.linalg.norm(est.predict(np.zeros(100, int), np.arange(100)) - truth)
    assert err / np.linalg.norm(truth) < 1e-3
    assert not set(est.recommend(0, n=10)["item"]) & set(mine.col)
    with pytest.raises(ValueError, match="new user label"):
        est.fold_in(mine.col, mine.value, user=5)


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip(fitted, ratings, tmp_path):
    old = os.umask(0o022)
    try:
        path = fitted.save(tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    loaded = DeepMatrixCompletion.load(path)
    assert loaded.get_params() == fitted.get_params() and loaded.settings_ == fitted.settings_
    assert list(loaded.row_labels_) == list(fitted.row_labels_)
    np.testing.assert_array_equal(loaded.predict(ratings), fitted.predict(ratings))
    pd.testing.assert_frame_equal(loaded.recommend(["u01", "zz"]), fitted.recommend(["u01", "zz"]))
    with pytest.raises(ValueError, match="not a AltMin"):
        AltMin.load(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a lowdim completion model file"):
        DeepMatrixCompletion.load(bad)
    baseline = AltMin(rank=2, max_iter=5, bias="both").fit(ratings)
    again = AltMin.load(baseline.save(tmp_path / "altmin.safetensors"))
    np.testing.assert_array_equal(again.predict(ratings), baseline.predict(ratings))


def test_load_then_warm_start_continues_the_run_exactly(ratings, tmp_path):
    """save at 30 iterations, load in a fresh estimator, warm_start to 60 == one run of 60: the
    same factors, losses and validation curve (momentum buffers and early-stopping record kept)."""
    kw = dict(random_state=0, momentum=0.5, n_iter_no_change=1000, refit=False)
    ref = DeepMatrixCompletion(max_iter=60, **kw).fit(ratings)
    part = DeepMatrixCompletion(max_iter=30, **kw).fit(ratings)
    path = part.save(tmp_path / "part.safetensors")
    resumed = DeepMatrixCompletion.load(path).set_params(warm_start=True, max_iter=60)
    resumed.fit(ratings)
    assert resumed.n_iter_ == ref.n_iter_ == 60
    assert resumed.history_.loss == ref.history_.loss and resumed.history_.iterations[0] == 0
    assert resumed.validation_rmse_ == ref.validation_rmse_ and len(ref.validation_rmse_) == 31
    np.testing.assert_array_equal(resumed.left_, ref.left_)
    np.testing.assert_array_equal(resumed.predict(ratings), ref.predict(ratings))
    # other data is refused with advice, not silently mixed in
    other = ratings.assign(rating=6 - ratings.rating)
    with pytest.raises(ValueError, match="other data or hyperparameters"):
        DeepMatrixCompletion.load(path).set_params(warm_start=True).fit(other)
    # with the default refit, warm_start continues the last run (on all entries): the same as
    # one run on all entries for as many iterations
    refitted = DeepMatrixCompletion(max_iter=20, random_state=0).fit(ratings)
    assert refitted.refitted_ and refitted.n_iter_ == refitted.best_iteration_
    more = DeepMatrixCompletion.load(refitted.save(tmp_path / "refit.safetensors"))
    more.set_params(warm_start=True, max_iter=refitted.n_iter_ + 10).fit(ratings)
    once = DeepMatrixCompletion(validation_fraction=None, max_iter=refitted.n_iter_ + 10,
                                random_state=0).fit(ratings)
    assert more.n_iter_ == once.n_iter_ and more.history_.loss == once.history_.loss
    np.testing.assert_array_equal(more.predict(ratings), once.predict(ratings))


# ----------------------------------------------------------------------------- model selection
def test_cross_validate_and_grid_search_have_no_nan_folds(ratings):
    est = DeepMatrixCompletion(rank=4, max_iter=200, random_state=0)
    cv = KFold(3, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failing fold would warn (error_score=nan)
        scores = cross_validate(est, ratings, cv=cv)["test_score"]
        search = GridSearchCV(est, {"rank": [2, 8]}, cv=cv).fit(ratings)
    assert np.isfinite(scores).all() and -1.0 < scores.mean() < -0.3
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


# ----------------------------------------------------------------------------- estimator checks
#: scikit-learn's common checks that do not apply: they feed ``X`` as an ``(n_samples,
#: n_features)`` matrix of real features with ``y`` (a completer's ``X`` is ``(row, column)``
#: index pairs, an (N, 3) triplet array or a matrix with NaN for missing entries), or expect
#: ``n_features_in_`` / feature-count checks that have no meaning for index pairs.
_FEATURE_MATRIX = "X is (row, column) index pairs, not a feature matrix"
NOT_APPLICABLE = {name: _FEATURE_MATRIX for name in (
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_regressors_train",
    "check_regressor_data_not_an_array", "check_regressors_no_decision_function",
    "check_supervised_y_2d", "check_regressors_int", "check_non_transformer_estimators_n_iter",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d", "check_requires_y_none", "check_complex_data",
    "check_estimators_empty_data_messages",
)}


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


def _checks():
    """scikit-learn's common checks of every completer, less those that do not apply (listed above)."""
    if not hasattr(estimator_checks, "estimator_checks_generator"):  # scikit-learn < 1.6
        return
    for est in (DeepMatrixCompletion(rank=1, max_iter=20), AltMin(rank=1, max_iter=3),
                SoftImpute(max_rank=1, max_iter=3), BurerMonteiro(rank=1, max_iter=20)):
        for estimator, check in estimator_checks.estimator_checks_generator(est):
            if _check_name(check) not in NOT_APPLICABLE:
                yield estimator, check


@pytest.mark.parametrize(("estimator", "check"), list(_checks()),
                         ids=lambda x: getattr(x, "func", x).__name__ if callable(x) else None)
def test_sklearn_compatible(estimator, check):
    check(estimator)
