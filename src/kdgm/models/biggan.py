"""A small BigGAN (Brock et al. 2019) for 32×32 class-conditional images, at a size a CPU trains.

Lecture ``001_…txt`` ("BigGAN: scaling up GAN models"). BigGAN is SAGAN (Zhang et al. 2019) scaled up, with a few
changes that the paper shows to matter; this module keeps each of them at a small width:

- **Residual networks** for both players: up-blocks ``4 → 8 → 16 → 32`` in the generator, down-blocks
  ``32 → 16 → 8 → 4`` in the discriminator (the ResNet GAN of Miyato et al. 2018, BigGAN's Figure 15).
- **Spectral normalisation** (Miyato et al. 2018) of every convolution, linear layer and the discriminator's class
  embedding, in both networks: ``W̄ = W / σ(W)`` with σ(W) the largest singular value of W (reshaped to
  (out, in·k·k)), estimated by one power iteration per training forward pass (:func:`sn`).
- **Class-conditional batch norm with a shared embedding and a hierarchical latent** (BigGAN section 3 and
  Figure 15): z is split into ``n_blocks + 1`` chunks; the first goes through the first linear layer, chunk i+1 is
  concatenated with the shared class embedding e(y) into ``c_i = [z_{i+1}, e(y)]``, and the gain and bias of the
  batch norms of up-block i are linear in c_i: ``BN(h) · (1 + W_γ c_i) + W_β c_i`` (:class:`ConditionalBatchNorm`).
- **Self-attention** (SAGAN) at 16×16 in the generator, ``h + γ o(h)`` with γ learned from 0, so that the network
  starts local and learns to use non-local evidence (:class:`SelfAttention`).
- **Projection discriminator** (Miyato & Koyama 2018, Eq. 3): ``D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩``, with φ(x)
  the globally sum-pooled ReLU features and ψ a linear layer (:class:`Discriminator`).
- **Hinge loss** (``DiscriminatorLoss("hinge")`` / ``GeneratorLoss("hinge")`` of :mod:`kdgm.objectives.adversarial`).
- **Orthogonal regularisation** (BigGAN Eq. 3): ``R_β(W) = β ‖WᵀW ⊙ (1 − I)‖²_F`` summed over the generator's weight
  matrices, which keeps the filters near-orthogonal without constraining their norms and makes the generator amenable
  to truncation (:func:`orthogonal_penalty`, :class:`OrthogonalRegularized`).
- **An exponential moving average of the generator's weights** (BigGAN section 4, after Karras et al. 2018), used
  for evaluation (:class:`GeneratorEMA`; ``sample`` in evaluation mode, or ``sample(..., ema=True)``).
- **The truncation trick** (BigGAN section 3.1): z drawn from a normal truncated to [−t, t], values outside being
  resampled, trades variety for fidelity as t shrinks (:func:`truncated_noise`).

:class:`BigGAN` has the interface of :class:`kdgm.models.gan.GAN` with ``conditional = True``: the adversarial
objectives pass the batch's labels as the condition, and ``sample(n, cond)`` is differentiable in the generator's
weights (:class:`kdgm.knowledge.ImplicitMStep`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from kdgm.objectives.base import LossOutput, Objective


def sn(module: nn.Module) -> nn.Module:
    """``module`` with an orthogonally initialised (BigGAN's init) and spectrally normalised ``weight``.

    ``module.weight`` is then ``W / σ̂(W)``, σ̂ the power-iteration estimate of the largest singular value of W
    reshaped to (out, in·k·k) (Miyato et al. 2018, Eq. 8); the raw W is ``module.parametrizations.weight.original``.
    Each forward pass in training mode runs one power iteration; in evaluation mode the stored estimate is used.
    """
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module)


def _levels(image_size: int) -> int:
    """The number of resolution doublings from 4×4 to ``image_size`` (3 for 32×32)."""
    n = (image_size // 4).bit_length() - 1
    if image_size < 8 or 4 * 2**n != image_size:
        raise ValueError(f"BigGAN networks need a 4·2^k image size (8, 16, 32, 64, …), got {image_size}")
    return n


def truncated_noise(n: int, z_dim: int, truncation: float | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    """(n, Z) z ~ N(0, I) on the CPU; with ``truncation`` t, every value with |z| > t is redrawn until none is left
    (BigGAN section 3.1: a truncated normal, the truncation trick)."""
    z = torch.randn(n, z_dim, generator=generator)  # (n, Z)
    if truncation is None:
        return z
    if truncation <= 0:
        raise ValueError(f"the truncation threshold must be positive, got {truncation}")
    outside = z.abs() > truncation  # (n, Z) bool
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = z.abs() > truncation
    return z


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose gain and bias are linear in a condition c (BigGAN section 3; de Vries et al. 2017)::

        CBN(h, c) = BN(h) · (1 + W_γ c) + W_β c,      c = [z_i, e(y)] (a latent chunk and the shared class embedding)

    BN has no affine parameters of its own; W_γ and W_β are spectrally normalised linear maps without bias (as in
    BigGAN), so c = 0 gives gain 1 and bias 0, i.e. plain batch norm, and the gain starts around 1.

    Args:
        channels: C of the feature maps. cond_dim: size of c.
    """

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = sn(nn.Linear(cond_dim, channels, bias=False))
        self.bias = sn(nn.Linear(cond_dim, channels, bias=False))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        gain = 1 + self.gain(c)[:, :, None, None]  # (B, C, 1, 1)
        bias = self.bias(c)[:, :, None, None]  # (B, C, 1, 1)
        return torch.addcmul(bias, self.bn(h), gain)  # (B, C, H, W) BN(h) · gain + bias


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019, Eqs. 1–3), as in BigGAN: ``h + γ o(h)``.

    With 1×1 convolutions θ, φ (C → C/8), g (C → C/2) and o (C/2 → C), and keys and values max-pooled 2× (BigGAN's
    implementation, a quarter of the cost)::

        β_{j,i} = softmax_i(θ(h)_jᵀ φ(h)_i),    o_j = o(Σ_i β_{j,i} g(h)_i),    out = h + γ o

    γ is a learned scalar initialised at ``gamma`` (0 in SAGAN: the block starts as the identity).
    """

    def __init__(self, channels: int, gamma: float = 0.0) -> None:
        super().__init__()
        if channels % 8:
            raise ValueError(f"self-attention needs a multiple of 8 channels, got {channels}")
        self.theta = sn(nn.Conv2d(channels, channels // 8, 1, bias=False))
        self.phi = sn(nn.Conv2d(channels, channels // 8, 1, bias=False))
        self.g = sn(nn.Conv2d(channels, channels // 2, 1, bias=False))
        self.o = sn(nn.Conv2d(channels // 2, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))

    def forward(self, h: Tensor) -> Tensor:
        B, C, H, W = h.shape
        queries = self.theta(h).flatten(2)  # (B, C/8, HW)
        keys = F.max_pool2d(self.phi(h), 2).flatten(2)  # (B, C/8, HW/4)
        values = F.max_pool2d(self.g(h), 2).flatten(2)  # (B, C/2, HW/4)
        beta = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (B, HW, HW/4): row j attends over i
        o = self.o((values @ beta.transpose(1, 2)).view(B, C // 2, H, W))  # (B, C, H, W)
        return h + self.gamma * o


class GBlock(nn.Module):
    """A residual up-block of BigGAN's generator (Figure 15b)::

        h = conv2(ReLU(CBN2(conv1(up(ReLU(CBN1(x, c)))), c))),    out = h + conv_sc(up(x))

    ``up`` is 2× nearest-neighbour upsampling; conv1, conv2 are 3×3, conv_sc 1×1, all spectrally normalised. The
    1×1 shortcut commutes with nearest-neighbour upsampling, so it runs at the lower resolution.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = ConditionalBatchNorm(c_in, cond_dim), ConditionalBatchNorm(c_out, cond_dim)
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = sn(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)  # (B, C_in, 2H, 2W)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))  # (B, C_out, 2H, 2W)
        return h + F.interpolate(self.shortcut(x), scale_factor=2)  # (B, C_out, 2H, 2W)


