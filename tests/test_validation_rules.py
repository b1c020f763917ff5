"""lowdim._validation: one message form for argument checks, used by train and the estimators."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowdim import DeepFactorization, FullObservation, train
from lowdim._validation import (
    check_choice,
    check_fraction,
    check_int,
    check_nonnegative,
    check_positive,
    fail,
)
from lowdim.completion import DeepMatrixCompletion
from lowdim.completion.estimator import DEFAULTS
from lowdim.datasets import completion_problem
from lowdim.defaults import default_gamma


def test_helpers_accept_and_convert():
    assert check_positive("x", 2) == 2.0 and isinstance(check_positive("x", 2), float)
    assert check_positive("x", np.float32(0.5)) == 0.5
    assert check_nonnegative("x", 0) == 0.0
    assert check_int("n", np.int64(3), 1) == 3 and isinstance(check_int("n", np.int64(3)), int)
    assert check_int("n", -4) == -4
    assert check_fraction("f", 0.25) == 0.25
    assert check_choice("c", "a", ("a", "b")) == "a"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_positive("lr", 0.0), "lr must be a positive finite number, got 0.0"),
        (lambda: check_positive("lr", -1), "lr must be a positive finite number, got -1"),
        (lambda: check_positive("lr", math.nan), "lr must be a positive finite number, got nan"),
        (lambda: check_positive("lr", math.inf), "lr must be a positive finite number, got inf"),
        (lambda: check_positive("lr", "0.1"), "lr must be a positive finite number, got '0.1'"),
        (lambda: check_positive("lr", True), "lr must be a positive finite number, got True"),
        (lambda: check_nonnegative("tol", -1e-3), "tol must be a non-negative finite number, got -0.001"),
        (lambda: check_nonnegative("tol", math.nan), "tol must be a non-negative finite number, got nan"),
        (lambda: check_int("rank", 0, 1), "rank must be an integer >= 1, got 0"),
        (lambda: check_int("rank", 2.0, 1), "rank must be an integer >= 1, got 2.0"),
        (lambda: check_int("rank", False, 0), "rank must be an integer >= 0, got False"),
        (lambda: check_int("n", "3"), "n must be an integer, got '3'"),
        (lambda: check_fraction("f", 1.0), "f must be a number in the open interval (0, 1), got 1.0"),
        (lambda: check_fraction("f", 0), "f must be a number in the open interval (0, 1), got 0"),
        (lambda: check_choice("bias", "user", ("none", "both")),
         "bias must be one of ('none', 'both'), got 'user'"),
    ],
)
def test_helpers_refuse_in_one_form(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_advice_is_appended():
    with pytest.raises(ValueError) as info:
        check_positive("max_time", 0, advice="or None for no budget")
    assert str(info.value) == "max_time must be a positive finite number, got 0; or None for no budget"
    err = fail("momentum", "in [0, 1)", 1.5, "heavy-ball momentum")
    assert isinstance(err, ValueError)
    assert str(err) == "momentum must be in [0, 1), got 1.5; heavy-ball momentum"


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(lr=0.0), "lr must be a positive finite number, got 0.0; lr is the step size"),
        (dict(lr=0.1, max_iter=-1), "max_iter must be an integer >= 0, got -1"),
        (dict(lr=0.1, max_iter=2.5), "max_iter must be an integer >= 0, got 2.5"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay must be a non-negative finite number"),
        (dict(lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
        (dict(lr=0.1, optimizer="sgd"), "optimizer must be one of .*got 'sgd'"),
        (dict(lr=0.1, eval_every=0), "eval_every must be an integer >= 1, got 0"),
        (dict(lr=0.1, tol=-1.0), "tol must be a non-negative finite number, got -1.0"),
        (dict(lr=0.1, max_time=0.0), "max_time must be a positive finite number, got 0.0"),
    ],
)
def test_train_uses_the_rules(kw, message):
    op = FullObservation(np.eye(4))
    with pytest.raises(ValueError, match=message):
        train(DeepFactorization([4, 4, 4]), op, **kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(rank=0), "rank must be an integer >= 1, got 0"),
        (dict(depth=2.0), "depth must be an integer >= 1, got 2.0"),
        (dict(init_scale=math.inf), "init_scale must be a positive finite number, got inf"),
        (dict(learning_rate=0), "learning_rate must be a positive finite number, got 0"),
        (dict(outer_ratio=-0.1), "outer_ratio must be a non-negative finite number, got -0.1"),
        (dict(tol=-1.0), "tol must be a non-negative finite number"),
        (dict(max_time=-1.0), "max_time must be a positive finite number, got -1.0; or None"),
        (dict(eval_every=0), "eval_every must be an integer >= 1, got 0"),
        (dict(validation_fraction=1.0), r"validation_fraction must be a number in the open interval"),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(unknown="skip"), "unknown must be one of"),
        (dict(bias_reg=-1.0), "bias_reg must be a non-negative finite number"),
        (dict(duplicates="sum"), "duplicates must be one of"),
    ],
)
def test_estimator_uses_the_rules(kw, message):
    pb = completion_problem(10, 12, 2, 0.5, random_state=0)
    with pytest.raises(ValueError, match=message):
        DeepMatrixCompletion(**{"rank": 2, "max_iter": 1, **kw}).fit((pb.rows, pb.cols), pb.values)


# ----------------------------------------------------------------------------- γ across depths
def test_default_gamma_follows_the_rescaling_law():
    """γ(L) = 0.01 · s_ref^{2/L}, s_ref = 15^{3/2}: 0.15 at L = 3 (module docstring of the estimator)."""
    assert abs(default_gamma(3) - 0.15) < 1e-12
    for depth in (1, 2, 3, 4, 6):
        expected = 0.01 * (15 ** 1.5) ** (2 / depth)
        assert default_gamma(depth) == pytest.approx(expected, rel=1e-12)
    assert default_gamma(2) == pytest.approx(0.581, abs=1e-3)
    assert default_gamma(4) == pytest.approx(0.0762, abs=1e-4)
    # γ' = γ·s^{2/L}: the ratio between depths is s_ref^{2/L − 2/L'}
    assert default_gamma(2) / default_gamma(4) == pytest.approx((15 ** 1.5) ** (2 / 2 - 2 / 4))
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        default_gamma(0)


def test_estimator_uses_default_gamma_per_depth():
    """γ(L) reaches the compressed model's bases, for every depth; an explicit ratio wins."""
    assert DEFAULTS["compressed"][1] is None
    pb = completion_problem(20, 24, 2, 0.5, random_state=0)

    def fitted(**params):
        est = DeepMatrixCompletion(rank=2, max_iter=0, random_state=0, **params)
        return est.fit((pb.rows, pb.cols), pb.values)

    for depth in (2, 3, 4):
        est = fitted(depth=depth, method="compressed")
        assert est._lr_ratio()[1] == default_gamma(depth)
        assert est.model_.lr_multipliers[0] == est.model_.lr_multipliers[-1] == default_gamma(depth)
    assert fitted(depth=4, method="compressed", outer_ratio=0.3).model_.lr_multipliers[0] == 0.3
    assert fitted(depth=4, method="spectral")._lr_ratio()[1] == 5.0
