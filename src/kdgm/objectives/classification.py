"""Classification objectives: cross-entropy against hard labels or soft target distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.objectives.base import LossOutput


def logits_of(model: nn.Module, batch) -> Tensor:
    """(B, K) the model's logits for a batch (every batch type names its model inputs in ``inputs()``)."""
    return model(*batch.inputs())


class CrossEntropy:
    """Mean cross-entropy ``ℓ(target, p_θ)``; ``loss`` accepts (B,) labels or (B, K) probabilities."""

    @staticmethod
    def loss(logits: Tensor, target: Tensor) -> Tensor:
        if target.dtype.is_floating_point:
            return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        return F.cross_entropy(logits, target)

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        logits = logits_of(model, batch)  # (B, K)
        loss = self.loss(logits, batch.y)
        accuracy = (logits.argmax(-1) == batch.y).float().mean()
        return LossOutput(loss, {"ce": loss.detach(), "acc": accuracy.detach()})
