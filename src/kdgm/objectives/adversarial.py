"""Adversarial objectives: the discriminator (critic) and generator sides of GAN, WGAN, WGAN-GP and hinge GANs.

Lecture notes ``002_…txt`` section 5 and lecture ``001_…txt`` (GAN, Wasserstein GAN):

- GAN (Goodfellow et al. 2014): ``min_G max_D E_data[log D(x)] + E_z[log(1 − D(G(z)))]``. For a fixed G the optimal
  discriminator is ``D* = p_data / (p_data + p_g)``. The *minimax* generator minimises ``E_z[log(1 − D(G(z)))]``,
  whose gradient vanishes when D is confident; the *non-saturating* one maximises ``E_z[log D(G(z))]`` instead.
- WGAN (Arjovsky et al. 2017): a critic f without sigmoid maximises ``E_data[f(x)] − E_z[f(G(z))]``, an estimate of
  the Wasserstein-1 distance when f is 1-Lipschitz — kept so by clipping every weight to [−c, c] after each critic
  step (:class:`WeightClipping`), or by the gradient penalty ``λ E[(‖∇f(x̂)‖ − 1)²]`` on random interpolates x̂ of
  data and samples (WGAN-GP, Gulrajani et al. 2017).
- Hinge (used by BigGAN): ``E[relu(1 − f(x))] + E[relu(1 + f(G(z)))]`` for the critic, ``−E[f(G(z))]`` for G.

Both sides are objectives ``(model, batch) -> LossOutput`` on a model that holds both networks and provides
``sample(n, cond)`` (differentiable) and ``discriminate(x, cond) -> (B,)`` logits or critic values; ``n_critic``
critic steps per generator step are a phase's ``repeats`` in :class:`kdgm.train.PhasedUpdater`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.objectives.base import LossOutput, batch_data

GANLoss = Literal["minimax", "nonsaturating", "wasserstein", "hinge"]
LOSSES = ("minimax", "nonsaturating", "wasserstein", "hinge")


def gan_condition(model: nn.Module, batch) -> Any:
    """What a conditional GAN (``model.conditional``) is conditioned on: the batch's ``condition()`` where its type
    defines one (a pose, a template), else its class labels ``y``; None for an unconditional GAN."""
    if not getattr(model, "conditional", False):
        return None
    return batch.condition() if hasattr(batch, "condition") else batch.y


def gradient_penalty(critic, real: Tensor, fake: Tensor, cond: Any = None) -> Tensor:
    """() ``E[(‖∇_x̂ f(x̂)‖₂ − 1)²]`` at ``x̂ = ε x_real + (1 − ε) x_fake``, ε ~ U(0, 1) per example (WGAN-GP).

    ``critic(x, cond) -> (B,)``; the penalty is differentiable in the critic's weights (double backpropagation).
    """
    eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)  # (B, 1, 1, 1)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # (B, C, H, W)
    grad, = torch.autograd.grad(critic(mixed, cond).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def clip_weights(module: nn.Module, c: float) -> None:
    """Clip every parameter of ``module`` to [−c, c] in place (WGAN's Lipschitz constraint)."""
    with torch.no_grad():
        for p in module.parameters():
            p.clamp_(-c, c)


class WeightClipping:
    """An optimizer step hook that clips a critic's weights after every step::

        optimizer.register_step_post_hook(WeightClipping(model.discriminator, 0.01))
    """

    def __init__(self, module: nn.Module, c: float = 0.01) -> None:
        if c <= 0:
            raise ValueError(f"the clipping range must be positive, got {c}")
        self.module, self.c = module, c

    def __call__(self, optimizer, args, kwargs) -> None:
        clip_weights(self.module, self.c)


class DiscriminatorLoss:
    """The discriminator's (critic's) side: data against the generator's samples (held fixed).

    Args:
        loss: ``minimax`` / ``nonsaturating`` (the same binary cross-entropy for D), ``wasserstein``, ``hinge``.
        gradient_penalty: λ of the WGAN-GP penalty (0: none).
    """

    def __init__(self, loss: GANLoss = "nonsaturating", gradient_penalty: float = 0.0) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; use one of {', '.join(LOSSES)}")
        self.loss, self.penalty = loss, gradient_penalty

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        real = batch_data(batch)
        cond = gan_condition(model, batch)
        with torch.no_grad():
            fake = model.sample(len(real), cond)
        d_real, d_fake = model.discriminate(real, cond), model.discriminate(fake, cond)  # (B,), (B,)
        if self.loss == "wasserstein":
            loss = d_fake.mean() - d_real.mean()
            terms = {"w_distance": -loss.detach()}
        elif self.loss == "hinge":
            loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            terms = {}
        else:
            loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            terms = {"d_real": torch.sigmoid(d_real).mean().detach(), "d_fake": torch.sigmoid(d_fake).mean().detach()}
        if self.penalty:
            gp = gradient_penalty(model.discriminate, real, fake, cond)
            loss = loss + self.penalty * gp
            terms["gp"] = gp.detach()
        return LossOutput(loss, {"d_loss": loss.detach(), **terms})


class GeneratorLoss:
    """The generator's side, through its differentiable samples.

    Args:
        loss: ``minimax`` minimises ``E[log(1 − D(G(z)))] = −E[softplus(logit)]``; ``nonsaturating`` minimises
            ``−E[log D(G(z))] = E[softplus(−logit)]``; ``wasserstein`` and ``hinge`` minimise ``−E[f(G(z))]``.
    """

    def __init__(self, loss: GANLoss = "nonsaturating") -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; use one of {', '.join(LOSSES)}")
        self.loss = loss

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        return self.on_samples(model, batch, model.sample(len(batch_data(batch)), gan_condition(model, batch)))

    def on_samples(self, model: nn.Module, batch, fake: Tensor) -> LossOutput:
        """The loss of differentiable samples ``fake`` (B, ...) drawn one per row of the batch under its conditions
        (:class:`kdgm.knowledge.ImplicitMStep` passes its own, so that a generator step samples once)."""
        d_fake = model.discriminate(fake, gan_condition(model, batch))  # (B,)
        if self.loss == "minimax":
            loss = -F.softplus(d_fake).mean()
        elif self.loss == "nonsaturating":
            loss = F.softplus(-d_fake).mean()
        else:
            loss = -d_fake.mean()
        return LossOutput(loss, {"g_loss": loss.detach()})
