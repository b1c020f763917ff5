"""MACs, training FLOPs, training memory and parameters (the Table 1 / talk columns) against
counts written out independently from the layer shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowdim.nonlinear import (
    DeepLinear,
    VisionTransformer,
    count_macs,
    mlp,
    num_parameters,
    training_flops,
    training_memory,
)


def test_macs_of_an_mlp_and_a_deep_linear_layer():
    net = mlp(30, 20, 4)
    assert count_macs(net, torch.zeros(5, 30)) == 30 * 20 + 20 * 20 + 20 * 20 + 20 * 4
    layer = DeepLinear(30, 20, mode="compressed", rank=6)
    assert count_macs(layer, torch.zeros(3, 30)) == 30 * 6 + 6 * 6 + 6 * 20 == layer.macs()


def test_macs_of_a_vit_include_attention():
    dim, mlp_dim, depth, tokens, classes = 16, 48, 2, 5, 3          # 8×8 images, 4×4 patches: 4 + cls
    vit = VisionTransformer(image=8, patch=4, dim=dim, depth=depth, heads=2, mlp_dim=mlp_dim,
                            num_classes=classes)
    per_token = 3 * dim * dim + dim * dim + 2 * dim * mlp_dim       # q, k, v, out; fc1, fc2
    attention = 2 * tokens * tokens * dim                            # Q Kᵀ and A V (all heads)
    expected = 4 * 16 * dim + depth * (tokens * per_token + attention) + dim * classes
    assert count_macs(vit, torch.zeros(2, 64)) == expected


def test_training_flops_of_forward_and_backward():
    a, b, c = 30, 20, 4
    net = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Linear(b, c))
    # forward 2ab + 2bc; backward: weight gradients 2ab + 2bc, input gradient of layer 2 only 2bc
    assert training_flops(net, lambda out: out.sum(), torch.zeros(6, a)) == 4 * a * b + 6 * b * c
    assert net[0].weight.grad is None                                # counted on a copy


@pytest.mark.parametrize("optimizer,states", [
    (lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), 1),
    (lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), 2),
])
def test_training_memory_counts_weights_gradients_state_and_activations(optimizer, states):
    a, b, c, n = 30, 20, 4, 8
    net = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Linear(b, c))
    params = num_parameters(net)
    assert params == a * b + b + b * c + c
    labels = torch.zeros(n, dtype=torch.long)
    got = training_memory(net, lambda out: F.cross_entropy(out, labels), torch.zeros(n, a), optimizer)
    # saved for backward, each storage once: the input (n·a), the ReLU output (n·b, which the 2nd
    # matmul saves too), the log-softmax output (n·c), the labels (n int64) and NLL's total weight
    # (one float); weights (and their transposed views) are not activations
    activations = 4 * (n * a + n * b + n * c) + 8 * n + 4
    assert got == 4 * params * (2 + states) + activations
    assert all(p.grad is None for p in net.parameters())            # the model is untouched


def test_training_memory_counts_a_sliced_batch_by_its_rows():
    data = torch.zeros(10_000, 30)                                   # 1.2 MB; the batch is 8 rows
    net = torch.nn.Linear(30, 4, bias=False)
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)           # noqa: E731
    assert training_memory(net, lambda out: out.sum(), data[:8], sgd) == 4 * (2 * 120 + 8 * 30)


def test_train_epoch_steps_and_divergence():
    from lowdim import DivergenceError
    from lowdim.nonlinear import train_epoch

    torch.manual_seed(0)
    x, y = torch.randn(70, 5), torch.randint(0, 3, (70,))
    net = torch.nn.Linear(5, 3)
    steps: list[int] = []
    first = F.cross_entropy(net(x), y).item()
    for _ in range(20):
        train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y, batch_size=16,
                    on_step=steps.append)
    assert steps[:5] == [1, 2, 3, 4, 1] and len(steps) == 20 * 4      # 70 // 16 = 4 full batches
    assert F.cross_entropy(net(x), y).item() < first
    bad = x.clone()
    bad[:, 0] = float("inf")                                         # a non-finite loss
    with pytest.raises(DivergenceError, match="diverged at step 1"):
        train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.1), bad, y, batch_size=16)
    with pytest.raises(ValueError, match="at least batch_size = 128"):
        train_epoch(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y)
