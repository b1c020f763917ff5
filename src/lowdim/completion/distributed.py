"""Data-parallel matrix completion on ``torch.distributed``: shards of Ω, summed small gradients.

The loss of every model in :mod:`lowdim.completion` is a sum over the observed entries,
``ℓ = ½ w Σ_{ω∈Ω} r_ω²``, and so are its gradients with respect to the split factors
``A`` (``m × k``) and ``B`` (``k × n``) of the narrowest width ``k``. With ``P`` processes each one
keeps a shard ``Ω_p`` (contiguous rows, about ``|Ω|/P`` entries), computes its partial loss and
gradients with the fused kernels of :mod:`lowdim.completion.sparse`, and one ``all_reduce`` of
``(m + n) k + 1`` numbers per step sums them; the chain rule through the small compressed factors
then runs identically everywhere, so every process holds the same model after every step — the
single-process iterates up to the order of floating-point sums (1e-10 in float64 is tested).
The compression reads the data the same way: the surrogate ``Ω⊙Φ/p`` of spectral C-DLN
(seed 000 Algorithm 1) and the gradient at initialization of the invariant-subspace compression
(seed 003 Sec. 2.3) are products summed over the shards, and ARPACK runs the same iterations in
every process.

Launch with ``torchrun`` (gloo on CPUs, NCCL on GPUs), e.g. ``torchrun --nproc-per-node 2 -m
lowdim.cli complete ratings.csv --distributed``; on several machines run the same command on each
with ``--nnodes N --node-rank i --master-addr HOST --master-port PORT`` (or ``--rdzv-backend c10d
--rdzv-endpoint HOST:PORT``). See ``docs/scale.md``.

Examples
--------
Inside a script started by ``torchrun`` (one process works too: then nothing is sharded):

>>> import torch
>>> from lowdim import train
>>> from lowdim.completion import SparseEntryObservation
>>> from lowdim.completion.distributed import data_parallel, init_from_env
>>> from lowdim.compression import spectral_compression
>>> from lowdim.datasets import completion_problem
>>> started = init_from_env()                   # reads RANK / WORLD_SIZE set by torchrun
>>> pb = completion_problem(60, 50, 2, 0.4, random_state=0)
>>> with data_parallel():
...     op = SparseEntryObservation(pb.rows, pb.cols, pb.values, pb.shape)
>>> model = spectral_compression(op, 2, 3, scale=0.3)
>>> h = train(model, op, lr=0.5, max_iter=300, truth=pb.truth)
>>> h.error[-1] < 1e-3
True
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

from ..linalg import LinearMap

__all__ = ["ProcessGroupSum", "data_parallel", "init_from_env", "is_main_process", "shard_rows"]

_DATA_PARALLEL = contextvars.ContextVar("lowdim_data_parallel", default=False)


@contextmanager
def data_parallel(enabled: bool = True) -> Iterator[None]:
    """Within this block, every :class:`~lowdim.completion.SparseEntryObservation` built with
    ``distributed=None`` (e.g. by :class:`~lowdim.completion.DeepMatrixCompletion`) keeps only this
    process's shard of Ω and sums over the process group (a no-op with one process)."""
    token = _DATA_PARALLEL.set(bool(enabled))
    try:
        yield
    finally:
        _DATA_PARALLEL.reset(token)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); returns whether one with several processes is running.

    ``backend`` defaults to NCCL when CUDA is available and gloo otherwise. Without those
    variables (a plain ``python`` run) nothing happens.
    """
    if dist.is_available() and dist.is_initialized():
        return _world() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return _world() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process (where outputs are written)."""
    return _world() == 1 or dist.get_rank() == 0


