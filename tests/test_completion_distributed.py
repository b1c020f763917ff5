"""Data-parallel completion on torch.distributed: 2 processes (gloo, loopback) fit what one does.

``torchrun`` starts 2 processes; each keeps half of the observed entries, and the loss, its
gradients and the compression's products are all-reduced (:mod:`lowdim.completion.distributed`).
The fitted models and ``lowdim complete --distributed`` outputs must equal the single-process ones
to 1e-10 in float64 (issue 10).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

# Fits a spectral C-DLN and an invariant-subspace compressed model (same settings in and out of
# torchrun), then `lowdim complete` with its ratings preset (spectral C-DLN with implicit feedback
# and a refit) on a ratings file; rank 0 writes the factors.
SCRIPT = '''
import os, sys
import torch, torch.distributed as dist
from safetensors.torch import save_file
from lowdim import train
from lowdim.cli import main as cli
from lowdim.completion import DeepMatrixCompletion, SparseEntryObservation
from lowdim.completion.distributed import (ProcessGroupSum, data_parallel, init_from_env,
                                           is_main_process)
from lowdim.compression import invariant_subspace_compression, spectral_compression
from lowdim.datasets import completion_problem
from lowdim.initialization import ImplicitOrthogonalInit


def fit(out, ratings):
    started = init_from_env()
    pb = completion_problem(150, 120, 3, 0.3, random_state=0)
    with data_parallel():
        op = SparseEntryObservation(pb.rows, pb.cols, pb.values, pb.shape, weight=1 / 0.3)
    spec = spectral_compression(op, 3, 3, scale=0.1, alpha=1.0)
    h_spec = train(spec, op, lr=0.3, max_iter=100)
    init = ImplicitOrthogonalInit(pb.shape, 3, 0.3, block_size=1, random_state=0)
    comp = invariant_subspace_compression(init, op, 3, gamma=0.15)
    h_comp = train(comp, op, lr=0.3, max_iter=100)
    sizes = [torch.tensor([op.y.numel()])]
    if started:
        sizes = sizes * dist.get_world_size()
        dist.all_gather(sizes := [torch.zeros(1, dtype=torch.int64) for _ in sizes],
                        torch.tensor([op.y.numel()]))
    tensors = {f"spec.{i}": f.detach() for i, f in enumerate(spec.factors)}
    tensors.update({f"comp.{i}": f.detach() for i, f in enumerate(comp.factors)})
    for name, h in (("spec", h_spec), ("comp", h_comp)):
        tensors[f"loss.{name}"] = torch.tensor(h.loss, dtype=torch.float64)
    tensors["shard_sizes"] = torch.cat(sizes)
    # the estimator's own flag (joins torchrun's group; a plain run is one process); count the
    # steps whose loss and gradients were summed over processes
    steps = []
    summed = ProcessGroupSum.__call__
    ProcessGroupSum.__call__ = lambda self, *a, **k: (steps.append(1), summed(self, *a, **k))[1]
    est = DeepMatrixCompletion(rank=3, method="spectral", init_scale=0.3, max_iter=60,
                               validation_fraction=None, distributed=True,
                               random_state=0).fit((pb.rows, pb.cols), pb.values, shape=pb.shape)
    tensors["est.predict"] = torch.as_tensor(est.predict((pb.rows[:500], pb.cols[:500])))
    tensors["loss.est"] = torch.tensor(est.history_.loss, dtype=torch.float64)
    tensors["est_summed_steps"] = torch.tensor([len(steps)])
    if is_main_process():
        save_file(tensors, os.path.join(out, "fits.safetensors"))
    return cli(["complete", ratings, "--out", os.path.join(out, "cli"), "--no-progress",
                "--max-iter", "30", "--eval-every", "5", "--rank", "4",
                "--dtype", "float64"]  # the ratings preset, in float64 (the 1e-10 comparison)
               + (["--distributed"] if started else []))


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(fit(sys.argv[1], sys.argv[2]))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ratings(path) -> None:
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((40, 2)), rng.standard_normal((2, 50))
    rows, cols = np.nonzero(rng.random((40, 50)) < 0.5)
    stars = np.clip(np.round(3 + (u @ v)[rows, cols]), 1, 5)
    pd.DataFrame({"user": rows, "item": cols, "rating": stars}).to_csv(path, index=False)


def _torchrun(script, out, ratings) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for _ in range(2):  # a second try if the loopback port was taken meanwhile
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
             "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
             str(script), str(out), str(ratings)],
            capture_output=True, text=True, timeout=300, env=env,
        )
        if done.returncode == 0 or "EADDRINUSE" not in done.stderr + done.stdout:
            break
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def test_two_processes_fit_what_one_process_fits(tmp_path):
    script, ratings = tmp_path / "fit.py", tmp_path / "ratings.csv"
    script.write_text(SCRIPT)
    _ratings(ratings)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _torchrun(script, two, ratings)
    assert int(os.environ.get("WORLD_SIZE", "1")) == 1  # the reference: this process alone
    namespace: dict = {}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    assert namespace["fit"](str(one), str(ratings)) == 0
    a, b = load_file(one / "fits.safetensors"), load_file(two / "fits.safetensors")
    # really sharded: two halves of the 5400 observed entries, split by rows
    sizes = b.pop("shard_sizes").tolist()
    assert a.pop("shard_sizes").tolist() == [5400] and sum(sizes) == 5400
    assert min(sizes) > 2000
    assert a.pop("est_summed_steps").item() == 0 and b.pop("est_summed_steps").item() >= 60
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert float((a[key] - b[key]).abs().max()) <= 1e-10, key
    for name in ("spec", "comp", "est"):  # and the models learned (else equality would say little)
        loss = a[f"loss.{name}"]
        assert float(loss[-1]) < 0.05 * float(loss[0]), name
    s1 = json.loads((one / "cli" / "summary.json").read_text())
    s2 = json.loads((two / "cli" / "summary.json").read_text())
    assert s2["processes"] == 2 and s1["processes"] == 1
    assert s1["iterations"] == s2["iterations"] and s1["best_iteration"] == s2["best_iteration"]
    assert abs(s1["test"]["rmse"] - s2["test"]["rmse"]) <= 1e-10
    p1, p2 = (pd.read_csv(d / "cli" / "predictions.csv") for d in (one, two))
    assert np.max(np.abs(p1["prediction"].to_numpy() - p2["prediction"].to_numpy())) <= 1e-10
    assert not (two / "cli" / "summary.json.tmp").exists()


def test_distributed_true_without_a_process_group_says_how_to_launch():
    from lowdim.completion import SparseEntryObservation

    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        SparseEntryObservation([0, 1], [1, 0], [1.0, 2.0], (2, 2), distributed=True)
    assert torch.distributed.is_available()
