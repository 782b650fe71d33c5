"""The public API as a new user meets it: a rule on a new text-classification task, from files in Kim's format, with
nothing but the package-level names (``kdgm.data``, ``kdgm.knowledge``, ``kdgm.models``, ``kdgm.train``)."""

from __future__ import annotations

import csv
import importlib

import pytest
import torch

from kdgm.data import BatchLoader, load_text_classification, subset
from kdgm.knowledge import FunctionRule, RuleDistillation, RuleSet, Truth, predict_with_rules
from kdgm.models import SentenceCNN
from kdgm.train import Phase, PhasedUpdater, fit, make_fabric

POSITIVE = ["Great fun and a great cast", "a lovely warm film", "great acting , great story", "i loved it",
            "warm and lovely", "fun from start to end"]
NEGATIVE = ["dull and slow", "a boring mess", "i hated the slow plot", "boring boring boring", "a dull film",
            "slow , dull , long"]


@pytest.fixture
def review_files(tmp_path):
    """A new task: tiny review files in Kim's format, labels 0 (bad) and 1 (good), "Great" in two cases."""
    lines = [f"1 {s}" for s in POSITIVE] + [f"0 {s}" for s in NEGATIVE]
    (tmp_path / "train.txt").write_text("\n".join(lines * 4) + "\n")
    (tmp_path / "test.txt").write_text("1 great fun\n0 boring and slow\n1 Great cast\n0 a dull mess\n1 warm film\n")
    return tmp_path


def test_a_rule_on_a_new_text_task_with_the_public_api(review_files, tmp_path):
    splits = load_text_classification(review_files / "train.txt", review_files / "test.txt",
                                      label_names=["bad", "good"])
    assert splits.dev is None and len(splits.train) == 48 and splits.label_names == ("bad", "good")
    great = torch.tensor(sorted(splits.vocab.ids_of(["great"])))  # "great" and "Great": the vocabulary keeps case
    assert len(great) == 2

    def great_means_good(model, batch):  # r(x, y) = "a review with 'great' is good", for both labels at once
        has_great = torch.isin(batch.tokens, great.to(batch.tokens.device)).any(1)[:, None]  # (B, 1) bool
        return (Truth(has_great) >> Truth(torch.tensor([[0.0, 1.0]]))).value  # (B, 2)

    torch.manual_seed(0)
    model = SentenceCNN(len(splits.vocab), n_classes=2, embed_dim=8, n_filters=4, dropout=0.5)
    rules = RuleSet([FunctionRule(great_means_good, confidence=1.0)], C=6.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    updater = PhasedUpdater(model, [Phase("main", RuleDistillation(rules), optimizer)])
    train = subset(splits.train, 40)
    fit(make_fabric("cpu"), updater, BatchLoader(train, 8, seed=0), max_steps=10, folder=tmp_path / "run",
        log_every=5, tensorboard=False, progress_bar=False)

    with (tmp_path / "run" / "train.csv").open() as handle:
        logged = list(csv.DictReader(handle))
    coverage = [float(row[name]) for row in logged for name in row if name.endswith("coverage0")]
    assert coverage and all(0 < c < 1 for c in coverage)  # the rule fires on the reviews with "great", only them

    predictions = predict_with_rules(model, rules, splits.test)
    assert predictions.log_p.shape == predictions.log_q.shape == (5, 2) and predictions.y.tolist() == [1, 0, 1, 0, 1]
    assert predictions.fires[:, 0].tolist() == [True, False, True, False, False]
    assert predictions.accuracy(predictions.fires[:, 0])["q"] == 1.0  # the teacher follows the rule where it fires
    assert set(predictions.accuracy()) == {"p", "q"} and model.training  # the mode it found is restored


@pytest.mark.parametrize("package", ["kdgm.data", "kdgm.knowledge", "kdgm.models", "kdgm.train"])
def test_every_public_name_is_importable_and_documented(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(value, "__doc__", None), f"{package}.{name} has no docstring"
