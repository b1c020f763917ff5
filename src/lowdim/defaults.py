"""lowdim's defaults, each written once, with the place in the papers it comes from.

Every class, function, configuration and command line that has one of these settings takes its
default from here (a command line reads it through the configuration field that carries it).
"""

from __future__ import annotations

from ._validation import check_int

#: Initialization scale ε of every factor (seed 003 Figs. 2–5 and App. B; seed 000 Sec. 4).
INIT_SCALE = 1e-3
#: ε of a deep linear layer inside a nonlinear network (``DeepLinear``, ``compress_network``): an
#: ε-orthogonal depth-L chain with ε = 1 preserves the norm of the features it passes on (seed 000
#: Sec. 4.2 trains such layers inside MLPs and ViTs); ε = 1e-3 would start it at ~1e-9 and stall.
NETWORK_INIT_SCALE = 1.0
#: Depth L of the deep factorization ("typically we choose L = 3", seed 003 Sec. 4.1).
DEPTH = 3
#: Learning-rate ratio γ of Deep LoRA's outer bases (seed 003 App. B: "γ = 10⁻² works best").
LORA_GAMMA = 1e-2
#: Deep LoRA's step size η on the cores (seed 003 App. B).
DEEP_LORA_LR = 1e-2
#: Adapter rank r, LoRA's α and step size (seed 003 Sec. 4.2 and App. B: r = 8, α = 8, η = 10⁻⁴).
LORA_RANK = 8
LORA_ALPHA = 8.0
LORA_LR = 1e-4
#: Seed 003 Fig. 5's ratio γ for deep matrix completion, and the target scale at which it holds.
#: The paper does not state its target's scale; ``REFERENCE_SCALE`` is where lowdim's measured best
#: γ = 0.15 at L = 3 on σ_max = 1 data puts it (see :func:`default_gamma`).
PAPER_GAMMA = 0.01
REFERENCE_SCALE = (0.15 / PAPER_GAMMA) ** 1.5  # ≈ 58.1


def default_gamma(depth: int) -> float:
    """Default learning-rate ratio γ of the compressed model's bases at depth ``L``, σ_max = 1.

    ``γ(L) = 0.01 · s_ref^{2/L}`` with ``s_ref = 15^{3/2} ≈ 58.1``: the paper's γ = 0.01 carried to
    unit scale by the rescaling law ``γ' = γ·s^{2/L}``. Derivation: scaling the target by ``s`` and
    substituting ``W̃_l = s^{1/L} W̃'_l`` (the bases are orthonormal and do not scale) gives the
    unscaled problem with the cores' step ``η s^{2−2/L}``, initialization ``ε/s^{1/L}`` and the
    bases' step ``γη s²``, i.e. the ratio ``γ s^{2/L}``. The paper does not state its target's
    scale: ``s_ref`` is where our measured best γ = 0.15 at L = 3 on σ_max = 1 data puts it.
    Values: 0.58 (L = 2), 0.15 (L = 3), 0.076 (L = 4).

    Parameters
    ----------
    depth : int
        Depth ``L >= 1`` of the (virtual) full-width factorization.

    Returns
    -------
    float
    """
    depth = check_int("depth", depth, 1)
    return PAPER_GAMMA * REFERENCE_SCALE ** (2 / depth)


#: What :class:`~lowdim.completion.DeepMatrixCompletion` uses for each hyperparameter left unset
#: (``None``; ``"auto"`` for ``validation_fraction``), per ``preset``. ``"exact"`` is the papers'
#: synthetic regime (seed 003 Sec. 3, Figs. 2 and 5): small initialization, no bias, no early
#: stopping, trained to a relative loss of 1e-10, which recovers an exactly low-rank matrix.
#: ``"ratings"`` is lowdim's setting for noisy ratings (seed 000 Sec. 4, MovieLens), every value
#: chosen on a 10% inner split of MovieLens-100K u1.base (never on u1.test): C-DLN with a rank bound
#: of 40, biases, ε = 0.1, η = 0.02, a little weight decay, implicit feedback on both sides with
#: weight 5 (:mod:`lowdim.completion.side_information`), side information (when given to ``fit``)
#: with weight 3, early stopping on 10% of the training entries, then a refit on all of them for
#: the early-stopped number of iterations, and predictions clipped to the observed range; float32
#: (the same RMSE to 1e-4 on the inner split, 1.5× faster), float64 in ``"exact"``. A dict
#: entry is per ``method``; ``learning_rate=None`` in ``"exact"`` is the method's own default step.
COMPLETION_PRESETS = {
    "exact": dict(rank=10, method="compressed", init_scale=INIT_SCALE, learning_rate=None,
                  weight_decay=0.0, bias="none", bias_reg=10.0, validation_fraction=None,
                  max_iter=5000, eval_every=10, clip=False, refit=False, implicit=0.0,
                  side_weight=0.0, dtype="float64"),
    "ratings": dict(rank=40, method="spectral", init_scale=0.1,
                    learning_rate={"spectral": 0.02, "compressed": 0.2, "full": 0.2, "narrow": 0.2},
                    weight_decay=0.03, bias="both", bias_reg=5.0, validation_fraction=0.1,
                    max_iter=1000, eval_every=2, clip=True, refit=True,
                    implicit={"spectral": 5.0, "compressed": 0.0, "full": 0.0, "narrow": 0.0},
                    side_weight=3.0, dtype="float32"),
}
#: ``preset="auto"`` reads data whose observed values take at most this many distinct levels as
#: ratings (1–5 stars, half stars, 0/1 feedback), anything else as the exact regime.
RATING_LEVELS = 20
