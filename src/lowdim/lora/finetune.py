"""Few-shot GLUE fine-tuning: vanilla LoRA (through the real ``peft`` package) vs Deep LoRA.

Protocol (seed 003, Sec. 4.2 and App. B): for each seed, draw ``n`` training examples without
replacement (the same subset, and the same head initialisation, for every method), fine-tune a
sequence-classification / regression head and the adapters of a pretrained encoder with AdamW
(batch 16, max length 128, dynamic padding) until the training loss converges or a step cap, then
evaluate on the full dev split.  Paper settings: LoRA r = 8, α = 8, η = 1e-4; Deep LoRA r = 8,
η = 1e-2, γ = 1e-2, depth 3, ε = 1e-3.

Each finished run is appended as one JSON line to the results file (one ``write`` of a complete
line, flushed and fsync'ed); a run whose line is present is skipped, so an interrupted job resumes
where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_write_text
from ..defaults import DEEP_LORA_LR, DEPTH, INIT_SCALE, LORA_ALPHA, LORA_GAMMA, LORA_LR, LORA_RANK
from ..dynamics import rank_from_singular_values
from .compression import compress_deep_lora
from .config import BERT_TARGETS, DeepLoRAConfig
from .glue import GlueSplit, TaskSpec, compute_metrics, get_task, load_split
from .inject import param_groups, prepare_model
from .io import numerical_ranks
from .layers import singular_values

__all__ = [
    "FinetuneConfig",
    "METHODS",
    "sample_indices",
    "run_one",
    "run_finetune",
    "make_accelerator",
    "finish",
    "read_results",
    "summarize",
    "format_summary",
]

METHODS = ("lora", "deeplora")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class FinetuneConfig:
    """Settings of a few-shot fine-tuning study (defaults: the paper's, App. B)."""

    model: str = field(metadata=_help("Model path or name for from_pretrained (sequence classification)."))
    data_root: str = field(metadata=_help("GLUE root folder (holding STS-B/, SST-2/, ...)."))
    task: str = field(
        default="stsb",
        metadata=_help("GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)."),
    )
    methods: tuple[str, ...] = field(default=METHODS, metadata=_help("Methods to run: lora, deeplora."))
    n_train: tuple[int, ...] = field(default=(16,), metadata=_help("Training-set sizes n."))
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2, 3, 4),
        metadata=_help("Seeds (one subset per seed and n)."),
    )
    rank: int = field(default=LORA_RANK, metadata=_help("Adapter rank r (both methods)."))
    lora_alpha: float = field(default=LORA_ALPHA, metadata=_help("LoRA scale α."))
    lora_lr: float = field(default=LORA_LR, metadata=_help("LoRA learning rate η."))
    deeplora_lr: float = field(
        default=DEEP_LORA_LR, metadata=_help("Deep LoRA learning rate η (cores).")
    )
    gamma: float = field(default=LORA_GAMMA, metadata=_help("Deep LoRA outer-basis ratio γ (lr γη)."))
    depth: int = field(default=DEPTH, metadata=_help("Deep LoRA depth L."))
    init_scale: float = field(default=INIT_SCALE, metadata=_help("Deep LoRA init scale ε."))
    head_lr: float | None = field(
        default=None,
        metadata=_help("Head learning rate (default: the method's η)."),
    )
    target_modules: tuple[str, ...] = field(default=BERT_TARGETS, metadata=_help("Modules to adapt."))
    head_modules: tuple[str, ...] = field(default=("classifier",), metadata=_help("Trainable head modules."))
    batch_size: int = field(default=16, metadata=_help("Training batch size."))
    max_length: int = field(default=128, metadata=_help("Maximum sequence length in tokens."))
    max_steps: int = field(default=500, metadata=_help("Step cap per run."))
    loss_tol: float = field(
        default=1e-3,
        metadata=_help("Converged when the mean loss over the last `window` steps is below this."),
    )
    rel_tol: float = field(
        default=1e-2,
        metadata=_help("... or changes by less than this fraction between consecutive windows."),
    )
    window: int = field(default=20, metadata=_help("Window (steps) of the convergence test."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    eval_batch_size: int = field(default=64, metadata=_help("Evaluation batch size."))
    max_eval: int | None = field(
        default=None,
        metadata=_help("Evaluate on the first N dev examples only (tests)."),
    )
    output: str | None = field(
        default=None,
        metadata=_help("Results file (JSON lines); None keeps results in memory."),
    )
    progress: bool = field(default=True, metadata=_help("Show tqdm progress bars."))

    def __post_init__(self) -> None:
        self.model = str(self.model)
        self.data_root = str(self.data_root)
        if self.output is not None:
            self.output = str(self.output)
        self.methods = tuple(self.methods)
        self.n_train = tuple(int(n) for n in self.n_train)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.target_modules = tuple(self.target_modules)
        self.head_modules = tuple(self.head_modules)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        if not self.n_train or min(self.n_train) < 1:
            raise ValueError(f"n_train must hold positive sizes, got {self.n_train}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in ("lora_lr", "deeplora_lr", "lora_alpha", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.batch_size < 1 or self.max_length < 8 or self.max_steps < 1 or self.window < 1:
            raise ValueError("batch_size, max_steps and window must be >= 1 and max_length >= 8")
        get_task(self.task)


def sample_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """``n`` distinct training indices for ``seed`` (identical for every method)."""
    if n > n_total:
        raise ValueError(f"n = {n} is larger than the training split ({n_total} examples)")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def _encode(split: GlueSplit, tokenizer, idx, max_length: int) -> dict:
    a = [split.text_a[i] for i in idx]
    b = None if split.text_b is None else [split.text_b[i] for i in idx]
    enc = tokenizer(a, b, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    labels = torch.as_tensor(split.labels[idx])
    enc["labels"] = labels.float() if split.task.is_regression else labels.long()
    return dict(enc)


def _batches(split: GlueSplit, tokenizer, batch_size: int, max_length: int, order) -> Iterator[dict]:
    for start in range(0, len(order), batch_size):
        yield _encode(split, tokenizer, order[start : start + batch_size], max_length)


def _shards(split: GlueSplit, tokenizer, cfg: FinetuneConfig, order, acc) -> Iterator[tuple[dict, float]]:
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
        yield _encode(split, tokenizer, part if len(part) else idx[:1], cfg.max_length), share


def _loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch).loss


def _load_model(cfg: FinetuneConfig, task: TaskSpec, seed: int) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)  # same head initialisation for every method
    kwargs: dict[str, Any] = {"num_labels": task.num_labels}
    if task.is_regression:
        kwargs["problem_type"] = "regression"
    return AutoModelForSequenceClassification.from_pretrained(cfg.model, **kwargs)


def _build_lora(model: nn.Module, cfg: FinetuneConfig) -> tuple[nn.Module, list[dict]]:
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(cfg.target_modules),
        lora_dropout=0.0,
        modules_to_save=list(cfg.head_modules),
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
        groups.append({"name": "head", "params": head, "lr": cfg.head_lr or cfg.lora_lr})
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
def evaluate(model: nn.Module, split: GlueSplit, tokenizer, cfg: FinetuneConfig) -> dict[str, float]:
    """Task metrics of ``model`` on ``split`` (batched by length for speed)."""
    model.eval()
    device = next(model.parameters()).device
    lengths = [len(a) + (len(split.text_b[i]) if split.text_b else 0) for i, a in enumerate(split.text_a)]
    order = np.argsort(lengths)
    preds = np.empty(len(split), dtype=np.float64 if split.task.is_regression else np.int64)
    for start, batch in zip(
        range(0, len(order), cfg.eval_batch_size),
        _batches(split, tokenizer, cfg.eval_batch_size, cfg.max_length, order),
        strict=True,
    ):
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.cpu()
        idx = order[start : start + cfg.eval_batch_size]
        preds[idx] = logits[:, 0].numpy() if split.task.is_regression else logits.argmax(-1).numpy()
    return compute_metrics(split.task, preds, split.labels)


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


def _build(model: nn.Module, cfg: FinetuneConfig, method: str, seed: int, subset: GlueSplit,
           tokenizer, rng):
    """``model`` with adapters, optimizer groups and the compression time (Deep LoRA) of one run.

    Every process builds the same model: the head is seeded and the Deep LoRA compression runs on
    the same first (global) batch.
    """
    if method == "lora":
        model, groups = _build_lora(model, cfg)
        return model, groups, None
    dcfg = DeepLoRAConfig(
        rank=cfg.rank, depth=cfg.depth, init_scale=cfg.init_scale, gamma=cfg.gamma,
        target_modules=cfg.target_modules, modules_to_save=cfg.head_modules, seed=seed,
    )
    prepare_model(model, dcfg)
    model.train()
    first = next(_batches(subset, tokenizer, cfg.batch_size, cfg.max_length, rng.permutation(len(subset))))
    report = compress_deep_lora(model, lambda m: _loss(m, first), config=dcfg)
    groups = param_groups(model, cfg.deeplora_lr, head_lr=cfg.head_lr)  # γ from dcfg
    return model, groups, report.seconds


def _train(model, optimizer, subset: GlueSplit, tokenizer, cfg: FinetuneConfig, rng, acc,
           on_step: Callable[[int, float], None] | None, method: str) -> tuple[list[float], bool]:
    """Train until convergence or ``cfg.max_steps``; the losses are global batch means."""
    model.train()
    losses: list[float] = []
    while len(losses) < cfg.max_steps:
        for batch, share in _shards(subset, tokenizer, cfg, rng.permutation(len(subset)), acc):
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
            if _converged(losses, cfg):
                return losses, True
            if len(losses) >= cfg.max_steps:
                break
    return losses, False


def _ranks(model: nn.Module, method: str) -> list[int]:
    if method == "lora":
        return _lora_ranks(model)
    return list(numerical_ranks(model).values())


def run_one(
    cfg: FinetuneConfig,
    method: str,
    n: int,
    seed: int,
    *,
    train: GlueSplit,
    dev: GlueSplit,
    tokenizer,
    on_step: Callable[[int, float], None] | None = None,
    accelerator=None,
) -> dict[str, Any]:
    """Fine-tune once and return the result record (see :func:`run_finetune`).

    With an ``accelerator`` of several processes, each process trains on its shard of every batch
    (the global batch stays ``cfg.batch_size``); the main process evaluates and every process
    returns its record.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    acc = accelerator if accelerator is not None else _OneProcess()
    indices = sample_indices(len(train), n, seed)
    subset = train.subset(indices)
    rng = np.random.default_rng(seed + 1)
    model = _load_model(cfg, subset.task, seed)
    t0 = time.perf_counter()  # training time: adapters, compression and steps, not the loading
    model, groups, compress_s = _build(model, cfg, method, seed, subset, tokenizer, rng)
    for g in groups:
        g.setdefault("weight_decay", cfg.weight_decay)
    model, optimizer = acc.prepare(model, torch.optim.AdamW(groups))
    losses, converged = _train(model, optimizer, subset, tokenizer, cfg, rng, acc, on_step, method)
    train_s = time.perf_counter() - t0
    result = None
    if acc.is_main_process:
        model = acc.unwrap_model(model)
        eval_split = dev if cfg.max_eval is None else dev.subset(range(min(cfg.max_eval, len(dev))))
        result = evaluate(model, eval_split, tokenizer, cfg), _ranks(model, method)
    metrics, ranks = _broadcast(result, acc)
    window = losses[-cfg.window :]
    return {
        "task": train.task.name,
        "method": method,
        "n": n,
        "seed": seed,
        "metrics": metrics,
        "main": metrics[train.task.main_metric],
        "steps": len(losses),
        "converged": converged,
        "final_train_loss": float(np.mean(window)) if window else None,
        "first_train_loss": losses[0] if losses else None,
        "train_seconds": train_s,
        "compress_seconds": compress_s,
        "ranks": ranks,
        "train_indices_sha": _digest(indices),
    }


def _digest(indices: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def _converged(losses: list[float], cfg: FinetuneConfig) -> bool:
    w = cfg.window
    if len(losses) < w:
        return False
    recent = float(np.mean(losses[-w:]))
    if recent < cfg.loss_tol:
        return True
    if len(losses) < 2 * w:
        return False
    previous = float(np.mean(losses[-2 * w : -w]))
    return abs(previous - recent) < cfg.rel_tol * max(previous, 1e-12)


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
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _key(record: dict[str, Any]) -> tuple:
    return (record["task"], record["method"], int(record["n"]), int(record["seed"]))


def run_finetune(
    cfg: FinetuneConfig, *, log: Callable[[str], None] | None = print, accelerator=None
) -> list[dict[str, Any]]:
    """Run every (n, seed, method) of ``cfg`` not already in ``cfg.output``; return all records.

    Each record holds ``task, method, n, seed, metrics, main`` (the task's main metric), ``steps``,
    ``converged``, ``first_train_loss``, ``final_train_loss``, ``train_seconds``,
    ``compress_seconds`` (Deep LoRA), ``ranks`` (numerical rank of every ΔW, Fig. 7 definition) and
    a digest of the training indices (equal across methods for the same n and seed).

    Under ``accelerate launch`` with several processes (``accelerator`` defaults to
    :func:`make_accelerator`), every run is trained data-parallel and the main process alone
    evaluates, logs and appends to ``cfg.output``; every process returns the same records.  The
    caller ends with :func:`finish` so that the processes leave together.
    """
    from transformers import AutoTokenizer

    acc = accelerator if accelerator is not None else make_accelerator()
    task = get_task(cfg.task)
    train = load_split(cfg.data_root, task, "train")
    dev = load_split(cfg.data_root, task, "dev")
    for n in cfg.n_train:
        if n > len(train):
            raise ValueError(f"n = {n} is larger than the {task.name} training split ({len(train)} examples)")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    out = Path(cfg.output) if cfg.output else None
    records = None
    if acc.is_main_process:  # read (and repair) the results file once, in one process
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        records = read_results(out) if out is not None else []
    records = _broadcast(records, acc)
    done = {_key(r) for r in records}
    todo = [
        (n, seed, method)
        for n in cfg.n_train for seed in cfg.seeds for method in cfg.methods
        if (task.name, method, n, seed) not in done
    ]
    log = log if acc.is_main_process else None
    if log and done:
        log(f"resuming: {len(done)} runs already in {out}, {len(todo)} to go")
    for record in _runs(cfg, todo, train, dev, tokenizer, acc):
        records.append(record)
        if out is not None and acc.is_main_process:
            _append_record(out, record)
        if log:
            log(f"{record['method']:8s} n={record['n']:<5d} seed={record['seed']:<3d} "
                f"{task.main_metric}={record['main']:.4f} "
                f"steps={record['steps']} loss={record['final_train_loss']:.4g}")
    return [r for r in records if r["task"] == task.name]


def _runs(cfg: FinetuneConfig, todo, train, dev, tokenizer, acc) -> Iterator[dict[str, Any]]:
    """The records of the runs ``todo`` (with progress bars in the main process)."""
    from tqdm.auto import tqdm

    show = cfg.progress and acc.is_main_process
    bar = tqdm(todo, desc=f"{train.task.name} runs", disable=not show)
    for n, seed, method in bar:
        bar.set_postfix(n=n, seed=seed, method=method)
        step_bar = tqdm(total=cfg.max_steps, desc=f"{method} n={n} seed={seed}", leave=False,
                        disable=not show)

        def on_step(step: int, loss: float, _bar=step_bar) -> None:
            _bar.update(1)
            _bar.set_postfix(loss=f"{loss:.4f}")

        record = run_one(cfg, method, n, seed, train=train, dev=dev, tokenizer=tokenizer,
                         on_step=on_step, accelerator=acc)
        step_bar.close()
        skip = ("output", "progress")
        record["config"] = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
        yield record


def summarize(records: list[dict[str, Any]]) -> dict[int, dict[str, tuple[float, float, int]]]:
    """``{n: {method: (mean, std, count)}}`` of the main metric (std with ddof = 0)."""
    table: dict[int, dict[str, list[float]]] = {}
    for r in records:
        table.setdefault(int(r["n"]), {}).setdefault(r["method"], []).append(float(r["main"]))
    return {
        n: {m: (float(np.mean(v)), float(np.std(v)), len(v)) for m, v in sorted(row.items())}
        for n, row in sorted(table.items())
    }


def format_summary(records: list[dict[str, Any]], metric: str = "main") -> str:
    """Plain-text table: one row per n, ``mean ± std (count)`` per method."""
    summary = summarize(records)
    methods = sorted({m for row in summary.values() for m in row})
    lines = [f"{'n':>6}  " + "  ".join(f"{m:>22}" for m in methods)]
    for n, row in summary.items():
        cells = []
        for m in methods:
            if m in row:
                mean, std, count = row[m]
                cells.append(f"{mean:>10.4f} ± {std:.4f} ({count})")
            else:
                cells.append(f"{'-':>22}")
        lines.append(f"{n:>6}  " + "  ".join(cells))
    if metric != "main":
        lines.insert(0, metric)
    return "\n".join(lines)
