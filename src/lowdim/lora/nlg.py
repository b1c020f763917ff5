"""Few-shot natural-language generation with LoRA / Deep LoRA on a seq2seq model (seed 003, App. C).

The paper fine-tunes T5-base on n = 16 examples of the E2E data-to-text task (a meaning
representation, MR, such as ``name[The Vaults], eatType[pub], near[Café Adriatic]`` → a sentence)
with LoRA or Deep LoRA on every attention and feed-forward weight, decodes with beam search (4
beams, at most 64 tokens) and scores BLEU, ROUGE and METEOR (Table 3).  This module is that
pipeline for any checkpoint:

* :func:`read_e2e` reads E2E's ``mr,ref`` CSV files (one row per reference, several rows per MR)
  into an :class:`E2ESplit` (unique MRs, each with all its references).
* :func:`load_seq2seq` loads an encoder–decoder checkpoint (T5, BART, …) as it is, or warm-starts
  one from an encoder-only checkpoint (BERT, MiniLM) in the "BERT2BERT" way (Rothe et al. 2020):
  ``transformers.EncoderDecoderModel`` from two copies of the checkpoint, the decoder with causal
  self-attention and new cross-attention.  It returns the modules that start untrained (the
  cross-attention and the decoder's LM-head transform): :func:`seq2seq_adapter_config` puts them
  in ``modules_to_save`` — trained in full beside the adapters, as PEFT's ``modules_to_save``, and
  never adapted — and adapts every pretrained linear layer (``target_modules="all-linear"``: the
  attention and feed-forward weights; not the tied output layer).
* :func:`train_seq2seq` trains with AdamW on :func:`lowdim.lora.param_groups` (Deep LoRA's outer
  bases at ``γ·η``, eq. 11) after compressing Deep LoRA on the first batch (Sec. 4.1), until the
  training loss falls below a target or a step cap; :func:`generate` decodes;
  :func:`lowdim.lora.nlg_metrics.nlg_scores` scores against all references.

An uncased checkpoint (all-MiniLM-L6-v2 lower-cases and strips accents) cannot produce case;
:func:`normalizer` gives its tokenizer's own normalisation, to apply to the references before
scoring so that the scores measure wording, not case.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._config import hint
from .._validation import check_int, check_positive
from ..defaults import DEEP_LORA_LR, DEPTH, INIT_SCALE, LORA_ALPHA, LORA_GAMMA, LORA_RANK
from .config import AdapterConfig, DeepLoRAConfig, LoRAConfig
from .inject import ALL_LINEAR, param_groups
from .model import DeepLoRAModel, get_deep_lora_model

__all__ = [
    "E2E_FILES",
    "E2ESplit",
    "NLGConfig",
    "e2e_file",
    "read_e2e",
    "mr_values",
    "copy_baseline",
    "few_shot_pairs",
    "load_seq2seq",
    "adapt_seq2seq",
    "new_module_names",
    "seq2seq_adapter_config",
    "encode_pairs",
    "train_seq2seq",
    "sequence_loss",
    "token_entropy",
    "generate",
    "normalizer",
]

#: File of each E2E split (the official release's names).
E2E_FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}


@dataclass(frozen=True)
class E2ESplit:
    """Unique meaning representations ``mrs`` (file order) and, for each, its references ``refs``."""

    mrs: tuple[str, ...]
    refs: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.mrs)

    def subset(self, idx: Sequence[int]) -> E2ESplit:
        """The MRs ``idx`` (in that order) with all their references."""
        return E2ESplit(tuple(self.mrs[i] for i in idx), tuple(self.refs[i] for i in idx))


def e2e_file(split: str, root: str | os.PathLike | None = None) -> Path:
    """Path of an E2E split: ``root`` (default ``$LOWDIM_DATA/e2e``, else ``../shared/data/e2e``)."""
    if split not in E2E_FILES:
        raise ValueError(f"split must be one of {sorted(E2E_FILES)}, got {split!r}")
    if root is None:
        data = os.environ.get("LOWDIM_DATA")
        root = Path(data) / "e2e" if data else Path(__file__).resolve().parents[4] / "shared/data/e2e"
    return Path(root) / E2E_FILES[split]


def read_e2e(path: str | os.PathLike) -> E2ESplit:
    """Read an E2E CSV file (header ``mr,ref``; one row per reference) grouped by MR.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "e.csv"
    >>> _ = f.write_text('mr,ref\\n"name[A], food[Thai]",A serves Thai food.\\n'
    ...                  '"name[A], food[Thai]",Thai food at A.\\n', encoding="utf-8")
    >>> s = read_e2e(f); len(s), s.refs[0]
    (1, ('A serves Thai food.', 'Thai food at A.'))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"E2E file {path} is missing")
    groups: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ["mr", "ref"]:
            raise ValueError(f"{path}: line 1 must be the header 'mr,ref' (E2E format), got {header}")
        for row in reader:
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}, line {reader.line_num}: expected a non-empty MR and reference "
                                 f"in 2 columns, got {row!r}")
            groups.setdefault(row[0].strip(), []).append(" ".join(row[1].split()))
    if not groups:
        raise ValueError(f"{path} holds no rows")
    return E2ESplit(tuple(groups), tuple(tuple(r) for r in groups.values()))


