"""Sigmoid belief networks (Neal 1992) with a recognition network, trained by wake-sleep (Hinton et al. 1995).

Lecture notes ``002_…txt``, sections 1 and 3. The generative model is a directed net of binary units, top-down::

    p(h_L)           = Π_j σ(b_j)^{h_Lj} (1 − σ(b_j))^{1 − h_Lj}          (factorised prior, learned logits b)
    p(h_l | h_{l+1}) = Π_i Bernoulli(h_li; σ(W_l h_{l+1} + c_l))          (lecture: p(h_in = 1 | ·) = σ(w_iᵀ h + c_i))
    p(x | h_1)       = Π_k Bernoulli(x_k;  σ(W_0 h_1 + c_0))              (lecture: p(v_kn = 1 | ·) = σ(w_kᵀ h + c_k))

and the recognition network q(h | x) = q(h_1 | x) Π_l q(h_{l+1} | h_l) is the same kind of net, bottom-up, with its
own weights (Hinton et al. 1995's R weights; the generative ones are G). Its samples are discrete: no
reparameterisation exists, which is why the lecture trains such models by wake-sleep rather than as a VAE
(:mod:`kdgm.objectives.wake_sleep` holds the objectives).

The model returns named quantities, never a loss, with the same field names as :class:`kdgm.models.vae.VAEOutput`
(``log_lik``, ``log_prior``, ``log_q``, ``kl``, ``logits`` and the ``log_weight`` property), so the VAE's
metrics (:func:`kdgm.metrics.likelihood.likelihood_metrics`) and the IWAE bound apply unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SBNOutput(NamedTuple):
    """Named quantities of one pass with ``k`` latent samples per input (shapes for ``forward(x, k)``; latents
    given to ``forward(x, hs=...)`` set the leading dimensions instead of (k, B)).

    Attributes:
        hs: the binary latents, bottom first: ``hs[0]`` is h_1 (k, B, H_1), ``hs[-1]`` the top layer.
        log_lik: (k, B) log p(x | h_1).
        log_prior: (k, B) log p(h) = log p(h_L) + Σ_{l<L} log p(h_l | h_{l+1}).
        log_q: (k, B) log q(h | x), differentiable in the recognition weights.
        kl: (B,) KL(q(h|x) ‖ p(h)): in closed form with one latent layer, else the mean of ``log_q − log_prior``
            over the k samples (an unbiased estimate).
        logits: (k, B, C, H, W) logits of p(x | h_1).
    """

    hs: tuple[Tensor, ...]
    log_lik: Tensor
    log_prior: Tensor
    log_q: Tensor
    kl: Tensor
    logits: Tensor

    @property
    def log_joint(self) -> Tensor:
        """(k, B) log p(x, h)."""
        return self.log_lik + self.log_prior

    @property
    def log_weight(self) -> Tensor:
        """(k, B) importance log-weights log p(x, h) − log q(h | x)."""
        return self.log_lik + self.log_prior - self.log_q


def bernoulli_log_prob(logits: Tensor, value: Tensor) -> Tensor:
    """(...) Σ over the last dimension of log Bernoulli(value; σ(logits)) = v·l − softplus(l); broadcasts."""
    return (value * logits - F.softplus(logits)).sum(-1)


def _bernoulli(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Binary samples of Bernoulli(σ(logits)), outside the graph. A ``generator`` (on the CPU) draws the uniforms on
    the CPU, so that the same seed gives the same samples on every device."""
    probs = torch.sigmoid(logits.detach())
    if generator is None:
        return torch.bernoulli(probs)
    u = torch.rand(probs.shape, generator=generator, dtype=probs.dtype).to(probs.device)
    return (u < probs).to(probs.dtype)


