"""Overparameterized linear layers inside nonlinear networks (seed 000 Sec. 2.3 and 4.2).

* :class:`DeepLinear` — an ``nn.Linear`` replaced by a depth-L factorization: full width (DLN),
  compressed (C-DLN) or narrow; :meth:`DeepLinear.fold` gives back one ``nn.Linear``.
* :func:`compress_network` — convert chosen layers of a network from one calibration batch.
* :func:`param_groups` — optimizer groups of a network (α on the C-DLN outer factors).
* :func:`mlp`, :func:`deep_network` — the MLP of seed 000 Sec. 4.2, the networks of seed 004 Sec. 4.2.
* :func:`update_singular_values`, :func:`consecutive_subspace_distances`,
  :func:`nonlinear_gradient_spectrum` — seed 000 Fig. 1 / eq. 14, seed 003 Fig. 9.
"""

from .convert import ConversionReport, compress_network, param_groups, penultimate_linear
from .deep_linear import MODES, DeepLinear, default_rank
from .measure import consecutive_subspace_distances, nonlinear_gradient_spectrum, update_singular_values
from .models import VisionTransformer, deep_network, mlp

__all__ = [
    "MODES",
    "VisionTransformer",
    "ConversionReport",
    "DeepLinear",
    "compress_network",
    "consecutive_subspace_distances",
    "deep_network",
    "default_rank",
    "mlp",
    "nonlinear_gradient_spectrum",
    "param_groups",
    "penultimate_linear",
    "update_singular_values",
]