class Generator(nn.Module):
    """(z (B, Z), y (B,) classes) → images (B, C, S, S) in [0, 1]; BigGAN's generator (Figure 15a) at a small width.

    Channels halve at each of the n up-blocks, from ``2·width`` at 4×4 (not below 8): ``2·width``, ``width``,
    ``width/2``, ``width/4`` at 4, 8, 16, 32 pixels for 32×32 images (64, 32, 16, 8 at the default width 32). The
    output layer is BigGAN's (BN, ReLU, 3×3 convolution, tanh), with ``(tanh + 1) / 2`` giving grey levels in [0, 1]:
    twice the slope of a sigmoid, which the spectrally normalised last layer needs to reach a black background.

    Args:
        z_dim: latent size, a multiple of ``n + 1`` (4 chunks for 32×32 images).
        num_classes: K. width: channels at 8×8. channels: image channels. image_size: 4·2^k.
        shared_dim: size of the shared class embedding e(y) (a plain embedding, as in BigGAN).
        attention: resolution of the self-attention block (None: none). attention_gamma: initial γ.
    """

    def __init__(self, z_dim: int = 64, num_classes: int = 10, width: int = 32, channels: int = 1,
                 image_size: int = 32, shared_dim: int = 16, attention: int | None = 16,
                 attention_gamma: float = 0.0) -> None:
        super().__init__()
        n = _levels(image_size)
        if z_dim % (n + 1):
            raise ValueError(f"z_dim must split into {n + 1} equal chunks (one per up-block and one for the first "
                             f"layer) for {image_size}x{image_size} images, got {z_dim}")
        resolutions = [8 * 2**i for i in range(n)]  # output side of each up-block
        if attention is not None and attention not in resolutions:
            raise ValueError(f"attention must be at one of the resolutions {resolutions} (or None), got {attention}")
        widths = [max(2 * width // 2**i, 8) for i in range(n + 1)]  # (n+1,) channels at 4×4, 8×8, … (halving)
        self.z_dim, self.num_classes, self.chunk, self.top = z_dim, num_classes, z_dim // (n + 1), widths[0]
        cond_dim = self.chunk + shared_dim
        self.shared = nn.Embedding(num_classes, shared_dim)
        nn.init.orthogonal_(self.shared.weight)
        self.linear = sn(nn.Linear(self.chunk, widths[0] * 4 * 4))
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], cond_dim) for i in range(n))
        self.attention_after = resolutions.index(attention) if attention is not None else -1
        self.attention = SelfAttention(widths[self.attention_after + 1], attention_gamma) if attention else None
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out = sn(nn.Conv2d(widths[-1], channels, 3, padding=1))

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        zs = z.split(self.chunk, dim=1)  # n+1 chunks of (B, Z/(n+1))
        e = self.shared(y)  # (B, E)
        h = self.linear(zs[0]).view(-1, self.top, 4, 4)  # (B, 2·width, 4, 4)
        for i, (block, z_i) in enumerate(zip(self.blocks, zs[1:])):
            h = block(h, torch.cat([z_i, e], 1))  # (B, C_i, 8·2^i, 8·2^i)
            if i == self.attention_after:
                h = self.attention(h)
        return (torch.tanh(self.out(F.relu(self.bn(h)))) + 1) / 2  # (B, C, S, S): BigGAN's tanh, mapped to [0, 1]


