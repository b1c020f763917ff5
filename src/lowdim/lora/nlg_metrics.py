"""Corpus metrics of generated text against several references each, from maintained packages.

Seed 003 App. C (Table 3) scores few-shot E2E generation by BLEU, ROUGE and METEOR; the E2E
challenge adds NIST and CIDEr.  Nothing here re-implements a metric; each comes from its package:

========  ==================================================================  =====================
metric    computed by                                                         needs
========  ==================================================================  =====================
bleu      ``sacrebleu.corpus_bleu`` (13a tokenization, all references)        ``sacrebleu``
nist      ``nltk.translate.nist_score.corpus_nist`` (n = 5, 13a tokens)       ``nltk`` (no data)
rouge*    ``rouge_score.rouge_scorer.RougeScorer.score_multi`` (F, best       ``rouge-score``
          reference, averaged over segments): rouge1, rouge2, rougeL,
          rougeLsum
meteor    METEOR 1.5 (``pycocoevalcap.meteor``: the jar and its paraphrase    ``pycocoevalcap``,
          tables ship in the wheel; the E2E challenge's METEOR)               a ``java`` runtime
cider     ``pycocoevalcap.cider`` (CIDEr-D, IDF from the scored references)   ``pycocoevalcap``
========  ==================================================================  =====================

Every score is on a 0–1 scale except NIST and CIDEr (their own scales).  nltk's METEOR is not used:
it needs the WordNet corpus, which nltk downloads at run time and no maintained pip package ships.
Install the packages with ``pip install "lowdim[nlg]"``; :func:`unavailable_metrics` says which
metric cannot run here and why.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
from collections.abc import Sequence

import numpy as np

__all__ = ["METRICS", "ROUGE_TYPES", "nlg_scores", "unavailable_metrics"]

#: ROUGE variants reported (Table 3's columns).
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: Every metric :func:`nlg_scores` can compute.
METRICS = ("bleu", "nist", *ROUGE_TYPES, "meteor", "cider")
_NEEDS = {"bleu": "sacrebleu", "nist": "nltk", "meteor": "pycocoevalcap", "cider": "pycocoevalcap",
          **{r: "rouge_score" for r in ROUGE_TYPES}}


def unavailable_metrics(metrics: Sequence[str] = METRICS) -> dict[str, str]:
    """``{metric: reason}`` for each of ``metrics`` that cannot be computed on this machine.

    Examples
    --------
    >>> sorted(unavailable_metrics(["bleu"]))  # sacrebleu installed: nothing is missing
    []
    """
    out = {}
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; choose from {METRICS}")
        package = _NEEDS[m]
        if importlib.util.find_spec(package) is None:
            out[m] = f"package {package!r} is not installed (pip install 'lowdim[nlg]')"
        elif m == "meteor" and shutil.which("java") is None:
            out[m] = "METEOR 1.5 runs on Java and no 'java' executable is on PATH"
    return out


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(hypotheses, str) or len(hypotheses) != len(references):
        raise ValueError(f"give one list of references per hypothesis: {len(hypotheses)} hypotheses, "
                         f"{len(references)} reference lists")
    refs = [[r for r in rs if r and r.strip()] for rs in references]
    empty = [i for i, rs in enumerate(refs) if not rs]
    if empty or not refs:
        raise ValueError(f"every hypothesis needs at least one non-empty reference (none for {empty[:5]})")
    return refs


@functools.cache
def _tokenizer():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _tokens(text: str) -> str:
    """One line, 13a-tokenized (mteval's tokenization, as the E2E scripts' BLEU and NIST)."""
    return _tokenizer()(" ".join(text.split()))


def _bleu(hyps: list[str], refs: list[list[str]]) -> float:
    import sacrebleu

    width = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    return sacrebleu.corpus_bleu(hyps, streams).score / 100.0


def _nist(hyps: list[str], refs: list[list[str]]) -> float:
    """nltk's NIST; 0 when every hypothesis is empty, NaN when none has 5 tokens (nltk divides by
    the number of hypothesis n-grams of each order)."""
    from nltk.translate.nist_score import corpus_nist

    hyp_tokens = [_tokens(h).split() for h in hyps]
    if not any(hyp_tokens):
        return 0.0
    try:
        return float(corpus_nist([[_tokens(r).split() for r in rs] for rs in refs], hyp_tokens, n=5))
    except ZeroDivisionError:
        return float("nan")


def _rouge(hyps: list[str], refs: list[list[str]], types: Sequence[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(types))
    scores = [scorer.score_multi(rs, h) for h, rs in zip(hyps, refs)]
    return {t: float(np.mean([s[t].fmeasure for s in scores])) for t in types}


@functools.cache
def _meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()  # one Java process, kept: loading its paraphrase tables takes seconds


def _coco(hyps: list[str], refs: list[list[str]], which: str) -> float:
    res = {i: [_tokens(h) or "."] for i, h in enumerate(hyps)}
    gts = {i: [_tokens(r) for r in rs] for i, rs in enumerate(refs)}
    if which == "meteor":
        return float(_meteor().compute_score(gts, res)[0])
    from pycocoevalcap.cider.cider import Cider

    return float(Cider().compute_score(gts, res)[0])


def nlg_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
               metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Corpus scores of ``hypotheses`` (one per input) against their ``references`` (one list each).

    Parameters
    ----------
    hypotheses : sequence of str
        Generated texts.
    references : sequence of sequence of str
        For each hypothesis its references (any number >= 1; E2E has about 8 per meaning
        representation). Texts are compared as given (case included): normalise both sides alike
        beforehand if the generator cannot produce case (an uncased tokenizer).
    metrics : sequence of str
        Any of :data:`METRICS`.

    Returns
    -------
    dict
        ``{metric: score}``.

    Raises
    ------
    ValueError
        If the lengths differ, a hypothesis has no reference, or a metric is unknown.
    RuntimeError
        Naming the metric and the reason (:func:`unavailable_metrics`) when it cannot run here.

    Examples
    --------
    >>> s = nlg_scores(["the cat sat on the mat"], [["the cat sat on the mat", "a cat sat"]],
    ...                ["bleu", "rougeL"])
    >>> round(s["bleu"], 6), round(s["rougeL"], 6)
    (1.0, 1.0)
    """
    refs = _check(hypotheses, references)
    hyps = [" ".join(h.split()) for h in hypotheses]
    missing = unavailable_metrics(metrics)
    if missing:
        raise RuntimeError("; ".join(f"{m}: {why}" for m, why in missing.items()))
    out: dict[str, float] = {}
    rouge = [m for m in metrics if m in ROUGE_TYPES]
    for m in metrics:
        if m == "bleu":
            out[m] = _bleu(hyps, refs)
        elif m == "nist":
            out[m] = _nist(hyps, refs)
        elif m in ("meteor", "cider"):
            out[m] = _coco(hyps, refs, m)
        elif m == rouge[0]:
            out.update(_rouge(hyps, refs, rouge))
    return {m: out[m] for m in metrics}
