"""The φ-step: learning constraint parameters by the data likelihood of the teacher q_φ.

Hu et al. (2016b) learn rule confidences λ by maximising ``Σ_n log q_λ(y_n | x_n)`` where q_λ is the rule-projected
teacher; Hu et al. (2018, slides ``000_…txt``, "Algorithm: PR with learnable constraint") learn a constraint f_φ the
same way, as maximum-entropy inverse RL learns a reward: the data is the "expert" whose likelihood under
``q_φ ∝ p_θ exp(α f_φ)`` is maximised, ``∇_φ = α (E_data[∇f_φ] − E_q[∇f_φ])``. One objective serves both:

- rules (an enumerable output space): q is the exact projection and the expectation is exact;
- a constraint on outputs that cannot be enumerated (:class:`kdgm.knowledge.PosteriorRegularization`): the
  normaliser of q, and so ``E_q``, is estimated from samples of p_θ.

The model p_θ is held fixed: only φ receives gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdgm.knowledge.regularized import PosteriorRegularization
from kdgm.knowledge.rules import RuleSet
from kdgm.objectives.base import LossOutput
from kdgm.objectives.classification import logits_of


class TeacherLikelihood:
    """``−mean_n log q_φ(x*_n)`` (up to terms constant in φ); only the knowledge's parameters receive gradients.

    For rules its gradient in λ is ``∂/∂λ_l = C (1 − r_l(x, y_n)) − C E_q[1 − r_l(x, y)]``: λ grows when the observed
    labels satisfy the rule better than the teacher expects. For a constraint it is ``−α (∇f_φ(x*) − E_q[∇f_φ])``.

    Args:
        knowledge: a :class:`RuleSet` (learned confidences) or a :class:`PosteriorRegularization` (learned f_φ).
        penalty: weight of ``E[f²]`` over data and samples (constraints only). The φ-step separates data from samples
            quickly; without a penalty f grows without bound and the weights collapse onto one sample.
    """

    def __init__(self, knowledge: RuleSet | PosteriorRegularization, penalty: float = 0.0) -> None:
        if not isinstance(knowledge, (RuleSet, PosteriorRegularization)):
            raise TypeError(f"TeacherLikelihood learns a RuleSet or a PosteriorRegularization, got "
                            f"{type(knowledge).__name__}")
        self.knowledge = knowledge
        self.rules = knowledge if isinstance(knowledge, RuleSet) else None
        self.penalty = penalty

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        if self.rules is None:
            log_likelihood, squares, terms = self.knowledge.data_log_likelihood(model, batch)
            nll = -log_likelihood.mean()
            terms = {"teacher_nll": nll.detach(), **terms}
            return LossOutput(nll + self.penalty * squares, terms)
        with torch.no_grad():
            log_p = torch.log_softmax(logits_of(model, batch), -1)  # (B, K), the student held fixed
        log_q = self.rules.teacher(log_p, model, batch)  # (B, K), differentiable in φ
        nll = F.nll_loss(log_q, batch.y)
        terms = {"teacher_nll": nll.detach()}
        terms.update({f"lambda{i}": c.detach() for i, c in enumerate(self.rules.confidences)})
        return LossOutput(nll, terms)
