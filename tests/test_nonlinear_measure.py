"""Update spectra, consecutive subspace distances and the nonlinear gradient spectrum."""

from __future__ import annotations

import pytest
import torch

from lowdim.datasets import low_rank_matrix
from lowdim.nonlinear.measure import (
    consecutive_subspace_distances,
    nonlinear_gradient_spectrum,
    update_singular_values,
)


def test_update_singular_values_and_subspace_distances():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(20, 15, generator=g, dtype=torch.float64)
    u = torch.randn(20, 2, generator=g, dtype=torch.float64)
    v = torch.randn(15, 2, generator=g, dtype=torch.float64)
    s = update_singular_values(w0 + u @ v.T, w0)                        # a rank-2 update
    assert s.shape == (15,) and float(s[2]) < 1e-12 < float(s[1])
    big = 100 * u @ v.T                                                 # dominates: top-2 subspace = span(u)
    d = consecutive_subspace_distances([big + w0 * 1e-3, big * 2 + w0 * 1e-3, big * 3], rank=2)
    assert len(d) == 2 and max(d) < 1e-5
    assert consecutive_subspace_distances([w0, -w0], 3) == pytest.approx([0.0], abs=1e-12)
    with pytest.raises(ValueError, match="snapshots must be at least two"):
        consecutive_subspace_distances([w0], 2)
    with pytest.raises(ValueError, match="differ in shape"):
        update_singular_values(w0, w0.T)


def test_nonlinear_gradient_at_small_init_is_low_rank():
    """Seed 003 Fig. 9 (d = 1000, r* = 5 there): the top singular values stand out from the tail.

    Measured: r* + 1 of them — the extra direction is the mean of σ(W_1(0)) that ReLU adds."""
    r = 3
    phi = low_rank_matrix(120, 120, rank=r, random_state=0)
    s = nonlinear_gradient_spectrum(phi, depth=3, layer=2, scale=1e-3)
    print("top singular values of ∇W_2:", [f"{v:.2e}" for v in s[:6].tolist()])
    gaps = s[:10] / s[1:11]
    assert int(gaps.argmax()) == r and float(gaps[r]) > 2.0
