"""lowdim: gradient descent on deep overparameterized factorizations, run on compressed models.

The papers (see the README) show that GD on deep factorizations only moves inside small
invariant subspaces; lowdim trains the equivalent compressed model instead.
"""

from .compression import (
    invariant_bases,
    invariant_subspace_compression,
    narrow_factorization,
    spectral_compression,
)
from .defaults import default_gamma
from .factorization import DeepFactorization
from .initialization import ExplicitInit, FullWidthInit, ImplicitOrthogonalInit
from .operators import (
    EntryObservation,
    FullObservation,
    GaussianSensing,
    MeasurementOperator,
    Regression,
)
from .training import DivergenceError, History, TrainState, recovery_error, train

__version__ = "0.1.0"

__all__ = [
    "DeepFactorization",
    "DivergenceError",
    "ExplicitInit",
    "FullWidthInit",
    "ImplicitOrthogonalInit",
    "EntryObservation",
    "FullObservation",
    "GaussianSensing",
    "History",
    "MeasurementOperator",
    "Regression",
    "TrainState",
    "default_gamma",
    "invariant_bases",
    "invariant_subspace_compression",
    "narrow_factorization",
    "recovery_error",
    "spectral_compression",
    "train",
]
