"""Maximum likelihood for explicit models: any model with ``log_prob(x, cond)``.

The base objective of an explicit generative model (a sentence model, a flow) and the "ordinary data likelihood term"
that a posterior-regularization M-step keeps beside its weighted-sample term (:class:`kdgm.knowledge.ExplicitMStep`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from kdgm.objectives.base import LossOutput, batch_condition, batch_data


class MaximumLikelihood:
    """``−Σ_n log p_θ(x_n | c_n) / Σ_n units_n``: the negative log-likelihood per unit (per token, per dimension).

    Args:
        units: (B,) how many units each example has (its tokens); None averages per example.
        data, condition: read the observed outputs and their condition from a batch (defaults: ``batch.data()`` or
            ``batch.x``; ``batch.condition()`` or None).
    """

    def __init__(self, units: Callable[[Any], Tensor] | None = None, data: Callable[[Any], Any] = batch_data,
                 condition: Callable[[Any], Any] = batch_condition) -> None:
        self.units, self.data, self.condition = units, data, condition

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        log_p = model.log_prob(self.data(batch), self.condition(batch))  # (B,)
        count = self.units(batch).sum() if self.units is not None else torch.tensor(float(len(log_p)))
        nll = -log_p.sum() / count.to(log_p.dtype)
        return LossOutput(nll, {"nll": nll.detach()})
