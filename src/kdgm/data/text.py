"""Sentence classification data in the format of Kim (2014): SST-2, MR, CR and TREC.

Each file holds one sentence per line, ``LABEL<space>tokenised sentence``. The files are not shipped with kdgm: the
user names the folder that holds them (``data_dir`` / ``--data-dir`` or ``$KDGM_DATA_DIR``). SST-2 and TREC come
with an official split; MR and CR do not and are evaluated by 10-fold cross-validation, as in Kim (2014) and in
Hu et al. (2016) "Harnessing Deep Neural Networks with Logic Rules".

Sentences are stored as one padded id tensor per split, so a batch is a single indexing operation
(``SentenceDataset.batch``); the raw token lists are kept alongside for rules that inspect the words, such as the
A-but-B rule of Hu et al. (2016) (see :func:`split_on_but`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from kdgm.data.batch import TextBatch
from kdgm.errors import UserError

DATA_ENV = "KDGM_DATA_DIR"

# The files of each data folder; the first one names the folder in error messages.
FOLDER_FILES = {
    "sentiment": (
        "stsa.binary.train",
        "stsa.binary.dev",
        "stsa.binary.test",
        "rt-polarity.all",
        "custrev.all",
    ),
    "questions": ("TREC.train.all", "TREC.test.all"),
}

# name -> (subfolder, number of classes)
DATASETS = {
    "sst2": ("sentiment", 2),
    "mr": ("sentiment", 2),
    "cr": ("sentiment", 2),
    "trec": ("questions", 6),
}
# name -> the class of each integer label (TREC's order is that of its files, see ../shared/data/README.md)
LABEL_NAMES = {
    "sst2": ("negative", "positive"),
    "mr": ("negative", "positive"),
    "cr": ("negative", "positive"),
    "trec": ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"),
}

# Tokens are separated by ASCII whitespace only: the latin-1 files contain U+0085 (an ellipsis in cp1252) and the
# SST-2 files U+00A0, which ``str.split()`` would treat as separators, changing the tokens Kim's byte-level
# loader saw.
_SEPARATOR = re.compile(r"[ \t\r\f\v]+")
_ASCII_BLANKS = " \t\r\f\v"


def resolve_data_dir(data_dir: str | Path | None, subfolder: str = "sentiment") -> Path:
    """The folder that holds the files of ``subfolder`` (``"sentiment"`` or ``"questions"``).

    Args:
        data_dir: the folder named by the user; ``None`` reads ``$KDGM_DATA_DIR``. Either the folder that holds the
            files or its parent (a folder with a ``sentiment/`` or ``questions/`` subfolder) is accepted, so one
            setting serves every data set.
        subfolder: which group of files is needed.

    Raises:
        UserError: neither the folder nor its ``subfolder`` holds any of the expected files.
    """
    if subfolder not in FOLDER_FILES:
        raise UserError(f"unknown data subfolder {subfolder!r}; use one of {', '.join(FOLDER_FILES)}")
    marker = FOLDER_FILES[subfolder][0]
    hint = f"give --data-dir DIR or set {DATA_ENV} to the folder with {marker} (README, section 'Text data')"
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV) or None
    if data_dir is None:
        raise UserError(f"{subfolder} data folder not found: {hint}")
    root = Path(data_dir).expanduser()
    for candidate in (root, root / subfolder):
        if candidate.is_dir() and any((candidate / name).is_file() for name in FOLDER_FILES[subfolder]):
            return candidate
    raise UserError(f"{subfolder} data folder not found at {str(root)!r}: {hint}")


def _decode(raw: bytes) -> str:
    # SST-2 is UTF-8 while MR and TREC are ISO-8859-1; latin-1 decodes any byte string, so it is the fallback.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_sentences(path: Path) -> tuple[list[list[str]], list[int]]:
    """Read one file in Kim's format.

    Lines are split on ``"\\n"`` only (``str.splitlines`` would also break at U+0085, which MR contains inside
    sentences). Blank lines are skipped; a line with a label and no words is kept as an empty sentence (CR has four).

    Returns:
        sentences: one token list per line.
        labels: the integer label of each line.

    Raises:
        UserError: the file is missing, holds no sentence, or has a line whose first field is not an integer label.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}; check --data-dir or {DATA_ENV}")
    text = _decode(path.read_bytes())
    sentences: list[list[str]] = []
    labels: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip(_ASCII_BLANKS)
        if not line:
            continue
        label, *tokens = _SEPARATOR.split(line)
        if not (label.isascii() and label.isdigit()):
            raise UserError(
                f"{path}:{number}: expected 'LABEL word word ...' with an integer label, got {line[:40]!r}; "
                "fix or remove that line"
            )
        sentences.append(tokens)
        labels.append(int(label))
    if not sentences:
        raise UserError(f"{path} holds no sentences; expected lines 'LABEL word word ...'")
    return sentences, labels


