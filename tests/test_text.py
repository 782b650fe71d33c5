"""Sentence classification data (kdgm.data.text): reading Kim's format, the general and the named loaders, label
names, subsets, vocabulary (ids of words in any case), padding, splits and folds.

Tests marked by the ``data_root`` fixture read the real files from ``$KDGM_DATA_DIR`` or ``../shared/data`` (relative
to the repository root) and skip when neither exists; the expected counts are those of that folder's README.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import kdgm.data
from kdgm.data.loader import BatchLoader
from kdgm.data.text import (
    DATA_ENV,
    SentenceDataset,
    TextSplits,
    Vocabulary,
    kfold_assignment,
    load_named_text,
    load_sentiment,
    load_text_classification,
    read_sentences,
    resolve_data_dir,
    split_on_but,
    subset,
)
from kdgm.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]

# Line counts from the data README.
LINES = {
    "sentiment/stsa.binary.train": 6920,
    "sentiment/stsa.binary.dev": 872,
    "sentiment/stsa.binary.test": 1821,
    "sentiment/rt-polarity.all": 10662,
    "sentiment/custrev.all": 3775,
    "questions/TREC.train.all": 5452,
    "questions/TREC.test.all": 500,
}
# Sentences containing " but " (README), counted on the raw line, label included: a sentence-initial "but" counts.
BUT_SENTENCES = {
    "sentiment/stsa.binary.train": 843,
    "sentiment/stsa.binary.test": 237,
    "sentiment/rt-polarity.all": 1609,
    "sentiment/custrev.all": 462,
}


def find_data_root() -> Path | None:
    """The shared data folder (the parent of sentiment/ and questions/), or None when it is absent."""
    candidates = [os.environ.get(DATA_ENV), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        # $KDGM_DATA_DIR may name sentiment/ itself; the tests need its parent to reach questions/ too.
        for root in (path, path.parent):
            if (root / "sentiment" / "stsa.binary.train").is_file() and (root / "questions").is_dir():
                return root
    return None


@pytest.fixture(scope="module")
def data_root() -> Path:
    root = find_data_root()
    if root is None:
        pytest.skip(f"sentence data not found: set {DATA_ENV} or provide ../shared/data next to the repository")
    return root


@pytest.fixture(scope="module")
def sst2(data_root):
    return load_sentiment("sst2", data_root)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# ----------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize("relative", sorted(LINES))
def test_line_counts_match_readme(data_root, relative):
    sentences, labels = read_sentences(data_root / relative)
    assert len(sentences) == len(labels) == LINES[relative]


@pytest.mark.parametrize("relative", sorted(BUT_SENTENCES))
def test_but_counts_match_readme(data_root, relative):
    raw = (data_root / relative).read_bytes().decode("latin-1").split("\n")
    assert sum(" but " in line for line in raw) == BUT_SENTENCES[relative]  # the README's own count
    sentences, _ = read_sentences(data_root / relative)
    assert sum("but" in s for s in sentences) == BUT_SENTENCES[relative]
    # In these files every "but" is followed by a clause B.
    assert sum(split_on_but(s) is not None for s in sentences) == BUT_SENTENCES[relative]


def test_mr_latin1_keeps_nel_inside_tokens(data_root):
    # U+0085 is a line break to str.splitlines and whitespace to str.split; neither may apply inside a sentence.
    sentences, _ = read_sentences(data_root / "sentiment" / "rt-polarity.all")
    assert any("\x85" in token for s in sentences for token in s)


def test_sst2_official_splits(sst2):
    assert (len(sst2.train), len(sst2.dev), len(sst2.test)) == (6920, 872, 1821)
    assert sst2.name == "sst2" and sst2.n_classes == 2
    assert set(sst2.train.labels.tolist()) == {0, 1}
    assert sst2.train.tokens.shape == (6920, 52) and sst2.train.tokens.dtype == torch.long
    assert sst2.train.sentences[0][:3] == ["a", "stirring", ","]


def test_trec_official_test_and_dev_from_train(data_root):
    trec = load_sentiment("trec", data_root, dev_fraction=0.1)
    assert trec.n_classes == 6 and len(trec.test) == 500
    assert len(trec.train) + len(trec.dev) == 5452
    assert len(trec.dev) == round(0.1 * 5452)
    assert set(trec.train.labels.tolist()) == set(range(6))


def test_label_names_follow_the_files(sst2, data_root):
    assert sst2.label_names == ("negative", "positive")
    trec = load_sentiment("trec", data_root)
    assert trec.label_names == ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")  # the files' order, not alphabetical
    questions = {name: [" ".join(s) for s, y in zip(trec.test.sentences, trec.test.labels.tolist()) if y == label]
                 for label, name in enumerate(trec.label_names)}
    cues = {"ABBR": lambda q: "stand for" in q or "abbreviation" in q, "HUM": lambda q: q.startswith("Who"),
            "LOC": lambda q: q.startswith("Where"), "NUM": lambda q: q.startswith(("How", "When"))}
    for name, cue in cues.items():  # each cue is most frequent among the questions of the class it names
        share = {label: sum(map(cue, qs)) / len(qs) for label, qs in questions.items()}
        assert max(share, key=share.get) == name


def _digest(dataset: SentenceDataset) -> str:
    text = "\n".join(f"{y} " + " ".join(s) for s, y in zip(dataset.sentences, dataset.labels.tolist()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# (sizes, digests) of train / dev / test as load_sentiment gave them before it was rebuilt on the general loader:
# sentiment-but relies on these splits (MR / CR hold out 10% of the training folds as dev).
PINNED = {
    ("mr", 0): ((8635, "49fe96bd4a4ab51a"), (960, "b72e3c4349955b45"), (1067, "63297407ce04968a")),
    ("cr", 1): ((3057, "c77d70dbdf669861"), (340, "59ec87196faca4c8"), (378, "0b4bd75c7e298c3d")),
    ("trec", 0): ((4907, "53cb1373cd0828f8"), (545, "585f9a33cfcb3449"), (500, "3dff7cfa5438a130")),
}


@pytest.mark.parametrize("name, fold", sorted(PINNED))
def test_named_splits_are_unchanged(data_root, name, fold):
    splits = load_sentiment(name, data_root, fold=fold, n_folds=10, seed=0)  # as sentiment-but calls it
    assert tuple((len(d), _digest(d)) for d in (splits.train, splits.dev, splits.test)) == PINNED[name, fold]


def test_vocabulary_from_train_only(sst2):
    train_words = {token for s in sst2.train.sentences for token in s}
    assert train_words <= set(sst2.vocab.itos)
    assert len(sst2.vocab) == len(train_words) + 2
    # A word that occurs in test but never in train must be encoded as UNK, in the stored tensor too.
    row, position, word = next(
        (r, p, t) for r, s in enumerate(sst2.test.sentences) for p, t in enumerate(s) if t not in train_words
    )
    assert word not in sst2.vocab
    assert sst2.test.tokens[row, position] == Vocabulary.UNK
    assert sst2.vocab.encode([word, sst2.train.sentences[0][0]])[0] == Vocabulary.UNK


def test_cv_folds_partition_all_sentences(data_root):
    sentences, labels = read_sentences(data_root / "sentiment" / "custrev.all")
    everything = Counter((" ".join(s), y) for s, y in zip(sentences, labels))

    def lines(dataset):
        return Counter((" ".join(s), y) for s, y in zip(dataset.sentences, dataset.labels.tolist()))

    test_union = Counter()
    sizes = []
    for fold in range(10):
        splits = load_sentiment("cr", data_root, fold=fold, seed=3)
        assert lines(splits.train) + lines(splits.dev) + lines(splits.test) == everything
        assert len(splits.dev) == round(0.1 * (len(sentences) - len(splits.test)))
        test_union += lines(splits.test)
        sizes.append(len(splits.test))
    # Every sentence is tested exactly once, and the folds are balanced.
    assert test_union == everything
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 3775


def test_cv_split_is_deterministic_given_seed(data_root):
    a = load_sentiment("mr", data_root, fold=2, seed=5)
    b = load_sentiment("mr", data_root, fold=2, seed=5)
    c = load_sentiment("mr", data_root, fold=2, seed=6)
    assert torch.equal(a.test.tokens, b.test.tokens) and torch.equal(a.dev.labels, b.dev.labels)
    assert a.vocab.itos == b.vocab.itos
    assert a.test.sentences != c.test.sentences
    assert len(a.train) + len(a.dev) + len(a.test) == 10662


# ------------------------------------------------------------------------------------------------ folders


def test_missing_folder_is_a_one_line_user_error(tmp_path, no_env):
    attempts = (lambda: resolve_data_dir(None), lambda: resolve_data_dir(tmp_path), lambda: load_sentiment("mr", tmp_path))
    for attempt in attempts:
        with pytest.raises(UserError) as info:
            attempt()
        message = str(info.value)
        assert DATA_ENV in message and "--data-dir" in message and "stsa.binary.train" in message
        assert "README, section 'Text data'" in message and "docs" not in message and "\n" not in message


def test_resolve_accepts_folder_parent_and_env(tmp_path, monkeypatch):
    folder = tmp_path / "sentiment"
    folder.mkdir()
    write(folder / "stsa.binary.train", "1 good\n")
    assert resolve_data_dir(folder) == folder
    assert resolve_data_dir(tmp_path) == folder
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_dir(None) == folder
    with pytest.raises(UserError, match="TREC.train.all"):
        resolve_data_dir(None, "questions")


def test_a_missing_file_of_a_named_set_is_named(tmp_path, no_env):
    folder = tmp_path / "sentiment"
    folder.mkdir()
    write(folder / "stsa.binary.train", "1 good\n")
    with pytest.raises(UserError) as info:
        load_sentiment("cr", tmp_path)
    assert "custrev.all" in str(info.value) and "README" in str(info.value) and "\n" not in str(info.value)


def test_unknown_name_and_bad_fold(tmp_path, no_env):
    with pytest.raises(UserError, match="unknown sentence data set"):
        load_sentiment("imdb", tmp_path)
    for fold in (-1, 10):
        with pytest.raises(UserError, match="fold"):
            load_sentiment("mr", tmp_path, fold=fold, n_folds=10)


# --------------------------------------------------------------------------------------------- hand-made files


def test_read_sentences_format(tmp_path):
    path = write(tmp_path / "small.all", "1 it 's good .\n0   bad\xa0movie\n\n1 \n0 a\x85b\r\n", "latin-1")
    sentences, labels = read_sentences(path)
    # Blank lines are skipped, a label-only line is an empty sentence, only ASCII whitespace separates tokens.
    assert sentences == [["it", "'s", "good", "."], ["bad\xa0movie"], [], ["a\x85b"]]
    assert labels == [1, 0, 1, 0]


def test_read_sentences_utf8(tmp_path):
    path = write(tmp_path / "utf8.txt", "1 crème brûlée\n")
    assert read_sentences(path)[0] == [["crème", "brûlée"]]


@pytest.mark.parametrize("bad", ["x good movie", "1.5 fine", "pos great"])
def test_malformed_line_names_file_and_line(tmp_path, bad):
    path = write(tmp_path / "bad.txt", f"1 fine\n0 poor\n{bad}\n")
    with pytest.raises(UserError) as info:
        read_sentences(path)
    assert f"{path}:3" in str(info.value) and "\n" not in str(info.value)


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(UserError, match="not found") as info:
        read_sentences(tmp_path / "absent.txt")
    assert "README, section 'Text data'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="no sentences"):
        read_sentences(write(tmp_path / "empty.txt", "\n\n"))


def test_vocabulary_build_and_encode():
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "b", "a"]], min_count=2)
    assert (Vocabulary.PAD, Vocabulary.UNK) == (0, 1)
    assert vocab.itos == ["<pad>", "<unk>", "b", "a"]  # by count, then alphabetically
    assert vocab.stoi == {"<pad>": 0, "<unk>": 1, "b": 2, "a": 3}
    assert len(vocab) == 4 and "c" not in vocab
    assert vocab.encode(["a", "c", "b"]) == [3, 1, 2]
    assert Vocabulary.build([["b", "a", "b"], ["c"]], max_size=3).itos == ["<pad>", "<unk>", "b"]


def make_dataset(min_len: int = 0, max_len: int | None = None) -> SentenceDataset:
    sentences = [["a", "b", "c"], ["a"], ["b", "c", "a", "b", "c", "a", "b"], []]
    vocab = Vocabulary.build(sentences)
    return SentenceDataset.from_sentences(sentences, [0, 1, 1, 0], vocab, max_len=max_len, min_len=min_len)


def test_padding_and_lengths():
    data = make_dataset()
    assert data.tokens.shape == (4, 7) and data.tokens.dtype == torch.long
    assert data.lengths.tolist() == [3, 1, 7, 0]
    # Real tokens are non-zero and everything after them is PAD.
    positions = torch.arange(7)
    real = positions < data.lengths[:, None]  # (N, T)
    assert (data.tokens[real] != Vocabulary.PAD).all() and (data.tokens[~real] == Vocabulary.PAD).all()
    assert data.labels.tolist() == [0, 1, 1, 0]


def test_min_len_and_max_len():
    wide = make_dataset(min_len=10)
    assert wide.tokens.shape == (4, 10) and wide.lengths.tolist() == [3, 1, 7, 0]
    short = make_dataset(max_len=2)
    assert short.tokens.shape == (4, 2) and short.lengths.tolist() == [2, 1, 2, 0]
    assert short.sentences[2] == ["b", "c", "a", "b", "c", "a", "b"]  # raw tokens kept whole for rules


def test_batch_trims_padding():
    data = make_dataset(min_len=2)
    batch = data.batch(torch.tensor([1, 0]))
    assert batch.tokens.shape == (2, 3)  # longest in the batch, not the data set's 7
    assert torch.equal(batch.tokens, data.tokens[[1, 0], :3])
    assert batch.lengths.tolist() == [1, 3] and batch.y.tolist() == [1, 0] and batch.index.tolist() == [1, 0]
    assert data.batch(torch.tensor([1, 3])).tokens.shape == (2, 2)  # widened to min_len
    assert data.batch(torch.tensor([2])).tokens.shape == (1, 7)


def test_batch_loader_covers_the_split():
    data = make_dataset(min_len=5)
    loader = BatchLoader(data, batch_size=3, shuffle=True, seed=1, drop_last=False)
    seen = torch.cat([batch.index for batch in loader])
    assert sorted(seen.tolist()) == [0, 1, 2, 3]
    for batch in loader:
        assert batch.tokens.shape[1] == max(5, int(batch.lengths.max()))
        assert torch.equal(batch.y, data.labels[batch.index])


def test_kfold_assignment_balanced_disjoint_deterministic():
    folds = kfold_assignment(103, 10, seed=0)
    assert folds.shape == (103,) and folds.min() == 0 and folds.max() == 9
    counts = np.bincount(folds, minlength=10)
    assert counts.sum() == 103 and counts.max() - counts.min() <= 1
    assert np.array_equal(folds, kfold_assignment(103, 10, seed=0))
    assert not np.array_equal(folds, kfold_assignment(103, 10, seed=1))
    assert not np.array_equal(folds, np.arange(103) % 10)  # shuffled, not file order
    with pytest.raises(UserError):
        kfold_assignment(10, 1, seed=0)


def test_split_on_but():
    assert split_on_but("the acting is fine but the plot is thin .".split()) == ["the", "plot", "is", "thin", "."]
    assert split_on_but("but it works".split()) == ["it", "works"]
    assert split_on_but("good but slow , but fun".split()) == ["slow", ",", "but", "fun"]  # the first "but"
    assert split_on_but("no contrast here".split()) is None
    assert split_on_but("the butter and a rebuttal".split()) is None  # tokens only, not substrings
    assert split_on_but("all good but".split()) is None  # nothing follows
    assert split_on_but([]) is None


# ------------------------------------------------------------------------------------ the general loader


def write_task(folder: Path) -> Path:
    """A three-class task in Kim's format: train (8 lines), dev (2), test (3)."""
    write(folder / "train.txt", "0 the cat sat\n1 a dog ran\n2 Birds fly high\n0 the cat slept\n"
                                "1 a dog barked\n2 birds sing\n0 cats purr\n1 dogs dig\n")
    write(folder / "dev.txt", "0 the cat\n2 birds\n")
    write(folder / "test.txt", "1 the dog sat\n2 a bird flew\n0 the zebra\n")
    return folder