class DBlock(nn.Module):
    """A residual down-block of BigGAN's discriminator (Figure 15c)::

        h = pool(conv2(ReLU(conv1(a(x))))),    out = h + conv_sc(pool(x))

    with ``a`` = ReLU except in the first block (which sees the image), 2×2 average pooling, 3×3 convolutions and a
    1×1 shortcut (which commutes with the average pooling, so it runs at the lower resolution).
    """

    def __init__(self, c_in: int, c_out: int, preactivation: bool = True) -> None:
        super().__init__()
        self.preactivation = preactivation
        self.conv1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = sn(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)  # (B, C_out, H/2, W/2)
        return h + self.shortcut(F.avg_pool2d(x, 2))  # (B, C_out, H/2, W/2)


class Discriminator(nn.Module):
    """(images (B, C, S, S), y (B,)) → (B,) logits: a residual projection discriminator (Miyato & Koyama 2018).

    ``D(x, y) = ψ(φ(x)) + ⟨embed(y), φ(x)⟩`` (their Eq. 3 with the log-linear class model): φ(x) the sum over
    positions of the ReLU of the last down-block's features, ψ a linear layer, embed a spectrally normalised class
    embedding. Channels double at each down-block up to ``width`` at 4×4 (not below 8): ``width/4``, ``width/2``,
    ``width`` at 16, 8, 4 pixels for 32×32 images, so φ(x) has ``width`` features.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, channels: int = 1, image_size: int = 32) -> None:
        super().__init__()
        n = _levels(image_size)
        widths = [channels] + [max(width // 2 ** (n - 1 - i), 8) for i in range(n)]  # (n+1,) image, then blocks
        self.blocks = nn.Sequential(*(DBlock(widths[i], widths[i + 1], preactivation=i > 0) for i in range(n)))
        self.psi = sn(nn.Linear(widths[-1], 1))
        self.embed = sn(nn.Embedding(num_classes, widths[-1]))

    def features(self, x: Tensor) -> Tensor:
        """(B, C_φ) φ(x): the ReLU of the last block's features, summed over positions."""
        return F.relu(self.blocks(x)).sum((2, 3))  # (B, C_φ)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        phi = self.features(x)  # (B, C_φ)
        return self.psi(phi).squeeze(1) + (self.embed(y) * phi).sum(1)  # (B,)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters are buffers: in its state dict under the same names, but never
    among a model's parameters (no optimizer, gradient check or weight decay reaches them)."""
    frozen = copy.deepcopy(module)
    for sub in frozen.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:  # an absent bias
                continue
            del sub._parameters[name]
            sub.register_buffer(name, param.detach())
    return frozen


