"""Metrics of template-guided sentence generation (Hu et al. 2018): perplexity of the infilled tokens, and what the
perplexity does not show — infill BLEU against the true content, template adherence, distinct-2.

Perplexities are pure tensor functions; the sample metrics read words (a loop over samples at evaluation time).
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import Tensor

BLANK = "<blank>"


def perplexity(token_log_probs: Tensor, mask: Tensor) -> float:
    """``exp(−mean log p)`` over the (N, T) tokens where the (N, T) bool ``mask`` holds."""
    count = mask.sum()
    if count == 0:
        raise ValueError("no token to average over")
    return float(torch.exp(-(token_log_probs * mask).sum() / count))


def infill_f1(tokens: Tensor, written: Tensor, truth: Tensor, truth_infill: Tensor) -> Tensor:
    """(N,) unigram F1 of the words each sentence wrote against its true infilled words, in one batched comparison.

    Precision: the share of written tokens that occur among the true infill's; recall: the share of true infill
    tokens that occur among the written ones (0 when either side is empty). A yardstick of a sample's content that
    needs no learned network, e.g. to see whether q ∝ p exp(α f_φ) prefers samples closer to the truth than p does.

    Args:
        tokens: (N, T) the sentences. written: (N, T) bool, their own words (not copied from the template).
        truth: (N, T*) the true sentences. truth_infill: (N, T*) bool, their infilled words.
    """
    same = (truth[:, :, None] == tokens[:, None, :]) & truth_infill[:, :, None] & written[:, None, :]  # (N, T*, T)
    n_written, n_truth = written.sum(1), truth_infill.sum(1)  # (N,), (N,)
    precision = same.any(1).sum(1) / n_written.clamp(min=1)  # (N,)
    recall = same.any(2).sum(1) / n_truth.clamp(min=1)  # (N,)
    return 2 * precision * recall / (precision + recall).clamp(min=1e-12)  # 0 where both are 0


def extract_infill(sample: Sequence[str], template: Sequence[str]) -> list[str] | None:
    """The words a sample wrote into the template's blanks, in order, or None when it does not follow the template
    (every non-blank template word kept, in order, with each ``<blank>`` taking zero or more words)."""
    # every word is " word": a template word must match a whole word, a blank any run of whole words
    pattern = "".join(r"((?: \S+)*?)" if token == BLANK else " " + re.escape(token) for token in template)
    match = re.fullmatch(pattern, "".join(" " + word for word in sample))
    if match is None:
        return None
    return [word for group in match.groups() for word in group.split()]


def template_adherence(samples: Sequence[Sequence[str]], templates: Sequence[Sequence[str]]) -> float:
    """The share of samples that follow their template (see :func:`extract_infill`)."""
    return sum(extract_infill(s, t) is not None for s, t in zip(samples, templates)) / max(len(samples), 1)


def distinct_n(samples: Sequence[Sequence[str]], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of a set of samples (diversity; Li et al. 2016)."""
    grams = [tuple(s[i: i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def infill_bleu(samples: Sequence[Sequence[str]], templates: Sequence[Sequence[str]],
                references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu) of the samples' infilled words against the true infilled words; a sample that does
    not follow its template contributes an empty infill. The text is already tokenised (``tokenize="none"``)."""
    import sacrebleu

    hypotheses = [" ".join(extract_infill(s, t) or []) for s, t in zip(samples, templates)]
    return sacrebleu.corpus_bleu(hypotheses, [[" ".join(r) for r in references]], tokenize="none",
                                force=True).score  # already tokenised words: no detokenisation warning
