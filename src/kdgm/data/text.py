"""Sentence classification data in the format of Kim (2014): any such files, and SST-2, MR, CR and TREC by name.

Each file holds one sentence per line, ``LABEL<space>tokenised sentence``. :func:`load_text_classification` reads
any train / test (/ dev) files of that format; :func:`load_sentiment` (alias :func:`load_named_text`) loads the data
sets of Kim (2014) and Hu et al. (2016) "Harnessing Deep Neural Networks with Logic Rules" by name from a folder the
user names (``data_dir`` / ``--data-dir`` or ``$KDGM_DATA_DIR``; README, section "Text data"). SST-2 and TREC come
with an official split; MR and CR do not and are evaluated by 10-fold cross-validation, as in both papers.

Sentences are stored as one padded id tensor per split, so a batch is a single indexing operation
(``SentenceDataset.batch``); the raw token lists are kept alongside for rules that inspect the words, such as the
A-but-B rule of Hu et al. (2016) (see :func:`split_on_but`). Rules written with words get their ids from
:meth:`Vocabulary.ids_of`, which matches every case variant and warns about words the vocabulary lacks.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

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
# name -> the class of each integer label. TREC's labels are not alphabetical: checked against TREC.train.all,
# label 2 holds the 86 abbreviation questions ("What does S.O.S. stand for ?"), 5 the numeric ones ("When ...").
LABEL_NAMES = {
    "sst2": ("negative", "positive"),
    "mr": ("negative", "positive"),
    "cr": ("negative", "positive"),
    "trec": ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"),
}

README_HINT = "README, section 'Text data'"

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
    hint = f"give --data-dir DIR or set {DATA_ENV} to the folder with {marker} ({README_HINT})"
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


def read_sentences(path: str | Path) -> tuple[list[list[str]], list[int]]:
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
        raise UserError(f"data file not found: {path} (a sentence file in Kim's format, one 'LABEL word word ...' "
                        f"line per sentence; {README_HINT})")
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

    def ids_of(self, words: str | Iterable[str], *, case_insensitive: bool = True, warn: bool = True) -> set[int]:
        """The token ids of ``words``, for rules built from words (e.g. "a sentence with 'but'").

        The vocabulary is case-sensitive (it keeps the files' tokens as they are), so a rule written with "But"
        would silently miss "but". By default every case variant present in the vocabulary counts. A word with no
        id at all is named in one warning: a rule on it can never fire, which is almost always a mistake (a typo,
        a word seen only outside the training split, a cap on the vocabulary's size).

        Args:
            words: one word or several.
            case_insensitive: match every case variant (``"but"`` finds ``"but"``, ``"But"``, ``"BUT"``).
            warn: warn (``UserWarning``, one line) about the words that have no id.

        Returns:
            The ids of every matching token (empty when none matches); use ``torch.isin(batch.tokens,
            torch.tensor(sorted(ids)))`` to find them in a batch.
        """
        words = [words] if isinstance(words, str) else list(words)
        if case_insensitive:
            variants: dict[str, list[int]] = {}
            for token, index in self.stoi.items():
                variants.setdefault(token.casefold(), []).append(index)
            found = {word: variants.get(word.casefold(), []) for word in words}
        else:
            found = {word: [self.stoi[word]] if word in self.stoi else [] for word in words}
        missing = [word for word, ids in found.items() if not ids]
        if missing and warn:
            case = "in any case" if case_insensitive else "with this case"
            warnings.warn(f"not in the vocabulary ({len(self)} tokens, {case}): {', '.join(map(repr, missing))}; "
                          "a rule on these words never fires", UserWarning, stacklevel=2)
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
        train: the training sentences.
        dev: held-out sentences for model selection, or None: a dev file, or a share of the training sentences
            when a loader was asked to hold one out (:func:`load_sentiment` does so for MR, CR and TREC by default).
        test: the test sentences.
        vocab: the vocabulary of the training sentences.
        name: ``"sst2"``, ``"mr"``, ``"cr"``, ``"trec"``, or the name given to :func:`load_text_classification`.
        n_classes: number of classes (labels are ``0 .. n_classes - 1``).
        label_names: the class of each label where the data set names them (SST-2, MR, CR: negative, positive;
            TREC: DESC, ENTY, ABBR, HUM, LOC, NUM), else empty.
    """

    train: SentenceDataset
    dev: SentenceDataset | None
    test: SentenceDataset
    vocab: Vocabulary
    name: str
    n_classes: int
    label_names: tuple[str, ...] = ()


def subset(dataset: SentenceDataset, n_or_index: int | Tensor | Sequence[int]) -> SentenceDataset:
    """Some sentences of a split, as a new split (the tensors are copied, the vocabulary's ids are kept).

    Args:
        dataset: the split.
        n_or_index: an int n: the first n sentences (all of them if the split has fewer); a (M,) tensor, array or
            list of indices: those sentences, in that order; a (N,) bool mask: the sentences where it holds (e.g.
            ``torch.tensor(["but" in s for s in split.sentences])``).

    Raises:
        ValueError: a negative n, or an index that is neither 1-d integers nor a bool mask as long as the split.
    """
    if isinstance(n_or_index, (int, np.integer)) and not isinstance(n_or_index, bool):
        if n_or_index < 0:
            raise ValueError(f"a subset needs n >= 0, got {n_or_index}")
        index = torch.arange(min(int(n_or_index), len(dataset)))
    else:
        index = _as_index(n_or_index, len(dataset))
    return SentenceDataset(dataset.tokens[index], dataset.lengths[index], dataset.labels[index],
                           [dataset.sentences[i] for i in index.tolist()], dataset.min_len)


def _as_index(index, n: int) -> Tensor:
    """(M,) long indices from indices or from an (n,) bool mask (which ``as_tensor(..., long)`` would turn into 0/1)."""
    index = torch.as_tensor(index)
    if index.dtype == torch.bool:
        if tuple(index.shape) != (n,):
            raise ValueError(f"a bool mask must have one entry per sentence, shape ({n},), got {tuple(index.shape)}")
        return index.nonzero().squeeze(1)
    if index.dim() != 1 or (index.is_floating_point() and index.numel() > 0) or index.is_complex():
        raise ValueError(f"expected an int, 1-d integer indices or a bool mask, got a {tuple(index.shape)} "
                         f"{index.dtype} tensor")
    return index.long()


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


# (sentences, labels) of one split, until the vocabulary is known
Split = tuple[list[list[str]], list[int]]


def _split_off_dev(train: Split, fraction: float, rng: np.random.Generator) -> tuple[Split, Split | None]:
    """Hold out a random ``fraction`` of the training sentences as dev; dev is None when that is no sentence."""
    in_dev = _hold_out(len(train[0]), fraction, rng)  # (N,)
    if not in_dev.any():
        return train, None
    return (_take(train[0], ~in_dev), _take(train[1], ~in_dev)), (_take(train[0], in_dev), _take(train[1], in_dev))


def _check_dev_fraction(dev_fraction: float) -> None:
    if not 0.0 <= dev_fraction < 1.0:
        raise UserError(f"dev_fraction must be in [0, 1), got {dev_fraction}")


def _encode_splits(train: Split, dev: Split | None, test: Split, *, name: str, n_classes: int,
                   label_names: Sequence[str], min_len: int, vocab_size: int | None = None) -> TextSplits:
    """Check the labels, build the vocabulary from the training split only, and encode every split."""
    for split_name, split in (("train", train), ("dev", dev), ("test", test)):
        bad = [y for y in split[1] if not 0 <= y < n_classes] if split is not None else []
        if bad:
            raise UserError(f"{name}: {split_name} label {bad[0]} is outside [0, {n_classes}); labels must be 0 .. "
                            "n_classes - 1 (declare every class with n_classes or label_names)")
    if label_names and len(label_names) != n_classes:
        raise UserError(f"{name}: {len(label_names)} label names for {n_classes} classes; give one name per label")
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
    label_names: Sequence[str] | None = None,
    n_classes: int | None = None,
    min_len: int = 5,
    seed: int = 0,
    vocab_size: int | None = None,
    name: str = "",
) -> TextSplits:
    """Load any sentence classification data set in Kim's (2014) format (one ``LABEL word word ...`` line each).

    Nothing is held out unless asked: ``dev`` names a dev file, or ``dev_fraction`` carves a random share of the
    training sentences (drawn from ``seed``) as dev; otherwise ``dev`` is None. The vocabulary comes from the
    training sentences only (case-sensitive, as the files are; words seen only in dev or test map to
    ``Vocabulary.UNK``). Each split keeps the order of its file.

    Args:
        train: path of the training file.
        test: path of the test file.
        dev: path of a dev file (optional).
        dev_fraction: share of the training sentences held out as dev when there is no dev file (0: none).
        label_names: the class of each label, in label order (``label_names[y]`` names label y).
        n_classes: number of classes; default ``len(label_names)``, else the largest training label plus one.
        min_len: every batch is at least this wide, for convolutions up to that width (see
            :meth:`SentenceDataset.from_sentences`).
        seed: seed of the dev hold-out.
        vocab_size: cap the vocabulary (the most frequent training words, padding and unknown markers included).
        name: a name for messages and reports (default: the training file's name).

    Returns:
        The splits, with ``label_names`` as given (empty when not).

    Raises:
        UserError: a file is missing or malformed, a label is outside ``[0, n_classes)``, both ``dev`` and
            ``dev_fraction`` are given, or no training sentence is left after the hold-out.
    """
    _check_dev_fraction(dev_fraction)
    if dev is not None and dev_fraction:
        raise UserError("give either a dev file or dev_fraction, not both")
    name = name or Path(train).name
    train_split, test_split = read_sentences(train), read_sentences(test)
    dev_split = read_sentences(dev) if dev is not None else None
    if dev_fraction:
        train_split, dev_split = _split_off_dev(train_split, dev_fraction, np.random.default_rng(seed))
        if not train_split[0]:
            raise UserError(f"{name}: dev_fraction={dev_fraction} leaves no training sentence; lower it")
    if n_classes is None:
        n_classes = len(label_names) if label_names else max(train_split[1]) + 1
    return _encode_splits(train_split, dev_split, test_split, name=name, n_classes=n_classes,
                          label_names=label_names or (), min_len=min_len, vocab_size=vocab_size)


# name -> the files it needs in its folder
_FILES = {
    "sst2": ("stsa.binary.train", "stsa.binary.test", "stsa.binary.dev"),
    "trec": ("TREC.train.all", "TREC.test.all"),
    "mr": ("rt-polarity.all",),
    "cr": ("custrev.all",),
}


def _require_files(folder: Path, key: str) -> list[Path]:
    """The paths of ``key``'s files in ``folder``; a one-line error naming the missing ones."""
    missing = [name for name in _FILES[key] if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder} has no {', '.join(missing)}, which the {key} data set needs ({README_HINT})")
    return [folder / name for name in _FILES[key]]


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
    """Load a data set of Kim (2014) and Hu et al. (2016) by name: SST-2, MR, CR or TREC (alias
    :func:`load_named_text`; for any other files in the same format, use :func:`load_text_classification`).

    - SST-2: the official train / dev / test files (``dev_fraction`` is not used).
    - MR, CR: no official split. Sentences are dealt into ``n_folds`` folds from ``seed`` (:func:`kfold_assignment`),
      fold ``fold`` is the test set, and **a random ``dev_fraction`` (default 10%) of the other sentences is held
      out as dev** for early stopping, as Kim (2014) did; the dev draw depends on ``seed`` and ``fold``.
    - TREC: the official train / test files; **``dev_fraction`` (default 10%) of the training file is held out as
      dev**, drawn from ``seed``. ``dev_fraction=0`` keeps every training sentence (then ``dev`` is None).

    The vocabulary comes from the training split only, so words seen only in dev or test map to
    ``Vocabulary.UNK``. ``label_names`` is set (TREC's labels are not alphabetical: see ``LABEL_NAMES``).

    Args:
        name: ``"sst2"``, ``"mr"``, ``"cr"`` or ``"trec"`` (case and hyphens ignored).
        data_dir: the folder with the files or its parent (see :func:`resolve_data_dir`); None reads
            ``$KDGM_DATA_DIR``.
        fold: the test fold of MR / CR, in ``[0, n_folds)`` (checked for every data set, used only by MR / CR).
        n_folds: folds of the cross-validation.
        seed: seed of the fold assignment and of the dev hold-out.
        dev_fraction: share of the non-test sentences held out as dev (MR, CR, TREC); 0 gives no dev split.
        min_len: every batch is at least this wide (see :meth:`SentenceDataset.from_sentences`).

    Raises:
        UserError: an unknown name, a bad fold or fraction, or a missing folder or file (one line, pointing to the
            README section "Text data").
    """
    key = name.lower().replace("-", "")
    if key not in DATASETS:
        raise UserError(f"unknown sentence data set {name!r}; use one of {', '.join(DATASETS)} or "
                        "load_text_classification for other files")
    if n_folds < 2:
        raise UserError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise UserError(f"fold must be in [0, {n_folds}), got {fold}")
    _check_dev_fraction(dev_fraction)
    subfolder, n_classes = DATASETS[key]
    paths = _require_files(resolve_data_dir(data_dir, subfolder), key)
    named = dict(n_classes=n_classes, label_names=LABEL_NAMES[key], min_len=min_len, name=key)
    if key == "sst2":
        train, test, dev = paths
        return load_text_classification(train, test, dev, **named)
    if key == "trec":
        return load_text_classification(*paths, dev_fraction=dev_fraction, seed=seed, **named)
    sentences, labels = read_sentences(paths[0])
    in_test = kfold_assignment(len(sentences), n_folds, seed) == fold  # (N,)
    test = (_take(sentences, in_test), _take(labels, in_test))
    rest = (_take(sentences, ~in_test), _take(labels, ~in_test))
    # The dev draw depends on the fold too, so each fold holds out a different dev set.
    train, dev = _split_off_dev(rest, dev_fraction, np.random.default_rng([seed, fold]))
    return _encode_splits(train, dev, test, **named)


# A clearer name for the same loader: it serves TREC (questions), not only sentiment.
load_named_text = load_sentiment