def test_general_loader_holds_nothing_out_unless_asked(tmp_path):
    folder = write_task(tmp_path)
    splits = load_text_classification(folder / "train.txt", folder / "test.txt")
    assert isinstance(splits, TextSplits) and splits.dev is None
    assert (len(splits.train), len(splits.test)) == (8, 3)  # every training sentence is kept
    assert splits.name == "train.txt" and splits.n_classes == 3 and splits.label_names == ()
    assert splits.train.sentences[2] == ["Birds", "fly", "high"] and splits.test.labels.tolist() == [1, 2, 0]
    assert "zebra" not in splits.vocab and splits.test.tokens[2, 1] == Vocabulary.UNK  # vocabulary from train only
    assert splits.train.tokens.shape[1] == 5  # min_len: room for the widest filter


def test_general_loader_with_a_dev_file_and_label_names(tmp_path):
    folder = write_task(tmp_path)
    splits = load_text_classification(folder / "train.txt", folder / "test.txt", folder / "dev.txt",
                                      label_names=["cat", "dog", "bird"], name="animals", min_len=0, vocab_size=6)
    assert len(splits.dev) == 2 and splits.dev.labels.tolist() == [0, 2]
    assert splits.label_names == ("cat", "dog", "bird") and splits.n_classes == 3 and splits.name == "animals"
    assert len(splits.vocab) == 6 and splits.train.tokens.shape[1] == 3


