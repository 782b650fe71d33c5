"""kdgm.knowledge: soft logic, the PR projection against brute force, the A-but-B rule, π schedule, the φ-step; the
checks that keep rules from failing silently, rule coverage, and p / q evaluation against a hand-computed teacher."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from kdgm.data import BatchLoader, SentenceDataset, Vocabulary
from kdgm.data.batch import TextBatch
from kdgm.knowledge import (
    ButRule, FunctionRule, ImitationSchedule, Lukasiewicz, Product, RuleDistillation, RulePredictions, RuleSet,
    TeacherLikelihood, Truth, but_clauses, predict_with_rules, project, rule_penalty,
)


@pytest.mark.parametrize("logic", [Lukasiewicz, Product])
def test_soft_logic_matches_boolean_logic_at_the_corners(logic):
    for a, b in itertools.product([0.0, 1.0], repeat=2):
        ta, tb = Truth(torch.tensor(a), logic), Truth(torch.tensor(b), logic)
        assert (ta & tb).value.item() == float(a and b)
        assert (ta | tb).value.item() == float(a or b)
        assert (ta >> tb).value.item() == float((not a) or b)
        assert (~ta).value.item() == float(not a)


def test_lukasiewicz_values_inside_the_cube():
    a, b = Truth(torch.tensor(0.7)), Truth(torch.tensor(0.6))
    assert (a & b).value.item() == pytest.approx(0.3)
    assert (a | b).value.item() == pytest.approx(1.0)
    assert (a >> b).value.item() == pytest.approx(0.9)


def _brute_force_teacher(p, truths, lam, C, step=0.004):
    """argmin_q KL(q‖p) + C Σ_l ξ_l, ξ_l = max(0, λ_l(1 − E_q r_l)), over a grid of the 3-simplex."""
    grid = torch.arange(step, 1.0, step, dtype=torch.float64)
    q1, q2 = torch.meshgrid(grid, grid, indexing="ij")
    q = torch.stack([q1, q2, 1 - q1 - q2], -1).reshape(-1, 3)
    q = q[q[:, 2] > 0]  # (G, 3)
    kl = (q * (q.log() - p.log())).sum(-1)  # (G,)
    slack = sum(C * (lam[l] * (1 - q @ truths[l])).clamp(min=0) for l in range(len(truths)))
    objective = kl + slack
    return q[objective.argmin()], objective.min()


def test_projection_equals_brute_force_enumeration():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        p = torch.softmax(torch.randn(3, generator=g, dtype=torch.float64) * 2, -1)
        truths = [torch.rand(3, generator=g, dtype=torch.float64) for _ in range(2)]
        lam = torch.rand(2, generator=g, dtype=torch.float64) + 0.2
        C = 2.0
        log_q = project(p.log()[None], rule_penalty([t[None] for t in truths], lam, C))[0]
        q_grid, best = _brute_force_teacher(p, truths, lam, C)
        q = log_q.exp()
        closed_objective = (q * (q.log() - p.log())).sum() + sum(C * lam[l] * (1 - q @ truths[l]) for l in range(2))
        assert closed_objective <= best + 1e-9  # the closed form is at least as good as every grid point
        torch.testing.assert_close(q, q_grid, atol=0.01, rtol=0)


def test_projection_is_p_when_every_rule_holds():
    log_p = torch.log_softmax(torch.randn(4, 5), -1)
    penalty = rule_penalty([torch.ones(4, 5)], torch.tensor([3.0]), C=6.0)
    torch.testing.assert_close(project(log_p, penalty), log_p)


def test_projection_is_finite_for_extreme_logits_and_strength():
    logits = torch.tensor([[1e4, -1e4], [-80.0, 80.0], [0.0, 0.0]])
    truths = [torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])]
    log_q = project(torch.log_softmax(logits, -1), rule_penalty(truths, torch.tensor([1e4]), C=1e3))
    assert torch.isfinite(log_q).all()
    torch.testing.assert_close(log_q.exp().sum(-1), torch.ones(3))
    assert log_q.exp()[2, 1] > 0.999  # an uncertain student follows a strong rule


class ClauseModel(nn.Module):
    """Scores a sentence by its first token: id 5 → positive, id 6 → negative (logits ±2)."""

    def forward(self, tokens, lengths=None):
        score = (tokens[:, 0] == 5).float() * 2 - (tokens[:, 0] == 6).float() * 2
        return torch.stack([-score, score], -1)


def _batch(sentences):
    """Token ids with "but" = 4, padded to length 7."""
    tokens = torch.zeros(len(sentences), 7, dtype=torch.long)
    for i, s in enumerate(sentences):
        tokens[i, : len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in sentences])
    return TextBatch(tokens, lengths, torch.zeros(len(sentences), dtype=torch.long), torch.arange(len(sentences)))


def test_but_clause_extraction():
    batch = _batch([[2, 3, 4, 5, 3], [2, 3, 3], [4, 6], [2, 4], [4, 4, 5]])
    has, clause, lengths = but_clauses(batch.tokens, batch.lengths, but_id=4)
    assert has.tolist() == [True, False, True, False, True]
    assert lengths.tolist() == [2, 0, 1, 0, 2]
    assert clause[0, :3].tolist() == [5, 3, 0] and clause[2, :2].tolist() == [6, 0] and clause[4, :2].tolist() == [4, 5]


def test_but_rule_is_the_clause_prediction_on_but_sentences_and_true_elsewhere():
    batch = _batch([[2, 3, 4, 5, 3], [2, 3, 3], [7, 4, 6, 2]])
    truth = ButRule(but_id=4).truth(ClauseModel(), batch)
    s = torch.sigmoid(torch.tensor(4.0))  # softmax([-2, 2])[1]
    torch.testing.assert_close(truth[0], torch.stack([1 - s, s]))
    torch.testing.assert_close(truth[1], torch.ones(2))
    torch.testing.assert_close(truth[2], torch.stack([s, 1 - s]))


def test_imitation_schedule():
    schedule = ImitationSchedule(pi0=0.6, alpha=0.95)
    assert schedule(0) == 0.0
    assert schedule(1) == pytest.approx(0.05)
    assert schedule(2.5) == pytest.approx(1 - 0.95**2.5)
    assert schedule(100) == 0.6


def test_distillation_pulls_the_student_toward_the_teacher_without_backprop_into_it():
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    x = torch.randn(8, 4)

    class Batch:
        y = torch.zeros(8, dtype=torch.long)

        def inputs(self):
            return (x,)

    rules = RuleSet([FunctionRule(lambda m, b: torch.tensor([[0.0, 1.0]]).expand(8, 2))], C=6.0)
    objective = RuleDistillation(rules, ImitationSchedule(pi0=1.0, alpha=0.5))
    objective.progress.epoch = 50.0  # π = 1: pure imitation of a teacher that prefers class 1
    out = objective(net, Batch())
    out.total.backward()
    assert out.terms["pi"].item() == 1.0
    assert net.bias.grad[1] < 0  # gradient descent raises the logit of class 1


def _toy_rule_problem(rule_is_right: bool, learnable: bool = True):
    """Labels follow x's sign; the student is uninformative; the rule says y = 1(x > 0) (or the opposite)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, generator=g)
    y = (x[:, 0] > 0).long()
    student = nn.Linear(1, 2)
    nn.init.zeros_(student.weight), nn.init.zeros_(student.bias)

    def truth(model, batch):
        favoured = (batch.x[:, 0] > 0).long() if rule_is_right else (batch.x[:, 0] <= 0).long()
        return torch.nn.functional.one_hot(favoured, 2).float()

    class Batch:
        def __init__(self):
            self.x, self.y = x, y

        def inputs(self):
            return (self.x,)

    rules = RuleSet([FunctionRule(truth, confidence=1.0, learnable=learnable)], C=1.0)
    return student, rules, Batch()


