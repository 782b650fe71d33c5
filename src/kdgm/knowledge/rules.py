"""Rules ``r(x, y) ∈ [0, 1]`` with confidences λ, evaluated for every candidate output at once.

A rule returns a (B, K) table: its truth for each example of the batch and each of the K outputs. Its confidence
λ ≥ 0 is fixed or learnable; a learnable λ is stored through a softplus so that gradient steps keep it positive and
can drive it toward 0 for a rule the data contradicts (Hu et al. 2016b, "Deep neural networks with massive learned
knowledge").
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.knowledge.logic import Truth
from kdgm.knowledge.projection import project, rule_penalty


def _as_table(value) -> Tensor:
    """A rule's output as a float tensor (a ``Truth``, a bool mask or a tensor)."""
    return Truth(value.value if isinstance(value, Truth) else value).value


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value)) if value < 20 else value


class Rule(nn.Module, ABC):
    """A soft rule with confidence λ.

    Args:
        confidence: initial λ (> 0).
        learnable: make λ a parameter (for the φ-step of :class:`kdgm.knowledge.confidence.TeacherLikelihood`).
    """

    def __init__(self, confidence: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        if confidence <= 0:
            raise ValueError(f"a rule's confidence must be positive, got {confidence}")
        raw = torch.tensor(_inverse_softplus(confidence))
        if learnable:
            self.raw_confidence = nn.Parameter(raw)
        else:
            self.register_buffer("raw_confidence", raw)

    @property
    def confidence(self) -> Tensor:
        """() λ ≥ 0."""
        return F.softplus(self.raw_confidence)

    @abstractmethod
    def truth(self, model: nn.Module, batch) -> Tensor:
        """(B, K) truth values r(x_b, y=k) in [0, 1]; ``model`` is the current network (rules may query it)."""


class FunctionRule(Rule):
    """A rule from a function ``fn(model, batch) -> (B, K)`` truth table."""

    def __init__(self, fn: Callable[[nn.Module, object], Tensor], confidence: float = 1.0, learnable: bool = False):
        super().__init__(confidence, learnable)
        self.fn = fn

    def truth(self, model: nn.Module, batch) -> Tensor:
        return self.fn(model, batch)


class RuleSet(nn.Module):
    """Rules that together define the teacher ``q ∝ p · exp(−C Σ_l λ_l (1 − r_l))``.

    Args:
        rules: the rules.
        C: the regularisation strength of the projection (Hu et al. use C = 6).
    """

    def __init__(self, rules: list[Rule], C: float = 6.0) -> None:
        super().__init__()
        if not rules:
            raise ValueError("a RuleSet needs at least one rule")
        self.rules = nn.ModuleList(rules)
        self.C = C

    @property
    def confidences(self) -> Tensor:
        """(L,) the rules' λ."""
        return torch.stack([rule.confidence for rule in self.rules])

    def truths(self, model: nn.Module, batch, shape: tuple[int, int] | None = None) -> list[Tensor]:
        """The rules' (B, K) truth tables; never back-propagated into the model.

        Each table is checked: exactly ``shape`` (B, K) when given (a (B, 1) table would broadcast and silently
        leave the teacher equal to the student), finite, and within [0, 1]. A mistake is a one-line ValueError.
        """
        with torch.no_grad():
            tables = [_as_table(rule.truth(model, batch)) for rule in self.rules]
        for index, (rule, table) in enumerate(zip(self.rules, tables)):
            name = f"rule {index} ({type(rule).__name__})"
            if shape is not None and tuple(table.shape) != tuple(shape):
                raise ValueError(f"{name} returned a truth table of shape {tuple(table.shape)}, expected {tuple(shape)} "
                                 f"(one truth value per example and output; broadcast with .expand{tuple(shape)})")
            if not table.isfinite().all() or table.min() < 0 or table.max() > 1:
                raise ValueError(f"{name} returned truth values outside [0, 1] (min {table.min().item():.3g}, max "
                                 f"{table.max().item():.3g}); clamp them or use kdgm.knowledge.Truth")
        return tables

    def teacher(self, log_p: Tensor, model: nn.Module, batch, truths: list[Tensor] | None = None) -> Tensor:
        """(B, K) log q(y|x), the projection of the (B, K) student log-probabilities ``log_p``."""
        truths = self.truths(model, batch, tuple(log_p.shape)) if truths is None else truths
        return project(log_p, rule_penalty(truths, self.confidences, self.C))

    @staticmethod
    def coverage(truths: list[Tensor]) -> Tensor:
        """(L,) how often each rule fires: the share of the batch's examples for which it rules out something (its
        truth is below 1 for at least one output). A rule that never fires leaves the teacher equal to the student,
        so a coverage of 0 over training says the rule is not doing anything (a misspelt word, a missed case)."""
        return torch.stack([(table < 1).any(-1).float().mean() for table in truths])
