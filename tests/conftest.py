"""Shared test fixtures.

Real data lives outside the repository (licences): ``$LOWDIM_DATA`` or ``../shared/data`` next to
the clone. Tests that need it use the ``shared_data`` fixture and skip, with the reason, only when
that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Folder holding the shared real data sets (MovieLens, GLUE, ...)."""
    return Path(os.environ.get("LOWDIM_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is absent (set LOWDIM_DATA to point at it)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Small tensors: one intra-op thread avoids oversubscribing 2 shared cores (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
