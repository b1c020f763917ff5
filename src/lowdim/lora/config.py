"""Configuration dataclasses for LoRA and Deep LoRA adapters.

Every field documents itself through ``dataclasses.fields(cls)[i].metadata["help"]``; the
``lowdim finetune`` command line and :func:`lowdim.lora.io.save_adapter` both read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .._config import hint
from .._validation import check_int, check_nonnegative, check_positive, fail
from ..defaults import DEPTH, INIT_SCALE, LORA_ALPHA, LORA_GAMMA, LORA_RANK

#: Attention and feed-forward linears of a BERT-style encoder (query/key/value, attention output,
#: intermediate and output dense).  ``"output.dense"`` matches both ``attention.output.dense`` and
#: the feed-forward ``output.dense`` by suffix.
BERT_TARGETS: tuple[str, ...] = (
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)



@dataclass
class AdapterConfig:
    """Fields shared by every adapter type.

    Attributes
    ----------
    rank, target_modules, modules_to_save, dropout
        See each field's ``metadata["help"]``.
    """

    rank: int = field(default=LORA_RANK, metadata=hint("Adapter rank r (width of the low-rank update)."))
    target_modules: tuple[str, ...] | str = field(
        default=BERT_TARGETS,
        metadata=hint(
            "Modules to adapt: a list of names, each matching a module whose qualified name equals "
            "it or ends with '.'+name (PEFT convention), or one string taken as a regular "
            "expression that must match the whole qualified name."
        ),
    )
    modules_to_save: tuple[str, ...] = field(
        default=(),
        metadata=hint(
            "Modules (same matching rule) kept fully trainable and saved with the adapter, "
            "e.g. a task head such as 'classifier'."
        ),
    )
    dropout: float = field(
        default=0.0, metadata=hint("Dropout probability on the adapter's input (0 disables).")
    )

    adapter_type = "base"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):
            self.target_modules = tuple(self.target_modules)
        self.modules_to_save = tuple(self.modules_to_save)
        self.rank = check_int("rank", self.rank, 1)
        if check_nonnegative("dropout", self.dropout) >= 1.0:
            raise fail("dropout", "a probability in [0, 1)", self.dropout)
        if not self.target_modules:
            raise ValueError("target_modules is empty: name at least one module to adapt")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary, with the adapter type under ``"adapter_type"``."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["adapter_type"] = self.adapter_type
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> AdapterConfig:
        """Inverse of :meth:`to_dict` (dispatches on ``data["adapter_type"]``)."""
        from .layers import adapter_class  # the registry of adapter kinds

        data = dict(data)
        cls = adapter_class(data.pop("adapter_type", None)).config_class
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


@dataclass
class LoRAConfig(AdapterConfig):
    """Vanilla LoRA (Hu et al. 2021), the paper's baseline: ``W0 + (alpha/r) B A`` (seed 003, Sec. 4.1).

    ``A`` is Gaussian with standard deviation 1 and ``B = 0`` at initialization (App. B).
    """

    alpha: float = field(
        default=LORA_ALPHA, metadata=hint("LoRA scale alpha; the update is (alpha/r)·B·A.")
    )

    adapter_type = "lora"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.alpha = check_positive("alpha", self.alpha)


@dataclass
class DeepLoRAConfig(AdapterConfig):
    """Deep LoRA (seed 003, Sec. 4.1, eq. 12): ``W0 + W^(L)···W^(1)`` trained in compressed form.

    The compressed update is ``ΔW = U · W̃_L ··· W̃_1 · Vᵀ`` with outer bases ``U`` (d_out×r) and
    ``Vᵀ`` (r×d_in) trained with learning rate ``gamma·η`` and r×r cores ``W̃_l`` (initialised to
    ``init_scale·I``) trained with ``η`` (Sec. 3, eq. 11).

    ``rank`` is the adapter width ``r`` (as LoRA's ``r`` and the paper's "rank-r compression",
    Sec. 4 and App. D.2). The compression (Sec. 2.3) takes ``r/2`` directions from each of its two
    gradient blocks — :func:`lowdim.invariant_subspace_compression` with ``rank=r//2``, whose width
    is ``2·(r/2) = r`` — so ``r`` must be even.
    """

    rank: int = field(
        default=LORA_RANK,
        metadata=hint(
            "Adapter width r (as LoRA's r; the paper's rank-r compression): an even number >= 2, "
            "r/2 directions from each of the two gradient blocks of the compression (Sec. 2.3)."
        ),
    )

    depth: int = field(default=DEPTH, metadata=hint("Depth L of the factorization ΔW = W^(L)···W^(1)."))
    init_scale: float = field(
        default=INIT_SCALE,
        metadata=hint("Scale ε of the ε-orthogonal full-width initialization (eq. 3); cores start at ε·I."),
    )
    gamma: float = field(
        default=LORA_GAMMA,
        metadata=hint(
            "Discrepant learning-rate ratio γ of the outer bases U, V (lr γ·η; γ = 0 freezes them)."
        ),
    )
    include_initial_delta: bool = field(
        default=False,
        metadata=hint(
            "During compression, include the full-width ΔW(0) = ∏ε_l·P in the calibration forward "
            "pass (exact paper construction; its effect is O(ε^L) and below float32 resolution)."
        ),
    )
    seed: int = field(
        default=0, metadata=hint("Seed of the implicit full-width orthogonal initialization.")
    )

    adapter_type = "deep_lora"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.depth, self.init_scale, self.gamma = self.check(
            self.rank, self.depth, self.init_scale, self.gamma
        )

    @staticmethod
    def check(rank: int, depth: int, init_scale: float, gamma: float) -> tuple[int, float, float]:
        """The rules of Deep LoRA's settings (config and layer alike); returns ``(L, ε, γ)``.

        ``rank`` (the adapter width) must be an even integer >= 2, ``depth`` >= 2, ``ε > 0``,
        ``γ >= 0``.
        """
        if not isinstance(rank, int) or rank < 2 or rank % 2:
            hint = f"; use rank={rank + 1}" if isinstance(rank, int) and rank >= 1 else ""
            raise ValueError(
                f"DeepLoRAConfig.rank (the adapter width r) must be an even integer >= 2, got "
                f"{rank!r}{hint}: the compression takes r/2 directions from each of its two "
                "gradient blocks (seed 003 Sec. 2.3)"
            )
        return (
            check_int("depth", depth, 2, "Deep LoRA's factorization ΔW = W^(L)···W^(1) is deep"),
            check_positive("init_scale", init_scale),
            check_nonnegative("gamma", gamma, "γ = 0 freezes the outer bases"),
        )