class SBNGenerator(nn.Module):
    """The generative weights G: the prior logits of the top layer and one sigmoid-linear conditional per layer.

    ``layers[l]`` maps layer l+1 to the logits of layer l, with layer 0 the visible x: ``layers[0]`` is
    p(x | h_1), ``layers[1]`` is p(h_1 | h_2), and so on.
    """

    def __init__(self, x_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = (x_dim, *hidden)
        self.prior_logits = nn.Parameter(torch.zeros(hidden[-1]))
        self.layers = nn.ModuleList(nn.Linear(sizes[l + 1], sizes[l]) for l in range(len(hidden)))


class SBNRecognizer(nn.Module):
    """The recognition weights R: ``layers[l]`` maps layer l to the logits of layer l+1 (``layers[0]`` is
    q(h_1 | x), ``layers[1]`` is q(h_2 | h_1))."""

    def __init__(self, x_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = (x_dim, *hidden)
        self.layers = nn.ModuleList(nn.Linear(sizes[l], sizes[l + 1]) for l in range(len(hidden)))


class SigmoidBeliefNet(nn.Module):
    """A sigmoid belief network p(x, h) with a factorised-Bernoulli recognition network q(h | x).

    Args:
        image_shape: (C, H, W) of the binary data.
        hidden: latent layer widths from the bottom (h_1, next to x) up; ``(200,)`` and ``(200, 200)`` are the
            usual MNIST models (Bornschein & Bengio 2015). Any depth ≥ 1 works.

    Attributes:
        generator: :class:`SBNGenerator`, the parameters the wake phase trains.
        recognizer: :class:`SBNRecognizer`, the parameters the sleep (and wake-q) phase trains.
    """

    def __init__(self, image_shape: tuple[int, ...] = (1, 28, 28), hidden: Sequence[int] = (200, 200)) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"a sigmoid belief net needs at least one latent layer of positive width, got {hidden}")
        self.image_shape = tuple(image_shape)
        self.hidden = hidden
        self.x_dim = math.prod(self.image_shape)
        self.generator = SBNGenerator(self.x_dim, hidden)
        self.recognizer = SBNRecognizer(self.x_dim, hidden)

    # ----------------------------------------------------------------------------------------------- densities

    def _flat(self, x: Tensor) -> Tensor:
        """(..., D) from (..., C, H, W)."""
        return x.flatten(x.dim() - len(self.image_shape))

    def _generative(self, x: Tensor, hs: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """log p(x | h_1), log p(h) and the logits of p(x | h_1) (..., D); x and the latents broadcast."""
        layers = self.generator.layers
        log_prior = bernoulli_log_prob(self.generator.prior_logits, hs[-1])  # (...)
        for l in range(1, len(hs)):
            log_prior = log_prior + bernoulli_log_prob(layers[l](hs[l]), hs[l - 1])  # (...) log p(h_l | h_{l+1})
        logits = layers[0](hs[0])  # (..., D)
        log_lik = bernoulli_log_prob(logits, self._flat(x))  # (...)
        return log_lik, log_prior, logits

    def log_joint(self, x: Tensor, hs: Sequence[Tensor]) -> Tensor:
        """log p(x, h): x (B, C, H, W) and latents (B, H_l) give (B,); latents (k, B, H_l) give (k, B)."""
        self._check(hs)
        log_lik, log_prior, _ = self._generative(x, hs)
        return log_lik + log_prior

    def log_q(self, x: Tensor, hs: Sequence[Tensor]) -> Tensor:
        """log q(h | x) of given latents, shaped as :meth:`log_joint`; differentiable in the recognition weights."""
        self._check(hs)
        below = self._flat(x)  # (B, D)
        total = torch.zeros((), device=below.device, dtype=below.dtype)
        for layer, h in zip(self.recognizer.layers, hs):
            total = total + bernoulli_log_prob(layer(below), h)  # (...) log q(h_l | h_{l-1})
            below = h
        return total

    def _check(self, hs: Sequence[Tensor]) -> None:
        if len(hs) != len(self.hidden):
            raise ValueError(f"this net has {len(self.hidden)} latent layers, got {len(hs)} latent tensors")

    # ------------------------------------------------------------------------------------------------- sampling

    def _recognise(self, x: Tensor, k: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """Latents (each (k, B, H_l)), log q (k, B) and the logits of q(h_1 | x) (B, H_1)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        first = self.recognizer.layers[0](self._flat(x))  # (B, H_1)
        logits = first.expand(k, *first.shape)  # (k, B, H_1)
        hs: list[Tensor] = []
        log_q = torch.zeros((), device=first.device, dtype=first.dtype)
        for l, layer in enumerate(self.recognizer.layers):
            if l > 0:
                logits = layer(hs[-1])  # (k, B, H_l)
            h = _bernoulli(logits)  # (k, B, H_l), no gradient through the sample
            log_q = log_q + bernoulli_log_prob(logits, h)  # (k, B)
            hs.append(h)
        return tuple(hs), log_q, first

    def recognise(self, x: Tensor, k: int = 1) -> tuple[tuple[Tensor, ...], Tensor]:
        """Draw ``k`` samples h ~ q(h | x) per input (bottom-up, each layer from the one below).

        Returns:
            hs: binary latents, bottom first, each (k, B, H_l); discrete, so they carry no gradient.
            log_q: (k, B) log q(h | x), differentiable in the recognition weights.
        """
        hs, log_q, _ = self._recognise(x, k)
        return hs, log_q

    @torch.no_grad()
    def fantasy(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``n`` ancestral samples (x, h) ~ p(x, h), top-down: the sleep phase's "dreams" (Hinton et al. 1995).

        Returns:
            x: (n, C, H, W) binary images.
            hs: binary latents, bottom first, each (n, H_l).
        """
        layers = self.generator.layers
        top = self.generator.prior_logits.expand(n, self.hidden[-1])  # (n, H_L)
        hs = [_bernoulli(top, generator)]
        for l in range(len(self.hidden) - 1, 0, -1):
            hs.insert(0, _bernoulli(layers[l](hs[0]), generator))  # (n, H_l) ~ p(h_l | h_{l+1})
        x = _bernoulli(layers[0](hs[0]), generator)  # (n, D)
        return x.view(n, *self.image_shape), tuple(hs)

    @torch.no_grad()
    def sample(self, n: int, cond: None = None, *, generator: torch.Generator | None = None,
               mean: bool = False) -> Tensor:
        """(n, C, H, W) images from the generative model: binary samples x ~ p(x) by default; with ``mean=True``
        the Bernoulli means σ(W_0 h_1 + c_0) of p(x | h_1) at sampled latents (smoother pictures).

        Not differentiable (the latents are discrete): the SBN is an *explicit* model for posterior regularization
        (``log_prob`` and ``sample``). The SBN is unconditional: ``cond`` must be None.
        """
        if cond is not None:
            raise ValueError("the sigmoid belief net is unconditional; sample(n) takes no condition")
        x, hs = self.fantasy(n, generator=generator)
        if mean:
            return torch.sigmoid(self.generator.layers[0](hs[0])).view(n, *self.image_shape)
        return x

    # ---------------------------------------------------------------------------------------------- estimates

    def forward(self, x: Tensor, k: int = 1, hs: Sequence[Tensor] | None = None) -> SBNOutput:
        """Score ``k`` samples h ~ q(h | x) per input of x (B, C, H, W), or the given latents ``hs`` (e.g. a
        fantasy, each (k, B, H_l)) instead of sampling q. See :class:`SBNOutput` for the fields."""
        if hs is None:
            hs, log_q, first = self._recognise(x, k)
        else:
            hs = tuple(hs)
            log_q, first = self.log_q(x, hs), None
        log_lik, log_prior, logits = self._generative(x, hs)  # (k, B), (k, B), (k, B, D)
        if len(self.hidden) == 1:  # closed form: Σ_j KL(Bernoulli(σ(a_j)) ‖ Bernoulli(σ(b_j)))
            a = self.recognizer.layers[0](self._flat(x)) if first is None else first  # (B, H_1)
            b = self.generator.prior_logits  # (H_1,)
            q1 = torch.sigmoid(a)
            kl = (q1 * (F.logsigmoid(a) - F.logsigmoid(b))
                  + (1 - q1) * (F.logsigmoid(-a) - F.logsigmoid(-b))).sum(-1)  # (B,)
        else:
            kl = (log_q - log_prior).mean(0)  # (B,)
        logits = logits.unflatten(-1, self.image_shape)  # (k, B, C, H, W)
        return SBNOutput(tuple(hs), log_lik, log_prior, log_q, kl, logits)

    def log_prob(self, x: Tensor, cond: None = None, *, k: int = 10, chunk: int = 1000) -> Tensor:
        """(B,) the k-sample importance-sampled estimate of log p(x) with q as the proposal (Burda et al. 2016):
        ``log (1/k) Σ_i p(x, h_i) / q(h_i | x)``, ``h_i ~ q(h | x)``; a stochastic lower bound that tightens as k
        grows (k = 1000–5000 for a test NLL), drawn ``chunk`` samples at a time.

        Differentiable in the generative weights only (q is a proposal; its log-density is detached): the gradient
        is the reweighted wake-sleep update of p, ``Σ_i w̃_i ∇_θ log p(x, h_i)``, so ``log_prob`` also serves the
        explicit M-step of posterior regularization and :class:`kdgm.objectives.likelihood.MaximumLikelihood`.
        """
        if cond is not None:
            raise ValueError("the sigmoid belief net is unconditional; log_prob(x) takes no condition")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        parts = []
        for start in range(0, k, chunk):
            hs, log_q = self.recognise(x, min(chunk, k - start))  # each (k_chunk, B, H_l); (k_chunk, B)
            parts.append(self.log_joint(x, hs) - log_q.detach())  # (k_chunk, B)
        log_weight = torch.cat(parts)  # (k, B)
        return torch.logsumexp(log_weight, dim=0) - math.log(k)

    @torch.no_grad()
    def init_visible_bias(self, mean: Tensor, eps: float = 1e-3) -> None:
        """Set the biases of p(x | h_1) to the logits of the pixel means (C, H, W) of the training data, the usual
        start for binary-image models (the untrained net then already samples the marginals)."""
        p = mean.reshape(self.x_dim).clamp(eps, 1 - eps).to(self.generator.layers[0].bias)
        self.generator.layers[0].bias.copy_(torch.log(p) - torch.log1p(-p))
