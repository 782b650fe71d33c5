"""Variational bounds on log p(x) as objectives.

- :class:`ELBO`: ``E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))`` (lecture notes ``002_…txt``, section 4), with the KL in closed
  form when the model provides it.
- :class:`IWAE`: ``E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)]`` (Burda et al. 2016), tighter as ``k`` grows, equal to the
  ELBO at ``k = 1``.

Both read a model whose ``forward(x, k)`` returns an object with ``log_lik``, ``log_prior``, ``log_q`` (each
``(k, B)``) and ``kl`` (``(B,)``), such as :class:`kdgm.models.vae.VAE`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from kdgm.data.batch import ImageBatch
from kdgm.objectives.base import LossOutput


def iwae_bound(log_weight: Tensor) -> Tensor:
    """(B,) the importance-weighted bound ``log (1/k) Σ_i w_i`` from (k, B) log-weights."""
    return torch.logsumexp(log_weight, dim=0) - math.log(log_weight.shape[0])


class ELBO:
    """Negative evidence lower bound, averaged over the batch.

    Args:
        k: posterior samples per input for the Monte-Carlo reconstruction term.
        analytic_kl: use the closed-form KL (lower variance) instead of its one-sample estimate.
    """

    def __init__(self, k: int = 1, analytic_kl: bool = True) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.analytic_kl = analytic_kl

    def __call__(self, model: nn.Module, batch: ImageBatch) -> LossOutput:
        out = model(batch.x, k=self.k)
        rec = out.log_lik.mean(0)  # (B,)
        kl = out.kl if self.analytic_kl else (out.log_q - out.log_prior).mean(0)  # (B,)
        nelbo = (kl - rec).mean()
        return LossOutput(nelbo, {"nelbo": nelbo.detach(), "rec": -rec.mean().detach(), "kl": kl.mean().detach()})


class IWAE:
    """Negative importance-weighted bound with ``k`` samples (Burda et al. 2016, Eq. 8), averaged over the batch."""

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(self, model: nn.Module, batch: ImageBatch) -> LossOutput:
        out = model(batch.x, k=self.k)
        bound = iwae_bound(out.log_weight).mean()
        nelbo = -out.log_weight.mean()
        return LossOutput(-bound, {f"niwae{self.k}": -bound.detach(), "nelbo": nelbo.detach()})
