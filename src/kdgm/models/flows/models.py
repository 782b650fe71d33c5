"""Multi-scale normalizing flows for images: RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018).

Both are explicit generative models (lecture ``001_…txt``, "Normalizing Flow"): for data x in [0, 1]^D,

    z = f(x),      log p(x) = Σ_l log N(z_l; 0, I) + log |det ∂f/∂x|                      (change of variables)

with ``f`` = :class:`~kdgm.models.flows.layers.LogitTransform` followed by L levels. Each level squeezes and
transforms, then (but the last) a :class:`~kdgm.models.flows.layers.Split` factors half of the channels out as a
latent ``z_l``; the last level's output is the last latent. Inference is exact (:meth:`MultiScaleFlow.encode`) and
:meth:`~MultiScaleFlow.sample` is :meth:`~MultiScaleFlow.decode` (= f⁻¹) of prior draws.

Units: ``log_prob`` is in nats of the continuous density of (dequantised) x on [0, 1]^D, the logit preprocessing's
log-determinant included. :func:`bits_per_dim` turns it into the usual bits per dimension of 256-level data and
:func:`dequantize` adds the uniform noise that makes the data continuous.

28×28 MNIST is handled without padding: every squeeze halves the side, 28 → 14 → 7, so Glow takes up to L = 2 levels
on 28×28 (it squeezes at the start of every level) and RealNVP up to L = 3 (it squeezes at the end of every level but
the last). Both accept any (C, H, W) whose sides the squeezes divide.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from kdgm.models.flows.layers import (
    ActNorm, AffineCoupling, CheckerboardCoupling, Compose, InvConv1x1, InvConv1x1LU, LogitTransform, Split, Squeeze,
)

LOG_2PI = math.log(2 * math.pi)
LEVELS = 256  # grey levels of 8-bit images


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantisation (Theis et al. 2016; Dinh et al. 2017 section 4.1): 8-bit grey levels → continuous
    values in [0, 1).

    ``x`` is either integer levels ``k ∈ {0, …, 255}`` (any integer dtype, e.g. MNIST's uint8), or float grey levels
    in [0, 1] under the ``k / 255`` convention of :mod:`kdgm.data.mnist` (and torchvision's ``ToTensor``), which are
    rounded back to ``k = round(255·x)``. Returns ``(k + u) / 256`` with ``u ~ U(0, 1)`` per pixel, i.e. level ``k``
    plus U(0, 1/256) noise: a sample of the bin ``[k/256, (k+1)/256)`` whose probability the density integrates.

    Returns: a float tensor of x's shape (the default dtype for integer input, x's dtype for float input).
    """
    if x.dtype.is_floating_point:
        levels = torch.round(x * (LEVELS - 1))
    else:
        levels = x.to(torch.get_default_dtype())
    if levels.numel() and (levels.min() < 0 or levels.max() > LEVELS - 1):
        raise ValueError(f"grey levels must lie in [0, {LEVELS - 1}] (or [0, 1] as floats)")
    u = torch.rand(levels.shape, generator=generator, dtype=levels.dtype).to(levels.device)  # (...) U(0, 1)
    return (levels + u) / LEVELS