@pytest.mark.parametrize("rule_is_right", [True, False])
def test_learned_confidence_follows_the_data(rule_is_right):
    student, rules, batch = _toy_rule_problem(rule_is_right)
    objective = TeacherLikelihood(rules)
    optimizer = torch.optim.Adam(rules.parameters(), lr=0.05)
    start = objective(student, batch).total.item()
    for _ in range(200):
        out = objective(student, batch)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
    assert all(p.grad is None for p in student.parameters())  # the student is held fixed
    lam = rules.confidences.item()
    if rule_is_right:
        assert out.total.item() < start - 0.3 and lam > 3.0
    else:
        assert lam < 0.05 and out.total.item() <= start + 1e-3


def test_semantic_loss_peer_matches_pylon():
    from kdgm.experiments.sentiment_but import pylon_available, pylon_semantic_loss, semantic_loss

    if not pylon_available():
        pytest.skip("pylon-lib is not installed (pip install 'kdgm[text]')")
    torch.manual_seed(0)
    a, b = torch.randn(5, 2, requires_grad=True), torch.randn(5, 2)
    torch.testing.assert_close(pylon_semantic_loss(a, b), semantic_loss(a, b))
    # by hand: −log(p₀q₀ + p₁q₁) summed
    p, q = a.softmax(-1), b.softmax(-1)
    torch.testing.assert_close(semantic_loss(a, b), -((p * q).sum(-1)).log().sum())


