"""Invertible layers of RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018) for image tensors.

Lecture ``001_…txt`` (normalizing flows): an invertible ``f`` maps data ``x`` to a latent ``z = f(x)`` and the change
of variables gives the exact density

    log p(x) = log p(z) + log |det ∂f/∂x|,          log |det ∂f/∂x| = Σ_i log |det ∂h_i/∂h_{i-1}|

for a composition ``f = f_L ∘ … ∘ f_1``; inference is exact (``z = f(x)``) and sampling inverts it (``x = f⁻¹(z)``).
Each layer below has a triangular (or otherwise cheap) Jacobian.

The contract of every layer (a :class:`Bijection`), in the data → latent direction::

    forward(x) -> (y, logdet)      y has x's shape (B, C, H, W) unless the layer says otherwise; logdet (B,) is
                                   log |det ∂y/∂x| of each example
    inverse(y) -> x                the exact inverse of forward

Layers: :class:`AffineCoupling` (channel mask, RealNVP's channel-wise coupling and Glow's coupling),
:class:`CheckerboardCoupling` (RealNVP's spatial checkerboard mask), :class:`ActNorm`, :class:`InvConv1x1` and
:class:`InvConv1x1LU`, :class:`Squeeze`, :class:`Split` (multi-scale factor-out with a learned conditional Gaussian
prior, written as a bijection onto standardised noise), :class:`LogitTransform` (RealNVP's preprocessing) and
:class:`Compose`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# std of the "zero" convolutions when ``zero_init=False``: small but non-zero, so that gradients reach the layers
# before them from the first step (a shared gradient test needs that; Glow itself uses exact zeros)
SMALL_INIT_STD = 1e-3


def per_example_sum(t: Tensor) -> Tensor:
    """(B, ...) → (B,): the sum of every element of each example."""
    return t.flatten(1).sum(1)


def zero_conv(c_in: int, c_out: int, kernel: int = 3, zero_init: bool = True) -> nn.Conv2d:
    """A same-padding convolution initialised to output zeros (Glow section 3.3, "zero initialization"), or to
    small normal weights (std :data:`SMALL_INIT_STD`) when ``zero_init`` is False."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.bias)
    if zero_init:
        nn.init.zeros_(conv.weight)
    else:
        nn.init.normal_(conv.weight, std=SMALL_INIT_STD)
    return conv


def random_rotation(c: int, generator: torch.Generator | None = None) -> Tensor:
    """(c, c) random orthogonal matrix (QR of a Gaussian matrix), Glow's initialisation of the 1×1 convolution."""
    q, r = torch.linalg.qr(torch.randn(c, c, generator=generator))
    return q * torch.sign(torch.diagonal(r))  # (c, c), sign-fixed so the draw is Haar-distributed


class Bijection(nn.Module):
    """An invertible layer: ``forward(x) -> (y, logdet)``, ``inverse(y) -> x`` (module docstring)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class Compose(Bijection):
    """``f = f_n ∘ … ∘ f_1``: log-determinants add (the chain rule), the inverse runs the layers backwards."""

    def __init__(self, *layers: Bijection) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])  # (B,)
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


# -- affine couplings -------------------------------------------------------------------------------------------


def _functorch_transforms_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jacrev, …) is running: the fused path has no rules for them."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


try:  # oneDNN's matrix product with the bias and ReLU fused into it (torch's CPU builds; what inductor calls)
    _LINEAR_POINTWISE = torch.ops.mkldnn._linear_pointwise
except (AttributeError, RuntimeError):  # pragma: no cover - a torch without oneDNN
    _LINEAR_POINTWISE = None


def _linear_relu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``ReLU(x weightᵀ + bias)`` for x (M, K), weight (N, K): one oneDNN kernel for float32 on a torch that has it
    (no separate passes for the bias and the ReLU), else ``addmm`` and an in-place ReLU."""
    if _LINEAR_POINTWISE is not None and x.dtype == torch.float32 and torch.backends.mkldnn.enabled:
        try:
            return _LINEAR_POINTWISE(x, weight, bias, "relu", [], "")
        except RuntimeError:  # pragma: no cover - an unsupported layout or build: the plain kernels
            pass
    y = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
    return y.relu_()


