"""The gradient of the loss with respect to the end-to-end matrix at initialization.

Every compression in lowdim starts from ``E = ∇_{W_{L:1}} ℓ(Θ(0))`` (``m × n``): by the chain rule
the gradient of the first factor is ``G_1 = W_{L:2}(0)ᵀ E`` (seed 003 Sec. 2.2–2.3), so ``E`` and the
initialization's products are all the compression needs. Each problem provides ``E`` as a
:class:`~lowdim.linalg.LinearMap` in its natural factored form, never as a full-width factor:

* a dense ``m × n`` matrix (:func:`dense_gradient`; deep matrix factorization, sensing,
  regression — :meth:`lowdim.MeasurementOperator.gradient_at`);
* the observed entries (:func:`observed_gradient`; completion): ``E = P_Ω(W_{L:1}(0) − Φ)``, a sparse
  matrix with ``|Ω|`` non-zeros, applied in ``O(|Ω| k)``;
* a layer's batch gradient (:func:`layer_gradient`; Deep LoRA, layers of nonlinear networks):
  ``E = δᵀ X`` for the layer's inputs ``X`` (``N × d_in``) and output gradients ``δ``
  (``N × d_out``), applied in ``O(N (d_in + d_out) k)``. :func:`capture_layer_gradients` collects
  ``(X, δ)`` of chosen modules with temporary forward hooks during one forward/backward pass, so
  the layers themselves know nothing about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import scipy.sparse
import torch
from torch import nn

from .linalg import LinearMap

__all__ = [
    "calibration_pass", "capture_layer_gradients", "dense_gradient", "layer_gradient", "observed_gradient",
]


def dense_gradient(matrix: torch.Tensor) -> LinearMap:
    """``E`` given as a dense ``m × n`` tensor."""
    e = matrix.detach()
    return LinearMap(tuple(e.shape), lambda x: e.to(x.dtype) @ x, lambda y: e.to(y.dtype).T @ y,
                     e.dtype, e.device, lambda: e)


def observed_gradient(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> LinearMap:
    """``E`` with non-zeros ``values`` at ``(rows, cols)`` (the residual on Ω), as a CSR product."""
    data = values.detach().double().cpu().numpy()
    mat = scipy.sparse.csr_matrix((data, (rows.cpu().numpy(), cols.cpu().numpy())), shape=shape)
    mat_t = mat.T.tocsr()

    def apply(sparse, x: torch.Tensor) -> torch.Tensor:
        out = sparse @ x.detach().to("cpu", torch.float64).numpy()
        return torch.as_tensor(np.ascontiguousarray(out)).to(x.device, x.dtype)

    return LinearMap(tuple(shape), lambda x: apply(mat, x), lambda y: apply(mat_t, y),
                     values.dtype, values.device, lambda: torch.as_tensor(mat.toarray()))


def layer_gradient(inputs: torch.Tensor, grad_outputs: torch.Tensor) -> LinearMap:
    """``E = δᵀ X`` of a linear layer on a batch, never formed.

    Parameters
    ----------
    inputs : torch.Tensor
        ``X``, shape ``(N, d_in)`` (tokens or samples as rows).
    grad_outputs : torch.Tensor
        ``δ = ∂ℓ/∂(layer output)``, shape ``(N, d_out)``.
    """
    if inputs.ndim != 2 or grad_outputs.ndim != 2 or inputs.shape[0] != grad_outputs.shape[0]:
        raise ValueError(
            f"inputs must be (N, d_in) and grad_outputs (N, d_out) with the same N, got "
            f"{tuple(inputs.shape)} and {tuple(grad_outputs.shape)}"
        )
    x, d = inputs.detach(), grad_outputs.detach()
    return LinearMap(
        (d.shape[1], x.shape[1]),
        lambda v: d.T.to(v.dtype) @ (x.to(v.dtype) @ v),
        lambda w: x.T.to(w.dtype) @ (d.to(w.dtype) @ w),
        torch.promote_types(x.dtype, d.dtype), x.device,
        lambda: d.T.to(torch.promote_types(x.dtype, d.dtype)) @ x,
    )


@contextmanager
def capture_layer_gradients(
    modules: Mapping[str, nn.Module],
    on_gradient: Callable[[str, LinearMap], None],
    *,
    output_offset: Callable[[str, torch.Tensor], torch.Tensor | None] | None = None,
) -> Iterator[None]:
    """Collect each module's batch gradient ``E = δᵀX`` during one forward/backward pass.

    Inside the ``with`` block, run the loss forward and call ``backward()``; for every module in
    ``modules`` that the loss used, ``on_gradient(name, E)`` is called during the backward pass
    (so ``X`` and ``δ`` of one layer at a time are kept). The hooks are removed on exit.

    Parameters
    ----------
    modules : mapping of str to torch.nn.Module
        Modules with a single input tensor of last dimension ``d_in`` (e.g. ``nn.Linear``).
    on_gradient : callable
        ``on_gradient(name, E)`` with ``E`` from :func:`layer_gradient`.
    output_offset : callable, optional
        ``output_offset(name, x)`` returns a tensor added to the module's output in this pass
        (e.g. the full-width update ``ΔW(0) x``), or None.

    Raises
    ------
    ValueError
        If a module runs more than once in the pass (one batch gradient per layer is defined).
    """
    calls: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
            calls[name] = calls.get(name, 0) + 1
            if calls[name] > 1:
                raise ValueError(
                    f"module {name!r} ran more than once in the calibration pass; the compression "
                    "needs one call per layer and batch"
                )
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            if output_offset is not None:
                extra = output_offset(name, x)
                if extra is not None:
                    output = output + extra.to(output.dtype).reshape(output.shape)
            # a zero leaf that requires grad, so that δ reaches this layer even when nothing
            # upstream of it is trainable
            zero = torch.zeros(output.shape[-1], dtype=output.dtype, device=output.device,
                               requires_grad=True)
            output = output + zero
            output.register_hook(
                lambda g: on_gradient(name, layer_gradient(x, g.reshape(-1, g.shape[-1])))
            )
            return output

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def calibration_pass(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    on_gradient: Callable[[str, LinearMap], None],
    run_loss: Callable[[], torch.Tensor],
    *,
    output_offset: Callable[[str, torch.Tensor], torch.Tensor | None] | None = None,
) -> float:
    """One forward/backward pass of ``run_loss()`` under :func:`capture_layer_gradients`.

    The gradients the pass leaves on ``model``'s parameters are cleared, and every module in
    ``modules`` must have received its batch gradient. Returns the loss.

    Raises
    ------
    ValueError
        If the loss is not a scalar tensor, or naming the first module the loss does not use.
    """
    received: set[str] = set()

    def record(name: str, gradient: LinearMap) -> None:
        received.add(name)
        on_gradient(name, gradient)

    try:
        with capture_layer_gradients(modules, record, output_offset=output_offset):
            loss = run_loss()
            if not torch.is_tensor(loss) or loss.numel() != 1:
                raise ValueError("the calibration loss must be a scalar tensor")
            loss.backward()
    finally:
        for p in model.parameters():
            p.grad = None
    missing = [name for name in modules if name not in received]
    if missing:
        raise ValueError(
            f"layer {missing[0]!r} received no gradient in the calibration pass; is it used by the "
            f"loss? ({len(missing)} layer(s) without gradient)"
        )
    return float(loss.detach())
