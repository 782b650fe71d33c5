"""Closed-form checks of the variational bounds (pyro-style): a linear-Gaussian model whose posterior and marginal
likelihood are known exactly.

Model: z ~ N(0, I_Z), x | z ~ N(W z + b, σ² I_D). Then p(x) = N(b, W Wᵀ + σ² I) and the posterior is
N(m, S) with S = (I + Wᵀ W / σ²)⁻¹, m = S Wᵀ (x − b) / σ².
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from kdgm.data.batch import ImageBatch
from kdgm.metrics.likelihood import importance_log_likelihood
from kdgm.models.vae import VAE
from kdgm.objectives.elbo import ELBO, IWAE


class Out(NamedTuple):
    log_lik: Tensor
    log_prior: Tensor
    log_q: Tensor
    kl: Tensor

    @property
    def log_weight(self) -> Tensor:
        return self.log_lik + self.log_prior - self.log_q


class LinearGaussian(nn.Module):
    """The model above with q(z|x) = N(m + shift, scale² S): exact when shift = 0 and scale = 1."""

    def __init__(self, d: int = 5, z: int = 3, sigma: float = 0.7, shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.randn(d, z, generator=g, dtype=torch.float64)
        self.b = torch.randn(d, generator=g, dtype=torch.float64)
        self.sigma, self.shift, self.scale = sigma, shift, scale
        self.S = torch.linalg.inv(torch.eye(z, dtype=torch.float64) + self.W.T @ self.W / sigma**2)

    def marginal(self) -> MultivariateNormal:
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b, cov)

    def posterior(self, x: Tensor) -> MultivariateNormal:
        mean = ((x - self.b) @ self.W) @ self.S / self.sigma**2 + self.shift  # (B, Z)
        return MultivariateNormal(mean, self.scale**2 * self.S)

    def forward(self, x: Tensor, k: int = 1) -> Out:
        q = self.posterior(x)
        z = q.rsample((k,))  # (k, B, Z)
        prior = MultivariateNormal(torch.zeros(z.shape[-1], dtype=torch.float64), torch.eye(z.shape[-1], dtype=torch.float64))
        log_lik = Normal(z @ self.W.T + self.b, self.sigma).log_prob(x).sum(-1)  # (k, B)
        return Out(log_lik, prior.log_prob(z), q.log_prob(z), kl_divergence(q, prior))


@pytest.fixture
def x():
    torch.manual_seed(0)
    model = LinearGaussian()
    return model.marginal().sample((6,))  # (6, D)


def test_elbo_with_exact_posterior_equals_log_likelihood(x):
    model = LinearGaussian()
    log_p = model.marginal().log_prob(x).mean()
    # With q the exact posterior, log p(x, z) − log q(z | x) = log p(x) for every z: even one sample is exact.
    mc = ELBO(k=1, analytic_kl=False)(model, ImageBatch(x)).total
    torch.testing.assert_close(-mc, log_p, rtol=0, atol=1e-10)
    # The closed-form KL version has Monte-Carlo noise only in E_q[log p(x|z)].
    analytic = ELBO(k=4000, analytic_kl=True)(model, ImageBatch(x)).total
    assert abs(-analytic.item() - log_p.item()) < 0.05


def test_elbo_is_below_log_likelihood_for_a_wrong_posterior(x):
    model = LinearGaussian(shift=0.5, scale=1.5)
    log_p = model.marginal().log_prob(x).mean().item()
    elbo = -ELBO(k=4000, analytic_kl=True)(model, ImageBatch(x)).total.item()
    exact_gap = kl_divergence(model.posterior(x), LinearGaussian().posterior(x)).mean().item()
    assert elbo < log_p
    assert elbo == pytest.approx(log_p - exact_gap, abs=0.05)  # the gap is KL(q ‖ p(z|x))


def test_iwae_tightens_with_k_and_approaches_log_likelihood(x):
    model = LinearGaussian(shift=0.4, scale=1.3)
    log_p = model.marginal().log_prob(x).mean().item()
    torch.manual_seed(1)
    bounds = []
    for k in (1, 5, 50, 500):
        reps = [-IWAE(k=k)(model, ImageBatch(x)).total.item() for _ in range(200 if k < 500 else 40)]
        bounds.append(sum(reps) / len(reps))
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert all(b < log_p + 0.01 for b in bounds)
    assert log_p - bounds[-1] < 0.25 * (log_p - bounds[0])
    # The chunked estimator used as a metric agrees with the one-shot bound.
    torch.manual_seed(2)
    estimate = importance_log_likelihood(model, x, k=2000, chunk=300).mean().item()
    assert estimate == pytest.approx(log_p, abs=0.05)


def test_iwae_with_one_sample_is_the_elbo(x):
    model = LinearGaussian(shift=0.3)
    torch.manual_seed(3)
    a = IWAE(k=1)(model, ImageBatch(x)).total
    torch.manual_seed(3)
    b = ELBO(k=1, analytic_kl=False)(model, ImageBatch(x)).total
    torch.testing.assert_close(a, b)


def test_vae_densities_match_torch_distributions():
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden=(16,)).double()
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.4, dtype=torch.float64))
    torch.manual_seed(5)
    out = vae(x, k=7)
    mean, log_var = vae.posterior(x)
    q = Normal(mean, (0.5 * log_var).exp())
    torch.testing.assert_close(out.log_q, q.log_prob(out.z).sum(-1))
    torch.testing.assert_close(out.log_prior, Normal(0.0, 1.0).log_prob(out.z).sum(-1))
    bern = torch.distributions.Bernoulli(logits=out.logits)
    torch.testing.assert_close(out.log_lik, bern.log_prob(x.expand_as(out.logits)).flatten(2).sum(-1))
    torch.testing.assert_close(out.kl, kl_divergence(q, Normal(0.0, 1.0)).sum(-1))
