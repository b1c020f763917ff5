r"""Implicit compression of Deep LoRA (seed 003, Sec. 2.3, 3 and 4.1).

The paper starts every adapted layer as a *full-width* depth-L factorization
``ΔW = W^(L)···W^(1)`` with ε-orthogonal factors (eq. 3; semi-orthogonal for rectangular layers,
width ``k = max(d_in, d_out)``), takes the gradient ``G_1 = ∇_{W_1} ℓ(Θ(0))`` on one batch, builds
``V_{1,1}`` from the complement of ``S = N(G_1) ∩ N(G_1ᵀ W_1(0))`` and then ``U_l = W_l(0) V_l/ε_l``,
``V_{l+1} = U_l`` (Sec. 2.3), so that ``U_{L,1} = W_{L:1}(0) V_{1,1} / ∏ε_l``.  Doing this literally
stores L dense k×k factors per layer (the authors' code runs out of memory here).  We never do.

Derivation of the implicit form
-------------------------------
Let ``E = ∇_{ΔW} ℓ(Θ(0))`` (d_out×d_in).  For a linear layer on a batch of N token vectors
``X`` (N×d_in) with output gradients ``δ`` (N×d_out), ``E = δᵀ X`` — a product of two thin matrices.
By the chain rule ``G_1 = W_{L:2}(0)ᵀ E``.  With ``c = ∏_{l≥2} ε_l``, ``W_{L:2}(0)ᵀ/c`` is an isometry
on R^{d_out} (all factors are orthogonal except possibly ``W_L``, which then has orthonormal rows),
so if ``E = Σ σ_i a_i b_iᵀ`` then ``G_1 = Σ (c σ_i)(W_{L:2}ᵀ a_i / c) b_iᵀ`` is an SVD of ``G_1``:

* the top right singular vectors of ``G_1`` are those of ``E``: ``b_1, …, b_h``;
* the second block ``W_1(0)ᵀ G_1`` has the directions ``W_1(0)ᵀ W_{L:2}(0)ᵀ a_i / ∏ε = Pᵀ a_i``,

where ``P = W_{L:1}(0) / ∏ε_l`` is the normalised end-to-end map of the initialization.  Hence

.. math::  V_{1,1} = \operatorname{orth}[\,b_1..b_{h_1},\; Pᵀ a_1..Pᵀ a_{h_2}\,],
           \qquad U_{L,1} = P\,V_{1,1},

with ``h_1 = ⌈r/2⌉``, ``h_2 = ⌊r/2⌋`` — the top directions of each block taken separately and
orthonormalised together, as in the authors' code (taking the top r of the stacked blocks lets the
ε-times smaller second block lose to noise).  Everything depends on the initialization only
through the action of ``P`` and ``Pᵀ`` on ``r`` vectors.  We represent each full-width factor
implicitly as ``ε_l Q_l`` with ``Q_l`` a structured random orthogonal k×k matrix
(:class:`StructuredOrthogonal`: rounds of random permutations and block-diagonal Haar blocks,
O(k·b) numbers), truncated to d_in columns (first factor) / d_out rows (last factor); it can be
materialised (:meth:`ImplicitFullWidthInit.factor`) to check the result against the explicit
construction, which the tests do to 1e-10 in float64.

The compressed model is ``f_C = U_{L,1} W̃_L···W̃_1 V_{1,1}ᵀ`` with ``W̃_l(0) = ε_l I_r`` (eq. 8),
trained with learning rate η on the cores and γη on ``U_{L,1}, V_{1,1}`` (eq. 11).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import DeepLoRALinear

__all__ = [
    "StructuredOrthogonal",
    "ImplicitFullWidthInit",
    "DenseFullWidthInit",
    "top_singular_pairs",
    "compressed_bases",
    "compress_deep_lora",
    "CompressionReport",
]


def _haar(n: int, generator: torch.Generator, count: int = 1) -> torch.Tensor:
    """``count`` Haar-distributed n×n orthogonal matrices (float64)."""
    g = torch.randn(count, n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    return q * torch.where(d < 0, -1.0, 1.0).unsqueeze(-2)


class StructuredOrthogonal:
    """A random k×k orthogonal matrix ``Q = B_R Π_R ··· B_1 Π_1`` stored in O(R·k·b) numbers.

    ``Π_j`` are random permutations and ``B_j`` block-diagonal matrices of Haar-random b×b blocks
    (the last block smaller when b does not divide k).  With ``R ≈ log_b k + 1`` rounds every output
    coordinate depends on every input coordinate.  For ``k <= b`` it is a single Haar matrix.

    Parameters
    ----------
    size : int
        k.
    generator : torch.Generator
        Source of randomness (the matrix is a deterministic function of its state).
    block_size : int
        b.
    rounds : int, optional
        R; default ``ceil(log(k)/log(b)) + 1``.
    """

    def __init__(
        self,
        size: int,
        generator: torch.Generator,
        *,
        block_size: int = 32,
        rounds: int | None = None,
    ) -> None:
        if size < 1 or block_size < 1:
            raise ValueError("size and block_size must be positive")
        self.size = size
        b = min(block_size, size)
        if rounds is None:
            rounds = 1 if b == size else math.ceil(math.log(size) / math.log(b)) + 1
        self.block = b
        self._rounds = []
        for _ in range(rounds):
            perm = torch.randperm(size, generator=generator)
            n_full, rem = divmod(size, b)
            full = _haar(b, generator, n_full)
            last = _haar(rem, generator)[0] if rem else None
            self._rounds.append((perm, torch.argsort(perm), full, last))

    def _blocks(self, x: torch.Tensor, full: torch.Tensor, last, transpose: bool) -> torch.Tensor:
        n_full = full.shape[0]
        b = self.block
        head = x[: n_full * b].reshape(n_full, b, -1)
        f = full.to(x.dtype)
        head = (f.transpose(1, 2) if transpose else f) @ head
        parts = [head.reshape(n_full * b, -1)]
        if last is not None:
            lb = last.to(x.dtype)
            parts.append((lb.T if transpose else lb) @ x[n_full * b :])
        return torch.cat(parts, dim=0)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``Q @ x`` for ``x`` of shape (k, m)."""
        for perm, _, full, last in self._rounds:
            x = self._blocks(x[perm], full, last, transpose=False)
        return x

    def rmatmul(self, x: torch.Tensor) -> torch.Tensor:
        """``Qᵀ @ x`` for ``x`` of shape (k, m)."""
        for _, inv, full, last in reversed(self._rounds):
            x = self._blocks(x, full, last, transpose=True)[inv]
        return x

    def dense(self) -> torch.Tensor:
        """Materialise Q (k×k, float64) — for tests and small layers only."""
        return self.matmul(torch.eye(self.size, dtype=torch.float64))