_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")


def mr_values(mr: str) -> list[tuple[str, str]]:
    """The ``(attribute, value)`` slots of an MR ``attr[value], attr[value], ...``.

    Examples
    --------
    >>> mr_values("name[The Vaults], eatType[pub]")
    [('name', 'The Vaults'), ('eatType', 'pub')]
    """
    slots, pos = [], 0
    for m in _SLOT.finditer(mr):
        if m.start() != pos:
            break
        slots.append((m.group(1), m.group(2).strip()))
        pos = m.end()
    if pos != len(mr) or not slots:
        raise ValueError(f"not an E2E meaning representation (attr[value], ...): {mr!r}")
    return slots


def copy_baseline(mr: str) -> str:
    """No model: the MR's values in order, comma-separated (``"The Vaults, pub"``)."""
    return ", ".join(v for _, v in mr_values(mr))


def few_shot_pairs(split: E2ESplit, n: int, seed: int, pool: Sequence[int] | None = None
                   ) -> tuple[list[str], list[str]]:
    """``n`` training pairs for ``seed``: ``n`` distinct MRs of ``pool``, one random reference each."""
    pool = np.arange(len(split)) if pool is None else np.asarray(pool)
    if not 1 <= n <= len(pool):
        raise ValueError(f"n = {n} must be in [1, {len(pool)}] (MRs in the pool)")
    rng = np.random.default_rng(seed)
    idx = rng.choice(pool, size=n, replace=False)
    return [split.mrs[i] for i in idx], [split.refs[i][rng.integers(len(split.refs[i]))] for i in idx]


# ---------------------------------------------------------------------------------------------- model
def new_module_names(model: nn.Module, missing: Sequence[str]) -> tuple[str, ...]:
    """The outermost modules of ``model`` whose parameters are all in ``missing`` (newly initialized).

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
    >>> new_module_names(net, ["1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"])
    ('1',)
    """
    missing = set(missing)
    new = set()
    for name, module in model.named_modules():
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        if name and params and set(params) <= missing:
            new.add(name)
    return tuple(sorted(n for n in new if not any(n.startswith(o + ".") for o in new)))


def _configure_bert2bert(model: nn.Module, tokenizer) -> None:
    """Start with ``[CLS]``, end with ``[SEP]``, pad with ``[PAD]`` (the BERT2BERT tokens)."""
    start = tokenizer.cls_token_id if tokenizer.bos_token_id is None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.eos_token_id is None else tokenizer.eos_token_id
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id = start, end, tokenizer.pad_token_id
    model.config.vocab_size = model.config.decoder.vocab_size


