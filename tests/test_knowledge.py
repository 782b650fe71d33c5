"""kdgm.knowledge: soft logic, the PR projection against brute force, the A-but-B rule, π schedule, the φ-step."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from kdgm.data.batch import TextBatch
from kdgm.knowledge import (
    ButRule, FunctionRule, ImitationSchedule, Lukasiewicz, Product, RuleDistillation, RuleSet, TeacherLikelihood,
    Truth, but_clauses, project, rule_penalty,
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