def split_on_but(tokens: Sequence[str]) -> list[str] | None:
    """The clause B of a sentence "A but B": the tokens after the first standalone token ``"but"``.

    Hu et al. (2016) use B's prediction as the rule feature. Their script splits the raw string on the substring
    ``"but"``, which also matches inside words ("butter", "rebuttal"); splitting on the token avoids that.

    Returns:
        the tokens after the first ``"but"``, or None when the sentence has no ``"but"`` or nothing follows it.
    """
    tokens = list(tokens)
    try:
        position = tokens.index("but")
    except ValueError:
        return None
    clause = tokens[position + 1 :]
    return clause or None


@dataclass
class Vocabulary:
    """Token <-> id map with padding id 0 and unknown-word id 1.

    Attributes:
        itos: the token of each id; ``itos[0]`` and ``itos[1]`` are the padding and unknown markers.
        stoi: the id of each token (derived from ``itos``).
    """

    PAD = 0
    UNK = 1
    PAD_TOKEN = "<pad>"
    UNK_TOKEN = "<unk>"

    itos: list[str]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.itos[:2] != [self.PAD_TOKEN, self.UNK_TOKEN]:
            raise ValueError(f"a vocabulary must start with {self.PAD_TOKEN!r}, {self.UNK_TOKEN!r}")
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sentences: Sequence[Sequence[str]], min_count: int = 1, max_size: int | None = None
    ) -> "Vocabulary":
        """Vocabulary of the words that occur at least ``min_count`` times.

        Words are ordered by decreasing count, ties alphabetically, so the ids do not depend on sentence order.
        ``max_size`` caps the total size, padding and unknown markers included (the embedding table's rows).
        """
        counts = Counter(token for sentence in sentences for token in sentence)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(max_size - 2, 0)]
        return cls([cls.PAD_TOKEN, cls.UNK_TOKEN, *words])

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(token, self.UNK) for token in tokens]

    def ids_of(self, words: Sequence[str], *, case_insensitive: bool = True, warn: bool = True) -> set[int]:
        """The token ids of ``words``, for rules built from words (e.g. "a sentence with 'but'").

        The vocabulary is case-sensitive, so a rule written with "But" would silently miss "but": by default every
        case variant present in the vocabulary counts. Words absent from the vocabulary are named in one warning
        (a rule that can never fire is almost always a mistake).
        """
        if isinstance(words, str):
            words = [words]
        if case_insensitive:
            variants: dict[str, list[int]] = {}
            for token, index in self.stoi.items():
                variants.setdefault(token.lower(), []).append(index)
            found = {word: variants.get(word.lower(), []) for word in words}
        else:
            found = {word: [self.stoi[word]] if word in self.stoi else [] for word in words}
        missing = [word for word, ids in found.items() if not ids]
        if missing and warn:
            warnings.warn(f"not in the vocabulary ({len(self)} tokens): {', '.join(map(repr, missing))}; a rule on "
                          "them never fires", UserWarning, stacklevel=2)
        return {index for ids in found.values() for index in ids}

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi


@dataclass(eq=False)
class SentenceDataset:
    """One split of a sentence classification data set, held as padded tensors.

    Attributes:
        tokens: (N, T_max) long ids padded with ``Vocabulary.PAD`` on the right; ``T_max >= min_len``.
        lengths: (N,) long number of real (non-padding) tokens; 0 for an empty sentence.
        labels: (N,) long class labels.
        sentences: the raw token lists (not truncated by ``max_len``), for rules that look at the words.
        min_len: the narrowest batch ``batch`` returns.
    """

    tokens: Tensor
    lengths: Tensor
    labels: Tensor
    sentences: list[list[str]] = field(repr=False)
    min_len: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: Tensor) -> TextBatch:
        """The sentences at ``index`` (B,), padded only to the longest of them (and at least ``min_len``)."""
        index = torch.as_tensor(index, dtype=torch.long)
        lengths = self.lengths[index]  # (B,)
        width = max(int(lengths.max()) if len(index) else 0, self.min_len)
        return TextBatch(tokens=self.tokens[index, :width], lengths=lengths, y=self.labels[index], index=index)

    @classmethod
    def from_sentences(
        cls,
        sentences: Sequence[Sequence[str]],
        labels: Sequence[int],
        vocab: Vocabulary,
        max_len: int | None = None,
        min_len: int = 0,
    ) -> "SentenceDataset":
        """Encode token lists with ``vocab``.

        Args:
            max_len: keep only the first ``max_len`` tokens of longer sentences.
            min_len: pad every sentence to at least this many positions: a convolution of width ``h`` needs
                ``h`` positions (Kim 2014 uses widths up to 5). ``lengths`` still counts only real tokens.
        """
        if len(sentences) != len(labels):
            raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")
        encoded = [vocab.encode(s[:max_len] if max_len is not None else s) for s in sentences]
        lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
        width = max(int(lengths.max()) if len(encoded) else 0, min_len)
        tokens = np.full((len(encoded), width), Vocabulary.PAD, dtype=np.int64)  # (N, T_max)
        for row, ids in enumerate(encoded):
            tokens[row, : len(ids)] = ids
        return cls(
            tokens=torch.from_numpy(tokens),
            lengths=torch.from_numpy(lengths),
            labels=torch.tensor(list(labels), dtype=torch.long),
            sentences=[list(s) for s in sentences],
            min_len=min_len,
        )


