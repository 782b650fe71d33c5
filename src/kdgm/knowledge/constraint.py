"""Constraints ``f_φ(x, cond) → (B,)``: how consistent an output is with what we know (higher is better).

Hu et al. (2018), "Deep Generative Models with Learnable Knowledge Constraints" (slides ``000_…txt``, "Posterior
Regularization for DGMs"): posterior regularization asks the model for outputs with a high ``f``; a constraint is
*fixed* (written by hand, or a network trained beforehand and frozen) or *learnable* (its parameters φ are learned
from data like a reward in maximum-entropy inverse RL, :mod:`kdgm.knowledge.regularized`).

A constraint is an ``nn.Module`` so that a learnable one checkpoints with the model and is optimised by a phase of
:class:`kdgm.train.PhasedUpdater`; a plain function becomes a fixed one through :class:`FunctionConstraint`.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn


class Constraint(nn.Module):
    """``f_φ(x, cond) → (B,)``; subclasses implement :meth:`forward`.

    ``x`` is whatever the model's ``sample`` returns (an image tensor, generated sentences) and ``cond`` whatever the
    batch conditions on (``None`` for an unconditional model); row ``i`` of the result scores row ``i`` of ``x``.
    """

    def forward(self, x: Any, cond: Any = None) -> Tensor:  # noqa: D102
        raise NotImplementedError

    @property
    def learnable(self) -> bool:
        """Whether a φ-step has anything to learn (some parameter requires a gradient)."""
        return any(p.requires_grad for p in self.parameters())

    def freeze(self) -> "Constraint":
        """Make this constraint fixed (e.g. a part parser trained beforehand); returns it."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class FunctionConstraint(Constraint):
    """A fixed constraint from a function ``fn(x, cond) -> (B,)`` (or ``fn(x) -> (B,)`` with ``takes_cond=False``).

    Example: "less ink" on images, ``FunctionConstraint(lambda x: -x.mean((1, 2, 3)), takes_cond=False)``.
    """

    def __init__(self, fn: Callable[..., Tensor], takes_cond: bool = True, name: str = "") -> None:
        super().__init__()
        self.fn = fn
        self.takes_cond = takes_cond
        self.name = name or getattr(fn, "__name__", "constraint")

    def forward(self, x: Any, cond: Any = None) -> Tensor:  # noqa: D102
        return self.fn(x, cond) if self.takes_cond else self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def check_scores(f: Tensor, n: int, where: str = "constraint") -> Tensor:
    """``f`` itself after checking it is a (n,) tensor of finite scores (one line otherwise)."""
    if not isinstance(f, Tensor) or f.shape != (n,):
        shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"{where} must return one score per row, shape ({n},); got {shape}")
    if not f.isfinite().all():
        raise ValueError(f"{where} returned non-finite scores (min {f.min().item()}, max {f.max().item()})")
    return f