def load_seq2seq(path: str | os.PathLike) -> tuple[nn.Module, object, tuple[str, ...]]:
    """``(model, tokenizer, new_modules)`` from a local checkpoint.

    An encoder–decoder checkpoint (``config.is_encoder_decoder``: T5, BART, …) loads with
    ``AutoModelForSeq2SeqLM``; an encoder-only one is warm-started as ``EncoderDecoderModel(encoder,
    decoder)`` from two copies of it — what ``EncoderDecoderModel.from_encoder_decoder_pretrained``
    does, here with the decoder's loading report kept: the encoder without its pooler (unused by
    the decoder), the decoder ``AutoModelForCausalLM(is_decoder=True, add_cross_attention=True)``.
    ``new_modules`` are the modules the checkpoint did not hold (:func:`new_module_names`): for
    BERT2BERT the cross-attention of every decoder layer and the LM-head transform.
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        EncoderDecoderModel,
    )

    path = str(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False):
        model, info = AutoModelForSeq2SeqLM.from_pretrained(path, output_loading_info=True)
        return model, tokenizer, new_module_names(model, info["missing_keys"])
    encoder = AutoModel.from_pretrained(path)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # BERT's [CLS] pooler: the decoder reads the token states only
    decoder, info = AutoModelForCausalLM.from_pretrained(
        path, is_decoder=True, add_cross_attention=True, output_loading_info=True)
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    _configure_bert2bert(model, tokenizer)
    return model, tokenizer, new_module_names(model, [f"decoder.{k}" for k in info["missing_keys"]])


def seq2seq_adapter_config(method: str, new_modules: Sequence[str] = (), *, rank: int = LORA_RANK,
                           alpha: float = LORA_ALPHA, gamma: float = LORA_GAMMA, depth: int = DEPTH,
                           init_scale: float = INIT_SCALE, seed: int = 0) -> AdapterConfig:
    """LoRA (``"lora"``) or Deep LoRA (``"deeplora"``) on every pretrained linear layer.

    ``target_modules="all-linear"`` (PEFT's rule: not the output layer) minus ``new_modules``, which
    train in full as ``modules_to_save``.
    """
    common = dict(rank=rank, target_modules=ALL_LINEAR, modules_to_save=tuple(new_modules))
    if method == "lora":
        return LoRAConfig(alpha=alpha, **common)
    if method == "deeplora":
        return DeepLoRAConfig(gamma=gamma, depth=depth, init_scale=init_scale, seed=seed, **common)
    raise ValueError(f"method must be 'lora' or 'deeplora', got {method!r}")


def normalizer(tokenizer) -> Callable[[str], str]:
    """The text normalisation of ``tokenizer`` (lower-casing, accent stripping, …), or identity."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    norm = getattr(backend, "normalizer", None)
    if norm is None:
        return lambda text: text
    return lambda text: " ".join(norm.normalize_str(text).split())


# ---------------------------------------------------------------------------------------------- training

@dataclass
class NLGConfig:
    """How one few-shot seq2seq run trains and decodes (defaults: seed 003 App. B and C)."""

    lr: float = field(default=DEEP_LORA_LR, metadata=hint("Learning rate η of the adapters."))
    head_lr: float = field(default=1e-3, metadata=hint("Learning rate of the modules_to_save."))
    batch_size: int = field(default=16, metadata=hint("Training batch size (App. B: 16)."))
    max_steps: int = field(default=300, metadata=hint("Step cap."))
    stop_loss: float = field(default=0.05, metadata=hint(
        "Stop when the mean training loss (nats/token) over `window` steps is below this."))
    window: int = field(default=10, metadata=hint("Steps averaged by the stopping test."))
    max_source_length: int = field(default=128, metadata=hint("Source tokens kept (App. B: 128)."))
    max_target_length: int = field(default=64, metadata=hint("Target tokens kept in training."))
    num_beams: int = field(default=4, metadata=hint("Beam size of generation (App. B: 4)."))
    max_new_tokens: int = field(default=64, metadata=hint("Generation length cap (App. B: 64)."))

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_positive("head_lr", self.head_lr)
        check_positive("stop_loss", self.stop_loss)
        for name in ("batch_size", "max_steps", "window", "max_source_length", "max_target_length",
                     "num_beams", "max_new_tokens"):
            check_int(name, getattr(self, name), 1)


def encode_pairs(tokenizer, sources: Sequence[str], targets: Sequence[str] | None, cfg: NLGConfig,
                 start_id: int | None = None) -> dict[str, torch.Tensor]:
    """One padded batch: ``input_ids``, ``attention_mask`` and ``labels`` (padding → -100).

    When every target starts with ``start_id`` (the decoder start token: BERT's tokenizer adds
    ``[CLS]``, which BERT2BERT also uses to start decoding) that column is dropped, since the
    model prepends the start token to the shifted labels itself.
    """
    batch = tokenizer(list(sources), padding=True, truncation=True, max_length=cfg.max_source_length,
                      return_tensors="pt")
    out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if targets is not None:
        tgt = tokenizer(text_target=list(targets), padding=True, truncation=True,
                        max_length=cfg.max_target_length, return_tensors="pt")
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
        if start_id is not None and bool((labels[:, 0] == start_id).all()):
            labels = labels[:, 1:].contiguous()
        out["labels"] = labels
    return out


def _start_id(model: nn.Module) -> int | None:
    return getattr(model.config, "decoder_start_token_id", None)


def _batches(tokenizer, sources, targets, cfg: NLGConfig, rng: np.random.Generator, start_id):
    """Endless shuffled training batches."""
    while True:
        order = rng.permutation(len(sources))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            yield encode_pairs(tokenizer, [sources[i] for i in idx], [targets[i] for i in idx], cfg,
                               start_id)


def train_seq2seq(model: nn.Module, tokenizer, sources: Sequence[str], targets: Sequence[str],
                  cfg: NLGConfig, *, seed: int = 0, progress: bool = False) -> dict:
    """Train the adapters and ``modules_to_save`` of ``model`` (a :class:`DeepLoRAModel`) in place.

    Deep LoRA layers are compressed on the first batch first (Sec. 4.1). AdamW on
    :func:`lowdim.lora.param_groups` (adapters at ``cfg.lr``, Deep LoRA's bases at ``γ·lr``, the
    ``modules_to_save`` at ``cfg.head_lr``) runs until the mean loss of the last ``cfg.window``
    steps is below ``cfg.stop_loss`` or ``cfg.max_steps``.

    Returns
    -------
    dict
        ``losses`` (per step, nats per target token), ``steps``, ``stopped`` (``"target"`` or
        ``"max_steps"``) and ``final_loss`` (the last window's mean).
    """
    from tqdm.auto import tqdm

    if not isinstance(model, DeepLoRAModel):
        raise TypeError("model must be a DeepLoRAModel (lowdim.lora.get_deep_lora_model)")
    if len(sources) != len(targets) or not sources:
        raise ValueError(f"need as many targets as sources (>= 1): {len(sources)} vs {len(targets)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    batches = _batches(tokenizer, sources, targets, cfg, rng, _start_id(model))
    model.train()
    first = next(batches)
    if isinstance(model.adapter_config, DeepLoRAConfig):
        model.compress(lambda m: m(**first).loss)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, head_lr=cfg.head_lr), weight_decay=0.0)
    losses: list[float] = []
    stopped = "max_steps"
    for step in tqdm(range(cfg.max_steps), disable=not progress, desc="train"):
        batch = first if step == 0 else next(batches)
        loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"non-finite training loss at step {step}; lower lr ({cfg.lr:g})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) >= cfg.window and np.mean(losses[-cfg.window:]) < cfg.stop_loss:
            stopped = "target"
            break
    return {"losses": losses, "steps": len(losses), "stopped": stopped,
            "final_loss": float(np.mean(losses[-cfg.window:]))}


