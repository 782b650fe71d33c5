"""Soft first-order logic: truth values in [0, 1] combined by a t-norm.

Hu et al. (2016), "Harnessing Deep Neural Networks with Logic Rules", section 3.2, use Łukasiewicz soft logic
(Bach et al. 2015)::

    A ∧ B = max(A + B − 1, 0)      A ∨ B = min(A + B, 1)      ¬A = 1 − A      A ⇒ B = ¬A ∨ B = min(1 − A + B, 1)

The product t-norm is the other common choice (semantic-loss style): ``A ∧ B = A·B``, ``A ∨ B = A + B − A·B``, and
the Reichenbach implication ``A ⇒ B = 1 − A + A·B``, which is smooth everywhere.

:class:`Truth` wraps a tensor of truth values so that rules read like the logic they encode::

    has_but >> ((positive >> clause_positive) & (clause_positive >> positive))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class Lukasiewicz:
    """Łukasiewicz t-norm, t-conorm and residual implication (Hu et al. 2016)."""

    name = "lukasiewicz"

    @staticmethod
    def conj(a: Tensor, b: Tensor) -> Tensor:
        return (a + b - 1).clamp(min=0)

    @staticmethod
    def disj(a: Tensor, b: Tensor) -> Tensor:
        return (a + b).clamp(max=1)

    @staticmethod
    def implies(a: Tensor, b: Tensor) -> Tensor:
        return (1 - a + b).clamp(max=1)


class Product:
    """Product t-norm, probabilistic sum and Reichenbach implication."""

    name = "product"

    @staticmethod
    def conj(a: Tensor, b: Tensor) -> Tensor:
        return a * b

    @staticmethod
    def disj(a: Tensor, b: Tensor) -> Tensor:
        return a + b - a * b

    @staticmethod
    def implies(a: Tensor, b: Tensor) -> Tensor:
        return 1 - a + a * b


TNorm = type[Lukasiewicz] | type[Product]


@dataclass(frozen=True)
class Truth:
    """Truth values in [0, 1] with logical operators: ``~a``, ``a & b``, ``a | b``, ``a >> b`` (a implies b).

    Shapes broadcast like tensors, so a (B, 1) premise combines with (B, K) per-output truths. Bool masks, integer
    tensors and python bools or numbers are accepted and become truth values in the default float dtype, so
    ``Truth(x.mean(1) < 0.06)`` reads like the rule. Values are not clamped: :meth:`RuleSet.truths` checks that a
    rule's table stays in [0, 1].

    Attributes:
        value: the truth values (a floating-point tensor).
        logic: the t-norm, :class:`Lukasiewicz` (Hu et al. 2016) or :class:`Product`.
    """

    value: Tensor
    logic: TNorm = Lukasiewicz

    def __post_init__(self) -> None:
        # a bool mask (``thin = x.mean() < 0.06``) or a python number is a truth value too: make it a float tensor
        if not isinstance(self.value, Tensor) or not self.value.is_floating_point():
            object.__setattr__(self, "value", torch.as_tensor(self.value).to(torch.get_default_dtype()))

    @classmethod
    def of(cls, value: Tensor | float | bool, logic: TNorm = Lukasiewicz) -> "Truth":
        """``Truth(value, logic)``: a tensor, bool mask or python number as truth values."""
        return cls(value, logic)

    def _operands(self, other: "Truth | Tensor | float | bool") -> tuple[Tensor, Tensor]:
        """This truth's values and the other's, on one device (dtypes promote as tensors do)."""
        a = self.value
        b = other.value if isinstance(other, Truth) else Truth(other).value
        if a.device != b.device:  # a constant built on the CPU joins the operand on the accelerator, never the reverse
            a, b = (a.to(b.device), b) if a.device.type == "cpu" else (a, b.to(a.device))
        return a, b

    def __invert__(self) -> "Truth":
        return Truth(1 - self.value, self.logic)

    def __and__(self, other) -> "Truth":
        return Truth(self.logic.conj(*self._operands(other)), self.logic)

    def __or__(self, other) -> "Truth":
        return Truth(self.logic.disj(*self._operands(other)), self.logic)

    def __rshift__(self, other) -> "Truth":
        return Truth(self.logic.implies(*self._operands(other)), self.logic)
