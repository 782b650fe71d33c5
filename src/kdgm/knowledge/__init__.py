"""Knowledge: soft logic, rules, the PR projection, distillation, learnable constraints and the φ-step.

Public API::

    Truth, Lukasiewicz, Product            soft logic that reads like the rule (bool masks and python bools accepted)
    Rule, FunctionRule, RuleSet            r(x, y) ∈ [0, 1] per output, confidence λ fixed or learnable; every
                                           (B, K) table checked; RuleSet.coverage / fires: where each rule acts
    project, rule_penalty                  q ∝ p · exp(−C Σ λ (1 − r)) in log space (exact E-step)
    RuleDistillation, ImitationSchedule    (1 − π) ℓ(y, p) + π ℓ(q, p), π_t = min(π₀, 1 − α^t)
    predict_with_rules, RulePredictions    the student p and the teacher q of a classifier on a data set, accuracies
    ButRule, but_clauses                   the A-but-B sentiment rule of Hu et al. (2016) (``ButRule.from_vocab``)

    Constraint, FunctionConstraint         f_φ(x, cond) → (B,), fixed or learnable (Hu et al. 2018)
    PosteriorRegularization                E-step over samples: q ∝ p_θ exp(α f_φ) as importance weights
    ExplicitMStep, ImplicitMStep           min −E_q[log p_θ] (log_prob) / min KL(p_θ ‖ q) (differentiable sample)
    TeacherLikelihood                      the φ-step, max E_data[log q_φ]: rule confidences and constraints
    SampleMaximisation, BinaryDiscriminator  the paper's comparison variants (φ in the M-step; a binary D as f)
    log_weights, effective_sample_size     the E-step's weights and their diagnostic
"""

from kdgm.knowledge.but_rule import ButRule, but_clauses
from kdgm.knowledge.confidence import TeacherLikelihood
from kdgm.knowledge.constraint import Constraint, FunctionConstraint
from kdgm.knowledge.distill import ImitationSchedule, RuleDistillation
from kdgm.knowledge.evaluate import RulePredictions, predict_with_rules
from kdgm.knowledge.logic import Lukasiewicz, Product, Truth
from kdgm.knowledge.projection import project, rule_penalty
from kdgm.knowledge.regularized import (
    BinaryDiscriminator, ExplicitMStep, ImplicitMStep, PosteriorRegularization, SampleMaximisation,
)
from kdgm.knowledge.rules import FunctionRule, Rule, RuleSet
from kdgm.knowledge.sampled import effective_sample_size, log_weights

__all__ = [
    "BinaryDiscriminator", "ButRule", "Constraint", "ExplicitMStep", "FunctionConstraint", "FunctionRule",
    "ImitationSchedule", "ImplicitMStep", "Lukasiewicz", "PosteriorRegularization", "Product", "Rule",
    "RuleDistillation", "RulePredictions", "RuleSet", "SampleMaximisation", "TeacherLikelihood", "Truth",
    "but_clauses", "effective_sample_size", "log_weights", "predict_with_rules", "project", "rule_penalty",
]
