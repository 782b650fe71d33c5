"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation")
at a size a CPU trains: 4×4 → 8×8 → 16×16 → 32×32 images (MNIST padded to 32).

Lecture ``001_…txt`` lists Progressive GAN as "a new training schedule": the networks are grown during training, one
resolution at a time, so that the coarse structure is learnt before the fine detail. What the paper adds to a
DCGAN (:mod:`kdgm.models.gan`), and where it is here:

- progressive growing (section 2): both networks start at 4×4 and gain a block per doubling of the resolution. A new
  block *fades in*: the generator's image is ``(1 − α)·upsample(previous RGB) + α·new RGB`` and the discriminator
  feeds its input to the new block and, average-pooled, to the previous ``fromRGB``, blending the two by the same α,
  which rises 0 → 1 (:func:`growth_schedule`);
- minibatch standard deviation (section 3): the discriminator's last block sees one extra feature map, the
  standard deviation over the minibatch, so that it can tell a batch that lacks variation (:class:`MinibatchStdDev`);
- equalized learning rate (section 4.1): weights drawn from N(0, 1) and scaled at run time by He's constant
  ``sqrt(2 / fan_in)`` (:class:`EqualizedConv2d`, :class:`EqualizedLinear`);
- pixelwise feature normalization in the generator (section 4.2, :class:`PixelNorm`);
- the WGAN-GP loss the paper trains with: ``Growing(DiscriminatorLoss("wasserstein", 10.0))`` and
  ``Growing(GeneratorLoss("wasserstein"))``, each a phase of :class:`kdgm.train.PhasedUpdater`.

:class:`ProGAN` has the interface of :class:`kdgm.models.gan.GAN` (``noise``, ``sample``, ``discriminate``,
``generator``, ``discriminator``, ``z_dim``), so that the adversarial objectives and the implicit M-step of posterior
regularization apply unchanged: ``sample`` always returns full-resolution images (the current resolution upsampled
by nearest neighbour) and ``discriminate`` average-pools its full-resolution input down to the current resolution.
The current stage and α live in buffers set by :meth:`ProGAN.set_progress` from the fraction of training done alone,
so a checkpoint holds them and a resumed run continues exactly; :class:`Growing` sets them before every call of the
objective it wraps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.models.minibatch_std import MinibatchStdDev
from kdgm.objectives.base import LossOutput, Objective, Progress


def growth_schedule(progress: float, stages: int = 4, fade: float = 0.5) -> tuple[int, float]:
    """(stage index, fade-in α) at ``progress`` ∈ [0, 1], the fraction of the run's steps done.

    Each of the ``stages`` resolutions takes an equal share of the run; during the first ``fade`` of each stage after
    the first, α rises linearly from 0 to 1 (the new block fades in), then stays at 1. Stage 0 has no previous
    resolution to blend with: its α is 1. Progress outside [0, 1] is clamped.

    >>> growth_schedule(0.3125)  # stage 1 spans [0.25, 0.5); it fades in over [0.25, 0.375)
    (1, 0.5)
    """
    if stages < 1:
        raise ValueError(f"a growth schedule needs at least one stage, got {stages}")
    if not 0 <= fade <= 1:
        raise ValueError(f"fade must be a fraction of a stage in [0, 1], got {fade}")
    if not math.isfinite(progress):
        raise ValueError(f"progress must be finite, got {progress}")
    position = min(max(float(progress), 0.0), 1.0) * stages
    stage = min(int(position), stages - 1)
    if stage == 0 or fade == 0:
        return stage, 1.0
    return stage, min(1.0, (position - stage) / fade)


def training_fraction(progress: Progress | float) -> float:
    """The fraction of the run done: ``step / max_steps`` of a :class:`Progress` (0 before the loop sets one), or a
    float as it is."""
    if isinstance(progress, Progress):
        return progress.step / progress.max_steps if progress.max_steps > 0 else 0.0
    return float(progress)


class EqualizedLinear(nn.Module):
    """A linear layer with an equalized learning rate (Karras et al. 2018, section 4.1).

    The raw weight is drawn from N(0, 1) and multiplied at run time by ``gain / sqrt(fan_in)`` (He's constant for
    ``gain = sqrt(2)``), so that every weight has the same dynamic range and an adaptive optimizer (Adam) moves
    them all at the same speed. Biases start at zero.
    """

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    @property
    def effective_weight(self) -> Tensor:
        """(out, in) the weight the layer applies: the raw weight times ``gain / sqrt(fan_in)``."""
        return self.weight * self.scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight, self.bias)  # (B, out)