@torch.no_grad()
def ema_update(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """``θ_ema ← decay · θ_ema + (1 − decay) · θ`` for every parameter of ``live`` (the raw, not yet spectrally
    normalised, weights), and a copy of its buffers (batch-norm running statistics, the power iteration's u and v).

    ``ema`` is a :func:`_frozen_copy` of ``live``: its entries have the names of ``live``'s parameters and buffers.
    """
    params, buffers = dict(live.named_parameters()), dict(live.named_buffers())
    for name, target in ema.named_buffers():
        if name in params and decay > 0:
            target.lerp_(params[name], 1 - decay)
        else:
            target.copy_(params.get(name, buffers.get(name)))


class BigGAN(nn.Module):
    """A class-conditional generator and projection discriminator, with an EMA copy of the generator.

    The interface of :class:`kdgm.models.gan.GAN` with ``conditional = True``: the adversarial objectives pass the
    batch's labels ``batch.y`` as ``cond``.

    ``generator_ema`` is a copy of the generator holding the exponential moving average of its weights, kept by
    :class:`GeneratorEMA` (an optimizer step hook). Its weights are buffers, so it is in the state dict (checkpoints
    hold it) but not among the parameters; it stays in evaluation mode (running batch-norm statistics and the
    stored spectral-norm estimates, both copied from the live generator at each update). ``ema_updates`` counts the
    updates (a buffer, so a resumed run continues the count).

    Args:
        generator: (z, y) → images. discriminator: (x, y) → (B,) logits.
    """

    conditional = True

    def __init__(self, generator: Generator, discriminator: Discriminator) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.z_dim, self.num_classes = generator.z_dim, generator.num_classes
        self.generator_ema = _frozen_copy(generator).eval()
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> BigGAN:
        super().train(mode)
        self.generator_ema.eval()  # always: it is only ever sampled for evaluation
        return self

    def _model_device(self) -> torch.device:
        return next(self.parameters()).device

    def noise(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> Tensor:
        """(n, Z) z ~ N(0, I), truncated to [−t, t] by resampling with ``truncation`` t, on the model's device
        (drawn on the CPU, so that a seeded ``generator`` gives the same z on every device)."""
        return truncated_noise(n, self.z_dim, truncation, generator).to(self._model_device())

    def classes(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) classes drawn uniformly, on the model's device."""
        return torch.randint(self.num_classes, (n,), generator=generator).to(self._model_device())

    def sample(self, n: int, cond: Tensor | None = None, *, truncation: float | None = None,
               generator: torch.Generator | None = None, z: Tensor | None = None,
               ema: bool | None = None) -> Tensor:
        """(n, C, S, S) images of the classes ``cond`` ((n,) long; None: uniformly drawn classes).

        Args:
            truncation: t of the truncation trick (None: untruncated z).
            generator: seeds z (and the classes when ``cond`` is None). z: (n, Z) fixes the noise (sample grids).
            ema: True: the EMA generator (evaluation, no gradient); False: the live generator, differentiable in its
                weights (training objectives). None: the EMA generator when the model is in evaluation mode and
                the average has been updated (:class:`GeneratorEMA` registered), else the live one — so training
                samples the live generator and ``model.eval()`` followed by ``sample`` evaluates the average.
        """
        if z is None:
            z = self.noise(n, generator, truncation)  # (n, Z)
        if cond is None:
            cond = self.classes(n, generator)  # (n,)
        if len(z) != n or len(cond) != n:
            raise ValueError(f"sample({n}) got {len(z)} latents and {len(cond)} classes")
        if ema is None:
            ema = not self.training and bool(self.ema_updates > 0)
        return (self.generator_ema if ema else self.generator)(z, cond)  # (n, C, S, S)

    def discriminate(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """(B,) projection-discriminator logits of images x of classes ``cond`` ((B,) long, required)."""
        if cond is None:
            raise ValueError("BigGAN's projection discriminator needs the class of each image: give the batch its "
                             "labels (ImageBatch.y) or pass cond")
        return self.discriminator(x, cond)


class GeneratorEMA:
    """An optimizer step hook that updates the EMA generator after every generator step (BigGAN section 4)::

        g_optimizer.register_step_post_hook(GeneratorEMA(model, decay=0.999))

    ``θ_ema ← decay · θ_ema + (1 − decay) · θ``, buffers copied (:func:`ema_update`). For the first ``start`` updates
    the EMA copy just follows the generator (BigGAN starts averaging after 20k iterations), so that a short run's
    average does not keep a share of the random initial weights (0.999^2000 ≈ 14% after 2000 steps).

    Register it on the optimizer of the generator's phase only: the hook runs after every step of that optimizer.
    """

    def __init__(self, model: BigGAN, decay: float = 0.999, start: int = 0) -> None:
        if not 0 <= decay <= 1:
            raise ValueError(f"the EMA decay must be in [0, 1], got {decay}")
        self.model, self.decay, self.start = model, decay, start

    def __call__(self, optimizer: Any = None, args: Any = None, kwargs: Any = None) -> None:
        model = self.model
        decay = self.decay if int(model.ema_updates) >= self.start else 0.0
        ema_update(model.generator_ema, model.generator, decay)
        model.ema_updates.add_(1)


def orthogonal_penalty(module: nn.Module) -> Tensor:
    """() ``Σ_W ‖WᵀW ⊙ (1 − I)‖²_F`` over the weight matrices of ``module`` (BigGAN Eq. 3, without β).

    Every parameter with two or more dimensions counts, reshaped to (out, in·k·k) as in BigGAN's code, the paper's W
    having the filters (rows of torch's weight) as columns: the penalty is the sum of the squared inner products of
    distinct filters, zero for mutually orthogonal filters of any norms. Embeddings are left out (BigGAN exempts the
    shared class embedding). For spectrally normalised layers the raw weight is penalised, as in BigGAN.
    """
    skip = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    total = torch.zeros((), device=next(module.parameters()).device)
    for param in module.parameters():
        if param.dim() < 2 or id(param) in skip:
            continue
        w = param.flatten(1)  # (out, in·k·k): row i is filter i, column i of the paper's W
        if w.shape[0] <= w.shape[1]:
            gram = w @ w.T  # (out, out) WᵀW
            total = total + (gram - torch.diag(gram.diagonal())).pow(2).sum()
        else:  # ‖WᵀW‖²_F = ‖WWᵀ‖²_F: the smaller Gram matrix, less its diagonal's Σ_i ‖w_i‖⁴
            total = total + (w.T @ w).pow(2).sum() - w.pow(2).sum(1).pow(2).sum()
    return total


class OrthogonalRegularized:
    """``inner(model, batch)`` plus BigGAN's orthogonal regularisation of ``model.generator``:
    ``total + β Σ_W ‖WᵀW ⊙ (1 − I)‖²_F``; the unscaled penalty is logged as ``ortho``.

    Wrap the generator's objective: ``OrthogonalRegularized(GeneratorLoss("hinge"), beta=1e-4)`` (BigGAN's β).

    Args:
        inner: the objective to regularise. beta: β. module: the attribute of the model to penalise.
    """

    def __init__(self, inner: Objective, beta: float = 1e-4, module: str = "generator") -> None:
        if beta < 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.inner, self.beta, self.module = inner, beta, module

    @property
    def progress(self):
        """The inner objective's schedule position (absent when it has none, so the loop sets nothing)."""
        return self.inner.progress

    @progress.setter
    def progress(self, value) -> None:
        self.inner.progress = value

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        out = self.inner(model, batch)
        penalty = orthogonal_penalty(getattr(model, self.module))
        return LossOutput(out.total + self.beta * penalty, {**out.terms, "ortho": penalty.detach()}, out.outputs)


def biggan(z_dim: int = 64, num_classes: int = 10, width: int = 32, channels: int = 1, image_size: int = 32, *,
           shared_dim: int = 16, attention: int | None = 16, attention_gamma: float = 0.0) -> BigGAN:
    """A small BigGAN for ``image_size`` × ``image_size`` images of ``num_classes`` classes (see :class:`Generator`
    and :class:`Discriminator` for the widths; attention at 16×16 by default)."""
    generator = Generator(z_dim, num_classes, width, channels, image_size, shared_dim, attention, attention_gamma)
    return BigGAN(generator, Discriminator(num_classes, width, channels, image_size))