def shard_rows(crow: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Cut rows ``0 … m−1`` (CSR row pointer ``crow``) into ``parts`` contiguous ranges of about
    ``|Ω| / parts`` entries each; returns ``[(first_row, stop_row), …]``."""
    m, nnz = crow.size - 1, int(crow[-1])
    targets = [round(nnz * p / parts) for p in range(1, parts)]
    cuts = [0]
    for t in targets:  # the row boundary whose entry count is nearest the target
        hi = min(int(np.searchsorted(crow, t, side="left")), m)
        best = hi if hi == 0 or crow[hi] - t < t - crow[hi - 1] else hi - 1
        cuts.append(max(best, cuts[-1]))
    cuts.append(m)
    return [(cuts[p], cuts[p + 1]) for p in range(parts)]


class ProcessGroupSum:
    """Sums over a ``torch.distributed`` process group: the loss and split gradients of one step
    (one ``all_reduce``), scalars, and the products of a sharded sparse map.

    Parameters
    ----------
    total : int
        ``|Ω|`` over all processes.
    group : ProcessGroup, optional
        Default: the world.
    """

    def __init__(self, total: int, group=None) -> None:
        self.total, self.group = int(total), group
        self.checked = False

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes (in place on a contiguous copy; returned)."""
        t = t.contiguous()
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def check_same(self, *tensors: torch.Tensor) -> None:
        """Raise unless every process holds the same ``tensors`` (compared through their sums)."""
        sums = torch.stack([t.detach().double().sum() for t in tensors])
        lo, hi = sums.clone(), sums.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(lo, hi):
            raise ValueError(
                "the processes hold different models: the loss in use does not sum over the "
                "shards of Ω everywhere (e.g. implicit feedback or side features, whose "
                "surrogate is not sharding-aware yet); fit without them (implicit=0, no "
                "features) or in one process"
            )

    def __call__(self, loss, ga, gb, a=None, bt=None):
        """``(loss, ga, gb)`` summed over the processes in one ``all_reduce`` (on the first call,
        also checks that all processes evaluate the same factors ``a``, ``bt``)."""
        if not self.checked and a is not None:
            self.check_same(a, bt)
            self.checked = True
        parts = [loss.reshape(1)] + [g.reshape(-1) for g in (ga, gb) if g is not None]
        flat = self.all_reduce(torch.cat([p.to(loss.dtype) for p in parts]))
        out, pos = [flat[0]], 1
        for g in (ga, gb):
            if g is None:
                out.append(None)
                continue
            out.append(flat[pos : pos + g.numel()].view_as(g).to(g.dtype))
            pos += g.numel()
        return tuple(out)

    def summed_map(self, local: LinearMap) -> LinearMap:
        """The sum over processes of each one's ``local`` map (products reduced after each call)."""
        return LinearMap(
            local.shape, lambda x: self.all_reduce(local.matmul(x)),
            lambda y: self.all_reduce(local.rmatmul(y)), local.dtype, local.device,
            lambda: self.all_reduce(local.dense().clone()),
        )


def shard_if_wanted(op, distributed: bool | None) -> None:
    """Turn ``op`` (a :class:`~lowdim.completion.SparseEntryObservation` holding all of Ω) into this
    process's shard when ``distributed`` (or, if ``None``, :func:`data_parallel`) asks for it and
    a process group with several processes is running."""
    wanted = _DATA_PARALLEL.get() if distributed is None else bool(distributed)
    if not wanted:
        return
    if _world() == 1:
        if distributed:  # asked for explicitly: say why nothing is sharded
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError(
                    "distributed=True needs a torch.distributed process group: launch with "
                    "`torchrun --nproc-per-node N ...` and call "
                    "lowdim.completion.distributed.init_from_env() first"
                )
        return
    from .sparse import ObservedLayout

    lay = op.layout
    rank, world = dist.get_rank(), _world()
    first, stop = shard_rows(lay.crow_np.astype(np.int64), world)[rank]
    lo, hi = int(lay.crow_np[first]), int(lay.crow_np[stop])
    rows, cols, y = (lay.in_order(t) for t in (op.rows, op.cols, op.y))
    op.rows, op.cols, op.y = rows[lo:hi].clone(), cols[lo:hi].clone(), y[lo:hi].clone()
    op._pattern = ObservedLayout(op.rows, op.cols, op.shape)
    op._dist = op._pattern.reduce = ProcessGroupSum(lay.nnz)