class EqualizedConv2d(nn.Module):
    """A square 2-d convolution (stride 1) with an equalized learning rate: :class:`EqualizedLinear` with
    ``fan_in = in_channels · kernel_size²``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size**2)
        self.padding = padding

    @property
    def effective_weight(self) -> Tensor:
        """(out, in, k, k) the kernel the layer applies: the raw kernel times ``gain / sqrt(fan_in)``."""
        return self.weight * self.scale

    def forward(self, x: Tensor) -> Tensor:
        weight = self.effective_weight  # (out, in, k, k)
        if weight.shape[-1] == 1 and self.padding == 0:  # toRGB / fromRGB: a per-pixel linear map, which oneDNN
            # computes ~8× slower as a convolution with so few channels
            return torch.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x) + self.bias[:, None, None]  # (B, out, H, W)
        weight = weight.contiguous(memory_format=torch.channels_last)  # ~2× faster on a CPU with so few channels
        return F.conv2d(x, weight, self.bias, padding=self.padding)  # (B, out, H', W')


class PixelNorm(nn.Module):
    """Pixelwise feature normalization (section 4.2): each pixel's feature vector divided by its root mean square,
    ``b = a / sqrt(mean_c a_c² + ε)``; on (B, C) latents it normalises each vector."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)  # (B, C, ...)


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class _FirstGeneratorBlock(nn.Module):
    """z (B, Z) → (B, W, 4, 4): pixel-normalised latent, a dense layer to 4×4 maps, a 3×3 convolution."""

    def __init__(self, z_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.norm = PixelNorm()
        self.dense = EqualizedLinear(z_dim, width * 16)
        self.conv = EqualizedConv2d(width, width, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = _act(self.dense(self.norm(z))).view(-1, self.width, 4, 4)  # (B, W, 4, 4)
        return self.norm(_act(self.conv(self.norm(h))))  # (B, W, 4, 4)


class _UpBlock(nn.Module):
    """(B, C_in, R, R) → (B, C_out, 2R, 2R): nearest-neighbour upsampling and two 3×3 convolutions, each followed by
    a leaky ReLU and pixel norm."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(c_in, c_out, 3, padding=1)
        self.conv2 = EqualizedConv2d(c_out, c_out, 3, padding=1)
        self.norm = PixelNorm()

    def forward(self, h: Tensor) -> Tensor:
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # (B, C_in, 2R, 2R)
        h = self.norm(_act(self.conv1(h)))  # (B, C_out, 2R, 2R)
        return self.norm(_act(self.conv2(h)))  # (B, C_out, 2R, 2R)


class _DownBlock(nn.Module):
    """(B, C_in, R, R) → (B, C_out, R/2, R/2): two 3×3 convolutions (leaky ReLU) and 2×2 average pooling."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(c_in, c_in, 3, padding=1)
        self.conv2 = EqualizedConv2d(c_in, c_out, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        h = _act(self.conv2(_act(self.conv1(h))))  # (B, C_out, R, R)
        return F.avg_pool2d(h, 2)  # (B, C_out, R/2, R/2)


class _LastDiscriminatorBlock(nn.Module):
    """(B, W, 4, 4) → (B,) logits: minibatch stddev, a 3×3 convolution, a dense 4×4 → 1×1 layer, a linear head."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stddev = MinibatchStdDev()
        self.conv = EqualizedConv2d(width + 1, width, 3, padding=1)
        self.dense = EqualizedLinear(width * 16, width)
        self.head = EqualizedLinear(width, 1, gain=1.0)

    def forward(self, h: Tensor) -> Tensor:
        h = _act(self.conv(self.stddev(h)))  # (B, W, 4, 4)
        h = _act(self.dense(h.flatten(1)))  # (B, W)
        return self.head(h).squeeze(1)  # (B,)


def stage_widths(width: int, stages: int) -> list[int]:
    """Feature channels at each stage (resolution ``4·2^s``): ``width`` at 4×4, halved at each finer resolution (at
    least 1). The paper keeps 512 channels up to 32×32 and halves them above; halving from the start keeps the
    32×32 blocks, which cost the most, small enough for a CPU (32 → 32, 16, 8, 4)."""
    return [max(1, width >> s) for s in range(stages)]


class ProGANGenerator(nn.Module):
    """z (B, Z) → images (B, C, R, R) in [0, 1] at the resolution ``R = 4·2^stage`` of a given stage.

    Args:
        z_dim: latent size. channels: image channels. widths: feature channels at each stage (one per resolution).
    """

    def __init__(self, z_dim: int, channels: int, widths: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_FirstGeneratorBlock(z_dim, widths[0])] +
                                    [_UpBlock(widths[s - 1], widths[s]) for s in range(1, len(widths))])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(w, channels, 1, gain=1.0) for w in widths])

    def forward(self, z: Tensor, stage: int, alpha: float = 1.0) -> Tensor:
        """Images of ``stage``, the new block faded in by ``alpha`` over the previous stage's image upsampled."""
        h = z  # (B, Z)
        for block in self.blocks[:stage]:
            h = block(h)  # (B, W_{stage-1}, R/2, R/2) after the last one
        new = self.blocks[stage](h)  # (B, W_stage, R, R)
        image = torch.sigmoid(self.to_rgb[stage](new))  # (B, C, R, R)
        if stage > 0 and alpha < 1:
            old = torch.sigmoid(self.to_rgb[stage - 1](h))  # (B, C, R/2, R/2)
            image = alpha * image + (1 - alpha) * F.interpolate(old, scale_factor=2, mode="nearest")  # (B, C, R, R)
        return image


class ProGANDiscriminator(nn.Module):
    """images (B, C, R, R) at the resolution of a given stage → (B,) logits (critic values for WGAN-GP).

    Args:
        channels: image channels. widths: feature channels at each stage (one per resolution).
    """

    def __init__(self, channels: int, widths: list[int]) -> None:
        super().__init__()
        self.from_rgb = nn.ModuleList([EqualizedConv2d(channels, w, 1) for w in widths])
        self.blocks = nn.ModuleList([_LastDiscriminatorBlock(widths[0])] +
                                    [_DownBlock(widths[s], widths[s - 1]) for s in range(1, len(widths))])

    def forward(self, x: Tensor, stage: int, alpha: float = 1.0) -> Tensor:
        h = self.blocks[stage](_act(self.from_rgb[stage](x)))  # (B, W_{stage-1}, R/2, R/2), or (B,) at stage 0
        if stage > 0 and alpha < 1:
            old = _act(self.from_rgb[stage - 1](F.avg_pool2d(x, 2)))  # (B, W_{stage-1}, R/2, R/2)
            h = alpha * h + (1 - alpha) * old
        for block in reversed(self.blocks[:stage]):
            h = block(h)  # (B, W_{s-1}, ...) down to (B,)
        return h


class ProGAN(nn.Module):
    """A progressively grown generator and discriminator with the interface of :class:`kdgm.models.gan.GAN`.

    Args:
        generator, discriminator: the growing networks.
        z_dim: the generator's latent size.
        image_size: the full resolution (``4·2^(stages−1)``).
        fade: the fraction of each stage (after the first) over which its new block fades in.

    A new model stands at the end of its growth (stage ``stages − 1``, α = 1): without :class:`Growing` it is a
    full-resolution GAN with ProGAN's layers; ``set_progress(0.0)`` starts it at 4×4.
    """

    conditional = False

    def __init__(self, generator: ProGANGenerator, discriminator: ProGANDiscriminator, z_dim: int,
                 image_size: int = 32, fade: float = 0.5) -> None:
        super().__init__()
        self.generator, self.discriminator, self.z_dim = generator, discriminator, z_dim
        self.image_size, self.fade = image_size, fade
        self.stages = len(generator.blocks)
        if 4 * 2 ** (self.stages - 1) != image_size:
            raise ValueError(f"{self.stages} stages grow 4x4 images to {4 * 2 ** (self.stages - 1)}, not {image_size}")
        growth_schedule(1.0, self.stages, fade)  # validates fade
        # the current stage and α: buffers, so that a checkpoint (and a model loaded for evaluation) holds them
        self.register_buffer("growth_stage", torch.tensor(self.stages - 1))
        self.register_buffer("growth_alpha", torch.tensor(1.0))

    @property
    def stage(self) -> int:
        """The current stage: resolution ``4·2^stage``."""
        return int(self.growth_stage)

    @property
    def alpha(self) -> float:
        """The current fade-in weight of the newest block."""
        return float(self.growth_alpha)

    def resolution(self, stage: int | None = None) -> int:
        """The side of the images of ``stage`` (default: the current one)."""
        return 4 * 2 ** (self.stage if stage is None else stage)

    def set_progress(self, progress: float) -> tuple[int, float]:
        """Set the stage and α that :func:`growth_schedule` gives at ``progress`` ∈ [0, 1]; returns them."""
        stage, alpha = growth_schedule(progress, self.stages, self.fade)
        self.growth_stage.fill_(stage)
        self.growth_alpha.fill_(alpha)
        return stage, alpha

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, Z) z ~ N(0, I) on the model's device (drawn on the CPU when a ``generator`` is given)."""
        device = next(self.parameters()).device
        if generator is not None:
            return torch.randn(n, self.z_dim, generator=generator).to(device)
        return torch.randn(n, self.z_dim, device=device)

    def sample_at(self, n: int, stage: int, alpha: float = 1.0, *, generator: torch.Generator | None = None,
                  z: Tensor | None = None, full_size: bool = False) -> Tensor:
        """(n, C, R, R) images of ``stage`` (R = 4·2^stage) with its block faded in by ``alpha``, whatever the
        current stage (for a figure of samples at each resolution); ``full_size`` upsamples them to the image size
        by nearest neighbour. Differentiable in the generator's weights."""
        if not 0 <= stage < self.stages:
            raise ValueError(f"stage must be in [0, {self.stages - 1}], got {stage}")
        images = self.generator(self.noise(n, generator) if z is None else z, stage, alpha)  # (n, C, R, R)
        if full_size and images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="nearest")  # (n, C, S, S)
        return images

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None,
               z: Tensor | None = None) -> Tensor:
        """(n, C, S, S) images at the current stage and α, upsampled to full size; differentiable in the generator's
        weights; ``z`` fixes the noise (sample grids)."""
        if cond is not None:
            raise ValueError("this GAN is unconditional; sample(n) takes no condition")
        return self.sample_at(n, self.stage, self.alpha, generator=generator, z=z, full_size=True)

    def discriminate(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B,) discriminator logits (or critic values) of full-size images x (B, C, S, S), average-pooled to the
        current resolution first."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"discriminate takes {self.image_size}x{self.image_size} images, got {tuple(x.shape)}")
        stage = self.stage
        factor = self.image_size // self.resolution(stage)
        if factor > 1:
            x = F.avg_pool2d(x, factor)  # (B, C, R, R)
        return self.discriminator(x, stage, self.alpha)


