"""Generative adversarial networks at a size a CPU trains: a generator and a discriminator (critic) in one module.

Lecture ``001_…txt`` (GAN, Wasserstein GAN) and notes ``002_…txt`` section 5. The networks follow DCGAN (Radford et al.
2016): the generator maps z ~ N(0, I) through a linear layer to a 4×4 or 7×7 feature map and doubles it with
stride-2 transposed convolutions (batch norm, ReLU) up to the image; the discriminator halves it with stride-2
convolutions (batch norm, leaky ReLU) down to one logit; the critic of WGAN-GP leaves batch norm out (its gradient
penalty is per example). :class:`GAN` returns logits or critic values (no sigmoid), so the same network serves as a
WGAN critic.

:class:`GAN` is what the adversarial objectives (:mod:`kdgm.objectives.adversarial`) and the implicit M-step of
posterior regularization (:class:`kdgm.knowledge.ImplicitMStep`) read: ``sample(n, cond)`` is differentiable in the
generator's weights, ``discriminate(x, cond)`` gives one value per image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdgm.models.minibatch_std import MinibatchStdDev


# image size → (side of the coarsest feature map, number of stride-2 resolution changes)
SIZES = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _layout(image_size: int) -> tuple[int, int]:
    if image_size not in SIZES:
        raise ValueError(f"DCGAN networks support {', '.join(f'{s}x{s}' for s in SIZES)} images, got {image_size}")
    return SIZES[image_size]


class DCGANGenerator(nn.Module):
    """z (B, Z) → images (B, C, S, S) in [0, 1]; with classes, z is concatenated with a learned class embedding
    (the conditional GAN of Mirza & Osindero 2014).

    Args:
        z_dim: latent size. channels: image channels. image_size: 28, 32 or 64.
        width: channels of the last hidden feature map (doubled at each coarser resolution).
        num_classes: 0 for an unconditional generator.
    """

    def __init__(self, z_dim: int = 64, channels: int = 1, image_size: int = 28, width: int = 32,
                 num_classes: int = 0) -> None:
        super().__init__()
        base, doublings = _layout(image_size)
        top = width * 2 ** (doublings - 1)
        self.z_dim, self.base, self.top = z_dim, base, top
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        inputs = 2 * z_dim if num_classes else z_dim
        self.project = nn.Sequential(nn.Linear(inputs, top * base * base), nn.BatchNorm1d(top * base * base), nn.ReLU())
        layers: list[nn.Module] = []
        for i in range(doublings - 1):
            c_in = top // 2**i
            layers += [nn.ConvTranspose2d(c_in, c_in // 2, 4, 2, 1), nn.BatchNorm2d(c_in // 2), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1)]
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)  # (B, 2Z)
        h = self.project(z).view(-1, self.top, self.base, self.base)  # (B, top, base, base)
        return torch.sigmoid(self.upsample(h))  # (B, C, S, S)


class DCGANDiscriminator(nn.Module):
    """images (B, C, S, S) → (B,) logits (or critic values).

    ``norm="batch"`` puts batch norm after every convolution but the first, as DCGAN does: without it the generator
    collapsed to one image within a few hundred steps (measured on MNIST, in kdgm's loop and in a hand-written one
    alike). ``norm="none"`` is for WGAN-GP, whose per-example gradient penalty batch norm would break (Gulrajani et
    al. 2017 drop it from the critic). With classes it is a projection discriminator (Miyato & Koyama 2018):
    ``ψ(h) + ⟨embed(y), h⟩`` on the features h.

    ``minibatch_std=True`` appends Progressive GAN's minibatch standard deviation to the last feature map, taken
    within each class for a conditional discriminator (:class:`kdgm.models.minibatch_std.MinibatchStdDev`): batch
    norm lets the discriminator see a batch of copies, but a generator that draws one image per class still gives a
    varied batch. (On ``gan-mnist``'s conditional rows it did not prevent that collapse: off there.)
    """

    def __init__(self, channels: int = 1, image_size: int = 28, width: int = 32, num_classes: int = 0,
                 norm: str = "batch", minibatch_std: bool = False) -> None:
        super().__init__()
        base, doublings = _layout(image_size)
        layers: list[nn.Module] = []
        c_in = channels
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be batch or none, got {norm!r}")
        for i in range(doublings):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1)]
            layers += [nn.BatchNorm2d(c_out)] if norm == "batch" and i > 0 else []
            layers += [nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.stddev = MinibatchStdDev() if minibatch_std else None
        c_in += 1 if minibatch_std else 0
        self.head = nn.Linear(c_in * base * base, 1)
        self.embed = nn.Embedding(num_classes, c_in * base * base) if num_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.features(x)  # (B, C, base, base)
        if self.stddev is not None:
            h = self.stddev(h, y)  # (B, C + 1, base, base): the group is y's class (the batch when unconditional)
        h = h.flatten(1)  # (B, F)
        logit = self.head(h).squeeze(1)  # (B,)
        return logit if self.embed is None else logit + (self.embed(y) * h).sum(1)


class GAN(nn.Module):
    """A generator and a discriminator, trained by the phases of an adversarial objective.

    Args:
        generator: z (B, Z) → images; ``(z, y)`` → images for a class-conditional GAN.
        discriminator: images → (B,) logits; ``(x, y)`` → (B,) for a class-conditional GAN.
        z_dim: the generator's latent size.
        num_classes: 0 for an unconditional GAN; else the condition of ``sample`` and ``discriminate`` is a (B,)
            tensor of class labels (the batch's ``y``, :func:`kdgm.objectives.adversarial.gan_condition`).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, z_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.generator, self.discriminator, self.z_dim = generator, discriminator, z_dim
        self.num_classes = num_classes

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _check(self, cond: Tensor | None, n: int) -> None:
        if self.conditional and (cond is None or cond.shape != (n,)):
            got = "none" if cond is None else f"shape {tuple(cond.shape)}"
            raise ValueError(f"this GAN is class-conditional: pass cond, ({n},) class labels (got {got})")
        if not self.conditional and cond is not None:
            raise ValueError("this GAN is unconditional; sample(n) and discriminate(x) take no condition")

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, Z) z ~ N(0, I) on the model's device (drawn on the CPU when a ``generator`` is given)."""
        device = next(self.parameters()).device
        if generator is not None:
            return torch.randn(n, self.z_dim, generator=generator).to(device)
        return torch.randn(n, self.z_dim, device=device)

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None,
               z: Tensor | None = None) -> Tensor:
        """(n, C, S, S) images, differentiable in the generator's weights; ``z`` fixes the noise (sample grids)."""
        self._check(cond, n)
        z = self.noise(n, generator) if z is None else z
        return self.generator(z, cond) if self.conditional else self.generator(z)

    def discriminate(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B,) discriminator logits (or critic values) of images x (of class ``cond`` for a conditional GAN)."""
        self._check(cond, len(x))
        return self.discriminator(x, cond) if self.conditional else self.discriminator(x)


def dcgan(z_dim: int = 64, channels: int = 1, image_size: int = 28, width: int = 32, num_classes: int = 0,
          d_norm: str = "batch", minibatch_std: bool = False) -> GAN:
    """A DCGAN generator and discriminator for ``image_size`` × ``image_size`` images (class-conditional with
    ``num_classes``; ``d_norm="none"`` for a WGAN-GP critic; ``minibatch_std`` for the discriminator's minibatch
    standard deviation, within each class when conditional)."""
    return GAN(DCGANGenerator(z_dim, channels, image_size, width, num_classes),
               DCGANDiscriminator(channels, image_size, width, num_classes, d_norm, minibatch_std), z_dim, num_classes)
