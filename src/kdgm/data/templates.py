"""Template-guided sentence generation data (Hu et al. 2018, slides ``000_…txt``, "Template-guided Sentence
Generation"): movie-review sentences with one or two spans blanked out.

Given a template such as ``<blank> acting <blank>``, a model writes the whole sentence (``the acting is also very
good .``); each ``<blank>`` may take any number of words. The sentences are Pang & Lee's movie reviews
(``reviews/movie-review-sentences.csv`` in the data folder, see ``../shared/data/README.md``), split *by review*
into train / dev / test, so no review lends sentences to two splits.

Everything is encoded once into padded arrays and cached (:mod:`kdgm.cache`); a batch is one indexing operation.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdgm.cache import cache_key, cached_arrays
from kdgm.data.batch import Batch
from kdgm.data.text import DATA_ENV, Vocabulary
from kdgm.errors import UserError

REVIEWS_FILE = "movie-review-sentences.csv"
BOS, EOS, BLANK = "<bos>", "<eos>", "<blank>"
SPECIALS = (Vocabulary.PAD_TOKEN, Vocabulary.UNK_TOKEN, BOS, EOS, BLANK)  # ids 0..4
BOS_ID, EOS_ID, BLANK_ID = 2, 3, 4
SPLITS = ("train", "dev", "test")


def reviews_file(data_dir: str | Path | None) -> Path:
    """The reviews CSV in ``data_dir`` (or ``$KDGM_DATA_DIR``), itself or in its ``reviews/`` subfolder."""
    data_dir = data_dir or os.environ.get(DATA_ENV) or None
    hint = f"give --data-dir DIR or set {DATA_ENV} to the folder with reviews/{REVIEWS_FILE} (README, 'Text data')"
    if data_dir is None:
        raise UserError(f"movie-review data not found: {hint}")
    root = Path(data_dir).expanduser()
    for candidate in (root / REVIEWS_FILE, root / "reviews" / REVIEWS_FILE):
        if candidate.is_file():
            return candidate
    raise UserError(f"movie-review data not found at {str(root)!r}: {hint}")


def read_reviews(path: Path) -> list[list[list[str]]]:
    """Each review as its list of tokenised sentences (one per line of the CSV's second column)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows or any(len(row) != 2 for row in rows):
        raise UserError(f"{path} is not the two-column reviews CSV (label, review)")
    return [[line.split() for line in row[1].split("\n") if line.strip()] for row in rows]


@dataclass(frozen=True)
class Sentences(Batch):
    """Token sequences, each ending in ``<eos>`` then padded with ``<pad>`` (0).

    Attributes:
        tokens: (N, T) long ids. lengths: (N,) tokens up to and including ``<eos>``.
    """

    tokens: Tensor
    lengths: Tensor

    def repeat(self, times: int) -> "Sentences":
        """Tiled along dimension 0, S-major (row ``s·N + n`` is row n)."""
        return Sentences(self.tokens.repeat(times, 1), self.lengths.repeat(times))

    def mask(self) -> Tensor:
        """(N, T) bool: the real tokens (``<eos>`` included)."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device) < self.lengths[:, None]


@dataclass(frozen=True)
class InfillCondition(Batch):
    """What a sentence is generated from — the template — and, for the constraint, the true infilled content.

    Attributes:
        template: (N, U) long ids with one ``<blank>`` per blanked span, padded. template_lengths: (N,).
        truth: (N, T) the true sentence (as :class:`Sentences` tokens). truth_lengths: (N,).
        truth_infill: (N, T) bool, the true sentence's tokens that fill the blanks.
    """

    template: Tensor
    template_lengths: Tensor
    truth: Tensor
    truth_lengths: Tensor
    truth_infill: Tensor

    def repeat(self, times: int) -> "InfillCondition":
        """Tiled along dimension 0, S-major."""
        return InfillCondition(*(t.repeat(times, *([1] * (t.dim() - 1))) for t in
                                 (self.template, self.template_lengths, self.truth, self.truth_lengths,
                                  self.truth_infill)))


@dataclass(frozen=True)
class InfillBatch(Batch):
    """Templates and the sentences they were made from.

    Attributes:
        template: (B, U) long; template_lengths: (B,).
        target: (B, T) long, the sentence then ``<eos>``; target_lengths: (B,).
        infill: (B, T) bool, the target tokens that fill a blank.
        index: (B,) the sentences' positions in their split.
    """

    template: Tensor
    template_lengths: Tensor
    target: Tensor
    target_lengths: Tensor
    infill: Tensor
    index: Tensor

    def data(self) -> Sentences:
        """The observed outputs: the true sentences."""
        return Sentences(self.target, self.target_lengths)

    def condition(self) -> InfillCondition:
        """The model's input (the template) and the constraint's reference (the true content)."""
        return InfillCondition(self.template, self.template_lengths, self.target, self.target_lengths, self.infill)


@dataclass(eq=False)
class InfillDataset:
    """One split as padded arrays; ``batch(index)`` pads only to the longest row of the batch."""

    template: Tensor
    template_lengths: Tensor
    target: Tensor
    target_lengths: Tensor
    infill: Tensor
    vocab: Vocabulary = field(repr=False)

    def __len__(self) -> int:
        return len(self.target_lengths)

    def batch(self, index: Tensor) -> InfillBatch:
        index = torch.as_tensor(index, dtype=torch.long)
        u = int(self.template_lengths[index].max())
        t = int(self.target_lengths[index].max())
        return InfillBatch(self.template[index, :u], self.template_lengths[index], self.target[index, :t],
                           self.target_lengths[index], self.infill[index, :t], index)

    def words(self, tokens: Tensor, lengths: Tensor) -> list[list[str]]:
        """Token rows as words, without ``<eos>`` and padding."""
        return [self.vocab.decode(row[: n - 1 if n and row[n - 1] == EOS_ID else n].tolist())
                for row, n in zip(tokens.cpu(), lengths.cpu().tolist())]


@dataclass
class TemplateSplits:
    train: InfillDataset
    dev: InfillDataset
    test: InfillDataset
    vocab: Vocabulary


def blank_spans(n: int, rng: np.random.Generator, max_span: int = 5) -> list[tuple[int, int]]:
    """One or two non-adjacent spans ``[start, end)`` of 1–``max_span`` tokens in a sentence of n tokens, leaving at
    least one token kept (two blanks side by side would read as one)."""
    n_spans = 1 if n < 4 else int(rng.integers(1, 3))
    for _ in range(100):  # rejection sampling: almost always accepted at once for 5–25 token sentences
        lengths = rng.integers(1, max_span + 1, size=n_spans)
        starts = np.sort(rng.integers(0, n, size=n_spans))
        spans = [(int(s), int(s + l)) for s, l in zip(starts, lengths)]
        if spans[-1][1] > n or sum(l for l in lengths) >= n:
            continue
        if n_spans == 2 and spans[1][0] <= spans[0][1]:  # overlapping or adjacent
            continue
        return spans
    return [(0, 1)]


def make_template(tokens: list[str], spans: list[tuple[int, int]]) -> tuple[list[str], list[bool]]:
    """(template tokens with one ``<blank>`` per span, per-token flag of the sentence: inside a blank)."""
    infill = [any(a <= i < b for a, b in spans) for i in range(len(tokens))]
    template: list[str] = []
    for i, token in enumerate(tokens):
        if not infill[i]:
            template.append(token)
        elif i == 0 or not infill[i - 1]:
            template.append(BLANK)
    return template, infill


def _split_reviews(n_reviews: int, seed: int) -> np.ndarray:
    """(n_reviews,) split id of each review: 80% train, 10% dev, 10% test, from a seeded permutation."""
    order = np.random.default_rng(seed).permutation(n_reviews)
    split = np.zeros(n_reviews, dtype=np.int64)
    split[order[int(0.8 * n_reviews): int(0.9 * n_reviews)]] = 1
    split[order[int(0.9 * n_reviews):]] = 2
    return split


def _pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.zeros((len(rows), max(lengths.max(), 1)), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def load_templates(data_dir: str | Path | None = None, *, vocab_size: int = 10000, min_len: int = 5,
                   max_len: int = 25, seed: int = 0, max_sentences: int | None = None) -> TemplateSplits:
    """Movie-review sentences of ``min_len``–``max_len`` tokens with their templates, split by review.

    Args:
        data_dir: the data folder (see :func:`reviews_file`).
        vocab_size: the vocabulary's size, specials included (the most frequent training words; the rest is
            ``<unk>``).
        seed: the review split and the templates (fixed per sentence given the seed).
        max_sentences: keep only the first sentences of each split (smoke runs and tests).
    """
    path = reviews_file(data_dir)
    stat = path.stat()
    params = dict(vocab_size=vocab_size, min_len=min_len, max_len=max_len, seed=seed, size=stat.st_size,
                  mtime=int(stat.st_mtime))

    def build() -> dict[str, np.ndarray]:
        reviews = read_reviews(path)
        split_of = _split_reviews(len(reviews), seed)
        sentences = {name: [s for r, review in enumerate(reviews) if split_of[r] == k for s in review
                            if min_len <= len(s) <= max_len] for k, name in enumerate(SPLITS)}
        words = Vocabulary.build(sentences["train"], max_size=vocab_size - len(SPECIALS) + 2).itos[2:]
        vocab = Vocabulary([*SPECIALS, *words])
        arrays: dict[str, np.ndarray] = {"itos": np.array(vocab.itos)}
        for k, name in enumerate(SPLITS):
            rng = np.random.default_rng([seed, k])
            templates, targets, infills = [], [], []
            for tokens in sentences[name]:
                template, infill = make_template(tokens, blank_spans(len(tokens), rng))
                templates.append(vocab.encode(template))
                targets.append(vocab.encode(tokens) + [EOS_ID])
                infills.append([int(f) for f in infill] + [0])
            for key, rows in (("template", templates), ("target", targets), ("infill", infills)):
                arrays[f"{name}.{key}"], arrays[f"{name}.{key}_lengths"] = _pad(rows)
        return arrays

    arrays = cached_arrays(cache_key("templates", **params), build)
    vocab = Vocabulary([str(w) for w in arrays["itos"]])

    def split(name: str) -> InfillDataset:
        n = len(arrays[f"{name}.target_lengths"]) if max_sentences is None else max_sentences
        take = lambda key: torch.from_numpy(arrays[f"{name}.{key}"][:n])  # noqa: E731
        return InfillDataset(take("template"), take("template_lengths"), take("target"), take("target_lengths"),
                             take("infill").bool(), vocab)

    return TemplateSplits(split("train"), split("dev"), split("test"), vocab)
