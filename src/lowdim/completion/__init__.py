"""Deep matrix completion that scales: sparse compressed training, estimators, baselines, CLI.

* :class:`DeepMatrixCompletion` — the scikit-learn estimator (compressed, spectral, full, narrow);
* :class:`AltMin`, :class:`SoftImpute`, :class:`BurerMonteiro` — baselines, same interface;
* :mod:`lowdim.completion.sparse` — observed-entry loss and the implicit (sparse) compression.

See ``docs/completion.md``.
"""

from .baselines import AltMin, BurerMonteiro, SoftImpute
from .estimator import DeepMatrixCompletion
from .sparse import (
    SignedPermutationInit,
    SparseEntryObservation,
    implicit_invariant_compression,
    observed_loss,
)

__all__ = [
    "DeepMatrixCompletion",
    "AltMin",
    "SoftImpute",
    "BurerMonteiro",
    "SignedPermutationInit",
    "SparseEntryObservation",
    "implicit_invariant_compression",
    "observed_loss",
]
