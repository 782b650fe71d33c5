"""Logic-rule knowledge distillation (Hu et al. 2016, Eq. 2; lecture notes ``002_…txt`` section 6.1).

At every step the teacher q is the projection of the current student p_θ onto the rules (:class:`RuleSet`), and
the student minimises ``(1 − π_t) ℓ(y, p_θ) + π_t ℓ(q, p_θ)``. The teacher is recomputed from the student at every
step and is not back-propagated through.
"""

from __future__ import annotations

import torch
from torch import nn

from kdgm.knowledge.rules import RuleSet
from kdgm.objectives.base import LossOutput, Progress
from kdgm.objectives.classification import CrossEntropy, logits_of


class ImitationSchedule:
    """``π_t = min(π₀, 1 − α^t)``, t in epochs (fractional within an epoch); α = 0.95 in the authors' code."""

    def __init__(self, pi0: float = 0.95, alpha: float = 0.95) -> None:
        if not 0 <= pi0 <= 1 or not 0 < alpha <= 1:
            raise ValueError(f"need 0 <= pi0 <= 1 and 0 < alpha <= 1, got pi0={pi0}, alpha={alpha}")
        self.pi0, self.alpha = pi0, alpha

    def __call__(self, epoch: float) -> float:
        return min(self.pi0, 1.0 - self.alpha**epoch)


class RuleDistillation:
    """Wraps a classification objective with a rule-projected teacher.

    Args:
        rules: the rules and C defining the teacher.
        schedule: the imitation weight π_t.
        base: the classification loss ℓ (hard and soft targets).
    """

    def __init__(self, rules: RuleSet, schedule: ImitationSchedule | None = None, base: CrossEntropy | None = None):
        self.rules = rules
        self.schedule = schedule or ImitationSchedule()
        self.base = base or CrossEntropy()
        self.progress = Progress()

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        logits = logits_of(model, batch)  # (B, K)
        with torch.no_grad():
            truths = self.rules.truths(model, batch, tuple(logits.shape))  # checked (B, K) tables
            q = self.rules.teacher(torch.log_softmax(logits, -1), model, batch, truths).exp()  # (B, K)
        pi = self.schedule(self.progress.epoch)
        hard = self.base.loss(logits, batch.y)
        soft = self.base.loss(logits, q)
        total = (1 - pi) * hard + pi * soft
        terms = {"ce": hard.detach(), "imitation": soft.detach(), "pi": torch.tensor(pi, device=logits.device),
                 "acc": (logits.argmax(-1) == batch.y).float().mean().detach()}
        # how often each rule fires: a rule that never does (a misspelt word) leaves q = p, silently
        terms.update({f"coverage{i}": c for i, c in enumerate(self.rules.coverage(truths))})
        return LossOutput(total, terms)