def progan(z_dim: int = 64, width: int = 32, channels: int = 1, image_size: int = 32, fade: float = 0.5) -> ProGAN:
    """A Progressive GAN growing from 4×4 to ``image_size`` × ``image_size`` (a power of two ≥ 4); ``width``
    feature channels at 4×4, halved at each finer resolution (:func:`stage_widths`)."""
    stages = int(math.log2(image_size)) - 1
    if image_size < 4 or 4 * 2 ** (stages - 1) != image_size:
        raise ValueError(f"Progressive GAN grows 4x4 images by doubling; image_size must be 4, 8, 16, 32, ..., "
                         f"got {image_size}")
    widths = stage_widths(width, stages)
    return ProGAN(ProGANGenerator(z_dim, channels, widths), ProGANDiscriminator(channels, widths), z_dim,
                  image_size, fade)


class Growing:
    """Grows a :class:`ProGAN` on schedule around an adversarial objective: before each call of ``inner`` it sets
    the model's stage and α from ``progress`` (``model.set_progress(step / max_steps)``).

    ``progress`` is set by :class:`kdgm.train.PhasedUpdater` before each step (a :class:`Progress`; a float in
    [0, 1] also works); it is passed on to ``inner`` when ``inner`` has a ``progress`` of its own. Wrap each phase's
    objective, outermost (the updater sets ``progress`` only on the phase's objective itself)::

        Phase("critic", Growing(DiscriminatorLoss("wasserstein", 10.0)), d_optimizer, repeats=1)
        Phase("generator", Growing(GeneratorLoss("wasserstein")), g_optimizer)

    The current stage and α are logged as the terms ``stage`` and ``alpha``.
    """

    def __init__(self, inner: Objective) -> None:
        self.inner = inner
        self.progress: Progress | float = Progress()

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        if hasattr(self.inner, "progress"):
            self.inner.progress = self.progress
        stage, alpha = model.set_progress(training_fraction(self.progress))
        out = self.inner(model, batch)
        device = out.total.device
        terms = {**out.terms, "stage": torch.tensor(float(stage), device=device),
                 "alpha": torch.tensor(alpha, device=device)}
        return LossOutput(out.total, terms, out.outputs)
