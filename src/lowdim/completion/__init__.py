"""Deep matrix completion that scales: sparse compressed training, estimators, baselines, CLI.

* :class:`DeepMatrixCompletion` — the scikit-learn estimator (compressed, spectral, full, narrow);
* :class:`AltMin`, :class:`SoftImpute`, :class:`BurerMonteiro` — baselines, same interface;
* :mod:`lowdim.completion.sparse` — the observed-entry loss (the compression is
  :func:`lowdim.invariant_subspace_compression` with an :class:`~lowdim.ImplicitOrthogonalInit`).

See ``docs/completion.md``.
"""

from .baselines import AltMin, BurerMonteiro, SoftImpute
from .estimator import DeepMatrixCompletion
from .sparse import SparseEntryObservation, observed_loss

__all__ = [
    "DeepMatrixCompletion",
    "AltMin",
    "SoftImpute",
    "BurerMonteiro",
    "SparseEntryObservation",
    "observed_loss",
]
