"""Evaluating a classifier with its rules: the student p and the rule-projected teacher q in one call.

Hu et al. (2016) report both networks of a distilled model: the student p_θ (which needs no rules at test time) and
the teacher q, its projection onto the rules (section 3.3, "the teacher network q at test time"). Krishna et al. (2018)
found that projecting an *undistilled* network at test time gives most of the gain; the same call measures that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdgm.data.loader import BatchLoader, IndexedDataset
from kdgm.knowledge.rules import RuleSet
from kdgm.objectives.classification import logits_of


@dataclass
class RulePredictions:
    """The student's and the teacher's predictions on a data set, in its order.

    Attributes:
        log_p: (N, K) student log-probabilities.
        log_q: (N, K) teacher log-probabilities (p projected onto the rules).
        y: (N,) true labels.
    """

    log_p: Tensor
    log_q: Tensor
    y: Tensor

    def accuracy(self, mask: Tensor | None = None) -> dict[str, float]:
        """``{"p": ..., "q": ...}`` accuracy in [0, 1] of both, on the examples where the (N,) bool ``mask`` holds."""
        keep = torch.ones_like(self.y, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if not keep.any():
            raise ValueError("the mask selects no example")
        return {name: (log.argmax(-1) == self.y)[keep].float().mean().item()
                for name, log in (("p", self.log_p), ("q", self.log_q))}


def predict_with_rules(model: nn.Module, rules: RuleSet, dataset: IndexedDataset, batch_size: int = 500) -> RulePredictions:
    """Run ``model`` over ``dataset`` and project each prediction onto ``rules``.

    Batched, without gradients, with the model in eval mode (restored afterwards) on its own device.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for batch in BatchLoader(dataset, batch_size, shuffle=False, drop_last=False):
                batch = batch.to(device)
                log_p = torch.log_softmax(logits_of(model, batch), -1)  # (B, K)
                log_q = rules.teacher(log_p, model, batch)  # (B, K)
                parts.append((log_p.cpu(), log_q.cpu(), batch.y.cpu()))
    finally:
        model.train(was_training)
    log_p, log_q, y = (torch.cat(column) for column in zip(*parts))
    return RulePredictions(log_p, log_q, y)
