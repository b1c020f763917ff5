"""Overparameterized linear layers inside nonlinear networks (seed 000 Sec. 2.3 and 4.2).

* :class:`DeepLinear` — an ``nn.Linear`` replaced by a depth-L factorization: full width (DLN),
  compressed (C-DLN) or narrow; :meth:`DeepLinear.fold` gives back one ``nn.Linear``.
* :func:`compress_network` — convert chosen layers of a network from one calibration batch.
* :func:`factorize_layers` — train chosen layers as low-rank ``B·A`` throughout (the talk, seed 002).
* :func:`param_groups` — optimizer groups of a network (α on the C-DLN outer factors).
* :func:`count_macs`, :func:`training_memory`, :func:`num_parameters` — the cost columns of
  seed 000 Table 1 and the talk's low-rank training table, measured.
* :func:`train_epoch` — one epoch of minibatch training of a classifier; :func:`fit_least_squares`
  — full-batch GD on the squared loss (seed 004 Sec. 4.2); :func:`train_side_by_side` — models
  trained on the same batches in turn, each with its own clock (seed 000 Table 1);
  :func:`train_until_plateau` — training to a validation plateau (the talk's low-rank training).
* :func:`mlp`, :func:`deep_network`, :func:`hybrid_network` — the MLP of seed 000 Sec. 4.2, the
  networks of seed 004 Sec. 4.2, the talk's hybrid network (seed 002).
* :func:`track_weight`, :func:`update_singular_values`, :func:`consecutive_subspace_distances`,
  :func:`nonlinear_gradient_spectrum` — seed 000 Fig. 1 / eq. 14, seed 003 Fig. 9.
"""

from .convert import (
    ConversionReport,
    compress_network,
    factorize_layers,
    hidden_linears,
    param_groups,
    penultimate_linear,
)
from .cost import count_macs, num_parameters, training_flops, training_memory
from .deep_linear import MODES, DeepLinear, default_rank
from .measure import (
    consecutive_subspace_distances,
    nonlinear_gradient_spectrum,
    track_weight,
    update_singular_values,
)
from .models import VisionTransformer, deep_network, hybrid_network, mlp
from .training import (
    Plateau,
    SideBySideRun,
    fit_least_squares,
    train_epoch,
    train_side_by_side,
    train_until_plateau,
)

__all__ = [
    "MODES",
    "Plateau",
    "SideBySideRun",
    "VisionTransformer",
    "ConversionReport",
    "DeepLinear",
    "compress_network",
    "consecutive_subspace_distances",
    "count_macs",
    "deep_network",
    "factorize_layers",
    "fit_least_squares",
    "hidden_linears",
    "hybrid_network",
    "default_rank",
    "mlp",
    "nonlinear_gradient_spectrum",
    "num_parameters",
    "param_groups",
    "penultimate_linear",
    "train_epoch",
    "train_side_by_side",
    "train_until_plateau",
    "track_weight",
    "training_flops",
    "training_memory",
    "update_singular_values",
]