class ImplicitFullWidthInit:
    """Implicit ε-orthogonal full-width initialization of one layer's ``W^(L)···W^(1)`` (eq. 3, 12).

    ``W_1 = ε_1 Q_1[:, :d_in]``, ``W_l = ε_l Q_l``, ``W_L = ε_L Q_L[:d_out, :]`` with k×k orthogonal
    ``Q_l`` (:class:`StructuredOrthogonal`), ``k = max(d_in, d_out)``.

    Parameters
    ----------
    out_features, in_features : int
        Layer shape.
    scales : sequence of float
        ``ε_1, …, ε_L``.
    generator : torch.Generator
        Randomness.
    block_size : int
        Block size of the structured orthogonal factors.
    """

    def __init__(
        self,
        out_features: int,
        in_features: int,
        scales: Sequence[float],
        generator: torch.Generator,
        *,
        block_size: int = 32,
    ) -> None:
        if not scales or any(not s > 0 for s in scales):
            raise ValueError("scales must be a non-empty sequence of positive numbers")
        self.out_features = out_features
        self.in_features = in_features
        self.scales = [float(s) for s in scales]
        self.width = max(out_features, in_features)
        self.factors_q = [
            StructuredOrthogonal(self.width, generator, block_size=block_size) for _ in self.scales
        ]

    @property
    def scale_product(self) -> float:
        return math.prod(self.scales)

    def factor(self, index: int) -> torch.Tensor:
        """Dense ``W_{index+1}(0)`` (float64) — for checks on small layers."""
        w = self.scales[index] * self.factors_q[index].dense()
        if index == 0:
            w = w[:, : self.in_features]
        if index == len(self.scales) - 1:
            w = w[: self.out_features]
        return w

    def e2e_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``P @ x`` with ``P = W_{L:1}(0)/∏ε`` and ``x`` of shape (d_in, m)."""
        z = x.new_zeros(self.width, x.shape[1])
        z[: self.in_features] = x
        for q in self.factors_q:
            z = q.matmul(z)
        return z[: self.out_features]

    def e2e_rmatmul(self, y: torch.Tensor) -> torch.Tensor:
        """``Pᵀ @ y`` for ``y`` of shape (d_out, m)."""
        z = y.new_zeros(self.width, y.shape[1])
        z[: self.out_features] = y
        for q in reversed(self.factors_q):
            z = q.rmatmul(z)
        return z[: self.in_features]


class DenseFullWidthInit:
    """Full-width initialization given by explicit dense factors ``[W_1(0), …, W_L(0)]``.

    Same interface as :class:`ImplicitFullWidthInit`; used to check the implicit compression against
    arbitrary (e.g. Haar) orthogonal factors.  ``scales`` are the ε_l the factors were scaled by.
    """

    def __init__(self, factors: Sequence[torch.Tensor], scales: Sequence[float]) -> None:
        if len(factors) != len(scales):
            raise ValueError("one scale per factor is needed")
        self.factors_w = list(factors)
        self.scales = [float(s) for s in scales]
        self.out_features = factors[-1].shape[0]
        self.in_features = factors[0].shape[1]

    @property
    def scale_product(self) -> float:
        return math.prod(self.scales)

    def factor(self, index: int) -> torch.Tensor:
        return self.factors_w[index]

    def e2e_matmul(self, x: torch.Tensor) -> torch.Tensor:
        for w in self.factors_w:
            x = w.to(x.dtype) @ x
        return x / self.scale_product

    def e2e_rmatmul(self, y: torch.Tensor) -> torch.Tensor:
        for w in reversed(self.factors_w):
            y = w.to(y.dtype).T @ y
        return y / self.scale_product


def top_singular_pairs(
    inputs: torch.Tensor,
    grad_outputs: torch.Tensor,
    count: int,
    *,
    method: str = "exact",
    oversample: int = 8,
    power_iters: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top ``count`` singular triplets of ``E = δᵀ X`` (the batch gradient of ``ΔW``).

    Parameters
    ----------
    inputs : torch.Tensor
        ``X``, N×d_in.
    grad_outputs : torch.Tensor
        ``δ``, N×d_out.
    count : int
        Number of triplets.
    method : {"exact", "randomized", "auto"}
        ``"exact"``: when ``N <= min(d_in, d_out)`` through thin QR factors of ``X`` and ``δ``
        (O(N²(d_in + d_out)) time, O(N(d_in + d_out)) memory), otherwise from ``E`` formed transiently
        (d_out×d_in, the size of ``W0``, freed at once; O(N·d_in·d_out) time — as much as a weight
        gradient).  ``"randomized"``: subspace iteration (Halko et al. 2011) touching ``E`` only
        through ``E·M = δᵀ(X M)`` and ``Eᵀ·M = Xᵀ(δ M)``: O(N(d_in + d_out)(count + oversample)) time
        per pass, ``2·power_iters + 2`` passes, never forming ``E``.  ``"auto"``: exact when that is
        cheap (``N <= min(d)`` or ``min(d) <= 4·(count + oversample)``), randomized otherwise.
    oversample, power_iters : int
        Randomized method's extra columns and power iterations.
    generator : torch.Generator, optional
        Randomness of the randomized method.

    Returns
    -------
    left, singular, right : torch.Tensor
        d_out×count, (count,), d_in×count.
    """
    n, d_in = inputs.shape
    d_out = grad_outputs.shape[1]
    small = min(d_in, d_out)
    width = min(count + oversample, small)
    if method == "auto":
        method = "exact" if (n <= small or small <= 4 * width) else "randomized"
    if method not in ("exact", "randomized"):
        raise ValueError(f"method must be 'exact', 'randomized' or 'auto', got {method!r}")
    if n <= small:
        qa, ra = torch.linalg.qr(grad_outputs.T)
        qb, rb = torch.linalg.qr(inputs.T)
        uc, s, vct = torch.linalg.svd(ra @ rb.T)
        left, right = qa @ uc, qb @ vct.T
    elif method == "exact":
        left, s, vt = torch.linalg.svd(grad_outputs.T @ inputs, full_matrices=False)
        right = vt.T
    else:
        omega = torch.randn(d_in, width, generator=generator, dtype=torch.float64).to(inputs.dtype)
        q, _ = torch.linalg.qr(grad_outputs.T @ (inputs @ omega))  # range of E Ω
        for _ in range(power_iters):
            z, _ = torch.linalg.qr(inputs.T @ (grad_outputs @ q))  # Eᵀ Q
            q, _ = torch.linalg.qr(grad_outputs.T @ (inputs @ z))  # E Z
        small_b = (grad_outputs @ q).T @ inputs  # Qᵀ E  (width × d_in)
        ub, s, vt = torch.linalg.svd(small_b, full_matrices=False)
        left, right = q @ ub, vt.T
    if left.shape[1] < count:  # fewer tokens than directions: pad with zeros (orthonormalised later)
        pad = count - left.shape[1]
        left = torch.cat([left, left.new_zeros(d_out, pad)], 1)
        right = torch.cat([right, right.new_zeros(d_in, pad)], 1)
        s = torch.cat([s, s.new_zeros(pad)])
    return left[:, :count], s[:count], right[:, :count]


