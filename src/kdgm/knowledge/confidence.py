"""Learning constraint parameters φ by the data likelihood of the teacher — the "φ-step".

Hu et al. (2016b) learn rule confidences λ by maximising ``Σ_n log q_λ(y_n | x_n)`` where q_λ is the rule-projected
teacher; Hu et al. (2018, slides ``000_…txt``) learn a constraint f_φ the same way (MaxEnt IRL: the data is the
"expert" whose likelihood under q ∝ p exp(f_φ) is maximised, ``∇φ = E_data[∇f_φ] − E_q[∇f_φ]``). For an enumerable
output space the expectation is exact, so one objective serves both: the negative log-likelihood of the observed
labels under the teacher, with the student's probabilities held fixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdgm.knowledge.rules import RuleSet
from kdgm.objectives.base import LossOutput
from kdgm.objectives.classification import logits_of


class TeacherLikelihood:
    """``−mean_n log q_φ(y_n | x_n)``; only the rules' parameters receive gradients.

    Its gradient in φ is ``E_data[∇ log ...] − E_q[...]`` — for rules, ``∂/∂λ_l = C (1 − r_l(x, y_n)) −
    C E_q[1 − r_l(x, y)]``: λ grows when the observed labels satisfy the rule better than the teacher expects.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        with torch.no_grad():
            log_p = torch.log_softmax(logits_of(model, batch), -1)  # (B, K), the student held fixed
        log_q = self.rules.teacher(log_p, model, batch)  # (B, K), differentiable in φ
        nll = F.nll_loss(log_q, batch.y)
        terms = {"teacher_nll": nll.detach()}
        terms.update({f"lambda{i}": c.detach() for i, c in enumerate(self.rules.confidences)})
        return LossOutput(nll, terms)
