"""Pose-conditional person image generation at a size a CPU trains (32×32 and 64×64 images).

Slides ``000_…txt`` ("Pose Conditional Person Image Generation", "Experiments – Pose-conditional Human Image
Generation"): given a person image and a target pose, generate the person in the target pose. Hu et al. (2018),
"Deep Generative Models with Learnable Knowledge Constraints", take as base model the pose-guided generator of Ma et
al. (2017), "Pose Guided Person Image Generation" (PG2): an encoder–decoder with skip connections (a U-Net) that
reads the source image, the source pose and the target pose as heatmaps and is trained with an L1 loss to the true
target image plus a conditional adversarial loss — the recipe of pix2pix (Isola et al. 2017, "Image-to-Image
Translation with Conditional Adversarial Networks"). Their knowledge constraint is a human part parser: the part
map of the true target image should be what the parser sees in the generated image. The parser is either trained
beforehand and frozen ("with fixed constraint") or trained further as f_φ in the φ-step ("with learned
constraint"), the two PR rows of the slides' table.

What is here:

- :class:`PoseCondition`: source image, source and target pose heatmaps and (for the constraint) the true target
  part map; a frozen dataclass of (B, …) tensors, so :func:`kdgm.knowledge.sampled.tile` and ``rows_of`` handle it
  through their dataclass branch (``target_parts=None`` is tiled to None).
- :class:`UNetGenerator`: pix2pix's U-Net (conv–norm–LeakyReLU down, transposed conv–norm–ReLU up, skips between
  mirrored layers, dropout as pix2pix's noise), sigmoid output in [0, 1].
- :class:`PatchDiscriminator`: pix2pix's PatchGAN scaled down: three stride-2 4×4 convolutions and a 1-channel
  1×1 head, one logit per 22×22 patch (an (S/8)×(S/8) map), conditioned by concatenating the target pose (and
  optionally the source image and pose) to the image.
- :class:`PoseGAN` (factory :func:`pose_gan`): the interface of :class:`kdgm.models.gan.GAN` (``sample``,
  ``discriminate``, ``generator``, ``discriminator``, ``conditional``), so that
  :class:`kdgm.objectives.adversarial.DiscriminatorLoss` and :class:`kdgm.knowledge.ImplicitMStep` apply unchanged.
- :class:`L1Reconstruction` and :class:`PoseGeneratorLoss`: pix2pix's ``λ·L1`` alone, and with the adversarial
  generator loss computed from the same sample.
- :class:`PartParser` and :class:`PartAgreement`: a compact U-Net that segments an image into K part classes, and
  the constraint ``f_φ(x, c) = mean over pixels of log p_parser(true target part | x)``.

The objectives live beside the networks so that the experiment has one module to import; they are objectives
``(model, batch) -> LossOutput`` like those of :mod:`kdgm.objectives`. A batch provides ``data()`` (the (B, 3, S, S)
target image) and ``condition()`` (a :class:`kdgm.data.figures.PoseCondition`; :class:`PartAgreement` also reads
``target_parts`` from it).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.data.figures import PoseCondition
from kdgm.knowledge.constraint import Constraint
from kdgm.objectives.adversarial import LOSSES, GANLoss, GeneratorLoss
from kdgm.objectives.base import LossOutput, batch_condition, batch_data

JOINTS = 14  # pose heatmaps per pose, one per keypoint of the rendered figures
IMAGE_CHANNELS = 3
Norm = Literal["instance", "batch", "none"]
Upsample = Literal["transpose", "resize"]


# ----------------------------------------------------------------------------------------------------------------
# the condition



def is_pose_condition(cond: Any) -> bool:
    """Whether ``cond`` is a :class:`kdgm.data.figures.PoseCondition` (what the networks read)."""
    return isinstance(cond, PoseCondition)


# ----------------------------------------------------------------------------------------------------------------
# networks


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "instance":  # per image and channel; no running statistics, so train and eval modes agree
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}; use instance, batch or none")


def _upsample(c_in: int, c_out: int, mode: Upsample) -> nn.Module:
    """(B, c_in, H, W) → (B, c_out, 2H, 2W): a 4×4 stride-2 transposed convolution (pix2pix), or nearest-neighbour
    resizing then a 3×3 convolution (no checkerboard artefacts)."""
    if mode == "transpose":
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    if mode == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1))
    raise ValueError(f"unknown upsampling {mode!r}; use transpose or resize")


class _Up(nn.Module):
    """Upsample–norm–ReLU, then dropout that stays on in eval mode too (pix2pix's noise: a U-Net has no z)."""

    def __init__(self, c_in: int, c_out: int, norm: Norm, dropout: float, mode: Upsample) -> None:
        super().__init__()
        self.block = nn.Sequential(_upsample(c_in, c_out, mode), _norm(norm, c_out), nn.ReLU())
        self.dropout = dropout

    def forward(self, h: Tensor) -> Tensor:
        h = self.block(h)
        return F.dropout(h, self.dropout, training=True) if self.dropout else h


def default_depth(image_size: int) -> int:
    """Down-samplings to a 2×2 bottleneck: 4 for 32×32 images, 5 for 64×64 (every bottleneck unit then sees the
    whole image, which moving a limb from its source to its target place needs)."""
    depth = int(math.log2(image_size)) - 1
    if 2 ** (depth + 1) != image_size or depth < 2:
        raise ValueError(f"image_size must be a power of two of at least 8, got {image_size}")
    return depth


class UNet(nn.Module):
    """The encoder–decoder with skip connections of pix2pix (Isola et al. 2017) and PG2 (Ma et al. 2017).

    Down: ``depth`` blocks of 4×4 stride-2 convolution, normalisation (none on the first and the innermost block, as
    pix2pix) and LeakyReLU(0.2), halving the side each time; channels ``width·min(2^i, max_multiplier)``. Up: the
    mirror image, upsampling–norm–ReLU, each output concatenated with the encoder features of the same side; a last
    upsampling to ``out_channels`` without normalisation or activation (subclasses add it)::

        x (B, C_in, S, S) → d_1 (B, c_1, S/2) → … → d_D (B, c_D, S/2^D)
        u_{D-1} = [up(d_D), d_{D-1}] (B, 2c_{D-1}, S/2^{D-1}) → … → u_1 (B, 2c_1, S/2) → out (B, C_out, S, S)

    Args:
        in_channels, out_channels: input and output channels.
        width: channels of the first block. depth: down-samplings (S must be divisible by 2^depth).
        max_multiplier: cap on the channel multiplier (pix2pix: 8).
        norm: ``instance`` (pix2pix at batch size 1), ``batch`` or ``none``.
        dropout: dropout rate of the ``dropout_layers`` innermost up blocks, on in train *and* eval mode (pix2pix's
            noise); 0 makes the network deterministic.
        upsample: ``transpose`` (4×4 transposed convolutions) or ``resize`` (nearest neighbour + 3×3 convolution).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 4, max_multiplier: int = 8,
                 norm: Norm = "instance", dropout: float = 0.0, dropout_layers: int = 3,
                 upsample: Upsample = "transpose") -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"a U-Net needs depth >= 2, got {depth}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.depth, self.dropout = depth, dropout
        channels = [width * min(2**i, max_multiplier) for i in range(depth)]  # c_1 … c_D
        self.down = nn.ModuleList()
        for i, c in enumerate(channels):
            plain = i == 0 or i == depth - 1
            self.down.append(nn.Sequential(nn.Conv2d(in_channels if i == 0 else channels[i - 1], c, 4, 2, 1),
                                           nn.Identity() if plain else _norm(norm, c), nn.LeakyReLU(0.2)))
        self.up = nn.ModuleList()
        for k, i in enumerate(range(depth - 1, 0, -1)):  # innermost first: side S/2^(i+1) → S/2^i
            c_in = channels[i] if i == depth - 1 else 2 * channels[i]
            self.up.append(_Up(c_in, channels[i - 1], norm, dropout if k < dropout_layers else 0.0, upsample))
        self.out = _upsample(2 * channels[0], out_channels, upsample)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"a U-Net of depth {self.depth} needs sides divisible by {2 ** self.depth}, "
                             f"got {tuple(x.shape[-2:])}")
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)  # d_i (B, c_i, S/2^i, S/2^i)
        skips.pop()  # the bottleneck d_D is h itself
        for block in self.up:
            h = torch.cat([block(h), skips.pop()], 1)  # (B, 2c_i, S/2^i, S/2^i)
        return self.out(h)  # (B, C_out, S, S)


class UNetGenerator(UNet):
    """(B, 3 + 14 + 14, S, S) source image, source pose, target pose → (B, 3, S, S) target image in [0, 1].

    The pix2pix / PG2 U-Net (:class:`UNet`) with a sigmoid output; ``depth`` defaults to a 2×2 bottleneck
    (:func:`default_depth`: 4 at S = 32, 5 at S = 64).
    """

    def __init__(self, in_channels: int = IMAGE_CHANNELS + 2 * JOINTS, out_channels: int = IMAGE_CHANNELS,
                 width: int = 32, image_size: int = 32, depth: int | None = None, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, width, default_depth(image_size) if depth is None else depth,
                         **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(super().forward(x))  # (B, 3, S, S)


class PatchDiscriminator(nn.Module):
    """pix2pix's PatchGAN (Isola et al. 2017, section 3.2.2) scaled down for 32×32 and 64×64 images.

    The 70×70 PatchGAN classifies each 70×70 patch of a 256×256 image (27 % of its side) as real or fake. Here
    ``downsamplings`` (3) 4×4 stride-2 convolutions (widths w, 2w, 4w; LeakyReLU(0.2); normalisation from the
    second on) and a 1-channel ``head_kernel``×``head_kernel`` stride-1 convolution give one logit per
    :attr:`receptive_field` = 22 pixel patch, on an (S/8)×(S/8) map with stride 8: 4×4 patches at S = 32, 8×8
    patches at S = 64 (22/64 = 34 % of the side). Instance normalisation computes its statistics over the whole
    image, so with ``norm="instance"`` a patch logit also depends, through them, on pixels outside its patch (as
    pix2pix's batch norm at batch size 1 does); ``norm="none"`` keeps the patches strictly local (and suits a
    gradient penalty too — so does instance norm, which is per example; ``batch`` is not).

    Conditional as pix2pix's discriminator: the input is the image concatenated with the target pose heatmaps and,
    with ``with_source``, the source image and pose: ``in_channels`` = 3 + 14 (+ 3 + 14).

    ``forward(x, cond)`` is the (B,) mean patch logit, what :class:`kdgm.objectives.adversarial.DiscriminatorLoss`
    reads (its binary cross-entropy is then taken on the mean logit, not averaged over patches as in pix2pix);
    :meth:`patch_logits` is the whole map.
    """

    def __init__(self, in_channels: int = IMAGE_CHANNELS + JOINTS, width: int = 32, with_source: bool = False,
                 norm: Norm = "instance", downsamplings: int = 3, head_kernel: int = 1) -> None:
        super().__init__()
        if head_kernel % 2 == 0:
            raise ValueError(f"head_kernel must be odd (the map keeps side S/2^downsamplings), got {head_kernel}")
        self.in_channels, self.with_source, self.downsamplings = in_channels, with_source, downsamplings
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(downsamplings):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.Identity() if i == 0 else _norm(norm, c_out),
                       nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 1, head_kernel, 1, head_kernel // 2)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the patch each logit sees through the convolutions: 22 for the default layers."""
        field, jump = 1, 1
        for conv in [m for m in self.features if isinstance(m, nn.Conv2d)] + [self.head]:
            field += (conv.kernel_size[0] - 1) * jump
            jump *= conv.stride[0]
        return field

    def map_size(self, image_size: int) -> int:
        """Side of the logit map for ``image_size`` images: S / 2^downsamplings."""
        return image_size // 2**self.downsamplings

    def inputs(self, x: Tensor, cond: PoseCondition) -> Tensor:
        """(B, in_channels, S, S) the image with its condition stacked as channels."""
        parts = [x, cond.target_heatmaps] + ([cond.source, cond.source_heatmaps] if self.with_source else [])
        h = torch.cat(parts, 1)
        if h.shape[1] != self.in_channels:
            raise ValueError(f"the discriminator takes {self.in_channels} channels; image and condition give "
                             f"{h.shape[1]} (with_source={self.with_source})")
        return h

    def patch_logits(self, x: Tensor, cond: PoseCondition) -> Tensor:
        """(B, S/8, S/8) one real/fake logit per patch."""
        return self.head(self.features(self.inputs(x, cond))).squeeze(1)

    def forward(self, x: Tensor, cond: PoseCondition) -> Tensor:
        return self.patch_logits(x, cond).mean((1, 2))  # (B,)


class PartParser(UNet):
    """(B, 3, S, S) images → (B, K, S, S) part logits: a compact U-Net (``depth`` 4, channels capped at 4·width).

    The human part parser of Hu et al. (2018)'s pose constraint, at toy scale; train it with per-pixel cross-entropy
    on (image, part map) pairs, then freeze it for the fixed constraint or keep training it as f_φ. Instance norm
    (no running statistics) makes it behave the same in train and eval mode.
    """

    def __init__(self, in_channels: int = IMAGE_CHANNELS, classes: int = 8, width: int = 32, depth: int = 4,
                 max_multiplier: int = 4, **kwargs: Any) -> None:
        super().__init__(in_channels, classes, width, depth, max_multiplier, **kwargs)
        self.classes = classes


# ----------------------------------------------------------------------------------------------------------------
# the model


class PoseGAN(nn.Module):
    """A U-Net generator and a PatchGAN discriminator with the interface of :class:`kdgm.models.gan.GAN`.

    The condition is a :class:`kdgm.data.figures.PoseCondition`.

    ``sample(n, cond)`` is ``G([source, source pose, target pose])``: deterministic given the condition unless the
    generator has dropout (pix2pix's only noise), differentiable in the generator's weights. There is no z.

    Args:
        generator: (B, 3 + 2J, S, S) → (B, 3, S, S), e.g. :class:`UNetGenerator`.
        discriminator: ``(x, cond) → (B,)``, e.g. :class:`PatchDiscriminator`.
    """

    conditional = True

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator

    @staticmethod
    def _check(cond: Any, n: int) -> None:
        if not is_pose_condition(cond):
            raise TypeError(f"a PoseGAN is conditioned on a PoseCondition (source, source_heatmaps, target_heatmaps), "
                            f"got {type(cond).__name__}")
        if len(cond) != n:
            raise ValueError(f"n must equal the number of conditions: n={n}, len(cond)={len(cond)}")

    def sample(self, n: int, cond: PoseCondition, *, generator: torch.Generator | None = None,
               z: Tensor | None = None) -> Tensor:
        """(n, 3, S, S) images in [0, 1] for the n rows of ``cond``, differentiable in the generator's weights.

        ``generator`` seeds the dropout noise (the same seed gives the same images); ``z`` is not accepted (a
        pix2pix generator has no latent).
        """
        self._check(cond, n)
        if z is not None:
            raise ValueError("a PoseGAN has no latent z; its only noise is the generator's dropout")
        inputs = cond.stacked()  # (n, 3 + 2J, S, S)
        if generator is None or not getattr(self.generator, "dropout", 0):
            return self.generator(inputs)
        devices = [inputs.device] if inputs.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            return self.generator(inputs)

    def discriminate(self, x: Tensor, cond: PoseCondition) -> Tensor:
        """(B,) mean patch logits of images x under their conditions."""
        self._check(cond, len(x))
        return self.discriminator(x, cond)


def pose_gan(size: int = 32, width: int = 32, joints: int = JOINTS, dropout: float = 0.0, with_source: bool = False,
             norm: Norm = "instance", upsample: Upsample = "transpose") -> PoseGAN:
    """A :class:`PoseGAN` for ``size``×``size`` images: a U-Net generator (2×2 bottleneck) and a 22×22 PatchGAN
    conditioned on the target pose (and, ``with_source``, the source image and pose)."""
    generator = UNetGenerator(IMAGE_CHANNELS + 2 * joints, IMAGE_CHANNELS, width, size, norm=norm, dropout=dropout,
                              upsample=upsample)
    d_channels = IMAGE_CHANNELS + joints + (IMAGE_CHANNELS + joints if with_source else 0)
    return PoseGAN(generator, PatchDiscriminator(d_channels, width, with_source, norm))


# ----------------------------------------------------------------------------------------------------------------
# objectives and the constraint


def pose_condition(batch) -> PoseCondition:
    """The batch's pose condition: ``batch.condition()``, else ``batch.y``."""
    cond = batch_condition(batch)
    cond = getattr(batch, "y", None) if cond is None else cond
    if not is_pose_condition(cond):
        raise TypeError(f"a pose batch must give a PoseCondition through condition() (got {type(cond).__name__})")
    return cond


def adversarial_generator_loss(d_fake: Tensor, loss: GANLoss) -> Tensor:
    """() the generator's side of ``loss`` on (B,) logits of its samples, as :class:`GeneratorLoss` computes it."""
    if loss == "minimax":
        return -F.softplus(d_fake).mean()
    if loss == "nonsaturating":
        return F.softplus(-d_fake).mean()
    if loss in ("wasserstein", "hinge"):
        return -d_fake.mean()
    raise ValueError(f"unknown GAN loss {loss!r}; use one of {', '.join(LOSSES)}")


class L1Reconstruction:
    """``weight · mean |G(c) − x_target|``, pix2pix's λ·L1 term (PG2's stage-1 loss) as an objective.

    Returns the sample as ``outputs``.
    """

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        target = batch_data(batch)  # (B, 3, S, S)
        fake = model.sample(len(target), pose_condition(batch))
        l1 = F.l1_loss(fake, target)
        return LossOutput(self.weight * l1, {"l1": l1.detach()}, fake)


class PoseGeneratorLoss:
    """pix2pix's generator objective ``L_GAN(G, D) + λ L1(G)`` from one sample per condition.

    Args:
        adversarial: the adversarial side, a :class:`GeneratorLoss` (its ``loss`` kind is used) or the kind's name.
        l1: λ, the weight of the L1 reconstruction (pix2pix: 100).
    """

    def __init__(self, adversarial: GeneratorLoss | GANLoss = "nonsaturating", l1: float = 100.0) -> None:
        self.loss = adversarial.loss if isinstance(adversarial, GeneratorLoss) else adversarial
        if self.loss not in LOSSES:
            raise ValueError(f"unknown GAN loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        self.l1 = l1

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        return self.on_samples(model, batch, model.sample(len(batch_data(batch)), pose_condition(batch)))

    def on_samples(self, model: nn.Module, batch, fake: Tensor) -> LossOutput:
        """The loss of differentiable generations ``fake`` (B, 3, S, S), one per pair of the batch (sampled once,
        read by both terms; :class:`kdgm.knowledge.ImplicitMStep` passes its own)."""
        target = batch_data(batch)  # (B, 3, S, S)
        cond = pose_condition(batch)
        g_loss = adversarial_generator_loss(model.discriminate(fake, cond), self.loss)
        l1 = F.l1_loss(fake, target)
        total = g_loss + self.l1 * l1
        return LossOutput(total, {"g_loss": g_loss.detach(), "l1": l1.detach()}, fake)


class PartAgreement(Constraint):
    """``f_φ(x, c) = (1/S²) Σ_pixels log p_φ(parts_c[pixel] | x)`` → (B,): how well the parser's reading of an image
    agrees with the true target part map (Hu et al. 2018, the pose experiment's constraint). 0 at best.

    The part map comes through the condition (``cond.target_parts``, tiled with it by the E-step), or ``cond`` may
    be the (B, S, S) part map itself. Freeze it (``PartAgreement(parser).freeze()``) for the fixed constraint; left
    trainable, the φ-step (:class:`kdgm.knowledge.TeacherLikelihood`) trains the parser as f_φ.
    """

    def __init__(self, parser: nn.Module) -> None:
        super().__init__()
        self.parser = parser

    def forward(self, x: Tensor, cond: Any = None) -> Tensor:
        parts = cond if isinstance(cond, Tensor) else getattr(cond, "target_parts", None)  # (B, S, S) long
        if parts is None:
            raise ValueError(f"PartAgreement needs the true target part map: the condition's target_parts is missing "
                             f"or None ({type(cond).__name__})")
        logits = self.parser(x)  # (B, K, S, S)
        return -F.cross_entropy(logits, parts, reduction="none").flatten(1).mean(1)  # (B,)
