"""Objectives: ``objective(model, batch) -> LossOutput``, separate from the models they train.

Public names::

    LossOutput, Objective, Progress     the contract, and where training stands (for scheduled objectives)
    ELBO, IWAE, iwae_bound              variational bounds (VAE)
    CrossEntropy, logits_of             classification against hard or soft targets
    AIRELBO                             Attend-Infer-Repeat's ELBO with score-function gradients for discrete latents
    MaximumLikelihood                   −log p_θ(x | c) per unit, for any model with ``log_prob``
    batch_data, batch_condition         what a batch observes and what it conditions on
"""

from kdgm.objectives.air import AIRELBO
from kdgm.objectives.base import LossOutput, Objective, Progress, batch_condition, batch_data
from kdgm.objectives.classification import CrossEntropy, logits_of
from kdgm.objectives.elbo import ELBO, IWAE, iwae_bound
from kdgm.objectives.likelihood import MaximumLikelihood

__all__ = [
    "AIRELBO", "CrossEntropy", "ELBO", "IWAE", "LossOutput", "MaximumLikelihood", "Objective", "Progress",
    "batch_condition", "batch_data", "iwae_bound", "logits_of",
]
