"""Bad input is rejected with a clear message (the core issue's list)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowdim import (
    DeepFactorization,
    DivergenceError,
    EntryObservation,
    FullObservation,
    GaussianSensing,
    Regression,
    invariant_subspace_compression,
    narrow_factorization,
    spectral_compression,
    train,
)
from lowdim.datasets import low_rank_matrix


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_targets_and_observations(bad):
    phi = low_rank_matrix(5, 5, 1, random_state=0).clone()
    phi[2, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        FullObservation(phi)
    with pytest.raises(ValueError, match="non-finite"):
        EntryObservation([0, 1], [1, 2], [1.0, bad], (5, 5))
    with pytest.raises(ValueError, match="non-finite"):
        Regression(np.ones((3, 4)), np.full((2, 4), bad))
    with pytest.raises(ValueError, match="non-finite"):
        GaussianSensing(np.ones((2, 3, 3)), [1.0, bad])


@pytest.mark.parametrize(
    "rows, cols, message",
    [([0, 5], [0, 1], "row index out of range"), ([0, 1], [-1, 1], "column index out of range"),
     ([0, 1], [3, 9], "column index out of range")],
)
def test_index_out_of_range(rows, cols, message):
    with pytest.raises(ValueError, match=message):
        EntryObservation(rows, cols, [1.0, 2.0], (5, 4))


def test_empty_duplicate_and_mismatched_observations():
    with pytest.raises(ValueError, match="no observed entries"):
        EntryObservation([], [], [], (3, 3))
    with pytest.raises(ValueError, match="same length"):
        EntryObservation([0, 1], [0], [1.0, 2.0], (3, 3))
    with pytest.raises(ValueError, match="duplicate"):
        EntryObservation([0, 0], [1, 1], [1.0, 2.0], (3, 3))
    with pytest.raises(ValueError, match="mask shape"):
        EntryObservation.from_mask(np.ones((3, 4)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="same N"):
        Regression(np.ones((3, 4)), np.ones((2, 5)))
    with pytest.raises(ValueError, match="measurements"):
        GaussianSensing(np.ones((2, 3, 3)), [1.0, 2.0, 3.0])


def test_model_operator_shape_mismatch():
    op = FullObservation(low_rank_matrix(6, 5, 1, random_state=0))
    model = DeepFactorization([6, 6, 6])  # a 6×6 product for a 6×5 target
    with pytest.raises(ValueError, match="6×6 matrix but the operator measures 6×5"):
        train(model, op, lr=0.1, max_iter=1)
    with pytest.raises(ValueError, match="must chain"):
        DeepFactorization.from_factors([torch.ones(3, 4), torch.ones(3, 5)])


def test_rank_too_large_for_compression():
    op = FullObservation(low_rank_matrix(10, 10, 2, random_state=0))
    model = DeepFactorization([10, 10, 10])
    with pytest.raises(ValueError, match=r"rank must be at most 4, got 5; .*d - 2r > 0 .* d = 10"):
        invariant_subspace_compression(model, op, 5)
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        invariant_subspace_compression(model, op, 0)
    with pytest.raises(ValueError, match="d - 1r > 0"):
        spectral_compression(op, 10, 3)


def test_depth_scales_and_step_sizes():
    with pytest.raises(ValueError, match="depth L >= 1"):
        DeepFactorization([5])
    with pytest.raises(ValueError, match="depth must be an integer >= 1, got 0"):
        narrow_factorization((5, 5), 2, 0)
    with pytest.raises(ValueError, match="depth must be an integer >= 2, got 1; spectral"):
        spectral_compression(FullObservation(np.eye(5)), 2, 1)
    for scale in (0.0, -1e-3, math.nan):
        with pytest.raises(ValueError, match="scale must be a positive finite number"):
            DeepFactorization([4, 4, 4], scale=scale)
    with pytest.raises(ValueError, match="2 numbers"):
        DeepFactorization([4, 4, 4], scale=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        spectral_compression(FullObservation(np.eye(5)), 2, 3, scale=0.0)
    op = FullObservation(np.eye(4))
    model = DeepFactorization([4, 4, 4])
    for lr in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="step size"):
            train(model, op, lr=lr, max_iter=1)
    with pytest.raises(ValueError, match="init must be one of"):
        DeepFactorization([4, 4], init="xavier")


def test_divergence_names_the_step_size_and_keeps_the_error_clear():
    op = FullObservation(low_rank_matrix(10, 10, 2, random_state=0))
    model = DeepFactorization([10, 10, 10, 10], scale=1.0, random_state=0)
    with pytest.raises(DivergenceError, match=r"lr=50.*smaller step size.*lr=12\.5"):
        train(model, op, lr=50.0, max_iter=200)


def test_stopping_rules():
    op = FullObservation(low_rank_matrix(10, 10, 2, random_state=0))
    model = DeepFactorization([10, 10, 10], scale=0.5, random_state=0)
    hist = train(model, op, lr=0.3, max_iter=10_000, max_time=0.2)
    assert hist.stop_reason in ("max_time", "tol")
    hist = train(model, op, lr=0.3, max_iter=5)
    assert hist.stop_reason == "max_iter" and hist.iterations[-1] == 5
    with pytest.raises(ValueError, match="needs the ground truth"):
        train(model, op, lr=0.3, target_error=1e-3)