@dataclass(eq=False)
class TextSplits:
    """The splits of one data set with the vocabulary of its training split.

    Attributes:
        dev: held-out sentences for model selection; the official dev set for SST-2, carved from the training
            sentences otherwise (None when ``dev_fraction`` is 0).
        name: ``"sst2"``, ``"mr"``, ``"cr"``, ``"trec"``, or the name given to :func:`load_text_classification`.
        n_classes: number of classes (labels are ``0 .. n_classes - 1``).
        label_names: the class of each label where the data set names them (else empty).
    """

    train: SentenceDataset
    dev: SentenceDataset | None
    test: SentenceDataset
    vocab: Vocabulary
    name: str
    n_classes: int
    label_names: tuple[str, ...] = ()


def subset(dataset: SentenceDataset, n_or_index: int | Tensor) -> SentenceDataset:
    """The first ``n`` sentences of a split (all of them if it has fewer), or those at a (M,) index tensor."""
    if isinstance(n_or_index, int):
        if n_or_index < 0:
            raise ValueError(f"a subset needs n >= 0, got {n_or_index}")
        index = torch.arange(min(n_or_index, len(dataset)))
    else:
        index = torch.as_tensor(n_or_index, dtype=torch.long)
    return SentenceDataset(dataset.tokens[index], dataset.lengths[index], dataset.labels[index],
                           [dataset.sentences[i] for i in index.tolist()], dataset.min_len)


