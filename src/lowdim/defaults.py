"""lowdim's defaults, each written once, with the place in the papers it comes from.

Every class, function, configuration and command line that has one of these settings takes its
default from here (a command line reads it through the configuration field that carries it).
"""

from __future__ import annotations

from ._validation import check_int

#: Initialization scale ε of every factor (seed 003 Figs. 2–5 and App. B; seed 000 Sec. 4).
INIT_SCALE = 1e-3
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
