"""Rules ``r(x, y) ∈ [0, 1]`` with confidences λ, evaluated for every candidate output at once.

A rule returns a (B, K) table: its truth for each example of the batch and each of the K outputs, since the teacher
of Hu et al. (2016) weighs every candidate label. :class:`RuleSet` checks every table for its shape and range, and
measures how often each rule fires (its coverage). A confidence λ ≥ 0 is fixed or learnable; a learnable λ is
stored through a softplus so that gradient steps keep it positive and can drive it toward 0 for a rule the data
contradicts (Hu et al. 2016b, "Deep neural networks with massive learned knowledge").
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
    def truth(self, model: nn.Module, batch) -> Tensor | Truth:
        """(B, K) truth values r(x_b, y=k) in [0, 1] (a tensor, a bool mask or a :class:`Truth`); ``model`` is the
        current network (rules may query it). A rule that holds whatever the label returns 1 for every output."""


class FunctionRule(Rule):
    """A rule from a function ``fn(model, batch) -> (B, K)`` truth table (tensor, bool mask or :class:`Truth`).

    Error messages name the function, so give it a name (a ``def``) rather than a lambda.
    """

    def __init__(self, fn: Callable[[nn.Module, object], Tensor], confidence: float = 1.0, learnable: bool = False):
        super().__init__(confidence, learnable)
        self.fn = fn

    def truth(self, model: nn.Module, batch) -> Tensor:
        return self.fn(model, batch)


class RuleSet(nn.Module):
    """Rules that together define the teacher ``q ∝ p · exp(−C Σ_l λ_l (1 − r_l))`` (Hu et al. 2016, its closed form).

    Every truth table is checked as it is computed (:meth:`truths`), so a rule that would fail silently — a (B, 1)
    table that broadcasts, values outside [0, 1] — stops with a one-line error naming it; :meth:`coverage` tells
    how often each rule fires.

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
        """The rules' (B, K) truth tables r_l(x_b, y=k); never back-propagated into the model.

        A rule may return a tensor, a bool mask or a :class:`Truth`; each table is checked: exactly ``shape``
        (B, K) when given (a (B, 1) table would broadcast and silently leave the teacher equal to the student),
        finite, and within [0, 1].

        Args:
            model: the current network (rules may query it, as the A-but-B rule does).
            batch: the batch.
            shape: the expected (B, K), that of the student's log-probabilities (:meth:`teacher` passes it).

        Raises:
            ValueError: one line naming the rule (index and class) and what is wrong with its table.
        """
        with torch.no_grad():
            tables = [_as_table(rule.truth(model, batch)) for rule in self.rules]
        for index, (rule, table) in enumerate(zip(self.rules, tables)):
            _check_table(_describe(index, rule), table, shape)
        return tables

    def teacher(self, log_p: Tensor, model: nn.Module, batch, truths: list[Tensor] | None = None, *,
                with_coverage: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, K) log q(y|x), the projection of the (B, K) student log-probabilities ``log_p`` onto the rules.

        Args:
            log_p: (B, K) student log-probabilities.
            model: the current network (for rules that query it).
            batch: the batch.
            truths: the tables of :meth:`truths`, when the caller already has them (they are not checked again).
            with_coverage: also return the (L,) :meth:`coverage` of the batch.

        Returns:
            log q (B, K), or ``(log_q, coverage)`` with ``with_coverage``.
        """
        truths = self.truths(model, batch, tuple(log_p.shape)) if truths is None else truths
        log_q = project(log_p, rule_penalty(truths, self.confidences, self.C))  # (B, K)
        return (log_q, self.coverage(truths)) if with_coverage else log_q

    @staticmethod
    def fires(truths: list[Tensor], atol: float = 1e-6) -> Tensor:
        """(B, L) bool: whether rule l fires on example b, i.e. its truth differs between outputs.

        A rule fires where it prefers some outputs to others: ``max_k r − min_k r > atol``. That is exactly where it
        can move the teacher away from the student: q ∝ p · exp(−C λ (1 − r)) is normalised over the outputs, so a
        truth that is the same for every output — 1 (the rule holds whatever the label) or any other constant
        (e.g. a (B, 1) premise expanded to (B, K)) — cancels and leaves q = p. "Violated for some output"
        (r < 1 somewhere) would count those constant rows as firing although they change nothing.
        """
        return torch.stack([(table.amax(-1) - table.amin(-1)) > atol for table in truths], -1)  # (B, L)

    @classmethod
    def coverage(cls, truths: list[Tensor], atol: float = 1e-6) -> Tensor:
        """(L,) each rule's coverage: the share of the batch's examples it fires on (see :meth:`fires`).

        A rule that never fires leaves the teacher equal to the student, so a coverage of 0 over training says the
        rule is doing nothing (a misspelt word, a word in another case, a premise that never holds).
        """
        return cls.fires(truths, atol).float().mean(0)  # (L,)


def _describe(index: int, rule: Rule) -> str:
    """How an error names a rule: its index, class and, for a :class:`FunctionRule`, its function."""
    label = type(rule).__name__
    function = getattr(getattr(rule, "fn", None), "__name__", "")
    return f"rule {index} ({label} {function})" if function else f"rule {index} ({label})"


def _check_table(name: str, table: Tensor, shape: tuple[int, int] | None) -> None:
    """One-line ValueError when a truth table is not ``shape``, not finite, or leaves [0, 1]."""
    if shape is not None and tuple(table.shape) != tuple(shape):
        raise ValueError(f"{name} returned a truth table of shape {tuple(table.shape)}, expected {tuple(shape)}, one "
                         f"truth value per example and output; {_shape_hint(tuple(table.shape), *shape)}")
    if table.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(table)).tolist()  # one device sync for both
    if not (0.0 <= low and high <= 1.0):  # NaN fails both comparisons
        raise ValueError(f"{name} returned truth values outside [0, 1] or not finite (min {low:.4g}, max {high:.4g}); "
                         "clamp them, or build them with kdgm.knowledge.Truth")


def _shape_hint(got: tuple[int, ...], b: int, k: int) -> str:
    """How to fix a table of the wrong shape: what broadcasting would have done silently."""
    if got in ((b,), (b, 1)) and k != 1:
        # the same truth for every output cancels in q's normalisation: expanding alone would leave q = p
        return (f"a truth per example is the same for every output and cannot change q: combine it with a (1, {k}) "
                f"truth per output, e.g. (Truth(premise) >> Truth(torch.eye({k})[label][None])).value")
    return f"a table that is the same for every example: .expand({b}, {k})"