def kfold_assignment(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold id of each of ``n`` sentences: a seeded shuffle dealt round-robin, so fold sizes differ by at most one.

    Returns:
        (n,) int64 fold ids in ``[0, n_folds)``.
    """
    if n_folds < 2:
        raise UserError(f"n_folds must be at least 2, got {n_folds}")
    order = np.random.default_rng(seed).permutation(n)  # (n,)
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % n_folds
    return folds


def _hold_out(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) bool mask of a random ``fraction`` of ``n`` items."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(fraction * n))]] = True
    return mask


def _take(items: Sequence, mask: np.ndarray) -> list:
    # Keep file order inside each split so that ``index`` is stable and easy to trace back to a line.
    return [items[i] for i in np.flatnonzero(mask)]


def load_sentiment(
    name: str,
    data_dir: str | Path | None = None,
    *,
    fold: int = 0,
    n_folds: int = 10,
    seed: int = 0,
    dev_fraction: float = 0.1,
    min_len: int = 5,
) -> TextSplits:
    """Load SST-2, MR, CR or TREC as train / dev / test splits (for any other data set in the same format, use
    :func:`load_text_classification`).

    SST-2 uses its official three splits. MR and CR have none: sentences are dealt into ``n_folds`` folds from
    ``seed`` (:func:`kfold_assignment`), fold ``fold`` is the test set, and a random ``dev_fraction`` of the
    remaining sentences is held out as dev for early stopping, as Kim (2014) did. TREC has an official train/test
    split; dev is carved from its training file the same way. The vocabulary comes from the training split only, so
    words seen only in dev or test map to ``Vocabulary.UNK``.

    Args:
        name: ``"sst2"``, ``"mr"``, ``"cr"`` or ``"trec"``.
        data_dir: see :func:`resolve_data_dir`.
        fold: the test fold of MR / CR, in ``[0, n_folds)`` (checked for every data set, used only by MR / CR).
        n_folds: folds of the cross-validation.
        seed: seed of the fold assignment and of the dev hold-out.
        dev_fraction: share of the non-test sentences held out as dev (MR, CR, TREC); 0 gives no dev split.
        min_len: every batch is at least this wide (see :meth:`SentenceDataset.from_sentences`).
    """
    key = name.lower().replace("-", "")
    if key not in DATASETS:
        raise UserError(f"unknown sentence data set {name!r}; use one of {', '.join(DATASETS)}")
    if n_folds < 2:
        raise UserError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise UserError(f"fold must be in [0, {n_folds}), got {fold}")
    if not 0.0 <= dev_fraction < 1.0:
        raise UserError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    subfolder, n_classes = DATASETS[key]
    folder = resolve_data_dir(data_dir, subfolder)

    # Each split is a (sentences, labels) pair until the vocabulary is known.
    dev: tuple[list, list] | None
    if key == "sst2":
        train = read_sentences(folder / "stsa.binary.train")
        dev = read_sentences(folder / "stsa.binary.dev")
        test = read_sentences(folder / "stsa.binary.test")
    else:
        if key == "trec":
            rest = read_sentences(folder / "TREC.train.all")
            test = read_sentences(folder / "TREC.test.all")
            rng = np.random.default_rng(seed)
        else:
            sentences, labels = read_sentences(folder / ("rt-polarity.all" if key == "mr" else "custrev.all"))
            in_test = kfold_assignment(len(sentences), n_folds, seed) == fold  # (N,)
            test = (_take(sentences, in_test), _take(labels, in_test))
            rest = (_take(sentences, ~in_test), _take(labels, ~in_test))
            # The dev draw depends on the fold too, so each fold holds out a different dev set.
            rng = np.random.default_rng([seed, fold])
        in_dev = _hold_out(len(rest[0]), dev_fraction, rng)  # (N_rest,)
        train = (_take(rest[0], ~in_dev), _take(rest[1], ~in_dev))
        dev = (_take(rest[0], in_dev), _take(rest[1], in_dev)) if in_dev.any() else None

    return _encode_splits(train, dev, test, key, n_classes, LABEL_NAMES[key], min_len)


Split = tuple[list[list[str]], list[int]]


def _encode_splits(train: Split, dev: Split | None, test: Split, name: str, n_classes: int,
                   label_names: Sequence[str], min_len: int, vocab_size: int | None = None) -> TextSplits:
    """Check the labels, build the vocabulary from the training split only, and encode every split."""
    for split in (train, dev, test):
        if split is not None and any(not 0 <= y < n_classes for y in split[1]):
            raise UserError(f"{name} labels must be in [0, {n_classes}); check its files")
    vocab = Vocabulary.build(train[0], max_size=vocab_size)

    def encode(split: Split) -> SentenceDataset:
        return SentenceDataset.from_sentences(split[0], split[1], vocab, min_len=min_len)

    return TextSplits(train=encode(train), dev=encode(dev) if dev is not None else None, test=encode(test),
                      vocab=vocab, name=name, n_classes=n_classes, label_names=tuple(label_names))


def load_text_classification(
    train: str | Path,
    test: str | Path,
    dev: str | Path | None = None,
    *,
    dev_fraction: float = 0.0,
    seed: int = 0,
    n_classes: int | None = None,
    label_names: Sequence[str] | None = None,
    min_len: int = 5,
    vocab_size: int | None = None,
    name: str = "",
) -> TextSplits:
    """Load any sentence classification data set in Kim's format (one ``LABEL word word ...`` line per sentence).

    Nothing is held out unless asked: ``dev`` names a dev file, or ``dev_fraction`` carves a random share of the
    training sentences (drawn from ``seed``) as dev. The vocabulary comes from the training split only (words seen
    only in dev or test map to ``Vocabulary.UNK``).

    Args:
        train, test, dev: paths of the files.
        dev_fraction: share of the training sentences held out as dev when there is no dev file (0: none).
        n_classes: number of classes (default: the largest label in the training file, plus one).
        label_names: the class of each label, in label order.
        min_len: every batch is at least this wide (see :meth:`SentenceDataset.from_sentences`).
        vocab_size: cap the vocabulary (the most frequent training words, padding and unknown included).
        name: a name for error messages and reports (default: the training file's name).
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise UserError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    if dev is not None and dev_fraction:
        raise UserError("give either a dev file or dev_fraction, not both")
    name = name or Path(train).name
    train_split = read_sentences(Path(train))
    test_split = read_sentences(Path(test))
    dev_split = read_sentences(Path(dev)) if dev is not None else None
    if dev_fraction:
        in_dev = _hold_out(len(train_split[0]), dev_fraction, np.random.default_rng(seed))  # (N,)
        dev_split = (_take(train_split[0], in_dev), _take(train_split[1], in_dev))
        train_split = (_take(train_split[0], ~in_dev), _take(train_split[1], ~in_dev))
    n_classes = n_classes or max(train_split[1]) + 1
    if label_names is not None and len(label_names) != n_classes:
        raise UserError(f"{len(label_names)} label names for {n_classes} classes")
    return _encode_splits(train_split, dev_split, test_split, name, n_classes, label_names or (), min_len, vocab_size)