def test_dev_fraction_is_seeded_and_partitions_the_training_file(tmp_path):
    folder = write_task(tmp_path)
    a = load_text_classification(folder / "train.txt", folder / "test.txt", dev_fraction=0.25, seed=1)
    b = load_text_classification(folder / "train.txt", folder / "test.txt", dev_fraction=0.25, seed=1)
    assert (len(a.train), len(a.dev)) == (6, 2) and a.dev.sentences == b.dev.sentences
    everything, _ = read_sentences(folder / "train.txt")
    assert sorted(map(tuple, a.train.sentences + a.dev.sentences)) == sorted(map(tuple, everything))


@pytest.mark.parametrize("kwargs, message", [
    ({"label_names": ["cat", "dog"]}, "train label 2 is outside \\[0, 2\\)"),
    ({"n_classes": 4, "label_names": ["a", "b", "c"]}, "3 label names for 4 classes"),
    ({"dev": "dev.txt", "dev_fraction": 0.1}, "either a dev file or dev_fraction"),
    ({"dev_fraction": 1.0}, "dev_fraction must be in"),
    ({"dev": "absent.txt"}, "data file not found: .*absent.txt .*README, section 'Text data'"),
])
def test_general_loader_errors_are_one_line(tmp_path, kwargs, message):
    folder = write_task(tmp_path)
    kwargs = {k: folder / v if k == "dev" else v for k, v in kwargs.items()}
    with pytest.raises(UserError, match=message) as info:
        load_text_classification(folder / "train.txt", folder / "test.txt", **kwargs)
    assert "\n" not in str(info.value)


