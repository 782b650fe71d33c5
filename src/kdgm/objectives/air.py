"""The AIR training objective: the ELBO with a score-function estimator for the discrete presence variables.

The ELBO of AIR (Eslami et al. 2016; Xu et al. 2019 Eq. 4-5, Algorithm 1) is
``E_q[log p(x | z)] − Σ_t (KL_pres_t + KL_where_t + KL_what_t)``. ``z_where`` and ``z_what`` are reparameterised,
so their gradients flow through the samples; ``z_pres`` is Bernoulli, so its guide parameters get the likelihood-ratio
(REINFORCE) gradient of Mnih & Gregor (2014, NVIL), as in AIR:

    ∇_φ ELBO ⊇ E_q[ Σ_t (r_t − b_t) ∇_φ log q(z_pres_t | x, z^{<t}) ]

with the reward ``r_t`` made of the terms ``z_pres_t`` can change (Rao-Blackwellisation, as pyro's TraceGraph_ELBO):
``log p(x | z) − Σ_{t' ≥ t} (KL_where_t' + KL_what_t') − Σ_{t' > t} KL_pres_t'`` (``KL_pres_t`` is computed
from the conditionals before ``z_pres_t`` is drawn, so it does not depend on it). The reward is centred by two
baselines that do not depend on ``z_pres_t``: a running mean per step (a buffer of the model) and a learned
predictor from the guide's LSTM state, trained by mean squared error in the same loss. The centred reward is not
divided by a running standard deviation: a prototype found that this stalls learning or inverts the counts.
"""

from __future__ import annotations

import torch
from torch import nn

from kdgm.data.batch import SceneBatch
from kdgm.objectives.base import LossOutput


class AIRELBO:
    """Negative ELBO of :class:`kdgm.models.air.AIR` (mean over the batch) plus the score-function surrogate.

    The returned ``total``, averaged over the batch, is
    ``−(ELBO + Σ_t sg(r_t − m_t − b_t) · log q(z_pres_t)) + MSE(b_t, sg(r_t − m_t))``, where ``sg`` stops
    gradients, ``m_t`` is the running mean (``model.reward_mean``) and ``b_t`` the learned baseline
    (``out.baseline``). Its value is not the nELBO; ``terms["nelbo"]`` is.

    Args:
        momentum: decay of the running mean of the reward (``m ← momentum · m + (1 − momentum) · mean(r)``),
            updated in training mode only.
        baseline_weight: weight of the baseline's squared error in ``total`` (it only trains the baseline network,
            whose inputs are detached).
    """

    def __init__(self, momentum: float = 0.9, baseline_weight: float = 1.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.baseline_weight = baseline_weight

    def __call__(self, model: nn.Module, batch: SceneBatch) -> LossOutput:
        out = model(batch.x)
        kl_obj = out.kl_where + out.kl_what  # (T, B) terms that z_pres_t switches on
        kl = (out.kl_pres + kl_obj).sum(0)  # (B,)
        elbo = out.log_lik - kl  # (B,)

        # downstream cost of z_pres_t: suffix sums over steps t' >= t (objects) and t' > t (presence KLs)
        obj_suffix = kl_obj.flip(0).cumsum(0).flip(0)  # (T, B)
        pres_suffix = out.kl_pres.flip(0).cumsum(0).flip(0) - out.kl_pres  # (T, B)
        reward = (out.log_lik.unsqueeze(0) - obj_suffix - pres_suffix).detach()  # (T, B)
        active = torch.cat([torch.ones_like(out.z_pres[:1]), out.z_pres[:-1]])  # (T, B) z_pres_t was sampled
        update = model.training and torch.is_grad_enabled()
        # the running mean this batch is centred by, and (training only) its next value: plain tensor arithmetic,
        # no host read of the update counter and the buffers written only after the loss is built, so that the
        # objective compiles as one graph (torch.compile) and autograd never sees a buffer change under it
        batch_mean, sampled = self._batch_mean(reward, active)  # (T,) each
        first = model.reward_updates == 0  # start at the first batch's mean: from 0 it would be hundreds of nats off
        mean = torch.where(first & sampled & update, batch_mean, model.reward_mean)  # (T,)
        centred = reward - mean.unsqueeze(-1)  # (T, B)
        signal = (centred - out.baseline).detach()  # (T, B)
        surrogate = (signal * out.log_q_pres).sum(0)  # (B,) zero where z_pres_t was fixed by an earlier 0

        # only steps whose z_pres was actually sampled (z_pres_{t-1} = 1) train the baselines
        baseline_mse = ((out.baseline - centred).pow(2) * active).sum(0)  # (B,)

        total = -(elbo + surrogate).mean() + self.baseline_weight * baseline_mse.mean()
        if update:
            moved = self.momentum * model.reward_mean + (1 - self.momentum) * batch_mean
            with torch.no_grad():
                model.reward_mean.copy_(torch.where(sampled, torch.where(first, batch_mean, moved), model.reward_mean))
                model.reward_updates.add_(1)
        terms = {
            "nelbo": -elbo.mean().detach(),
            "log_lik": out.log_lik.mean().detach(),
            "kl": kl.mean().detach(),
            "baseline_mse": baseline_mse.mean().detach(),
            "count": out.count.float().mean(),
        }
        return LossOutput(total, terms, outputs=out)

    @staticmethod
    def _batch_mean(reward: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T,) mean reward over the images whose z_pres_t was sampled, and (T,) whether any was."""
        n = active.sum(1)  # (T,)
        return ((reward * active).sum(1) / n.clamp_min(1)).detach(), n > 0
