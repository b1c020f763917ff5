"""Overparameterized linear layers inside nonlinear networks (seed 000 Sec. 2.3 and 4.2).

* :class:`DeepLinear` — an ``nn.Linear`` replaced by a depth-L factorization: full width (DLN),
  compressed (C-DLN) or narrow; :meth:`DeepLinear.fold` gives back one ``nn.Linear``.
* :func:`compress_network` — convert chosen layers of a network from one calibration batch.
* :func:`param_groups` — optimizer groups of a network (α on the C-DLN outer factors).
* :func:`mlp` — the MLP of seed 000 Sec. 4.2.
"""

from .convert import ConversionReport, compress_network, param_groups, penultimate_linear
from .deep_linear import MODES, DeepLinear, default_rank
from .models import deep_network, mlp

__all__ = [
    "MODES",
    "ConversionReport",
    "DeepLinear",
    "compress_network",
    "deep_network",
    "default_rank",
    "mlp",
    "param_groups",
    "penultimate_linear",
]
