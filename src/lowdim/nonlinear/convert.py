r"""Convert chosen ``nn.Linear`` layers of a network into :class:`DeepLinear` (seed 000 Sec. 2.3, 4.2).

:func:`compress_network` runs one calibration batch through the network with the chosen layers
at their full-width initialization ``Θ(0)`` (weight ``W_{L:1}(0)``, bias kept) and, per layer:

* ``"correlation"`` — where the layer's outputs are the targets (its ``out_features`` equals the
  targets' width, one-hot for class labels): the C-DLN of seed 000 Sec. 2.3 / Algorithm 1 from the
  top-r̂ singular subspaces of the cross-correlation ``Y Xᵀ`` of the layer's inputs ``X`` and the
  targets ``Y`` (:func:`lowdim.spectral_compression` on :class:`lowdim.Regression`);
* ``"gradient"`` — otherwise (hidden layers): the shared engine's gradient-at-initialization
  compression (:func:`lowdim.invariant_subspace_compression`, seed 003 Sec. 2.3) on the layer's
  batch gradient ``E = δᵀX`` (:func:`lowdim.gradients.capture_layer_gradients`) with width
  ``r̂ = 2r``; its bases are folded into the outer factors, so the layer is the C-DLN chain
  ``[W̃_1 V_{1,1}ᵀ, W̃_2, …, W̃_{L−1}, U_{L,1} W̃_L]`` with multipliers ``[α, 1, …, 1, α]``.

:func:`factorize_layers` trains chosen layers as low-rank ``B·A`` throughout (the talk, seed 002,
"Low-Rank Training of Nonlinear Networks?"). :func:`param_groups` gives the optimizer groups of a
whole network (α reaches the outer factors).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_positive
from ..compression import invariant_subspace_compression, spectral_compression
from ..defaults import DEPTH, NETWORK_INIT_SCALE
from ..dynamics import rank_from_singular_values
from ..factorization import DeepFactorization, init_factor
from ..gradients import calibration_pass
from ..initialization import FullWidthInit, ImplicitOrthogonalInit, as_init
from ..linalg import LinearMap
from ..operators import Regression
from .deep_linear import DeepLinear, check_layer_rank, default_rank

__all__ = ["ConversionReport", "compress_network", "factorize_layers", "hidden_linears", "param_groups"]

INIT_FROM = ("auto", "correlation", "gradient")


@dataclass
class ConversionReport:
    """What :func:`compress_network` did.

    Attributes
    ----------
    layers : dict of str to str
        Converted layer name → how its subspaces were chosen ("correlation", "gradient", or the
        mode "full"/"narrow" when no data was used).
    rank : int or None
        ``r̂`` of compressed/narrow layers.
    loss : float or None
        Loss of the calibration batch (None when no pass was needed).
    seconds : float
    """

    layers: dict[str, str] = field(default_factory=dict)
    rank: int | None = None
    loss: float | None = None
    seconds: float = 0.0


def penultimate_linear(model: nn.Module) -> str:
    """Name of the last-but-one ``nn.Linear`` of ``model`` (the layer seed 000 overparameterizes)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(names) < 2:
        raise ValueError(
            f"model has {len(names)} nn.Linear layer(s); pass layers=[...] naming the ones to convert"
        )
    return names[-2]


