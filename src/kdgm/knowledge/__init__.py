"""Knowledge: soft logic, rules with confidences, the PR projection (E-step), distillation and the φ-step.

Public API::

    Truth, Lukasiewicz, Product            soft logic that reads like the rule
    Rule, FunctionRule, RuleSet            r(x, y) ∈ [0, 1] per output, confidence λ fixed or learnable
    project, rule_penalty                  q ∝ p · exp(−C Σ λ (1 − r)) in log space
    RuleDistillation, ImitationSchedule    (1 − π) ℓ(y, p) + π ℓ(q, p), π_t = min(π₀, 1 − α^t)
    TeacherLikelihood                      the φ-step: max Σ log q_φ(y_n | x_n)
    ButRule                                the A-but-B sentiment rule of Hu et al. (2016)
"""

from kdgm.knowledge.but_rule import ButRule, but_clauses
from kdgm.knowledge.confidence import TeacherLikelihood
from kdgm.knowledge.distill import ImitationSchedule, RuleDistillation
from kdgm.knowledge.logic import Lukasiewicz, Product, Truth
from kdgm.knowledge.projection import project, rule_penalty
from kdgm.knowledge.rules import FunctionRule, Rule, RuleSet

__all__ = [
    "ButRule", "FunctionRule", "ImitationSchedule", "Lukasiewicz", "Product", "Rule", "RuleDistillation", "RuleSet",
    "TeacherLikelihood", "Truth", "but_clauses", "project", "rule_penalty",
]