def test_a_test_label_unseen_in_training_needs_n_classes(tmp_path):
    folder = write_task(tmp_path)
    write(folder / "test3.txt", "3 a fish swam\n")
    with pytest.raises(UserError, match="test label 3 is outside .*n_classes or label_names"):
        load_text_classification(folder / "train.txt", folder / "test3.txt")
    assert load_text_classification(folder / "train.txt", folder / "test3.txt", n_classes=4).n_classes == 4


def test_named_loader_is_the_general_loader_on_the_named_files(tmp_path, no_env):
    folder = tmp_path / "sentiment"
    folder.mkdir()
    for split, text in [("train", "1 good film\n0 bad film\n1 fine\n"), ("dev", "0 dull\n"), ("test", "1 good\n")]:
        write(folder / f"stsa.binary.{split}", text)
    named = load_named_text("sst2", tmp_path)
    general = load_text_classification(folder / "stsa.binary.train", folder / "stsa.binary.test",
                                       folder / "stsa.binary.dev", label_names=["negative", "positive"])
    assert load_named_text is load_sentiment and named.name == "sst2" and named.label_names == general.label_names
    for split in ("train", "dev", "test"):
        assert torch.equal(getattr(named, split).tokens, getattr(general, split).tokens)
    assert named.vocab.itos == general.vocab.itos


