"""Objectives: ``objective(model, batch) -> LossOutput``, separate from the models they train.

Public names::

    LossOutput, Objective, Progress     the contract, and where training stands (for scheduled objectives)
    ELBO, IWAE, iwae_bound              variational bounds (VAE)
    CrossEntropy, logits_of             classification against hard or soft targets
    AIRELBO                             Attend-Infer-Repeat's ELBO with score-function gradients for discrete latents
"""

from kdgm.objectives.air import AIRELBO
from kdgm.objectives.base import LossOutput, Objective, Progress
from kdgm.objectives.classification import CrossEntropy, logits_of
from kdgm.objectives.elbo import ELBO, IWAE, iwae_bound

__all__ = ["AIRELBO", "CrossEntropy", "ELBO", "IWAE", "LossOutput", "Objective", "Progress", "iwae_bound", "logits_of"]