# ----------------------------------------------------------------------------- rules that would fail silently


def test_truth_accepts_bool_masks_and_python_bools():
    mask = torch.tensor([[True, False], [False, True]])
    for truth in (Truth(mask), Truth.of(mask)):
        assert truth.value.dtype == torch.get_default_dtype() and truth.value.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert Truth(True).value.item() == 1.0 and (~Truth.of(True)).value.item() == 0.0
    assert (Truth(mask) >> False).value.tolist() == [[0.0, 1.0], [1.0, 0.0]]  # a python bool as the other operand
    assert (Truth(torch.tensor([[1.0], [0.0]])) & mask).value.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert (Truth(torch.tensor(0.5, dtype=torch.float64)) | True).value.dtype == torch.float64  # dtypes promote


def _toy_batch(b: int = 3):
    """A batch of b examples and (B, 2) student log-probabilities."""
    class Batch:
        x = torch.randn(b, 4, generator=torch.Generator().manual_seed(0))
        y = torch.zeros(b, dtype=torch.long)

        def inputs(self):
            return (self.x,)

    net = nn.Linear(4, 2)
    batch = Batch()
    return net, batch, torch.log_softmax(net(batch.x), -1).detach()


def per_example(model, batch):  # a truth per example only: (B, 1)
    return torch.ones(len(batch.x), 1)


def same_for_every_example(model, batch):  # a truth per output only: (1, K)
    return torch.tensor([[0.0, 1.0]])


def test_a_table_of_the_wrong_shape_is_a_one_line_error_naming_the_rule():
    net, batch, log_p = _toy_batch()
    good = FunctionRule(lambda m, b: torch.ones(3, 2))
    with pytest.raises(ValueError) as info:
        RuleSet([good, FunctionRule(per_example)]).teacher(log_p, net, batch)
    message = str(info.value)
    assert message.startswith("rule 1 (FunctionRule per_example) returned a truth table of shape (3, 1), expected "
                              "(3, 2)")
    assert "cannot change q" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"shape \(1, 2\), expected \(3, 2\).*\.expand\(3, 2\)"):
        RuleSet([FunctionRule(same_for_every_example)]).teacher(log_p, net, batch)
    table = RuleSet([FunctionRule(lambda m, b: same_for_every_example(m, b).expand(3, 2))]).truths(net, batch, (3, 2))
    assert table[0].shape == (3, 2)


@pytest.mark.parametrize("value, shown", [(1.5, "min 0.5, max 1.5"), (-0.25, "min -0.25, max 0.5"),
                                          (float("nan"), "min nan, max nan"), (float("inf"), "max inf")])
def test_truths_outside_the_unit_interval_are_one_line_errors(value, shown):
    net, batch, log_p = _toy_batch()
    table = torch.full((3, 2), 0.5)
    table[1, 0] = value
    rules = RuleSet([FunctionRule(lambda m, b: table)])
    with pytest.raises(ValueError) as info:
        rules.teacher(log_p, net, batch)
    message = str(info.value)
    assert "rule 0 (FunctionRule <lambda>)" in message and "outside [0, 1]" in message and shown in message
    assert "\n" not in message


def test_a_rule_may_return_a_bool_mask_or_a_truth():
    net, batch, log_p = _toy_batch()
    mask = torch.tensor([[False, True], [True, True], [True, False]])
    rules = RuleSet([FunctionRule(lambda m, b: mask), FunctionRule(lambda m, b: Truth(mask))])
    first, second = rules.truths(net, batch, (3, 2))
    assert torch.equal(first, mask.float()) and torch.equal(second, mask.float())
    assert torch.isfinite(rules.teacher(log_p, net, batch)).all()