def test_named_cv_sets_hold_out_dev_by_default(tmp_path, no_env):
    folder = tmp_path / "sentiment"
    folder.mkdir()
    write(folder / "custrev.all", "".join(f"{i % 2} sentence number {i}\n" for i in range(40)))
    default = load_sentiment("cr", tmp_path, fold=0, n_folds=4)
    assert (len(default.train), len(default.dev), len(default.test)) == (27, 3, 10)  # 10% of the 30 non-test
    everything = load_sentiment("cr", tmp_path, fold=0, n_folds=4, dev_fraction=0.0)
    assert everything.dev is None and len(everything.train) == 30


def test_public_text_names():
    for name in ("load_text_classification", "load_sentiment", "load_named_text", "SentenceDataset", "Vocabulary",
                 "TextSplits", "subset", "read_sentences"):
        assert name in kdgm.data.__all__ and getattr(kdgm.data, name) is not None


# ----------------------------------------------------------------------------------------------- subsets


def test_subset_first_n_indices_and_mask():
    data = make_dataset(min_len=2)
    first = subset(data, 2)
    assert first.sentences == data.sentences[:2] and torch.equal(first.tokens, data.tokens[:2])
    assert len(subset(data, 10)) == 4 and len(subset(data, 0)) == 0 and len(subset(data, np.int64(3))) == 3
    picked = subset(data, torch.tensor([2, 0]))
    assert picked.sentences == [data.sentences[2], data.sentences[0]] and picked.labels.tolist() == [1, 0]
    assert subset(data, [3]).lengths.tolist() == [0] and picked.min_len == 2
    # a bool mask keeps the sentences where it holds (not the indices 0 and 1)
    masked = subset(data, torch.tensor([False, True, True, False]))
    assert masked.sentences == data.sentences[1:3]
    assert subset(data, [False, False, False, True]).sentences == [[]]


