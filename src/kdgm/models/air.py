"""Attend-Infer-Repeat (Eslami et al. 2016) and AIR-pPrior (Xu et al. 2019, "Multi-objects Generation with
Amortized Structural Regularization", section 3.1).

An image is explained by at most ``T`` objects. Object ``t`` has a presence bit ``z_pres_t``, a window
``z_where_t = (s, x, y)`` (convention of :mod:`kdgm.nn.spatial`: ``s`` = window side / image side, ``(x, y)`` the
window centre in normalised coordinates, x right, y down) and an appearance ``z_what_t``. The presence bits form a
prefix of ones (``u_n`` in the paper: once ``z_pres_t = 0`` every later bit is 0), so the object count is
``n = Σ_t z_pres_t``.

Generative model (Eq. 4), with ``z_pres_0 = 1`` and ``z^0 = 0``::

    p(x, z, n) = p(z_pres_{n+1}=0 | z^{≤n}) Π_{t≤n} p(z_pres_t=1 | z^{<t}) p(z^t | z^{<t}) p(x | Σ_t f_dec(z^t))

- ``prior="fixed"`` is AIR's prior: ``p(z_pres_t=1) = pres_prior`` at every step (a geometric prior on the count,
  truncated at ``T``), ``z_where ~ N(where_prior_loc, where_prior_scale)``, independent of earlier objects.
- ``prior="learned"`` is AIR-pPrior: an LSTM over the previous steps' ``(z_pres, z_where)`` gives
  ``p(z_pres_t | z^{<t})`` and ``p(z_where_t | z^{<t})``; the appearance stays ``z_what ~ N(0, I)`` because the
  paper models only the spatial dependency ("the dependency among the appearance of objects is ignored").

Inference model (Eq. 1 / 5): an LSTM over ``[image features, z_pres_{t-1}, z_where_{t-1}, z_what_{t-1}]`` gives
``q(z_pres_t | x, z^{<t})`` and ``q(z_where_t | x, z^{<t})``; ``q(z_what_t | x, z_where_t)`` comes from an MLP
encoder of the glimpse cut out at ``z_where_t``. Both priors share this guide.

Choices not fixed by the papers:

- the image enters the guide LSTM through 256 ReLU features computed once per forward pass (AIR feeds raw
  pixels; projecting the 2,500 pixels once is ~4x cheaper than an LSTM input matrix over them at every step),
  either one linear layer (``image_encoder="mlp"``) or two strided convolutions before it (``"conv"``);
- glimpses are 20 x 20 (a 20-pixel window at ``s = 0.4`` is read at its own resolution on 50 x 50 scenes);
- encoder ``400 -> 512 -> 256 -> 2·50`` and decoder ``50 -> 256 -> 512 -> 400`` ReLU MLPs (section 6: "a two-layer
  MLP with 512 and 256 units"), LSTMs with 256 units (section 6);
- the canvas is the sum of the present objects; with ``likelihood="bernoulli"`` it is clamped to
  ``[BERNOULLI_EPS, 1 - BERNOULLI_EPS]`` so that it is a probability and ``log p`` stays finite where no object
  covers an inked pixel; with ``likelihood="gaussian"`` (fixed ``sigma``) the sum is the mean, unclamped;
- the guide's window mean goes through ``sigmoid`` for ``s`` and ``tanh`` for ``(x, y)`` (windows of positive
  size centred on the image); the sample itself is Gaussian, so the KL to the Gaussian prior is analytic;
- fixed prior defaults: ``p(z_pres_t = 1) = 0.5`` (pyro's AIR default; Eslami et al. anneal it towards 1e-5),
  ``z_where ~ N((0.4, 0, 0), diag(0.1, 1, 1)²)`` (digit-sized windows anywhere in the image);
- the learned baseline for the score-function estimator is a small MLP on the detached guide LSTM state, its output
  scaled to nats by ``baseline_scale``; the running-mean baseline is the buffer ``reward_mean`` (one per step).

The steps are functions returning named state, as in pyro's ``examples/air/air.py`` (``prior_step`` /
``guide_step``): ``forward`` runs the guide and the prior along the same sampled trajectory, so the objective and
any structural regulariser read one set of per-step tensors. All images of a batch are processed together; the
only Python loop is over the ``T`` steps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.nn.mlp import mlp
from kdgm.nn.spatial import glimpse, write

LOG_2PI = math.log(2 * math.pi)
BERNOULLI_EPS = 1e-4  # canvas clamp for the Bernoulli likelihood: |d log p / d canvas| stays below 1e4
MIN_STD = 1e-4  # floor on every predicted standard deviation, so KLs and samples stay finite
PRIORS = ("fixed", "learned")
IMAGE_ENCODERS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")


class GuideState(NamedTuple):
    """The guide after one step (pyro AIR's ``guide_step`` state): LSTM memory, the latents it sampled and the
    conditionals they were drawn from. Step ``t`` reads step ``t-1``'s state.

    Attributes:
        h, c: (B, H) LSTM memory (``None`` before the first step: the zero state).
        z_pres: (B,) sampled presence, already multiplied by the previous step's (prefix of ones).
        z_where: (B, 3) sampled window ``(s, x, y)``.
        z_what: (B, D) sampled appearance.
        pres_logit: (B,) logit of ``q(z_pres_t = 1 | x, z^{<t})``, before masking.
        where_loc, where_scale: (B, 3) Normal parameters of ``q(z_where_t | x, z^{<t})``.
        what_loc, what_scale: (B, D) Normal parameters of ``q(z_what_t | x, z_where_t)``.
        baseline: (B,) the learned baseline's prediction of the centred reward for ``z_pres_t``.
    """

    h: Tensor | None
    c: Tensor | None
    z_pres: Tensor
    z_where: Tensor
    z_what: Tensor
    pres_logit: Tensor
    where_loc: Tensor
    where_scale: Tensor
    what_loc: Tensor
    what_scale: Tensor
    baseline: Tensor


class PriorState(NamedTuple):
    """The prior at one step (pyro AIR's ``prior_step``): ``p(z_pres_t | z^{<t})`` and ``p(z_where_t | z^{<t})``.

    Attributes:
        h, c: (B, H) prior LSTM memory (``prior="learned"``); ``None`` for the fixed prior.
        pres_logit: (B,) logit of ``p(z_pres_t = 1 | z^{<t})``.
        where_loc, where_scale: (B, 3) Normal parameters of ``p(z_where_t | z^{<t})``.
    """

    h: Tensor | None
    c: Tensor | None
    pres_logit: Tensor
    where_loc: Tensor
    where_scale: Tensor


class AIROutput(NamedTuple):
    """Named quantities of one forward pass (one posterior sample per image), per step ``t`` of ``T``.

    Attributes:
        z_pres: (T, B) sampled presence in {0, 1}, a prefix of ones per image.
        pres_prob: (T, B) ``q(z_pres_t = 1 | x, z^{<t})`` with every earlier object present: the conditional the
            guide sampled from while ``z_pres_{t-1} = 1``, and after an earlier 0 the one it would use had that
            object been present (so ``Π_{t<n} p_t (1 − p_n)`` estimates ``q(n | x)`` for every ``n``).
        z_where: (T, B, 3) sampled windows ``(s, x, y)``.
        z_what: (T, B, D) sampled appearances.
        where_loc, where_scale: (T, B, 3) parameters of ``q(z_where_t | x, z^{<t})``.
        log_q_pres: (T, B) ``log q(z_pres_t | x, z^{<t})`` of the sample; 0 where an earlier 0 fixed it.
        kl_pres: (T, B) ``KL(q(z_pres_t) ‖ p(z_pres_t))`` of the Bernoulli conditionals, times ``z_pres_{t-1}``.
        kl_where: (T, B) analytic ``KL(q(z_where_t) ‖ p(z_where_t))``, times ``z_pres_t``.
        kl_what: (T, B) analytic ``KL(q(z_what_t) ‖ N(0, I))``, times ``z_pres_t``.
        prior_pres_prob: (T, B) ``p(z_pres_t = 1 | z^{<t})`` along the sampled trajectory.
        log_lik: (B,) ``log p(x | z)``.
        canvas: (B, 1, S, S) reconstruction mean (pixel probabilities for the Bernoulli likelihood).
        objects: (T, B, 1, G, G) decoded object glimpses (before masking by ``z_pres``).
        baseline: (T, B) the learned baseline's predictions (from detached guide states).
    """

    z_pres: Tensor
    pres_prob: Tensor
    z_where: Tensor
    z_what: Tensor
    where_loc: Tensor
    where_scale: Tensor
    log_q_pres: Tensor
    kl_pres: Tensor
    kl_where: Tensor
    kl_what: Tensor
    prior_pres_prob: Tensor
    log_lik: Tensor
    canvas: Tensor
    objects: Tensor
    baseline: Tensor

    @property
    def count(self) -> Tensor:
        """(B,) long number of present objects."""
        return self.z_pres.sum(0).long()

    @property
    def kl(self) -> Tensor:
        """(B,) total KL(q(z, n | x) ‖ p(z, n)), summed over steps (z_pres part analytic per step)."""
        return (self.kl_pres + self.kl_where + self.kl_what).sum(0)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _normal_kl(q_loc: Tensor, q_scale: Tensor, p_loc: Tensor, p_scale: Tensor) -> Tensor:
    """Elementwise KL(N(q_loc, q_scale²) ‖ N(p_loc, p_scale²))."""
    ratio = (q_scale / p_scale).pow(2)
    return 0.5 * (ratio + ((q_loc - p_loc) / p_scale).pow(2) - 1.0 - ratio.log())


def _bernoulli_kl(q_logit: Tensor, p_logit: Tensor) -> Tensor:
    """Elementwise KL(Bern(σ(q_logit)) ‖ Bern(σ(p_logit))), from logits so that certain bits stay finite."""
    q = torch.sigmoid(q_logit)
    return q * (F.logsigmoid(q_logit) - F.logsigmoid(p_logit)) + (1 - q) * (
        F.logsigmoid(-q_logit) - F.logsigmoid(-p_logit)
    )


def _where_params(raw: Tensor) -> tuple[Tensor, Tensor]:
    """(.., 6) head outputs -> window mean (sigmoid scale, tanh centre) and softplus standard deviation."""
    loc = torch.cat([torch.sigmoid(raw[..., :1]), torch.tanh(raw[..., 1:3])], dim=-1)  # (.., 3)
    scale = F.softplus(raw[..., 3:6]) + MIN_STD  # (.., 3)
    return loc, scale


def _where_raw(loc: tuple[float, float, float], scale: tuple[float, float, float]) -> list[float]:
    """Head outputs that :func:`_where_params` maps to ``loc`` and ``scale`` (for bias initialisation)."""
    s = min(max(loc[0], 1e-3), 1 - 1e-3)
    return [math.log(s / (1 - s)), math.atanh(loc[1]), math.atanh(loc[2])] + [
        _inverse_softplus(v - MIN_STD) for v in scale
    ]


def _image_encoder(kind: str, size: int, width: int) -> nn.Module:
    """(B, S*S) flattened images -> (B, width) ReLU features for the guide LSTM."""
    if kind == "mlp":
        return mlp((size * size, width), nn.ReLU, final_activation=True)
    convolved = ((size - 5) // 2 + 1 - 5) // 2 + 1  # side after two 5x5 convolutions of stride 2
    return nn.Sequential(
        nn.Unflatten(1, (1, size, size)),  # (B, 1, S, S)
        nn.Conv2d(1, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 5, stride=2), nn.ReLU(),  # (B, 32, C, C)
        nn.Flatten(), nn.Linear(32 * convolved * convolved, width), nn.ReLU(),  # (B, width)
    )


class _StepLSTM(nn.Module):
    """An LSTM cell whose input is split into a part fixed over the steps and a part that changes every step.

    ``gates = base + W_step · step_input + W_hh · h``, where ``base`` (the projection of the fixed part, bias
    included) is computed once per sequence with :meth:`base`. For AIR's guide the fixed part is the image
    features, so projecting them once instead of at every step saves about a third of the LSTM's work; the
    recurrent product is skipped at the first step, where ``h = 0``.
    """

    def __init__(self, fixed_dim: int, step_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.fixed = nn.Linear(fixed_dim, 4 * hidden) if fixed_dim else None
        self.bias = None if fixed_dim else nn.Parameter(torch.zeros(4 * hidden))
        self.step = nn.Linear(step_dim, 4 * hidden, bias=False)
        self.recurrent = nn.Linear(hidden, 4 * hidden, bias=False)

    def base(self, fixed: Tensor | None, batch: int) -> Tensor:
        """(B, 4H) gate contribution of the fixed input (or of the bias alone when there is none)."""
        if self.fixed is None:
            return self.bias.expand(batch, -1)
        return self.fixed(fixed)

    def forward(self, base: Tensor, step_input: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """New ``(h, c)``, each (B, H); ``state=None`` is the zero state."""
        gates = base + self.step(step_input)  # (B, 4H)
        if state is not None:
            gates = gates + self.recurrent(state[0])
        i, f, g, o = gates.chunk(4, dim=-1)  # (B, H) each
        c = torch.sigmoid(i) * torch.tanh(g)
        if state is not None:
            c = c + torch.sigmoid(f) * state[1]
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class AIR(nn.Module):
    """Attend-Infer-Repeat with a fixed (AIR) or learned LSTM (AIR-pPrior, Xu et al. 2019 Eq. 4) prior.

    Args:
        image_size: side ``S`` of the square single-channel images (50 for the paper's scenes).
        max_steps: ``T``, the largest number of objects (3 or 4 in the paper's settings).
        z_what_dim: appearance latent size ``D``.
        glimpse_size: side ``G`` of the attention glimpses and of the decoded objects.
        hidden: LSTM units of the guide and of the learned prior (section 6: 256).
        embed_dim: width of the image features the guide LSTM reads.
        encoder_hidden: glimpse encoder widths (section 6: 512 and 256).
        decoder_hidden: object decoder widths (the mirror: 256 and 512).
        baseline_hidden: width of the learned baseline's hidden layer.
        baseline_scale: nats per unit of the baseline network's output. Rewards vary by hundreds of nats between
            images; an output layer with Adam moves by about the learning rate per step, so without this factor the
            baseline would need ~10^5 steps to reach the scale of what it predicts.
        prior: ``"fixed"`` (AIR) or ``"learned"`` (AIR-pPrior).
        likelihood: ``"bernoulli"`` (soft targets in [0, 1]) or ``"gaussian"`` with standard deviation ``sigma``.
        sigma: pixel standard deviation of the Gaussian likelihood.
        pres_prior: fixed prior ``p(z_pres_t = 1)``; for ``prior="learned"`` the prior's initial value.
        where_prior_loc: mean of the fixed ``z_where`` prior ``(s, x, y)`` (learned prior: its initial value).
        where_prior_scale: standard deviation of the fixed ``z_where`` prior (learned prior: its initial value).
        fixed_count: every image has exactly ``max_steps`` objects: ``z_pres = 1`` at every step, no presence
            latents (Xu et al. 2019 section 6.2: "we simply set both the generative and inference steps to 3").
        image_encoder: how the guide LSTM sees the image: ``"mlp"`` (AIR's choice, one ReLU layer over the raw
            pixels) or ``"conv"`` (two strided 5x5 convolutions, then that layer): translation-equivariant
            features, for about 5 ms more per training step at batch 64 on 2 CPU cores (``bench/air_step.py``:
            0.056 vs 0.051 s for AIR-pPrior). With ``decoder_bias=-2`` and cosine decay it raised AIR-ASR's mIoU
            on Multi-MNIST 1-or-3 from 0.45 to 0.53 (one seed, 2,500 steps); its own share is not measured.
        decoder_bias: initial bias of the decoder's output logits; negative values start objects transparent
            (pyro's AIR example uses -2), so that early, unplaced windows do not paint grey squares.
    """

    def __init__(
        self,
        image_size: int = 50,
        max_steps: int = 3,
        z_what_dim: int = 50,
        glimpse_size: int = 20,
        hidden: int = 256,
        embed_dim: int = 256,
        encoder_hidden: tuple[int, ...] = (512, 256),
        decoder_hidden: tuple[int, ...] = (256, 512),
        baseline_hidden: int = 64,
        baseline_scale: float = 100.0,
        prior: str = "fixed",
        likelihood: str = "bernoulli",
        sigma: float = 0.3,
        pres_prior: float = 0.5,
        where_prior_loc: tuple[float, float, float] = (0.4, 0.0, 0.0),
        where_prior_scale: tuple[float, float, float] = (0.1, 1.0, 1.0),
        fixed_count: bool = False,
        image_encoder: str = "mlp",
        decoder_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown AIR prior {prior!r}; use one of {', '.join(PRIORS)}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown AIR likelihood {likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        if image_encoder not in IMAGE_ENCODERS:
            raise ValueError(f"unknown image_encoder {image_encoder!r}; use one of {', '.join(IMAGE_ENCODERS)}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if not 0.0 < pres_prior < 1.0:
            raise ValueError(f"pres_prior must lie in (0, 1), got {pres_prior}")
        if min(where_prior_scale) <= MIN_STD or not 0.0 < where_prior_loc[0] < 1.0:
            raise ValueError("where_prior_scale must be positive and where_prior_loc[0] (the scale s) in (0, 1)")
        if abs(where_prior_loc[1]) >= 1 or abs(where_prior_loc[2]) >= 1:
            raise ValueError(f"where_prior_loc centre must lie inside (-1, 1), got {where_prior_loc[1:]}")
        self.image_size = image_size
        self.max_steps = max_steps
        self.z_what_dim = z_what_dim
        self.glimpse_size = glimpse_size
        self.hidden = hidden
        self.prior = prior
        self.likelihood = likelihood
        self.sigma = sigma
        self.baseline_scale = baseline_scale
        self.fixed_count = fixed_count

        # guide: image features once, an LSTM over the steps, a head for z_pres and z_where, a glimpse encoder
        self.embed = _image_encoder(image_encoder, image_size, embed_dim)
        self.guide_rnn = _StepLSTM(embed_dim, 1 + 3 + z_what_dim, hidden)
        self.guide_head = nn.Linear(hidden, 1 + 6)
        self.encoder = mlp((glimpse_size * glimpse_size, *encoder_hidden, 2 * z_what_dim), nn.ReLU)
        self.decoder = mlp((z_what_dim, *decoder_hidden, glimpse_size * glimpse_size), nn.ReLU)
        self.baseline_net = mlp((hidden, baseline_hidden, 1), nn.ReLU)
        with torch.no_grad():
            self.decoder[-1].bias.fill_(decoder_bias)
            # windows start at the prior's mean scale and at the image centre, with moderate spread
            self.guide_head.bias[1:] = torch.tensor(_where_raw(where_prior_loc, (0.1, 0.2, 0.2)))

        pres_logit = math.log(pres_prior / (1 - pres_prior))
        where_raw = _where_raw(where_prior_loc, where_prior_scale)
        if prior == "learned":
            self.prior_rnn = _StepLSTM(0, 1 + 3, hidden)
            self.prior_head = nn.Linear(hidden, 1 + 6)
            with torch.no_grad():
                # start at the fixed prior: small weights, biases at its parameters (the weights stay non-zero so
                # that gradients reach the prior LSTM from the first step)
                self.prior_head.weight.mul_(0.1)
                self.prior_head.bias.copy_(torch.tensor([pres_logit, *where_raw]))
        self.register_buffer("prior_pres_logit", torch.tensor(pres_logit))
        self.register_buffer("prior_where_loc", torch.tensor(where_prior_loc, dtype=torch.float32))
        self.register_buffer("prior_where_scale", torch.tensor(where_prior_scale, dtype=torch.float32))
        # running mean of the score-function reward per step, a baseline kept with the model so checkpoints carry
        # it; updated by kdgm.objectives.air.AIRELBO without gradients
        self.register_buffer("reward_mean", torch.zeros(max_steps))
        self.register_buffer("reward_updates", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------------------------------------------- steps

    def initial_guide_state(self, x: Tensor) -> GuideState:
        """The state before step 1: zero memory, ``z_pres_0 = 1``, ``z^0 = 0``."""
        b = x.shape[0]
        zeros = x.new_zeros
        return GuideState(
            h=None, c=None, z_pres=x.new_ones(b), z_where=zeros(b, 3),
            z_what=zeros(b, self.z_what_dim), pres_logit=zeros(b), where_loc=zeros(b, 3), where_scale=zeros(b, 3),
            what_loc=zeros(b, self.z_what_dim), what_scale=zeros(b, self.z_what_dim), baseline=zeros(b),
        )

    def guide_step(self, x: Tensor, image_gates: Tensor, prev: GuideState) -> GuideState:
        """One step of the inference model (Eq. 5): sample ``z_pres_t``, ``z_where_t``, ``z_what_t``.

        Args:
            x: (B, 1, S, S) images (the glimpse is cut from them).
            image_gates: (B, 4H) the guide LSTM's gate input from the image features, shared by all steps
                (``self.guide_rnn.base(self.embed(x.flatten(1)))``).
            prev: the state after step ``t-1``.
        """
        # The LSTM reads step t-1 as present, whatever was sampled: at every step the ELBO uses (z_pres_{<t} all
        # 1) the input is the same, and after the first 0 the conditional stays q(z_pres_t | x, z^{<t}, earlier
        # objects present), the one q(n | x) = Π_{t<n} p_t (1 − p_n) needs for counts above the sampled one.
        # Masking here (feeding the absent object as zeros) made p_t of those counts a conditional that the guide
        # never uses and the ELBO never trains (tests/test_structural.py enumerates q(n | x) to check).
        inputs = torch.cat([torch.ones_like(prev.z_pres).unsqueeze(-1), prev.z_where, prev.z_what], dim=-1)
        state = None if prev.h is None else (prev.h, prev.c)
        h, c = self.guide_rnn(image_gates, inputs, state)  # (B, H) each
        raw = self.guide_head(h)  # (B, 7)
        pres_logit = raw[:, 0]  # (B,)
        where_loc, where_scale = _where_params(raw[:, 1:])  # (B, 3) each
        # z_pres is not reparameterisable: a plain sample, learned through the score function in the objective
        z_pres = torch.bernoulli(torch.sigmoid(pres_logit.detach())) * prev.z_pres  # (B,)
        if self.fixed_count:
            z_pres = prev.z_pres  # always present: the count is known
        z_where = where_loc + where_scale * torch.randn_like(where_loc)  # (B, 3)
        patch = glimpse(x, z_where, self.glimpse_size)  # (B, 1, G, G)
        what_loc, what_raw = self.encoder(patch.flatten(1)).chunk(2, dim=-1)  # (B, D) each
        what_scale = F.softplus(what_raw) + MIN_STD
        z_what = what_loc + what_scale * torch.randn_like(what_loc)  # (B, D)
        # (B,) from the detached state: the baseline must not shape the guide
        baseline = self.baseline_scale * self.baseline_net(h.detach()).squeeze(-1)
        return GuideState(h, c, z_pres, z_where, z_what, pres_logit, where_loc, where_scale, what_loc, what_scale,
                          baseline)

    def prior_step(self, prev: PriorState | None, z_pres: Tensor, z_where: Tensor) -> PriorState:
        """One step of the generative model's prior: ``p(z_pres_t | z^{<t})`` and ``p(z_where_t | z^{<t})``.

        Args:
            prev: the prior state of step ``t-1``, or ``None`` at ``t = 1``.
            z_pres: (B,) ``z_pres_{t-1}`` (ones at ``t = 1``).
            z_where: (B, 3) ``z_where_{t-1}`` (zeros at ``t = 1``).
        """
        b = z_pres.shape[0]
        if self.prior == "fixed":
            return PriorState(
                None, None, self.prior_pres_logit.expand(b), self.prior_where_loc.expand(b, 3),
                self.prior_where_scale.expand(b, 3),
            )
        keep = z_pres.unsqueeze(-1)  # (B, 1)
        inputs = torch.cat([keep, z_where * keep], dim=-1)  # (B, 4) the spatial part of z^{t-1} only
        state = None if prev is None else (prev.h, prev.c)
        h, c = self.prior_rnn(self.prior_rnn.base(None, b), inputs, state)  # (B, H) each
        raw = self.prior_head(h)  # (B, 7)
        where_loc, where_scale = _where_params(raw[:, 1:])
        return PriorState(h, c, raw[:, 0], where_loc, where_scale)

    # ------------------------------------------------------------------------------------------ rendering, scores

    def render(self, z_pres: Tensor, z_where: Tensor, z_what: Tensor) -> tuple[Tensor, Tensor]:
        """Decode every step's object and compose the canvas.

        Args:
            z_pres: (T, B) presence; z_where: (T, B, 3); z_what: (T, B, D).

        Returns:
            objects (T, B, 1, G, G) object glimpses in [0, 1] and the canvas (B, 1, S, S) mean of ``p(x | z)``.
        """
        t, b = z_pres.shape
        g, s = self.glimpse_size, self.image_size
        objects = torch.sigmoid(self.decoder(z_what.reshape(t * b, -1))).view(t * b, 1, g, g)  # (T*B, 1, G, G)
        placed = write(objects, z_where.reshape(t * b, 3), s).view(t, b, 1, s, s)  # (T, B, 1, S, S)
        canvas = (placed * z_pres.view(t, b, 1, 1, 1)).sum(0)  # (B, 1, S, S)
        if self.likelihood == "bernoulli":
            canvas = canvas.clamp(BERNOULLI_EPS, 1 - BERNOULLI_EPS)
        return objects.view(t, b, 1, g, g), canvas

    def log_likelihood(self, x: Tensor, canvas: Tensor) -> Tensor:
        """(B,) ``log p(x | z)`` for images (B, 1, S, S) and the canvas mean."""
        if self.likelihood == "bernoulli":
            # soft targets: the cross-entropy of grey pixels, as in AIR's Bernoulli model of Multi-MNIST
            log_p = x * canvas.log() + (1 - x) * (1 - canvas).log()  # (B, 1, S, S)
        else:
            log_p = -0.5 * ((x - canvas) / self.sigma).pow(2) - math.log(self.sigma) - 0.5 * LOG_2PI
        return log_p.flatten(1).sum(-1)

    # ----------------------------------------------------------------------------------------------- interfaces

    def forward(self, x: Tensor) -> AIROutput:
        """Run the guide for ``T`` steps, score every step under the prior along the same trajectory, decode."""
        image_gates = self.guide_rnn.base(self.embed(x.flatten(1)), x.shape[0])  # (B, 4H) once for all steps
        guide = self.initial_guide_state(x)
        prior: PriorState | None = None
        guides, priors = [], []
        for _ in range(self.max_steps):
            prior = self.prior_step(prior, guide.z_pres, guide.z_where)  # p(z_t | z^{<t}) reads the guide's samples
            guide = self.guide_step(x, image_gates, guide)
            guides.append(guide)
            priors.append(prior)
        stack = lambda name, states: torch.stack([getattr(s, name) for s in states])  # noqa: E731
        z_pres = stack("z_pres", guides)  # (T, B)
        z_where, z_what = stack("z_where", guides), stack("z_what", guides)  # (T, B, 3), (T, B, D)
        pres_logit, where_loc, where_scale = (stack(n, guides) for n in ("pres_logit", "where_loc", "where_scale"))
        prior_logit, prior_loc, prior_scale = (stack(n, priors) for n in ("pres_logit", "where_loc", "where_scale"))
        what_loc, what_scale = stack("what_loc", guides), stack("what_scale", guides)  # (T, B, D)

        # z_pres_t is random only while z_pres_{t-1} = 1; afterwards it is fixed at 0 with probability one
        prev_pres = torch.cat([z_pres.new_ones(1, z_pres.shape[1]), z_pres[:-1]])  # (T, B)
        random_pres = prev_pres * (0.0 if self.fixed_count else 1.0)  # a known count has no presence latents
        log_q_pres = -F.binary_cross_entropy_with_logits(pres_logit, z_pres, reduction="none") * random_pres
        kl_pres = _bernoulli_kl(pres_logit, prior_logit) * random_pres  # (T, B)
        kl_where = _normal_kl(where_loc, where_scale, prior_loc, prior_scale).sum(-1) * z_pres  # (T, B)
        kl_what = _normal_kl(what_loc, what_scale, torch.zeros_like(what_loc), torch.ones_like(what_scale))
        kl_what = kl_what.sum(-1) * z_pres  # (T, B)

        objects, canvas = self.render(z_pres, z_where, z_what)
        return AIROutput(
            z_pres=z_pres, pres_prob=torch.sigmoid(pres_logit), z_where=z_where, z_what=z_what,
            where_loc=where_loc, where_scale=where_scale, log_q_pres=log_q_pres, kl_pres=kl_pres,
            kl_where=kl_where, kl_what=kl_what, prior_pres_prob=torch.sigmoid(prior_logit),
            log_lik=self.log_likelihood(x, canvas), canvas=canvas, objects=objects,
            baseline=stack("baseline", guides),
        )

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Draw scenes from the generative model.

        Noise is drawn on the CPU (where ``generator`` lives) and moved to the model's device.

        Returns:
            images (n, 1, S, S) canvas means, z_where (T, n, 3), z_pres (T, n).
        """
        device = self.reward_mean.device
        draw = lambda *shape: torch.randn(*shape, generator=generator).to(device)  # noqa: E731
        z_pres, z_where = torch.ones(n, device=device), torch.zeros(n, 3, device=device)
        prior: PriorState | None = None
        pres, wheres = [], []
        for _ in range(self.max_steps):
            prior = self.prior_step(prior, z_pres, z_where)
            u = torch.rand(n, generator=generator).to(device)
            if not self.fixed_count:
                z_pres = (u < torch.sigmoid(prior.pres_logit)).float() * z_pres  # (n,) stays 0 after the first 0
            z_where = prior.where_loc + prior.where_scale * draw(n, 3)  # (n, 3)
            pres.append(z_pres)
            wheres.append(z_where)
        z_pres_all, z_where_all = torch.stack(pres), torch.stack(wheres)  # (T, n), (T, n, 3)
        z_what = draw(self.max_steps, n, self.z_what_dim)  # (T, n, D) appearance prior N(0, I)
        _, images = self.render(z_pres_all, z_where_all, z_what)
        return images, z_where_all, z_pres_all

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """(B, 1, S, S) canvas mean for one posterior sample of each image."""
        return self(x).canvas