def hidden_linears(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers after the first and before the last (an MLP's deeper hidden layers).

    For the 3-hidden-layer MLP of :func:`~lowdim.nonlinear.mlp` these are ``["2", "4"]``: the last
    two hidden layers, which the talk (seed 002) factorizes.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if len(names) < 3:
        raise ValueError(f"model has {len(names)} nn.Linear layer(s), so none lies between the first "
                         "and the last; pass layers=[...] naming the ones to factorize")
    return names[1:-1]


FACTOR_INITS = ("linear", "orthogonal")


def factorize_layers(
    model: nn.Module,
    rank: int,
    *,
    layers: Sequence[str] | None = None,
    init: str = "linear",
    random_state: int = 0,
) -> dict[str, DeepLinear]:
    r"""Replace ``layers`` of ``model`` (in place) by trainable low-rank products ``W = B·A`` of rank ``r``.

    The talk's "Low-Rank Training of Nonlinear Networks?" (seed 002): the weights of deeper layers
    are ``B A`` with ``B ∈ R^{d_out×r}``, ``A ∈ R^{r×d_in}`` throughout training, ``r`` about the
    number of classes ``K`` (relaxed in shallower layers). Each is a :class:`DeepLinear` of mode
    "narrow" and depth 2 (``fold()`` gives back one ``nn.Linear``); biases are kept.

    Parameters
    ----------
    model : torch.nn.Module
    rank : int
        ``r``, ``1 <= r < min(d_in, d_out)`` for every chosen layer.
    layers : sequence of str, optional
        Names of ``nn.Linear`` layers; default :func:`hidden_linears` (for a 3-hidden-layer MLP, the
        last two hidden layers, as in the talk).
    init : {"linear", "orthogonal"}, default="linear"
        "linear": spectral initialization (Khodak et al. 2021, cited in seed 000 Sec. 5): ``B A``
        is the best rank-r approximation of a weight drawn as PyTorch draws an ``nn.Linear``
        (Kaiming-uniform), split evenly, ``B = U_r Σ_r^{1/2}``, ``A = Σ_r^{1/2} V_rᵀ``, so that
        ``BᵀB = A Aᵀ`` (balanced: neither factor's gradient dwarfs the other's; drawing ``A`` and
        ``B`` each as an ``nn.Linear`` instead makes ``‖B‖ ≫ ‖A‖`` at ``r = 1`` and SGD with
        momentum diverges); "orthogonal": ``A`` with orthonormal rows and ``B`` with orthonormal columns
        (``‖BAx‖ = ‖P x‖``, which for ``r ≪ d`` starts far smaller than the layer it replaces).
    random_state : int

    Returns
    -------
    dict of str to DeepLinear
        The new layers by name.

    Examples
    --------
    >>> from lowdim.nonlinear import mlp
    >>> net = mlp(784, 784, 10)
    >>> new = factorize_layers(net, rank=10)
    >>> sorted(new), new["2"].factorization.dims
    (['2', '4'], [784, 10, 784])
    """
    init = check_choice("init", init, FACTOR_INITS)
    chosen = _resolve(model, hidden_linears(model) if layers is None else layers)
    gen = torch.Generator().manual_seed(int(random_state))
    new = {}
    for name, linear in chosen.items():
        check_layer_rank(rank, linear.in_features, linear.out_features)
        if init == "linear":
            factors = _spectral_linear_factors(linear, rank, gen)
        else:
            a = init_factor(rank, linear.in_features, 1.0, "orthogonal", generator=gen)
            b = init_factor(linear.out_features, rank, 1.0, "orthogonal", generator=gen)
            factors = [a.to(linear.weight.dtype), b.to(linear.weight.dtype)]
        layer = DeepLinear.from_linear(linear, mode="narrow", depth=2, rank=rank, scale=1.0,
                                       random_state=gen)
        layer.set_factors([f.to(layer.factorization.device) for f in factors])
        _replace(model, name, layer)
        new[name] = layer
    return new


def _spectral_linear_factors(linear: nn.Linear, rank: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``[A, B] = [Σ_r^{1/2} V_rᵀ, U_r Σ_r^{1/2}]`` of a fresh ``nn.Linear`` weight (Kaiming-uniform)."""
    w = torch.empty(linear.out_features, linear.in_features, dtype=torch.float64)
    nn.init.kaiming_uniform_(w, a=5**0.5, generator=gen)  # nn.Linear.reset_parameters
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    dtype = linear.weight.dtype
    return [(root[:, None] * vh[:rank]).to(dtype), (u[:, :rank] * root).to(dtype)]


def _resolve(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Linear]:
    names = [penultimate_linear(model)] if layers is None else list(layers)
    modules = dict(model.named_modules())
    chosen = {}
    for name in names:
        if name not in modules:
            raise ValueError(f"layers: model has no module {name!r}; names are those of named_modules()")
        if not isinstance(modules[name], nn.Linear):
            raise TypeError(
                f"layers: {name!r} is a {type(modules[name]).__name__}, not an nn.Linear; only "
                "linear layers can be replaced by a DeepLinear"
            )
        chosen[name] = modules[name]
    return chosen


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _targets_matrix(targets: torch.Tensor, width: int) -> torch.Tensor:
    """``Y`` (``N × width``): one-hot class labels, or the targets themselves."""
    if not targets.is_floating_point():
        return F.one_hot(targets.reshape(-1).long(), width).double()
    return targets.reshape(-1, targets.shape[-1]).double()


def correlation_factors(
    inputs: torch.Tensor, targets: torch.Tensor, rank: int, depth: int, scale: float
) -> list[torch.Tensor] | None:
    """C-DLN factors from ``Y Xᵀ`` (seed 000 Sec. 2.3), or None when ``Y Xᵀ`` has numerical rank < r̂.

    (The layer's own multipliers carry α.)
    """
    op = Regression(inputs.double().T, targets.T)  # surrogate Y Xᵀ, d_y × d_x
    _, s, _ = op.top_singular(min(rank + 1, *op.shape))
    if rank_from_singular_values(s, op.shape, torch.float64) < rank:
        return None
    return [w.detach() for w in spectral_compression(op, rank, depth, scale=scale).factors]


def gradient_factors(
    init: FullWidthInit, gradient: LinearMap, rank: int, svd: str, seed: int
) -> list[torch.Tensor]:
    """The engine's compression (width ``r̂ = 2r``), bases folded into the outer cores."""
    engine = invariant_subspace_compression(init, gradient, rank // 2, svd=svd, random_state=seed)
    f = [w.detach() for w in engine.factors]  # [V11ᵀ, W̃_1, …, W̃_L, U_L1]
    return [f[1] @ f[0], *f[2:-2], f[-1] @ f[-2]]


def compress_network(
    model: nn.Module,
    batch: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    *,
    layers: Sequence[str] | None = None,
    mode: str = "compressed",
    rank: int | None = None,
    depth: int = DEPTH,
    scale: float = NETWORK_INIT_SCALE,
    alpha: float = 1.0,
    init_from: str = "auto",
    svd: str = "auto",
    random_state: int = 0,
    inits: dict[str, DeepFactorization | FullWidthInit] | None = None,
) -> ConversionReport:
    r"""Replace ``layers`` of ``model`` (in place) by :class:`DeepLinear` layers of ``mode``.

    Parameters
    ----------
    model : torch.nn.Module
    batch, targets : torch.Tensor
        One calibration batch: ``loss_fn(model(batch), targets)`` is the training loss.
    loss_fn : callable
        E.g. :func:`torch.nn.functional.cross_entropy`.
    layers : sequence of str, optional
        Names (``named_modules``) of ``nn.Linear`` layers; default the penultimate one (seed 000).
    mode : {"compressed", "full", "narrow"}, default="compressed"
        "full" needs no data; "narrow" runs the batch forward only for the default rank.
    rank : int, optional
        ``r̂``; default ``4 × (number of network outputs)`` (seed 000 Sec. 4.2: ``r̂ = 4 d_y``).
        Must be even when the gradient is used (the engine's width is ``2r``).
    depth, scale, alpha
        ``L``, ε and the outer factors' learning-rate ratio α (:class:`DeepLinear`).
    init_from : {"auto", "correlation", "gradient"}, default="auto"
        "auto": ``Y Xᵀ`` where the layer's output width equals the targets' width, with a warning
        and the gradient instead when ``Y Xᵀ`` has numerical rank < r̂; "correlation" raises then.
    svd : str
        How the engine finds singular vectors (:func:`lowdim.linalg.top_singular`).
    random_state : int
        Seed of the implicit full-width initializations ``Θ(0)`` (one per layer).
    inits : dict, optional
        Layer name → explicit full-width initialization replacing the implicit one (tests).

    Returns
    -------
    ConversionReport

    Raises
    ------
    ValueError
        Unknown layer, r̂ too large or odd where the gradient is used, ``Y Xᵀ`` rank-deficient
        with ``init_from="correlation"``, a layer that gets no gradient or runs twice.
    TypeError
        A chosen module is not an ``nn.Linear``.
    """
    start = time.perf_counter()
    mode = check_choice("mode", mode, ("compressed", "full", "narrow"))
    init_from = check_choice("init_from", init_from, INIT_FROM)
    scale = check_positive("scale", scale)
    chosen = _resolve(model, layers)
    if mode != "compressed":
        if mode == "narrow" and rank is None:
            with torch.no_grad():
                rank = default_rank(model(batch).shape[-1])
        for name, linear in chosen.items():
            _replace(model, name, DeepLinear.from_linear(
                linear, mode=mode, depth=depth, rank=rank, scale=scale, random_state=random_state))
        return ConversionReport({n: mode for n in chosen}, rank, None, time.perf_counter() - start)
    init_of = {n: as_init((inits or {})[n]) if n in (inits or {}) else ImplicitOrthogonalInit(
        (m.out_features, m.in_features), depth, scale, random_state=random_state + i)
        for i, (n, m) in enumerate(chosen.items())}
    inputs, gradients, loss, outputs = _calibrate(model, chosen, init_of, batch, loss_fn, targets)
    r = default_rank(outputs) if rank is None else rank
    y = _targets_matrix(targets, outputs)
    report = ConversionReport(rank=r, loss=loss)
    for name, linear in chosen.items():
        r = check_layer_rank(r, linear.in_features, linear.out_features)
        factors, source = None, "gradient"
        if init_from != "gradient" and linear.out_features == y.shape[1]:
            factors, source = correlation_factors(inputs[name], y, r, depth, scale), "correlation"
            if factors is None:
                msg = (f"layer {name!r}: the calibration batch leaves Y Xᵀ with numerical rank < "
                       f"r̂ = {r} (too few samples or classes in the batch)")
                if init_from == "correlation":
                    raise ValueError(msg + "; use a larger batch, a smaller rank, or init_from='auto'")
                warnings.warn(msg + "; using the gradient at initialization instead", stacklevel=2)
                source = "gradient"
        if factors is None:
            if r % 2:
                raise ValueError(f"rank must be even for layer {name!r}, got {r}: the gradient-at-"
                                 "initialization compression has width 2r (seed 003 Theorem 2.1)")
            factors = gradient_factors(init_of[name], gradients[name], r, svd, random_state)
        layer = DeepLinear.from_linear(linear, mode="compressed", depth=depth, rank=r, scale=scale,
                                       alpha=alpha)
        layer.set_factors([f.to(linear.weight.dtype) for f in factors])
        _replace(model, name, layer)
        report.layers[name] = source
    report.seconds = time.perf_counter() - start
    return report


def _calibrate(model, chosen, init_of, batch, loss_fn, targets):
    """One forward/backward pass at ``Θ(0)``: each layer's inputs ``X`` and gradient ``E = δᵀX``."""
    inputs: dict[str, torch.Tensor] = {}
    gradients: dict[str, LinearMap] = {}

    def at_init(name: str, x: torch.Tensor) -> torch.Tensor:
        inputs[name] = x
        return init_of[name].chain_matmul(x.T.double()).T  # W_{L:1}(0) x

    outputs: list[torch.Tensor] = []

    def run_loss() -> torch.Tensor:
        outputs.append(model(batch))
        return loss_fn(outputs[0], targets)

    saved = {n: m.weight.detach().clone() for n, m in chosen.items()}
    try:
        with torch.no_grad():
            for m in chosen.values():
                m.weight.zero_()  # the layer's weight is W_{L:1}(0), added by at_init
        loss = calibration_pass(model, chosen, gradients.__setitem__, run_loss, output_offset=at_init)
    finally:
        with torch.no_grad():
            for n, m in chosen.items():
                m.weight.copy_(saved[n])
    return inputs, gradients, loss, outputs[0].shape[-1]


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """``torch.optim`` groups of a network: each :class:`DeepLinear`'s (α on its outer factors of
    "compressed") and one group at ``lr`` with every other trainable parameter."""
    lr = check_positive("lr", lr, "the step size η")
    groups, seen = [], set()
    for name, module in model.named_modules():
        if isinstance(module, DeepLinear):
            for g in module.param_groups(lr):
                groups.append({**g, "name": f"{name}.{g['name']}"})
                seen.update(id(p) for p in g["params"])
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "other"})
    return groups