@pytest.mark.parametrize("bad, message", [
    (-1, "n >= 0"), (torch.tensor([True, False]), r"shape \(4,\)"), (torch.tensor([0.5]), "integer indices"),
    (torch.tensor([[0, 1]]), "integer indices"),
])
def test_subset_refuses_bad_selections(bad, message):
    with pytest.raises(ValueError, match=message):
        subset(make_dataset(), bad)


# ---------------------------------------------------------------------------------------- ids of words


def test_ids_of_finds_every_case_variant():
    vocab = Vocabulary.build([["But", "but", "BUT", "fine", "Fine"]])
    assert vocab.ids_of(["but"]) == {vocab.stoi[w] for w in ("But", "but", "BUT")}
    assert vocab.ids_of("FINE") == {vocab.stoi["fine"], vocab.stoi["Fine"]}  # one word as a string
    assert vocab.ids_of(["But"], case_insensitive=False) == {vocab.stoi["But"]}


def test_ids_of_warns_once_about_absent_words():
    vocab = Vocabulary.build([["but", "fine"]])
    with pytest.warns(UserWarning) as record:
        assert vocab.ids_of(["fine", "however", "Yet"]) == {vocab.stoi["fine"]}
    assert len(record) == 1
    message = str(record[0].message)
    assert "'however'" in message and "'Yet'" in message and "'fine'" not in message and "\n" not in message
    with pytest.warns(UserWarning, match="with this case.*'But'"):
        assert vocab.ids_of(["But"], case_insensitive=False) == set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vocab.ids_of(["however"], warn=False) == set()
