"""Deep matrix completion that scales: sparse compressed training, estimators, baselines, CLI."""

from .sparse import (
    SignedPermutationInit,
    SparseEntryObservation,
    TrainState,
    implicit_invariant_compression,
    observed_loss,
    relative_error,
    train_sparse,
)

__all__ = [
    "SignedPermutationInit",
    "SparseEntryObservation",
    "TrainState",
    "implicit_invariant_compression",
    "observed_loss",
    "relative_error",
    "train_sparse",
]