def token_entropy(tokenizer, targets: Sequence[str]) -> float:
    """Entropy (nats) of the token frequencies of ``targets``: the per-token loss of the best
    prediction that ignores all context, the scale against which a training loss is judged.

    Examples
    --------
    >>> class Words:  # any tokenizer returning input_ids
    ...     def __call__(self, texts): return {"input_ids": [t.split() for t in texts]}
    >>> round(token_entropy(Words(), ["a b", "a b"]), 4)  # two tokens, equally frequent: log 2
    0.6931
    """
    ids = [i for seq in tokenizer(list(targets))["input_ids"] for i in seq]
    _, counts = np.unique(np.asarray(ids, dtype=object).astype(str), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def sequence_loss(model: nn.Module, tokenizer, sources: Sequence[str], targets: Sequence[str],
                  cfg: NLGConfig, batch_size: int = 32) -> float:
    """Mean cross-entropy per target token (teacher forcing) of ``targets`` given ``sources``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(sources), batch_size):
        batch = encode_pairs(tokenizer, sources[start : start + batch_size],
                             targets[start : start + batch_size], cfg, _start_id(model))
        tokens = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * tokens
        count += tokens
    return total / count


@torch.no_grad()
def generate(model: nn.Module, tokenizer, sources: Sequence[str], cfg: NLGConfig,
             batch_size: int = 32, progress: bool = False) -> list[str]:
    """Beam-search outputs (``cfg.num_beams`` beams, ``cfg.max_new_tokens`` tokens), one per source."""
    from tqdm.auto import tqdm

    model.eval()
    order = np.argsort([len(s) for s in sources], kind="stable")
    out: list[str] = [""] * len(sources)
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="generate"):
        idx = order[start : start + batch_size]
        batch = encode_pairs(tokenizer, [sources[i] for i in idx], None, cfg)
        ids = model.generate(**batch, num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                             early_stopping=True)
        for i, text in zip(idx, tokenizer.batch_decode(ids, skip_special_tokens=True,
                                                       clean_up_tokenization_spaces=True)):
            out[i] = " ".join(text.split())
    return out


def adapt_seq2seq(path: str | os.PathLike, method: str, **adapter_kwargs) -> tuple[DeepLoRAModel, object]:
    """``(model with adapters, tokenizer)``: :func:`load_seq2seq` + :func:`seq2seq_adapter_config`."""
    model, tokenizer, new = load_seq2seq(path)
    return get_deep_lora_model(model, seq2seq_adapter_config(method, new, **adapter_kwargs),
                               task_heads=False), tokenizer
