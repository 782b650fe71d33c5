"""Template-guided sentence generation: templates, the infilling model's likelihood and samples, the infill-match
constraint, and the text metrics, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import sentiment_data_dir
from kdgm.cli import main
from kdgm.data.templates import (
    BLANK, BLANK_ID, BOS_ID, EOS_ID, InfillCondition, Sentences, blank_spans, load_templates, make_template,
)
from kdgm.experiments.template_infill import InfillMatch
from kdgm.metrics.infill import (
    distinct_n, extract_infill, infill_bleu, infill_f1, perplexity, template_adherence,
)
from kdgm.models.infill import TemplateInfiller, sample_categorical
from kdgm.train.checkpoint import BEST, load_checkpoint
from kdgm.train.logs import read_csv


def test_blank_spans_are_one_or_two_short_separate_spans_that_keep_a_word():
    rng = np.random.default_rng(0)
    counts = set()
    for n in list(range(5, 26)) * 40:
        spans = blank_spans(n, rng)
        counts.add(len(spans))
        assert all(1 <= b - a <= 5 and 0 <= a < b <= n for a, b in spans)
        assert sum(b - a for a, b in spans) < n
        if len(spans) == 2:
            assert spans[1][0] > spans[0][1]  # not adjacent: two blanks never read as one
    assert counts == {1, 2}


def test_make_template_blanks_each_span_with_one_token():
    template, infill = make_template("the acting is also very good .".split(), [(0, 1), (2, 7)])
    assert template == [BLANK, "acting", BLANK]
    assert infill == [True, False, True, True, True, True, True]


def test_extract_infill_and_adherence():
    template = ["i", BLANK, "out", "of", "10", "."]
    assert extract_infill("i will give the movie 7 out of 10 .".split(), template) == "will give the movie 7".split()
    assert extract_infill("i out of 10 .".split(), template) == []  # a blank may take no word
    assert extract_infill("i give it 7 out of ten .".split(), template) is None  # a template word changed
    assert extract_infill("a bb b".split(), ["a", BLANK, "b", BLANK]) == ["bb"]  # whole words only
    samples = ["the acting is good .".split(), "acting".split(), "the act".split()]
    assert template_adherence(samples, [[BLANK, "acting", BLANK]] * 3) == pytest.approx(2 / 3)


def test_distinct_bleu_and_perplexity_on_hand_computed_cases():
    assert distinct_n([["a", "b", "a", "b"], ["a", "b"]], 2) == pytest.approx(2 / 4)  # ab, ba, ab, ab
    words = [["the", "acting", "is", "good", "."]]
    assert infill_bleu(words, [[BLANK]], words) == pytest.approx(100.0)
    log_p = torch.log(torch.tensor([[0.5, 0.25, 1.0], [0.125, 1.0, 1.0]]))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert perplexity(log_p, mask) == pytest.approx(math.exp(-(math.log(0.5 * 0.25 * 0.125)) / 3))


def _tiny(vocab: int = 12, seed: int = 0) -> TemplateInfiller:
    torch.manual_seed(seed)
    return TemplateInfiller(vocab, embed_dim=8, hidden=8, dropout=0.0).double()


def _condition() -> InfillCondition:
    template = torch.tensor([[BLANK_ID, 6, 7, 0], [8, BLANK_ID, 9, 10]])
    truth = torch.tensor([[5, 6, 7, EOS_ID, 0], [8, 11, 9, 10, EOS_ID]])
    infill = torch.tensor([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    return InfillCondition(template, torch.tensor([3, 4]), truth, torch.tensor([4, 5]), infill)


def test_sample_categorical_draws_the_given_distribution_and_never_a_zero_probability():
    from scipy.stats import chisquare

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.3, 0.0], [0.1, 0.0, 0.0, 0.0, 0.0, 0.9]])  # (2, 6)
    n = 20000
    draws = sample_categorical(probs.repeat(n, 1), torch.Generator().manual_seed(0)).view(n, 2)  # (n, 2)
    for row in range(2):
        counts = torch.bincount(draws[:, row], minlength=6).double()
        assert (counts[probs[row] == 0] == 0).all()
        support = probs[row] > 0
        expected = probs[row][support].double()
        assert chisquare(counts[support].numpy(), (n * expected / expected.sum()).numpy()).pvalue > 1e-3
    unnormalised = sample_categorical(torch.tensor([[0.0, 3.0, 1.0]]).repeat(4000, 1), torch.Generator().manual_seed(1))
    assert abs((unnormalised == 1).double().mean().item() - 0.75) < 0.03
    same = [sample_categorical(probs, torch.Generator().manual_seed(2)) for _ in range(2)]
    assert torch.equal(*same)


def test_log_prob_is_the_sum_of_next_token_probabilities():
    model, cond = _tiny(), _condition()
    x = Sentences(cond.truth, cond.truth_lengths)
    memory, mask, state = model.encode(cond)
    by_hand = torch.zeros(2, dtype=torch.float64)
    previous = torch.full((2,), BOS_ID)
    for t in range(x.tokens.shape[1]):  # one decoder step at a time
        logits, state = model.decode(previous[:, None], memory, mask, state)
        step = torch.log_softmax(logits[:, 0], -1).gather(1, x.tokens[:, t:t + 1]).squeeze(1)
        by_hand += torch.where(t < x.lengths, step, torch.zeros_like(step))  # step is -inf at padding
        previous = x.tokens[:, t]
    torch.testing.assert_close(model.log_prob(x, cond), by_hand)
    torch.testing.assert_close(model.log_prob(x, cond), model.token_log_probs(x, cond).sum(1))


def test_log_prob_gives_no_mass_to_tokens_that_sample_never_writes():
    model, cond = _tiny(), _condition()
    memory, mask, state = model.encode(cond)
    logits, _ = model.decode(torch.full((2, 1), BOS_ID), memory, mask, state)  # (2, 1, V)
    probs = torch.softmax(logits[:, 0], -1)  # (2, V)
    assert (probs[:, [0, BOS_ID, BLANK_ID]] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, dtype=torch.float64))
    with_blank = cond.truth.clone()
    with_blank[0, 1] = BLANK_ID
    log_p = model.log_prob(Sentences(with_blank, cond.truth_lengths), cond)
    assert log_p[0] == float("-inf") and torch.isfinite(log_p[1])


def test_samples_are_sentences_that_end_in_eos_without_special_tokens():
    model, cond = _tiny(), _condition()
    tiled = cond.repeat(3)
    assert torch.equal(tiled.template[2], cond.template[0]) and torch.equal(tiled.template[3], cond.template[1])
    x = model.sample(6, tiled, generator=torch.Generator().manual_seed(0))
    for row, n in zip(x.tokens, x.lengths):
        assert row[n - 1] == EOS_ID and (row[n:] == 0).all()
        assert not set(row[: n - 1].tolist()) & {0, BOS_ID, BLANK_ID, EOS_ID}
    assert torch.isfinite(model.log_prob(x, tiled)).all()
    with pytest.raises(ValueError, match="one sentence per condition row"):
        model.sample(3, cond)


def test_maximum_likelihood_steps_lower_the_nll():
    from kdgm.objectives.likelihood import MaximumLikelihood

    class Batch:
        def data(self):
            return Sentences(cond.truth, cond.truth_lengths)

        def condition(self):
            return cond

        target_lengths = _condition().truth_lengths

    cond, model = _condition(), _tiny()
    objective = MaximumLikelihood(units=lambda b: b.target_lengths)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = objective(model, Batch()).total.item()
    for _ in range(30):
        optimizer.zero_grad()
        objective(model, Batch()).total.backward()
        optimizer.step()
    assert objective(model, Batch()).total.item() < 0.5 * first


def test_the_constraint_reads_the_written_words_and_learns():
    cond = _condition()
    written = InfillMatch.written(Sentences(cond.truth, cond.truth_lengths), cond)
    assert written.tolist() == cond.truth_infill.tolist()  # the true sentence writes exactly its infill
    other = Sentences(torch.tensor([[6, 7, EOS_ID], [8, 9, EOS_ID]]), torch.tensor([3, 3]))  # copies only
    assert not InfillMatch.written(other, cond).any()
    f = InfillMatch(12, dim=4, hidden=4)
    scores = f(other, cond)
    assert scores.shape == (2,)
    scores.sum().backward()
    assert all(p.grad is not None for p in f.parameters())


def test_infill_f1_scores_the_written_words_against_the_true_infill():
    cond = _condition()  # true infills: [5] and [11]
    x = Sentences(torch.tensor([[5, 6, 7, EOS_ID, 0, 0], [8, 6, 11, 9, 10, EOS_ID]]), torch.tensor([4, 6]))
    f1 = infill_f1(x.tokens, InfillMatch.written(x, cond), cond.truth, cond.truth_infill)
    torch.testing.assert_close(f1, torch.tensor([1.0, 2 * 0.5 * 1.0 / 1.5]))  # row 1 wrote 6 and 11: P ½, R 1
    copies = Sentences(torch.tensor([[6, 7, EOS_ID], [8, 9, EOS_ID]]), torch.tensor([3, 3]))
    assert infill_f1(copies.tokens, InfillMatch.written(copies, cond), cond.truth, cond.truth_infill).tolist() == [0, 0]


def test_the_review_data_splits_by_review_with_templates():
    folder = sentiment_data_dir()
    if folder is None or not (folder / "reviews" / "movie-review-sentences.csv").is_file():
        pytest.skip("needs reviews/movie-review-sentences.csv: set KDGM_DATA_DIR or put ../shared/data beside the repo")
    splits = load_templates(folder, max_sentences=200)
    batch = splits.train.batch(torch.arange(32))
    assert batch.template.shape[0] == 32 and (batch.target[torch.arange(32), batch.target_lengths - 1] == EOS_ID).all()
    blanks = (batch.template == BLANK_ID).sum(1)
    assert ((blanks >= 1) & (blanks <= 2)).all()
    kept = batch.template_lengths - blanks  # template words = sentence words not blanked
    assert torch.equal(kept, batch.target_lengths - 1 - batch.infill.sum(1))
    train = {tuple(s) for s in splits.train.words(splits.train.target, splits.train.target_lengths)}
    test = {tuple(s) for s in splits.test.words(splits.test.target, splits.test.target_lengths)}
    assert len(train & test) < 5  # different reviews (a stock phrase may recur)


def test_selection_on_dev_keeps_the_weights_of_the_lowest_infill_perplexity(tmp_path, cli_env):
    """``select=infill_ppl`` keeps the lowest perplexity (the table marks it lower-is-better), not the highest."""
    folder = sentiment_data_dir()
    if folder is None or not (folder / "reviews" / "movie-review-sentences.csv").is_file():
        pytest.skip("needs reviews/movie-review-sentences.csv: set KDGM_DATA_DIR or put ../shared/data beside the repo")
    run_dir = tmp_path / "run"
    assert main(["run", "template-infill", "--preset", "smoke", "--data-dir", str(folder), "--out", str(run_dir),
                 "--set", "eval_every=1", "--set", "select=infill_ppl", "--set", "tensorboard=false"]) == 0
    pretrain = run_dir / "rows" / "pretrain" / "seed0"
    dev = read_csv(pretrain / "eval.csv")
    assert len(set(dev["infill_ppl"])) > 1  # the evaluations differ, so the choice says something
    lowest = int(dev["step"][int(np.argmin(dev["infill_ppl"]))])
    assert load_checkpoint(pretrain / "checkpoints" / BEST)["step"] == lowest
