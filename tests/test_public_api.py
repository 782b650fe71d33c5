"""The public API as a new user meets it: rules on a new text-classification task from files in Kim's format, with
nothing but the names the README shows; and the checks that keep rules from failing silently."""

from __future__ import annotations

import pytest
import torch

from kdgm.data import SentenceDataset, Vocabulary, load_text_classification, subset
from kdgm.knowledge import FunctionRule, RuleDistillation, RuleSet, Truth, predict_with_rules
from kdgm.models import SentenceCNN
from kdgm.train import Phase, PhasedUpdater, fit, make_fabric
from kdgm.data import BatchLoader

POSITIVE = ["great fun and a great cast", "a lovely warm film", "great acting , great story", "i loved it",
            "warm and lovely", "fun from start to end"]
NEGATIVE = ["dull and slow", "a boring mess", "i hated the slow plot", "boring boring boring", "a dull film",
            "slow , dull , long"]


@pytest.fixture
def files(tmp_path):
    """A new task: tiny review files in Kim's format, labels 0 (bad) and 1 (good)."""
    lines = [f"1 {s}" for s in POSITIVE] + [f"0 {s}" for s in NEGATIVE]
    (tmp_path / "train.txt").write_text("\n".join(lines * 4) + "\n")
    (tmp_path / "test.txt").write_text("1 great fun\n0 boring and slow\n1 great cast\n0 a dull mess\n")
    return tmp_path


def test_rules_on_a_new_text_task_with_the_public_api(files):
    splits = load_text_classification(files / "train.txt", files / "test.txt", label_names=["bad", "good"])
    assert splits.dev is None and len(splits.train) == 48 and splits.label_names == ("bad", "good")
    great = torch.tensor(sorted(splits.vocab.ids_of(["Great"])))  # the vocabulary is lower case: "great" matches

    def great_means_good(model, batch):  # r(x, y): "a sentence with 'great' is good", for both labels at once
        has_great = torch.isin(batch.tokens, great).any(1)[:, None]  # (B, 1) bool
        return (Truth(has_great) >> Truth(torch.tensor([[0.0, 1.0]]))).value.expand(len(batch.tokens), 2)

    torch.manual_seed(0)
    model = SentenceCNN(len(splits.vocab), n_classes=2, embed_dim=8, n_filters=4, dropout=0.0)
    rules = RuleSet([FunctionRule(great_means_good, confidence=1.0)], C=6.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    updater = PhasedUpdater(model, [Phase("main", RuleDistillation(rules), optimizer)])
    fit(make_fabric("cpu"), updater, BatchLoader(splits.train, 8, seed=0), max_steps=30, progress_bar=False)
    predictions = predict_with_rules(model, rules, splits.test)
    accuracy = predictions.accuracy()
    assert predictions.log_q.shape == (4, 2) and 0 <= accuracy["p"] <= 1
    has_great = torch.tensor(["great" in s for s in splits.test.sentences])
    assert predictions.accuracy(has_great)["q"] == 1.0  # the teacher follows the rule where it fires
    assert model.training  # predict_with_rules restores the mode it found


def test_a_dev_split_is_only_held_out_when_asked(files):
    splits = load_text_classification(files / "train.txt", files / "test.txt", dev_fraction=0.25, seed=1)
    assert len(splits.train) == 36 and len(splits.dev) == 12
    assert len(subset(splits.train, 5)) == 5 and subset(splits.train, torch.tensor([3, 1])).sentences[0] == \
        splits.train.sentences[3]


def test_ids_of_matches_every_case_and_warns_about_absent_words():
    vocab = Vocabulary.build([["But", "but", "fine"]])
    assert vocab.ids_of(["but"]) == {vocab.stoi["But"], vocab.stoi["but"]}
    assert vocab.ids_of(["But"], case_insensitive=False) == {vocab.stoi["But"]}
    with pytest.warns(UserWarning, match="not in the vocabulary .*'however'"):
        assert vocab.ids_of(["fine", "however"]) == {vocab.stoi["fine"]}


def _dummy(batch_size: int = 3) -> tuple[torch.nn.Module, object, torch.Tensor]:
    data = SentenceDataset.from_sentences([["a", "b"], ["c"], ["a"]], [0, 1, 0], Vocabulary.build([["a", "b", "c"]]))
    model = SentenceCNN(5, n_classes=2, embed_dim=4, n_filters=2, dropout=0.0, widths=(1,))
    batch = data.batch(torch.arange(batch_size))
    return model, batch, torch.log_softmax(model(*batch.inputs()), -1)


@pytest.mark.parametrize("table, message", [
    (lambda b: torch.ones(len(b.tokens), 1), r"shape \(3, 1\), expected \(3, 2\) .*expand"),
    (lambda b: torch.full((len(b.tokens), 2), 1.5), r"outside \[0, 1\] \(min 1.5, max 1.5\)"),
    (lambda b: torch.full((len(b.tokens), 2), float("nan")), r"outside \[0, 1\]"),
])
def test_rules_that_would_fail_silently_are_one_line_errors(table, message):
    model, batch, log_p = _dummy()
    rules = RuleSet([FunctionRule(lambda m, b: table(b))])
    with pytest.raises(ValueError, match=message):
        rules.teacher(log_p, model, batch)


def test_bool_truths_and_rule_coverage():
    model, batch, log_p = _dummy()
    mask = torch.tensor([[True, False], [True, True], [False, True]])
    assert Truth(mask).value.dtype == torch.get_default_dtype() and (~Truth(True)).value.item() == 0.0
    rules = RuleSet([FunctionRule(lambda m, b: mask), FunctionRule(lambda m, b: torch.ones(3, 2))])
    truths = rules.truths(model, batch, (3, 2))
    torch.testing.assert_close(rules.coverage(truths), torch.tensor([2 / 3, 0.0]))
    out = RuleDistillation(rules)(model, batch)
    assert out.terms["coverage0"].item() == pytest.approx(2 / 3) and out.terms["coverage1"].item() == 0.0
