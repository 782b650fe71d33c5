"""Variational auto-encoder with a Gaussian latent and a Bernoulli decoder (Kingma & Welling 2014).

The model returns named quantities for ``k`` posterior samples per input and never a loss: the ELBO and IWAE
bounds are objects in ``kdgm.objectives.elbo``. Lecture notes ``002_…txt`` section 4: the reparameterisation
``z = μ(x) + σ(x)·ε, ε ~ N(0, I)`` makes ``E_q[log p(x|z)]`` differentiable in the encoder's parameters.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.nn.mlp import mlp

LOG_2PI = math.log(2 * math.pi)


class VAEOutput(NamedTuple):
    """Named quantities of one forward pass with ``k`` samples per input.

    Attributes:
        z: (k, B, Z) posterior samples.
        log_lik: (k, B) log p(x | z).
        log_prior: (k, B) log p(z).
        log_q: (k, B) log q(z | x).
        kl: (B,) analytic KL(q(z|x) || p(z)).
        logits: (k, B, C, H, W) decoder logits (Bernoulli parameters before the sigmoid).
    """

    z: Tensor
    log_lik: Tensor
    log_prior: Tensor
    log_q: Tensor
    kl: Tensor
    logits: Tensor

    @property
    def log_weight(self) -> Tensor:
        """(k, B) importance log-weights log p(x, z) − log q(z | x)."""
        return self.log_lik + self.log_prior - self.log_q


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


class VAE(nn.Module):
    """Gaussian-latent, Bernoulli-pixel VAE with an MLP or a convolutional encoder and decoder.

    Args:
        image_shape: (C, H, W) of the data.
        z_dim: latent dimension.
        hidden: widths of the MLP's hidden layers (the 1-stochastic-layer MNIST model of Burda et al. 2016 uses
            two layers of 200 units and 50 latents).
        arch: ``"mlp"`` or ``"conv"`` (two stride-2 convolutions and their transposes; for 28×28 inputs).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        z_dim: int = 50,
        hidden: tuple[int, ...] = (200, 200),
        arch: str = "mlp",
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.z_dim = z_dim
        c, h, w = self.image_shape
        if arch == "mlp":
            x_dim = c * h * w
            self.encoder = nn.Sequential(nn.Flatten(), mlp((x_dim, *hidden, 2 * z_dim)))
            self.decoder = nn.Sequential(mlp((z_dim, *reversed(hidden), x_dim)), nn.Unflatten(-1, self.image_shape))
        elif arch == "conv":
            if h % 4 or w % 4:
                raise ValueError(f"the conv VAE needs H and W divisible by 4, got {self.image_shape}")
            feat = (64, h // 4, w // 4)
            self.encoder = nn.Sequential(
                nn.Conv2d(c, 32, 4, 2, 1), nn.ReLU(),  # (B, 32, H/2, W/2)
                nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),  # (B, 64, H/4, W/4)
                nn.Flatten(), nn.Linear(math.prod(feat), 2 * z_dim),
            )
            self.decoder = nn.Sequential(
                nn.Linear(z_dim, math.prod(feat)), nn.ReLU(), nn.Unflatten(-1, feat),
                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),  # (B, 32, H/2, W/2)
                nn.ConvTranspose2d(32, c, 4, 2, 1),  # (B, C, H, W)
            )
        else:
            raise ValueError(f"unknown VAE arch {arch!r}; use 'mlp' or 'conv'")

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x), each (B, Z)."""
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        return mean, log_var

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits (..., C, H, W) for latents (..., Z)."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, self.z_dim))  # (prod(lead), C, H, W)
        return logits.reshape(*lead, *self.image_shape)

    def forward(self, x: Tensor, k: int = 1) -> VAEOutput:
        """Encode, draw ``k`` reparameterised samples per input, decode and score them."""
        mean, log_var = self.posterior(x)  # (B, Z) each
        std = torch.exp(0.5 * log_var)
        eps = torch.randn((k, *mean.shape), device=x.device, dtype=mean.dtype)  # (k, B, Z)
        z = mean + std * eps  # (k, B, Z)
        logits = self.decode(z)  # (k, B, C, H, W)
        target = x.expand_as(logits)
        log_lik = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).sum(-1)  # (k, B)
        log_prior = _standard_normal_log_prob(z)  # (k, B)
        log_q = -0.5 * (eps.pow(2) + LOG_2PI + log_var).sum(-1)  # (k, B)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)  # (B,)
        return VAEOutput(z, log_lik, log_prior, log_q, kl, logits)

    def sample(self, n: int, cond: None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """(n, C, H, W) pixel probabilities of images decoded from prior samples z ~ N(0, I).

        Differentiable in the decoder's weights (the noise is drawn outside the graph), so the VAE is also an
        implicit model to which the reverse-KL M-step of posterior regularization applies; wrap it in
        ``torch.no_grad()`` when only the images are wanted. The VAE is unconditional: ``cond`` must be None.
        """
        if cond is not None:
            raise ValueError("the VAE is unconditional; sample(n) takes no condition")
        device = next(self.parameters()).device
        z = torch.randn(n, self.z_dim, generator=generator).to(device)  # (n, Z)
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """(B, C, H, W) pixel probabilities decoded from the posterior mean."""
        mean, _ = self.posterior(x)
        return torch.sigmoid(self.decode(mean))
