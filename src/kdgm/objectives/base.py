"""The objective contract: ``objective(model, batch) -> LossOutput``.

Objectives are objects, separate from models (as pyro's ``Trace_ELBO()(model, guide)``): a model returns named
quantities, an objective turns them into a scalar to minimise plus named terms to log. Knowledge methods wrap a
base objective instead of editing the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from kdgm.data.batch import Batch


@dataclass
class Progress:
    """Where training stands; objectives with schedules (e.g. the imitation weight π_t) read it. The training loop
    sets it on every objective that has a ``progress`` attribute before each step; it lives here, beside the
    objectives that read it, so that knowledge methods need nothing from the training package.

    Attributes:
        step: optimizer steps taken so far (of the first phase).
        epoch: fractional epochs seen so far (``step / steps_per_epoch``).
        max_steps: total steps of the run.
    """

    step: int = 0
    epoch: float = 0.0
    max_steps: int = 0


@dataclass
class LossOutput:
    """A scalar to minimise and named, detached-for-logging terms.

    Attributes:
        total: () scalar tensor; the training loop back-propagates it.
        terms: named () tensors (for example ``nelbo``, ``kl``); logged, never back-propagated.
        outputs: the model's named outputs, for objectives that wrap this one (e.g. a structural penalty that reads
            the amortized posterior the base objective computed) — no second forward pass.
    """

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    outputs: Any = None


class Objective(Protocol):
    """Anything callable as ``objective(model, batch) -> LossOutput``."""

    def __call__(self, model: nn.Module, batch: Batch) -> LossOutput: ...


def batch_data(batch) -> Any:
    """The observed outputs x of a batch: ``batch.data()`` where the batch type defines it, else ``batch.x``."""
    return batch.data() if hasattr(batch, "data") else batch.x


def batch_condition(batch) -> Any:
    """What a batch conditions a model on: ``batch.condition()`` where the batch type defines it, else None."""
    return batch.condition() if hasattr(batch, "condition") else None