# ------------------------------------------------------------------------------------------------- coverage


def test_a_rule_fires_where_its_truth_differs_between_outputs():
    # rows: holds for every output; equally violated by every output; favours label 1; prefers label 1 a little
    table = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.3]])
    fires = RuleSet.fires([table, torch.ones(4, 2)])
    assert fires.shape == (4, 2) and fires[:, 0].tolist() == [False, False, True, True] and not fires[:, 1].any()
    torch.testing.assert_close(RuleSet.coverage([table, torch.ones(4, 2)]), torch.tensor([0.5, 0.0]))
    # why constant rows do not count: they leave the teacher equal to the student
    log_p = torch.log_softmax(torch.randn(4, 2), -1)
    log_q = project(log_p, rule_penalty([table], torch.tensor([1.0]), C=6.0))
    torch.testing.assert_close(log_q[:2], log_p[:2])
    assert not torch.allclose(log_q[2:], log_p[2:])


def test_teacher_can_return_the_coverage_and_is_unchanged_by_it():
    net, batch, log_p = _toy_batch(4)
    table = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.3, 0.3]])
    rules = RuleSet([FunctionRule(lambda m, b: table, confidence=0.7)], C=2.0)
    log_q, coverage = rules.teacher(log_p, net, batch, with_coverage=True)
    torch.testing.assert_close(log_q, rules.teacher(log_p, net, batch))
    torch.testing.assert_close(log_q, torch.log_softmax(log_p - 2.0 * 0.7 * (1 - table), -1))
    torch.testing.assert_close(coverage, torch.tensor([0.5]))


def test_distillation_logs_each_rules_coverage():
    net, batch, _ = _toy_batch(4)
    favours_one = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    rules = RuleSet([FunctionRule(lambda m, b: favours_one), FunctionRule(lambda m, b: torch.ones(4, 2))])
    terms = RuleDistillation(rules)(net, batch).terms
    assert terms["coverage0"].item() == pytest.approx(0.75) and terms["coverage1"].item() == 0.0


# ------------------------------------------------------------------------------------------- p and q on a set