def _orthonormal_completion(m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Orthonormal basis of the column span of ``m`` (completed with random directions if deficient)."""
    q, r = torch.linalg.qr(m)
    diag = torch.diagonal(r).abs()
    tol = m.shape[0] * torch.finfo(m.dtype).eps * max(float(diag.max()) if diag.numel() else 0.0, 1.0)
    bad = diag <= tol
    if bool(bad.any()):
        fill = torch.randn(m.shape[0], int(bad.sum()), dtype=m.dtype, generator=generator)
        keep = q[:, ~bad]
        fill = fill - keep @ (keep.T @ fill)
        q2, _ = torch.linalg.qr(torch.cat([keep, fill], 1))
        q = q2
    return q


def compressed_bases(
    left_singular: torch.Tensor,
    right_singular: torch.Tensor,
    init,
    rank: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outer bases ``(U_{L,1}, V_{1,1})`` of width ``rank`` (Sec. 2.3, implicit form; module docstring).

    Parameters
    ----------
    left_singular, right_singular : torch.Tensor
        Top left (d_out×h) and right (d_in×h) singular vectors of ``E``, ``h >= ⌈rank/2⌉``.
    init : ImplicitFullWidthInit or DenseFullWidthInit
        The full-width initialization (only ``P``'s action on ``rank`` vectors is used).
    rank : int
        r.

    Returns
    -------
    U, V : torch.Tensor
        d_out×r and d_in×r with ``U = P V`` and orthonormal ``V``.
    """
    h1, h2 = (rank + 1) // 2, rank // 2
    if left_singular.shape[1] < h1:
        raise ValueError(f"need at least {h1} singular pairs, got {left_singular.shape[1]}")
    second = init.e2e_rmatmul(left_singular[:, :h2])
    v = _orthonormal_completion(torch.cat([right_singular[:, :h1], second], 1))
    u = init.e2e_matmul(v)
    return u, v


class _Calibration:
    """Per-layer state of the calibration pass: adds ΔW(0) if asked, captures (X, δ), computes SVD."""

    def __init__(
        self, init, rank: int, include_initial_delta: bool, dtype: torch.dtype, name: str,
        svd: str = "auto", seed: int = 0,
    ):
        self.svd = svd
        self.seed = seed
        self.init = init
        self.rank = rank
        self.include_initial_delta = include_initial_delta
        self.dtype = dtype
        self.name = name
        self.pairs = None
        self.calls = 0

    def forward(self, layer: DeepLoRALinear, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise ValueError(
                f"layer {self.name!r} was called more than once in the calibration forward pass; "
                "Deep LoRA compression needs one call per adapted layer and batch"
            )
        out = layer.base(x)
        flat = x.reshape(-1, layer.in_features)
        if self.include_initial_delta:
            d0 = self.init.e2e_matmul(flat.T.to(self.dtype)).T * self.init.scale_product
            out = out + d0.to(out.dtype).reshape(out.shape)
        # a zero leaf that requires grad so that δ reaches this layer even if nothing upstream trains
        zero = torch.zeros(layer.out_features, dtype=out.dtype, device=out.device, requires_grad=True)
        out = out + zero
        saved = flat.detach()

        def hook(grad: torch.Tensor) -> None:
            g = grad.reshape(-1, layer.out_features).to(self.dtype)
            self.pairs = top_singular_pairs(
                saved.to(self.dtype), g, (self.rank + 1) // 2, method=self.svd,
                generator=_layer_generator(self.seed + 1, self.name),
            )

        out.register_hook(hook)
        return out


@dataclass
class CompressionReport:
    """What :func:`compress_deep_lora` did.

    Attributes
    ----------
    seconds : float
        Wall time (forward, backward and the per-layer SVDs).
    loss : float
        Loss of the calibration batch.
    layers : list of str
        Names of the compressed layers.
    top_singular_values : dict
        Layer name → top singular values of that layer's ``E``.
    """

    seconds: float
    loss: float
    layers: list[str] = field(default_factory=list)
    top_singular_values: dict[str, list[float]] = field(default_factory=dict)


def _layer_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def layer_init(layer: DeepLoRALinear, seed: int, name: str, block_size: int = 32) -> ImplicitFullWidthInit:
    """The implicit full-width initialization used for ``layer`` (deterministic in ``seed, name``)."""
    return ImplicitFullWidthInit(
        layer.out_features,
        layer.in_features,
        [layer.init_scale] * layer.depth,
        _layer_generator(seed, name),
        block_size=block_size,
    )


def compress_deep_lora(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    *,
    config=None,
    seed: int | None = None,
    include_initial_delta: bool | None = None,
    dtype: torch.dtype | None = None,
    svd: str = "auto",
    inits: dict[str, object] | None = None,
) -> CompressionReport:
    """Compress every :class:`DeepLoRALinear` in ``model`` from one batch's gradient (Sec. 4.1).

    Runs ``loss_fn(model)`` once as if every Deep LoRA layer were its full-width ε-orthogonal
    factorization, captures each layer's ``X`` and ``δ``, and installs ``U_{L,1}``, ``V_{1,1}`` and
    cores ``ε·I`` (see the module docstring for the derivation).  Gradients left on other parameters
    by this pass are cleared.

    Parameters
    ----------
    model : torch.nn.Module
        Model with Deep LoRA layers (see :func:`lowdim.lora.inject.inject_adapters`).
    loss_fn : callable
        ``loss_fn(model) -> scalar tensor`` evaluating the training loss on one batch.
    config : DeepLoRAConfig, optional
        Supplies the defaults of ``seed`` and ``include_initial_delta``.
    seed : int, optional
        Seed of the implicit full-width initialization (default ``config.seed`` or 0).
    include_initial_delta : bool, optional
        Add ``ΔW(0) = ∏ε·P`` in the calibration forward (the exact construction; O(ε^L) effect);
        default ``config.include_initial_delta`` or False.
    dtype : torch.dtype, optional
        Precision of the per-layer linear algebra (default: each layer's weight dtype; float32
        singular vectors are accurate to ~1e-6, ample for a trainable initialization).
    svd : {"auto", "exact", "randomized"}
        How each layer's top singular vectors of ``E`` are found (:func:`top_singular_pairs`);
        ``"auto"`` never forms ``E`` for large layers.
    inits : dict, optional
        Layer name → initialization object overriding the implicit one (tests pass dense factors).

    Returns
    -------
    CompressionReport
    """
    start = time.perf_counter()
    if seed is None:
        seed = getattr(config, "seed", 0)
    if include_initial_delta is None:
        include_initial_delta = bool(getattr(config, "include_initial_delta", False))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, DeepLoRALinear)}
    if not layers:
        raise ValueError("model has no DeepLoRALinear layers to compress; inject adapters first")
    for name, layer in layers.items():
        if layer.merged:
            raise ValueError(f"layer {name!r} is merged; unmerge before compressing")
        init = (inits or {}).get(name) or layer_init(layer, seed, name)
        layer._calibration = _Calibration(
            init, layer.rank, include_initial_delta, dtype or layer.base.weight.dtype, name,
            svd=svd, seed=seed,
        )
    try:
        loss = loss_fn(model)
        if not torch.is_tensor(loss) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        loss.backward()
    finally:
        cals = {n: layer._calibration for n, layer in layers.items()}
        for layer in layers.values():
            layer._calibration = None
    report = CompressionReport(seconds=0.0, loss=float(loss.detach()))
    for name, layer in layers.items():
        cal = cals[name]
        if cal.pairs is None:
            raise ValueError(
                f"layer {name!r} received no gradient in the calibration pass; is it used by the loss?"
            )
        left_sv, s, right_sv = cal.pairs
        u, v = compressed_bases(left_sv, right_sv, cal.init, layer.rank)
        layer.set_compressed(u.to(layer.lora_left.dtype), v.to(layer.lora_left.dtype))
        report.layers.append(name)
        report.top_singular_values[name] = [float(x) for x in s]
    for p in model.parameters():
        p.grad = None
    report.seconds = time.perf_counter() - start
    return report