def _threshold_backward_(grad: Tensor, out: Tensor) -> Tensor:
    """``grad ⊙ [out > 0]``, the gradient through a ReLU whose output is ``out``; in place where possible."""
    try:
        return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)
    except RuntimeError:  # out= is refused under vmap (batched gradients, e.g. a vectorised Jacobian)
        return torch.ops.aten.threshold_backward(grad, out, 0)


def _patches(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, H, W, C, 3, 3) view of the zero-padded 3×3 neighbourhoods: ``[b, y, x, c, i, j]`` is
    ``x[b, c, y + i − 1, x + j − 1]`` (0 outside); its (B·H·W, 9·C) reshape is ``F.unfold(x, 3, padding=1)``
    transposed, in the column order ``c·9 + 3i + j`` of a (C_out, C, 3, 3) weight."""
    return F.pad(x, (1, 1, 1, 1)).unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 2, 3, 1, 4, 5)


def _fold(cols: Tensor, b: int, c: int, h: int, w: int) -> Tensor:
    """(B·H·W, 9·C) → (B, C, H, W), the adjoint of :func:`_patches` (``F.fold`` with padding 1): each row's 9 taps
    are added to the neighbours they belong to. Returns a channels-last strided tensor."""
    taps = cols.view(b, h, w, c, 3, 3)
    try:
        acc = cols.new_zeros(b, h + 2, w + 2, c)  # (B, H + 2, W + 2, C), NHWC with a border
        for i in range(3):
            for j in range(3):
                acc[:, i : i + h, j : j + w] += taps[..., i, j]
    except RuntimeError:  # in-place accumulation of a batched tensor under vmap: the functional fold
        return F.fold(cols.view(b, h * w, 9 * c).transpose(1, 2), (h, w), 3, padding=1)
    return acc[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2)


class _CouplingNetGemm(torch.autograd.Function):
    """:class:`CouplingNet`'s three convolutions and two ReLUs as matrix products on (B·H·W, C) matrices, with a
    hand-written backward (CPU only; see :meth:`CouplingNet.forward`).

    With ``M = B·H·W``, ``A`` the (M, 9·C_in) 3×3 patches of x (:func:`_patches`) and ``fold`` their adjoint
    (:func:`_fold`)::

        h_1 = ReLU([A, 1] [W_1 | b_1]ᵀ)                   (M, hidden)        conv 3×3
        h_2 = ReLU(h_1 W_2ᵀ + b_2)                        (M, hidden)        conv 1×1
        y   = fold(h_2 W_3') + b_3                        (B, C_out, H, W)   conv 3×3

    The first bias rides in the product (a column of ones on A), so its gradient comes out of the weight
    gradient's product; in float32 the biases and ReLUs are fused into the products (:func:`_linear_relu`). ``W_3'`` (hidden, 9·C_out) is ``W_3`` with flipped taps: ``fold`` adds each pixel's 9 tap
    outputs to the neighbours they belong to, which is the convolution (a 128 → 4 channel 3×3 convolution becomes
    one 128 → 36 product on the wide side and a cheap scatter-add on the narrow side). The same function as the
    convolutions, to rounding. The backward masks the ReLU gradients in place; it is not itself differentiable (a
    second derivative raises).
    """

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor) -> Tensor:
        b, c_in, h, w = x.shape
        m, k, hidden, c_out = b * h * w, 9 * c_in, w1.shape[0], w3.shape[0]
        cols = x.new_empty(m, k + 1)  # (M, 9·C_in + 1): the patches and a column of ones
        cols[:, k] = 1
        cols[:, :k].view(b, h, w, c_in, 3, 3).copy_(_patches(x))
        w1e = torch.cat([w1.reshape(hidden, k), b1[:, None]], 1)  # (hidden, 9·C_in + 1): [W_1 | b_1]
        w2m = w2.reshape(hidden, hidden)
        w3m = w3.flip(2, 3).reshape(c_out, hidden, 9).transpose(0, 1).reshape(hidden, 9 * c_out)
        h1 = _linear_relu(cols, w1e)  # (M, hidden)
        h2 = _linear_relu(h1, w2m, b2)  # (M, hidden)
        taps = _fold(torch.mm(h2, w3m), b, c_out, h, w)  # (B, C_out, H, W), strided
        y = torch.add(taps, b3[:, None, None], out=x.new_empty(b, c_out, h, w))  # contiguous
        ctx.save_for_backward(cols, h1, h2, w1e, w2m, w3m)
        ctx.dims = (b, c_in, h, w, hidden, c_out)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        cols, h1, h2, w1e, w2m, w3m = ctx.saved_tensors
        b, c_in, h, w, hidden, c_out = ctx.dims
        m, k = b * h * w, 9 * c_in
        g_b3 = grad.sum((0, 2, 3))
        g_taps = _patches(grad).reshape(m, 9 * c_out)  # (M, 9·C_out), the adjoint of the fold
        g_w3 = torch.mm(h2.t(), g_taps).view(hidden, c_out, 3, 3).transpose(0, 1).flip(2, 3)
        g2 = _threshold_backward_(torch.mm(g_taps, w3m.t()), h2)  # (M, hidden) at conv 1×1's output
        g_w2 = torch.mm(g2.t(), h1).view(hidden, hidden, 1, 1)
        g_b2 = g2.sum(0)
        g1 = _threshold_backward_(torch.mm(g2, w2m), h1)  # (M, hidden) at the first conv's output
        del g2
        g_w1e = torch.mm(g1.t(), cols)  # (hidden, 9·C_in + 1): [dW_1 | db_1]
        g_x = None
        if ctx.needs_input_grad[0]:
            g_x = _fold(torch.mm(g1, w1e[:, :k]), b, c_in, h, w)  # (B, C_in, H, W)
        return (g_x, g_w1e[:, :k].reshape(hidden, c_in, 3, 3), g_w1e[:, k].contiguous(), g_w2, g_b2, g_w3, g_b3)


class CouplingNet(nn.Module):
    """NN(·) of a coupling: conv 3×3 → ReLU → conv 1×1 → ReLU → zero-initialised conv 3×3 (Glow's shallow ResNet-free
    network, Kingma & Dhariwal 2018 section 3.3, without its actnorms).

    Output: (B, 2·c_out, H, W), the raw log-scale and the shift stacked on channels.

    On the CPU the network runs as matrix products with a fused backward (:class:`_CouplingNetGemm`), about 1.5×
    faster than the convolutions in training; it supports first derivatives only. Set ``fused_cpu = False`` (on an
    instance or the class) to run the plain convolutions, e.g. for a second derivative (a gradient penalty).
    Elsewhere (CUDA, autocast, tracing, ``torch.func`` transforms) the plain convolutions run.
    """

    fused_cpu: bool = True

    def __init__(self, c_in: int, c_out: int, hidden: int, zero_init: bool = True) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(),  # (B, hidden, H, W)
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),  # (B, hidden, H, W)
            zero_conv(hidden, 2 * c_out, 3, zero_init),  # (B, 2·c_out, H, W)
        )

    def _use_fused(self, x: Tensor) -> bool:
        return (self.fused_cpu and x.device.type == "cpu" and x.dim() == 4 and not torch.is_autocast_enabled("cpu")
                and not torch.jit.is_tracing() and not torch.jit.is_scripting()
                and not _functorch_transforms_active())

    def forward(self, x: Tensor) -> Tensor:
        if self._use_fused(x):
            conv1, _, conv2, _, conv3 = self.net
            return _CouplingNetGemm.apply(x, conv1.weight, conv1.bias, conv2.weight, conv2.bias, conv3.weight,
                                          conv3.bias)
        return self.net(x)


class LogScale(nn.Module):
    """Bounded log-scale ``log s`` of an affine coupling from the network's raw output.

    ``"tanh"``: ``log s = a ⊙ tanh(raw)`` with a learned per-channel ``a`` (RealNVP's ``tanh``-scaled scale);
    ``log s = 0`` at raw = 0, so a zero-initialised coupling starts as the identity.
    ``"sigmoid"``: ``s = σ(raw + 2)`` (Glow's released code), so ``log s = log σ(raw + 2) < 0``; at raw = 0 the
    coupling is the identity on ``x_a`` and the fixed contraction ``y_b = σ(2)·x_b ≈ 0.881·x_b``.
    """

    def __init__(self, channels: int, kind: str = "tanh") -> None:
        super().__init__()
        if kind not in ("tanh", "sigmoid"):
            raise ValueError(f"unknown coupling scale {kind!r}; use 'tanh' or 'sigmoid'")
        self.kind = kind
        self.amplitude = nn.Parameter(torch.ones(1, channels, 1, 1)) if kind == "tanh" else None

    def forward(self, raw: Tensor) -> Tensor:
        if self.kind == "tanh":
            return self.amplitude * torch.tanh(raw)
        return F.logsigmoid(raw + 2.0)


class AffineCoupling(Bijection):
    """Channel-wise affine coupling (Dinh et al. 2017 eq. 4–6; Glow Table 1, "affine coupling layer").

    Split the channels ``x = (x_a, x_b)``, then::

        (log s, t) = NN(x_a)
        y_a = x_a,   y_b = x_b ⊙ exp(log s) + t
        log |det ∂y/∂x| = Σ log s                               (the Jacobian is block-triangular)
        inverse: x_b = (y_b − t) ⊙ exp(−log s)

    Args:
        channels: C of the input (C ≥ 2); ``x_a`` is the first ⌊C/2⌋ channels (the last ones when ``parity`` is 1,
            RealNVP's alternation; Glow keeps parity 0 and lets the 1×1 convolution permute channels).
        hidden: width of NN.
        scale: ``"tanh"`` (RealNVP) or ``"sigmoid"`` (Glow); see :class:`LogScale`.
        zero_init: the last convolution of NN starts at zero (see :func:`zero_conv`).
    """

    def __init__(self, channels: int, hidden: int = 64, parity: int = 0, scale: str = "tanh",
                 zero_init: bool = True) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        self.parity = parity % 2
        self.c_a = channels // 2 if self.parity == 0 else channels - channels // 2
        self.c_b = channels - self.c_a
        self.net = CouplingNet(self.c_a, self.c_b, hidden, zero_init)
        self.log_scale = LogScale(self.c_b, scale)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.parity == 0:
            return x[:, : self.c_a], x[:, self.c_a :]  # (B, C_a, H, W), (B, C_b, H, W)
        return x[:, self.c_b :], x[:, : self.c_b]

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)  # (B, C, H, W)

    def _scale_shift(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        raw, t = self.net(x_a).chunk(2, 1)  # (B, C_b, H, W) each
        return self.log_scale(raw), t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._halves(x)
        log_s, t = self._scale_shift(x_a)
        y_b = x_b * log_s.exp() + t  # (B, C_b, H, W)
        return self._join(x_a, y_b), per_example_sum(log_s)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = self._halves(y)
        log_s, t = self._scale_shift(y_a)
        return self._join(y_a, (y_b - t) * (-log_s).exp())


class CheckerboardCoupling(Bijection):
    """Spatial checkerboard affine coupling of RealNVP (Dinh et al. 2017 eq. 7–9).

    With the binary mask ``b`` (1 where ``(i + j) % 2 == parity``)::

        (log s, t) = NN(b ⊙ x)
        y = b ⊙ x + (1 − b) ⊙ (x ⊙ exp(log s) + t)
        log |det ∂y/∂x| = Σ (1 − b) ⊙ log s
        inverse: x = b ⊙ y + (1 − b) ⊙ (y − t) ⊙ exp(−log s)

    Works for any number of channels (the first RealNVP layers see the 1-channel image) and any H, W.
    """

    def __init__(self, channels: int, hidden: int = 64, parity: int = 0, scale: str = "tanh",
                 zero_init: bool = True) -> None:
        super().__init__()
        self.parity = parity % 2
        self.net = CouplingNet(channels, channels, hidden, zero_init)
        self.log_scale = LogScale(channels, scale)

    def mask(self, x: Tensor) -> Tensor:
        """(1, 1, H, W) the checkerboard b: 1 on the pixels that condition, 0 on those transformed."""
        h, w = x.shape[-2:]
        i = torch.arange(h, device=x.device)[:, None]
        j = torch.arange(w, device=x.device)[None, :]
        return ((i + j) % 2 == self.parity).to(x.dtype)[None, None]  # (1, 1, H, W)

    def _scale_shift(self, x_masked: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        raw, t = self.net(x_masked).chunk(2, 1)  # (B, C, H, W) each
        return self.log_scale(raw) * (1 - keep), t * (1 - keep)  # zero on the conditioning pixels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = self.mask(x)
        log_s, t = self._scale_shift(x * b, b)
        y = x * b + (1 - b) * (x * log_s.exp() + t)  # (B, C, H, W)
        return y, per_example_sum(log_s)

    def inverse(self, y: Tensor) -> Tensor:
        b = self.mask(y)
        log_s, t = self._scale_shift(y * b, b)
        return y * b + (1 - b) * (y - t) * (-log_s).exp()


# -- actnorm and 1×1 convolutions -----------------------------------------------------------------------------


class ActNorm(Bijection):
    """Activation normalisation (Glow section 3.1, Table 1): a per-channel affine map ``y = (x + b) ⊙ exp(log s)``
    with ``log |det| = H·W·Σ_c log s_c``.

    Data-dependent initialisation: on its first forward in training mode, ``b = −mean`` and
    ``log s = −log(std + ε)`` of the batch per channel, so that this batch leaves with zero mean and unit variance
    per channel. The ``initialized`` buffer is saved in the state dict, so a loaded model never re-initialises; a
    model in eval mode never initialises (it stays the identity until trained).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False  # a Python copy of ``initialized``: no device sync per forward once True

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen_initialized = False  # read the loaded buffer again at the next forward

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set b and log s from the batch ``x`` (B, C, H, W) and mark the layer initialised."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)  # (1, C, 1, 1)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self._seen_initialized:
            if not bool(self.initialized):
                self.initialize(x)
            self._seen_initialized = True
        h, w = x.shape[-2:]
        y = (x + self.bias) * self.log_scale.exp()  # (B, C, H, W)
        logdet = h * w * self.log_scale.sum()  # ()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale).exp() - self.bias


def _conv1x1(x: Tensor, weight: Tensor) -> Tensor:
    """``y_{:,i,j} = weight x_{:,i,j}`` for x (B, C, H, W) and weight (C', C): the 1×1 convolution as one batched
    matrix product, (C', C) @ (B, C, H·W) (a few times cheaper than ``F.conv2d`` with so few channels on a CPU)."""
    b, c, h, w = x.shape
    return torch.matmul(weight, x.reshape(b, c, h * w)).view(b, weight.shape[0], h, w)  # (B, C', H, W)


class InvConv1x1(Bijection):
    """Invertible 1×1 convolution (Glow section 3.2): ``y_{:,i,j} = W x_{:,i,j}`` with a learned (C, C) ``W``,
    ``log |det| = H·W·log |det W|``. ``W`` starts as a random rotation (``log |det W| = 0``), or as ``weight``."""

    def __init__(self, channels: int, weight: Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(random_rotation(channels) if weight is None else weight.detach().clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        y = _conv1x1(x, self.weight)  # (B, C, H, W)
        logdet = h * w * torch.linalg.slogdet(self.weight).logabsdet  # ()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return _conv1x1(y, torch.linalg.inv(self.weight))


class InvConv1x1LU(Bijection):
    """LU-decomposed invertible 1×1 convolution (Glow section 3.2, eq. 10)::

        W = P L (U + diag(sign(s) ⊙ exp(log |s|)))
        log |det W| = Σ log |s|,        log |det| = H·W·Σ log |s|

    with ``P`` a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular (learned) and
    ``sign(s)`` fixed; ``log |s|`` is learned. Initialised by the LU decomposition of a random rotation, or of
    ``weight`` (then it computes the same map as ``InvConv1x1(weight=weight)``).
    """

    def __init__(self, channels: int, weight: Tensor | None = None) -> None:
        super().__init__()
        w = random_rotation(channels) if weight is None else weight.detach().clone()
        p, lower, upper = torch.linalg.lu(w)  # w = p @ lower @ upper
        s = torch.diagonal(upper)  # (C,)
        eye = torch.eye(channels, dtype=w.dtype)
        self.register_buffer("permutation", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones_like(w), -1))
        self.register_buffer("eye", eye)
        self.lower = nn.Parameter(lower * self.lower_mask)  # (C, C), strictly lower part used
        self.upper = nn.Parameter(torch.triu(upper, 1))  # (C, C), strictly upper part used
        self.log_s = nn.Parameter(torch.log(s.abs()))  # (C,)

    def weight(self) -> Tensor:
        """(C, C) the matrix W = P L (U + diag(s))."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.permutation @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        y = _conv1x1(x, self.weight())  # (B, C, H, W)
        logdet = h * w * self.log_s.sum()  # ()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return _conv1x1(y, torch.linalg.inv(self.weight()))


# -- reshaping and multi-scale ----------------------------------------------------------------------------------


class Squeeze(Bijection):
    """(B, C, H, W) → (B, 4C, H/2, W/2): each 2×2 spatial block becomes 4 channels (Dinh et al. 2017 section 3.6).
    A permutation: ``log |det| = 0``. Channel ``4c + 2p + q`` holds pixel ``(2i + p, 2j + q)`` of channel ``c``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs an even height and width, got {h}×{w}")
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)  # (B, C, 2, 2, H/2, W/2)
        return y.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        x = y.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)  # (B, C, H/2, 2, W/2, 2)
        return x.reshape(b, c4 // 4, 2 * h, 2 * w)


class Split(Bijection):
    """Multi-scale factor-out (Dinh et al. 2017 section 3.6; Glow section 3 "split") with Glow's learned conditional
    prior, written as a bijection onto standardised noise.

    The channels are split ``x = (x_a, x_b)``; ``x_b`` is factored out with the prior
    ``p(x_b | x_a) = N(μ(x_a), diag(σ(x_a)²))``, ``(μ, log σ) = ZeroConv(x_a)`` (zero-initialised: it starts as
    N(0, I)). Equivalently this layer maps ``x_b`` to ``ε = (x_b − μ) ⊙ exp(−log σ)`` with
    ``log |det| = −Σ log σ``, and the flow scores ``ε`` under N(0, I):
    ``log N(ε; 0, I) − Σ log σ = log p(x_b | x_a)``. Sampling ``ε ~ N(0, T²I)`` is Glow's temperature-T draw
    ``x_b ~ N(μ, (Tσ)²)``.

    ``forward(x) -> (cat(x_a, ε), logdet)``: the output keeps x's shape; :meth:`factor` splits it into the kept half
    ``x_a`` (first ``C_keep`` channels) and the factored-out noise ``ε`` (the rest). ``learn_prior=False`` is
    RealNVP's fixed N(0, I) prior: ``ε = x_b``.
    """

    def __init__(self, channels: int, learn_prior: bool = True, zero_init: bool = True) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"split needs at least 2 channels, got {channels}")
        self.c_keep = channels - channels // 2
        self.c_out = channels // 2
        self.prior = zero_conv(self.c_keep, 2 * self.c_out, 3, zero_init) if learn_prior else None

    def factor(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) → kept (B, C_keep, H, W), factored-out (B, C − C_keep, H, W)."""
        return y[:, : self.c_keep], y[:, self.c_keep :]

    def _mean_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        if self.prior is None:
            zeros = x_a.new_zeros(x_a.shape[0], self.c_out, *x_a.shape[2:])
            return zeros, zeros
        mean, log_scale = self.prior(x_a).chunk(2, 1)  # (B, C_out, H, W) each
        return mean, log_scale

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self.factor(x)
        mean, log_scale = self._mean_log_scale(x_a)
        eps = (x_b - mean) * (-log_scale).exp()  # (B, C_out, H, W)
        return torch.cat([x_a, eps], 1), -per_example_sum(log_scale)

    def inverse(self, y: Tensor) -> Tensor:
        x_a, eps = self.factor(y)
        mean, log_scale = self._mean_log_scale(x_a)
        return torch.cat([x_a, mean + log_scale.exp() * eps], 1)


class LogitTransform(Bijection):
    """RealNVP's preprocessing (Dinh et al. 2017 section 4.1): ``y = logit(α + (1 − 2α) x)`` for x in [0, 1], so the
    flow models an unbounded variable; ``α`` keeps the logit away from ±∞ at the boundary pixels.

    ``log |det ∂y/∂x| = Σ [log(1 − 2α) − log p − log(1 − p)]`` with ``p = α + (1 − 2α) x``;
    inverse ``x = (σ(y) − α) / (1 − 2α)``, which lies in the open box (−α/(1−2α), 1 + α/(1−2α)), a little wider
    than [0, 1].
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x  # (B, C, H, W) in (0, 1) for x in [0, 1]
        # A sample whose latent lies far out (|y| > ~17) comes back with σ(y) rounded to 0 or 1 in float32; keep its
        # log-density finite (the explicit M-step of posterior regularization scores the model's own samples).
        tiny = torch.finfo(p.dtype).eps
        p = p.clamp(tiny, 1 - tiny)
        log_p, log_q = torch.log(p), torch.log1p(-p)  # log p, log(1 − p)
        y = log_p - log_q  # (B, C, H, W) logit(p)
        logdet = math.log(1 - 2 * self.alpha) - log_p - log_q  # (B, C, H, W)
        return y, per_example_sum(logdet)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
