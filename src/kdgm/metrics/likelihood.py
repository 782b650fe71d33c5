"""Likelihood metrics of latent-variable models: test nELBO and the importance-sampled log-likelihood.

``log p(x) ≈ log (1/k) Σ_i p(x, z_i) / q(z_i | x)``, ``z_i ~ q(z | x)`` (Burda et al. 2016): a lower bound that
tightens as ``k`` grows; with k = 1000–5000 it is the standard NLL estimate for MNIST models. The samples are drawn
in chunks so that large ``k`` fits in memory, and combined exactly with ``logsumexp``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

from kdgm.data.batch import ImageBatch


@torch.no_grad()
def importance_log_likelihood(model: nn.Module, x: Tensor, k: int, chunk: int = 100) -> Tensor:
    """(B,) the k-sample importance-weighted estimate of log p(x) for a model whose ``forward(x, k)`` gives
    ``log_weight`` of shape (k, B)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    parts = []
    for start in range(0, k, chunk):
        parts.append(model(x, k=min(chunk, k - start)).log_weight)  # (k_chunk, B)
    log_weight = torch.cat(parts)  # (k, B)
    return torch.logsumexp(log_weight, dim=0) - math.log(k)


@torch.no_grad()
def likelihood_metrics(model: nn.Module, batches: Iterable[ImageBatch], k: int, chunk: int = 100) -> dict[str, float]:
    """Mean test nELBO (one sample, closed-form KL) and NLL estimate (``k`` samples) in nats per example."""
    device = next(model.parameters()).device
    total_nelbo, total_nll, n = 0.0, 0.0, 0
    for batch in batches:
        x = batch.x.to(device)
        out = model(x, k=1)
        total_nelbo += float((out.kl - out.log_lik[0]).sum())
        total_nll += float(-importance_log_likelihood(model, x, k, chunk).sum())
        n += len(x)
    return {"nelbo": total_nelbo / n, "nll": total_nll / n}