class FirstTokenModel(nn.Module):
    """Logits looked up from the first token; a dropout that would zero them all if left in training mode."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(logits)
        self.dropout = nn.Dropout(p=1.0)

    def forward(self, tokens, lengths=None):
        return self.dropout(self.table(tokens[:, 0]))  # (B, K)


def _review_set():
    sentences = [["great", "film"], ["dull", "film"], ["great", "but", "dull"], ["film"], ["dull"]]
    vocab = Vocabulary.build(sentences)
    return SentenceDataset.from_sentences(sentences, [1, 0, 0, 1, 0], vocab), vocab


def test_predict_with_rules_equals_the_hand_computed_projection():
    data, vocab = _review_set()
    logits = torch.zeros(len(vocab), 2)
    logits[vocab.stoi["great"]] = torch.tensor([0.5, 0.0])  # the student leans negative on "great ..."
    logits[vocab.stoi["dull"]] = torch.tensor([0.5, 0.0])
    logits[vocab.stoi["film"]] = torch.tensor([0.2, 0.0])
    model = FirstTokenModel(logits).train()
    great = vocab.stoi["great"]

    def great_is_good(model, batch):  # (B, 2): sentences with "great" are positive
        has_great = (batch.tokens == great).any(1)[:, None]  # (B, 1)
        return (Truth(has_great) >> Truth(torch.tensor([[0.0, 1.0]]))).value

    C, lam = 3.0, 0.5
    rules = RuleSet([FunctionRule(great_is_good, confidence=lam)], C=C)
    predictions = predict_with_rules(model, rules, data, batch_size=2)  # three batches, the last one ragged

    # by hand: p from the first token; q ∝ p · exp(−C λ) on the negative label of sentences with "great"
    first = [vocab.stoi[s[0]] for s in data.sentences]
    p = torch.softmax(logits[first], -1)  # (5, 2)
    weight = torch.tensor([[math.exp(-C * lam), 1.0] if "great" in s else [1.0, 1.0] for s in data.sentences])
    q = p * weight / (p * weight).sum(-1, keepdim=True)
    torch.testing.assert_close(predictions.log_p.exp(), p)
    torch.testing.assert_close(predictions.log_q.exp(), q)
    assert predictions.y.tolist() == [1, 0, 0, 1, 0] and len(predictions) == 5
    assert predictions.fires[:, 0].tolist() == [True, False, True, False, False]
    torch.testing.assert_close(predictions.coverage, torch.tensor([0.4]))
    # the rule flips both "great" sentences to positive: right for "great film", wrong for "great but dull"
    assert p.argmax(-1).tolist() == [0, 0, 0, 0, 0] and q.argmax(-1).tolist() == [1, 0, 1, 0, 0]
    assert predictions.accuracy() == pytest.approx({"p": 3 / 5, "q": 3 / 5})
    assert predictions.accuracy(predictions.fires[:, 0]) == pytest.approx({"p": 0.5, "q": 0.5})
    assert model.training  # put back in the mode it was in


def test_predict_with_rules_keeps_eval_mode_and_takes_an_ordered_loader():
    data, vocab = _review_set()
    model = FirstTokenModel(torch.randn(len(vocab), 2)).eval()
    rules = RuleSet([FunctionRule(lambda m, b: torch.ones(len(b.tokens), 2))])
    from_set = predict_with_rules(model, rules, data)
    from_loader = predict_with_rules(model, rules, BatchLoader(data, 2, shuffle=False, drop_last=False))
    assert not model.training
    torch.testing.assert_close(from_set.log_q, from_loader.log_q)
    torch.testing.assert_close(from_set.log_q, from_set.log_p)  # a rule that always holds: q = p
    with pytest.raises(ValueError, match="every example in order"):
        predict_with_rules(model, rules, BatchLoader(data, 2))  # shuffles and drops the last batch
    with pytest.raises(ValueError, match="no batch"):
        predict_with_rules(model, rules, [])


def test_accuracy_masks():
    predictions = RulePredictions(log_p=torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]])),
                                  log_q=torch.log(torch.tensor([[0.4, 0.6], [0.2, 0.8]])),
                                  y=torch.tensor([0, 0]), fires=torch.tensor([[True], [False]]))
    assert predictions.accuracy() == {"p": 0.5, "q": 0.0}
    assert predictions.accuracy(torch.tensor([True, False])) == {"p": 1.0, "q": 0.0}
    assert all(math.isnan(v) for v in predictions.accuracy(torch.tensor([False, False])).values())
    with pytest.raises(ValueError, match="2 bools, one per example"):
        predictions.accuracy(torch.tensor([1, 0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_with_rules_on_the_model_device_with_rules_on_the_cpu():
    data, vocab = _review_set()
    model = FirstTokenModel(torch.randn(len(vocab), 2)).cuda()
    rules = RuleSet([FunctionRule(lambda m, b: Truth(b.tokens[:, :1] > 2) >> Truth(torch.tensor([[0.0, 1.0]])))])
    predictions = predict_with_rules(model, rules, data)
    assert predictions.log_q.device.type == "cpu" and torch.isfinite(predictions.log_q).all()


# ------------------------------------------------------------------------------------------ A-but-B by words


def test_but_rule_from_vocab_matches_every_case():
    vocab = Vocabulary.build([["fine", "But", "but", "slow", "good"]])
    rule = ButRule.from_vocab(vocab)
    assert rule.but_id == tuple(sorted((vocab.stoi["But"], vocab.stoi["but"])))
    assert list(rule.state_dict()) == ["raw_confidence"]  # checkpoints keep their keys
    ids = [[vocab.stoi[w] for w in s] for s in (["But", "slow"], ["fine", "but", "good"], ["fine", "good"])]
    batch = _batch(ids)
    has, clause, lengths = but_clauses(batch.tokens, batch.lengths, rule.but_id)
    assert has.tolist() == [True, True, False] and lengths.tolist() == [1, 1, 0]
    assert clause[0, 0] == vocab.stoi["slow"] and clause[1, 0] == vocab.stoi["good"]
    with pytest.raises(ValueError, match="no 'however' in any case"):
        ButRule.from_vocab(vocab, word="however")