def bits_per_dim(log_prob: Tensor | float, num_dims: int) -> Tensor:
    """Bits per dimension of 256-level data from a continuous log-density in nats.

    Convention: ``log_prob`` is ``log p(x)`` of a density over [0, 1]^D evaluated at dequantised data
    ``x = (k + u) / 256``. A bin of side 1/256 has probability ≈ ``p(x)·256^{−D}``, so the discrete negative
    log-likelihood in bits per dimension is

        bpd = −(log p(x) − D·log 256) / (D·ln 2)

    (a uniform density on [0, 1]^D, ``log p = 0``, gives 8 bits/dim). With uniform dequantisation the average over
    ``u`` is an upper bound on the discrete model's bpd (Theis et al. 2016).

    Args:
        log_prob: (...) log-densities in nats (e.g. :meth:`MultiScaleFlow.log_prob`).
        num_dims: D, e.g. 784 for 1×28×28.
    """
    log_prob = torch.as_tensor(log_prob)
    return -(log_prob - num_dims * math.log(LEVELS)) / (num_dims * math.log(2.0))


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """(B, ...) → (B,): log N(z; 0, I) of each example."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)


class MultiScaleFlow(nn.Module):
    """The multi-scale architecture shared by RealNVP and Glow (Dinh et al. 2017 section 3.6, Glow Figure 2b)::

        h_0 = logit(α + (1 − 2α) x)
        h_l, z_l = split(level_l(h_{l−1}))      for l < L      (z_l: the factored-out half, standardised)
        z_L = level_L(h_{L−1})
        log p(x) = Σ_l log N(z_l; 0, I) + Σ log |det| of every layer

    Subclasses build ``levels`` (one :class:`Compose` per level) and ``splits`` (one :class:`Split` per level but the
    last) and call :meth:`_finish`.
    """

    image_shape: tuple[int, int, int]
    latent_shapes: list[tuple[int, int, int]]

    def __init__(self, image_shape: Sequence[int], alpha: float) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.preprocess = LogitTransform(alpha)

    def _finish(self, levels: list[Compose], splits: list[Split], latent_shapes: list[tuple[int, int, int]]) -> None:
        self.levels = nn.ModuleList(levels)
        self.splits = nn.ModuleList(splits)
        self.latent_shapes = latent_shapes

    @property
    def num_dims(self) -> int:
        """D = C·H·W, for :func:`bits_per_dim`."""
        return math.prod(self.image_shape)

    # -- data → latents ----------------------------------------------------------------------------------------

    def _check(self, x: Tensor, cond: None = None) -> None:
        if cond is not None:
            raise ValueError(f"{type(self).__name__} is unconditional; pass cond=None")
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{type(self).__name__} takes (B, {', '.join(map(str, self.image_shape))}) images, "
                             f"got {tuple(x.shape)}")

    def transform(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """``f(x)``: the latents (one (B, C_l, H_l, W_l) tensor per level, shapes ``latent_shapes``) and
        log |det ∂f/∂x| (B,) of every layer, the logit preprocessing included."""
        self._check(x)
        h, logdet = self.preprocess(x)  # (B, C, H, W), (B,)
        latents = []
        for i, level in enumerate(self.levels):
            h, ld = level(h)
            logdet = logdet + ld
            if i < len(self.splits):
                y, ld = self.splits[i](h)
                logdet = logdet + ld
                h, z = self.splits[i].factor(y)  # kept (B, C_keep, H_l, W_l), factored out (B, C_l, H_l, W_l)
                latents.append(z)
        latents.append(h)
        return latents, logdet

    def log_prob(self, x: Tensor, cond: None = None) -> Tensor:
        """(B,) log p(x) in nats: the continuous density on [0, 1]^D at x (B, C, H, W) in [0, 1], already
        dequantised (:func:`dequantize`); :func:`bits_per_dim` converts it."""
        self._check(x, cond)
        latents, logdet = self.transform(x)
        return sum(standard_normal_log_prob(z) for z in latents) + logdet

    def forward(self, x: Tensor, cond: None = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, cond)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Exact inference ``z = f(x)``: a list of latents, one per level (shapes ``latent_shapes``)."""
        return self.transform(x)[0]

    # -- latents → data ----------------------------------------------------------------------------------------

    def flatten_latents(self, latents: Sequence[Tensor]) -> Tensor:
        """List of latents → (B, D)."""
        return torch.cat([z.flatten(1) for z in latents], 1)

    def unflatten_latents(self, z: Tensor) -> list[Tensor]:
        """(B, D) → list of latents of shapes ``latent_shapes``."""
        sizes = [math.prod(s) for s in self.latent_shapes]
        return [part.reshape(-1, *shape) for part, shape in zip(z.split(sizes, 1), self.latent_shapes)]

    def decode(self, latents: Sequence[Tensor] | Tensor) -> Tensor:
        """``x = f⁻¹(z)`` (B, C, H, W) from a list of latents (as :meth:`encode` returns) or a flat (B, D) tensor."""
        if isinstance(latents, Tensor):
            latents = self.unflatten_latents(latents)
        if len(latents) != len(self.latent_shapes):
            raise ValueError(f"expected {len(self.latent_shapes)} latents, got {len(latents)}")
        h = latents[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                h = self.splits[i].inverse(torch.cat([h, latents[i]], 1))  # (B, C_l, H_l, W_l) before the split
            h = self.levels[i].inverse(h)
        return self.preprocess.inverse(h)

    def sample(self, n: int, cond: None = None, *, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        """(n, C, H, W) images ``f⁻¹(z)`` with ``z ~ N(0, T²I)`` (Glow section 5, "temperature").

        The exact inverse of the model on prior draws: ``encode(sample(...))`` gives back the draws. The noise is drawn
        on the CPU (``generator`` a CPU generator, or the global RNG) and moved to the model's device, as
        :meth:`kdgm.models.vae.VAE.sample`. Differentiable in the weights; wrap in ``torch.no_grad()`` for images
        only. Values lie in (−α/(1−2α), 1 + α/(1−2α)) (the inverse logit); clamp to [0, 1] to display them.
        """
        if cond is not None:
            raise ValueError(f"{type(self).__name__} is unconditional; sample(n) takes no condition")
        param = next(self.parameters())
        latents = [temperature * torch.randn(n, *shape, generator=generator, dtype=param.dtype).to(param.device)
                   for shape in self.latent_shapes]  # each (n, C_l, H_l, W_l)
        return self.decode(latents)


def _halve(c: int, h: int, w: int, what: str) -> tuple[int, int, int]:
    if h % 2 or w % 2:
        raise ValueError(f"{what}: a squeeze needs even sides, got {h}×{w}; use fewer levels or pad the images")
    return 4 * c, h // 2, w // 2


class GlowStep(Compose):
    """One step of flow of Glow (Kingma & Dhariwal 2018, Figure 2a, Table 1)::

        actnorm:     y = (x + b) ⊙ exp(log s)                     log |det| = H·W·Σ log s
        1×1 conv:    y = W x                                       log |det| = H·W·log |det W|
        coupling:    (log s, t) = NN(x_a), y_b = x_b ⊙ s + t      log |det| = Σ log s
    """

    def __init__(self, channels: int, hidden: int, lu: bool = True, scale: str = "sigmoid",
                 zero_init: bool = True) -> None:
        conv = InvConv1x1LU(channels) if lu else InvConv1x1(channels)
        super().__init__(ActNorm(channels), conv, AffineCoupling(channels, hidden, 0, scale, zero_init))


class Glow(MultiScaleFlow):
    """Glow (Kingma & Dhariwal 2018): L levels of [squeeze → K Glow steps → split], the last without a split; the
    factored-out halves have the learned conditional prior of :class:`Split`.

    On 1×28×28 the latents are (2, 14, 14) and (8, 7, 7) for L = 2. Defaults are CPU-small; the benchmark
    configuration is ``Glow(levels=2, steps=8, hidden=128)``.

    Args:
        image_shape: (C, H, W); H and W divisible by 2^L.
        levels: L. steps: K steps of flow per level. hidden: width of each coupling's NN.
        lu: LU-decomposed (True) or plain (False) invertible 1×1 convolutions.
        scale: coupling scale, ``"sigmoid"`` (Glow's σ(·+2)) or ``"tanh"``; see
            :class:`~kdgm.models.flows.layers.LogScale`.
        alpha: of the logit preprocessing.
        zero_init: the couplings' and priors' last convolutions start at zero (Glow); False starts them at small
            random weights, so that every parameter has a gradient at the first step.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), levels: int = 2, steps: int = 4, hidden: int = 64,
                 lu: bool = True, scale: str = "sigmoid", alpha: float = 0.05, zero_init: bool = True) -> None:
        super().__init__(image_shape, alpha)
        if levels < 1 or steps < 1:
            raise ValueError(f"Glow needs levels >= 1 and steps >= 1, got {levels}, {steps}")
        c, h, w = self.image_shape
        blocks, splits, shapes = [], [], []
        for i in range(levels):
            c, h, w = _halve(c, h, w, f"Glow level {i + 1} of {levels} on {self.image_shape}")
            blocks.append(Compose(Squeeze(), *(GlowStep(c, hidden, lu, scale, zero_init) for _ in range(steps))))
            if i < levels - 1:
                split = Split(c, learn_prior=True, zero_init=zero_init)
                splits.append(split)
                shapes.append((split.c_out, h, w))
                c = split.c_keep
        self._finish(blocks, splits, [*shapes, (c, h, w)])


class RealNVP(MultiScaleFlow):
    """RealNVP (Dinh et al. 2017 section 3.6): at each level but the last, 3 checkerboard couplings, a squeeze,
    3 channel-wise couplings, and a split whose factored-out half has the fixed prior N(0, I); the last level is
    4 checkerboard couplings. Masks alternate between couplings. The coupling scale is ``a ⊙ tanh(·)``; the
    paper's ResNet coupling networks and batch normalisation are replaced by the small :class:`CouplingNet`.

    On 1×28×28 the latents are (2, 14, 14) and (2, 14, 14) for L = 2.

    Args:
        image_shape: (C, H, W); H and W divisible by 2^(L−1).
        levels: L. hidden: width of each coupling's NN. alpha: of the logit preprocessing.
        zero_init: as :class:`Glow`.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), levels: int = 2, hidden: int = 64,
                 alpha: float = 0.05, zero_init: bool = True) -> None:
        super().__init__(image_shape, alpha)
        if levels < 1:
            raise ValueError(f"RealNVP needs levels >= 1, got {levels}")
        c, h, w = self.image_shape
        blocks, splits, shapes = [], [], []
        for i in range(levels):
            n_checker = 4 if i == levels - 1 else 3
            layers = [CheckerboardCoupling(c, hidden, j % 2, "tanh", zero_init) for j in range(n_checker)]
            if i < levels - 1:
                layers.append(Squeeze())
                c, h, w = _halve(c, h, w, f"RealNVP level {i + 1} of {levels} on {self.image_shape}")
                layers += [AffineCoupling(c, hidden, j % 2, "tanh", zero_init) for j in range(3)]
                split = Split(c, learn_prior=False)
                splits.append(split)
                shapes.append((split.c_out, h, w))
                c = split.c_keep
            blocks.append(Compose(*layers))
        self._finish(blocks, splits, [*shapes, (c, h, w)])
