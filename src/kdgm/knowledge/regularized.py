"""Posterior regularization with a fixed or learnable constraint, for any deep generative model.

Hu et al. (2018), "Deep Generative Models with Learnable Knowledge Constraints" (slides ``000_…txt``, "Posterior
Regularization for DGMs" to "Algorithm: PR with learnable constraint"; lecture ``001_…txt``, last part)::

    min_{θ, q}  KL(q(x) ‖ p_θ(x)) − α E_q[f_φ(x)]

    E-step   q_φ(x) ∝ p_θ(x) exp(α f_φ(x))                      (importance weights over samples of p_θ)
    φ-step   max_φ E_{x*~data}[log q_φ(x*)]                      (MaxEnt IRL: f_φ learned like a reward)
             ∇_φ = α (E_data[∇f_φ] − E_q[∇f_φ])
    M-step   explicit p_θ: min_θ −E_q[log p_θ(x)]                 (weighted likelihood of the samples)
             implicit p_θ: min_θ KL(p_θ ‖ q_φ) = −α E_{p_θ}[f_φ] + const   (a GAN generator maximises α f_φ)

Everything here is an objective ``(model, batch) -> LossOutput`` for a phase of :class:`kdgm.train.PhasedUpdater`:
the model phase runs an M-step objective, the φ phase :class:`kdgm.knowledge.TeacherLikelihood` (the one φ-step,
shared with learned rule confidences) or one of the paper's two comparison variants, :class:`SampleMaximisation`
("constraint updated in the M-step", Eq. 5) and :class:`BinaryDiscriminator` ("binary D"). No model is edited: the
model needs ``sample(n, cond)`` and, for the explicit M-step, ``log_prob(x, cond)``.

Rule distillation (:class:`kdgm.knowledge.RuleDistillation`) is the special case in which the outputs can be
enumerated and q is exact.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.knowledge.constraint import Constraint, check_scores
from kdgm.knowledge.sampled import effective_sample_size, log_normaliser, log_weights, rows_of, tile
from kdgm.objectives.base import LossOutput, Objective, batch_condition, batch_data


@dataclass
class Draw:
    """S samples of p_θ for each of B conditions (B = 1 for an unconditional model), S-major.

    Attributes:
        x: the samples, S·B rows (whatever ``model.sample`` returns).
        cond: the condition tiled to S·B rows (None for an unconditional model).
        S, B: samples per condition, conditions.
        valid: (S·B,) bool, False for samples the model returned with a non-finite value (a flow's inverse can
            overflow for a rare z), replaced by zeros in ``x``, and, after an explicit M-step, for samples without a
            finite log-density (see :meth:`ExplicitMStep._log_prob`); they get no weight in the explicit M-step.
            None: all valid (or samples that are not tensors).
    """

    x: Any
    cond: Any
    S: int
    B: int
    valid: Tensor | None = None


class PosteriorRegularization:
    """The knowledge of one PR method: a constraint f_φ, its strength α, and how to draw and read samples.

    One instance is shared by the phases of a method, so that the φ-step of a batch scores the same samples the
    M-step drew (sampling a sentence model is the expensive part of a step).

    Args:
        constraint: f_φ (fixed or learnable).
        alpha: α, the weight of the constraint in the PR objective.
        samples: S, samples of p_θ per condition (per batch for an unconditional model).
        data: reads the observed outputs x* from a batch (default :func:`batch_data`).
        condition: reads the condition from a batch (default :func:`batch_condition`).
        sample_kwargs: extra keyword arguments of ``model.sample`` (e.g. ``temperature``).
        monitors: yardsticks of a sample that are not the constraint, ``name -> fn(x, cond) -> (N,)`` (e.g. the
            overlap of a sentence's infill with the truth): the M-steps log each one's mean under p (``name_p``)
            and, the explicit one, under q (``name_q``). They say whether q prefers samples that are better by a
            measure f_φ was not trained on, which f on data and on samples cannot: a learned f that tells data from
            samples perfectly may still rank the samples at random. Read without gradient, never optimised.
    """

    def __init__(self, constraint: Constraint, alpha: float = 1.0, samples: int = 8,
                 data: Callable[[Any], Any] = batch_data, condition: Callable[[Any], Any] = batch_condition,
                 sample_kwargs: dict[str, Any] | None = None,
                 monitors: dict[str, Callable[[Any, Any], Tensor]] | None = None) -> None:
        if alpha <= 0 or samples < 1:
            raise ValueError(f"need alpha > 0 and samples >= 1, got alpha={alpha}, samples={samples}")
        self.constraint = constraint
        self.alpha = alpha
        self.samples = samples
        self.data = data
        self.condition = condition
        self.sample_kwargs = dict(sample_kwargs or {})
        self.monitors = dict(monitors or {})
        self._cache: tuple[int, Draw] | None = None

    def draw(self, model: nn.Module, batch, grad: bool = False) -> Draw:
        """S samples per condition of the batch; ``grad`` keeps the sampler's graph (reparameterised models)."""
        cond = self.condition(batch)
        B = 1 if cond is None else rows_of(cond)
        tiled = tile(cond, self.samples)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            if cond is None:
                x = model.sample(self.samples, **self.sample_kwargs)
            else:
                x = model.sample(self.samples * B, tiled, **self.sample_kwargs)
        valid = None
        if isinstance(x, Tensor) and x.is_floating_point() and not grad:
            valid = torch.isfinite(x).flatten(1).all(1)  # (S·B,)
            x = torch.where(valid.view(-1, *[1] * (x.dim() - 1)), x, torch.zeros_like(x))
        draw = Draw(x, tiled, self.samples, B, valid)
        if not grad:  # detached samples can be reused by the other phases of this batch
            self._cache = (id(batch), draw)
        return draw

    def draw_for(self, model: nn.Module, batch) -> Draw:
        """The samples this batch's model phase drew, or a fresh detached draw (the φ-step reuses samples)."""
        if self._cache is not None and self._cache[0] == id(batch):
            return self._cache[1]
        return self.draw(model, batch)

    def score(self, draw: Draw) -> Tensor:
        """(S, B) f_φ of the samples (differentiable in φ)."""
        f = check_scores(self.constraint(draw.x, draw.cond), draw.S * draw.B, type(self.constraint).__name__)
        return f.view(draw.S, draw.B)

    def score_data(self, batch) -> Tensor:
        """(B,) f_φ of the observed outputs x* under their own conditions."""
        cond = self.condition(batch)
        x = self.data(batch)
        return check_scores(self.constraint(x, cond), len(x), type(self.constraint).__name__)

    def diagnostics(self, f: Tensor, log_w: Tensor) -> dict[str, Tensor]:
        """Logged terms of an E-step: effective sample size (absolute and as a share of S), mean f of the samples
        under p and under q."""
        ess = effective_sample_size(log_w)  # (B,)
        return {"ess": ess.mean().detach(), "ess_share": (ess / f.shape[0]).mean().detach(),
                "f_p": f.mean().detach(), "f_q": (log_w.exp() * f).sum(0).mean().detach()}

    @torch.no_grad()
    def monitor_terms(self, draw: Draw, log_w: Tensor | None = None) -> dict[str, Tensor]:
        """Logged terms of the ``monitors``: each one's mean over the samples (under p) and, given the (S, B) log
        weights, its expectation under q."""
        terms = {}
        for name, monitor in self.monitors.items():
            m = monitor(draw.x, draw.cond).view(draw.S, draw.B)  # (S, B)
            m = m if m.is_floating_point() else m.float()
            terms[f"{name}_p"] = m.mean()
            if log_w is not None:
                terms[f"{name}_q"] = (log_w.exp() * m).sum(0).mean()
        return terms

    def data_log_likelihood(self, model: nn.Module, batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The data's log-likelihood under q, for the φ-step.

        Returns:
            (B,) ``log q_φ(x*) − log p_θ(x*) = α f_φ(x*) − log Ẑ_φ``, the data log-likelihood under q up to a term
            constant in φ, with Ẑ_φ estimated from the S samples of p_θ (self-normalised importance sampling); its
            gradient is the MaxEnt-IRL one, ``α (∇f_φ(x*) − E_q[∇f_φ])``.
            () mean of f² over data and samples (what a penalty on the scale of f reads).
            logged terms: the E-step diagnostics and the mean f of the data.
        """
        draw = self.draw_for(model, batch)
        f_samples = self.score(draw)  # (S, B_c)
        f_data = self.score_data(batch)  # (B,)
        log_z = log_normaliser(f_samples, self.alpha)  # (B_c,): one per condition, or one for all the data
        terms = self.diagnostics(f_samples.detach(), log_weights(f_samples.detach(), self.alpha))
        terms["f_data"] = f_data.mean().detach()
        squares = 0.5 * (f_data.pow(2).mean() + f_samples.pow(2).mean())
        return self.alpha * f_data - log_z, squares, terms


def _beside(base: LossOutput | None, weight: float, knowledge: Tensor, terms: dict[str, Tensor]) -> LossOutput:
    """``base + weight·knowledge`` (``weight·knowledge`` without a base), with both sides' terms."""
    if base is None:
        return LossOutput(weight * knowledge, terms)
    return LossOutput(base.total + weight * knowledge, {**base.terms, **terms}, base.outputs)


class ExplicitMStep:
    """M-step for a model with ``log_prob``: ``min_θ −Σ_s w_s log p_θ(x_s | c)``, the samples weighted by q.

    Args:
        pr: the E-step (constraint, α, samples).
        base: the model's ordinary objective on the data (maximum likelihood, an ELBO), kept at full weight beside
            the PR term: ``base + weight·PR``, the objective ``min_{θ,q} L(θ) + α L(θ, q)`` of the slide "Posterior
            Regularization" (001; its α is ``weight`` here, its λ the E-step's α). None: the PR term alone.
        weight: the weight of the PR term. Not distillation's convex ``(1 − π)·base + π·teacher``: at 0.5 that halves
            the data likelihood's step, and a row fine-tuned that way is compared with continued maximum likelihood
            at a different learning rate, not only a different method.
        center: use ``w_s − 1/S`` instead of ``w_s``. Unbiased, since ``E_p[∇ log p_θ] = 0``, and it only moves
            p_θ where q differs from p: uniform weights (a constraint that says nothing) give no gradient at all.
        units: (N,) units of each sample (a sentence's tokens) to put the PR term on the scale of a per-unit base
            objective: ``−E_q[log p_θ(x)] / E_q[units(x)]``. None: per sample. Without it a sentence-level PR term
            outweighs a per-token likelihood by the sentence length (measured on template-infill: every PR row
            doubled the infill perplexity of continued maximum likelihood).
        min_log_prob: samples whose log-density is below it get no weight, like non-finite ones (None: only
            non-finite log-densities are dropped). For a flow, whose float32 inverse loses a sample drawn far in the
            tail (the inverse logit rounds it onto the box's edge, and the forward pass then finds a latent of huge
            norm): flows-mnist's no-specks row met samples at −4.6e20 nats, data at about +3,000, and their
            gradient overflowed.
    """

    def __init__(self, pr: PosteriorRegularization, base: Objective | None = None, weight: float = 0.5,
                 center: bool = True, units: Callable[[Any], Tensor] | None = None,
                 min_log_prob: float | None = None) -> None:
        if not weight >= 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.pr, self.base, self.weight, self.center, self.units = pr, base, weight, center, units
        self.min_log_prob = min_log_prob

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        # the data first: a model that initialises itself from its first training batch (Glow's actnorm) must see
        # data, not its own samples (measured: initialised from the samples of a random Glow, every PR row of
        # flows-mnist lost 0.6–1.1 bits/dim, at any PR weight)
        base = self.base(model, batch) if self.base is not None else None
        draw = self.pr.draw(model, batch)
        log_p, valid = self._log_prob(model, draw)  # (S, B), (S, B) bool or None
        with torch.no_grad():
            f = self.pr.score(draw)  # (S, B)
            log_w = log_weights(f, self.pr.alpha)  # (S, B)
            if valid is not None and not bool(valid.all()):  # q over the valid samples only
                log_w = torch.where(valid, torch.log_softmax(torch.where(valid, self.pr.alpha * f, -torch.inf), 0),
                                    -torch.inf)
                # a condition without a valid sample: uniform weights for the diagnostics (its w is zeroed below)
                log_w = torch.where(valid.any(0), log_w, -math.log(draw.S))
        w = log_w.exp() - (1.0 / draw.S if self.center else 0.0)  # (S, B)
        if valid is not None:
            w = torch.where(valid, w, torch.zeros_like(w))  # a replaced sample: no gradient
        scale = 1.0
        if self.units is not None:  # E_q[units]: the q-weighted mean length of a sample
            scale = (log_w.exp() * self.units(draw.x).view(draw.S, draw.B).to(log_p.dtype)).sum(0).mean()
        pr_loss = -(w * log_p).sum(0).mean() / scale
        terms = {"pr_nll": (-(log_w.exp() * log_p).sum(0).mean() / scale).detach(), **self.pr.diagnostics(f, log_w),
                 **self.pr.monitor_terms(draw, log_w)}
        return _beside(base, self.weight, pr_loss, terms)

    def _log_prob(self, model: nn.Module, draw: Draw) -> tuple[Tensor, Tensor | None]:
        """(S, B) log p_θ of the samples, and which samples are valid ((S, B) bool; None: all).

        A sample can be finite and still have no finite density under the model that drew it (a flow's inverse
        logit that saturates to exactly 0 or 1 in float32, where the forward logit is infinite), or one below
        ``min_log_prob``. Such samples join the invalid ones (no weight) and are replaced by a copy of a valid sample, whose density is
        finite, and log p is evaluated again, so that no infinity reaches the backward pass (a zero weight times an
        infinite log-density's gradient is NaN).
        """
        valid = draw.valid
        log_p = model.log_prob(draw.x, draw.cond)  # (S·B,)
        if isinstance(draw.x, Tensor):
            finite = torch.isfinite(log_p)  # (S·B,)
            if self.min_log_prob is not None:
                finite &= log_p.detach() >= self.min_log_prob
            if not bool(finite.all()):
                valid = finite if valid is None else valid & finite
                keep = valid.view(-1, *[1] * (draw.x.dim() - 1))  # (S·B, 1, …)
                stand_in = draw.x[valid.nonzero()[0, 0]] if bool(valid.any()) else torch.zeros_like(draw.x[0])
                draw.x = torch.where(keep, draw.x, stand_in)  # (S·B, …)
                draw.valid = valid
                log_p = torch.where(valid, model.log_prob(draw.x, draw.cond), 0.0)  # (S·B,)
        return log_p.view(draw.S, draw.B), None if valid is None else valid.view(draw.S, draw.B)


class ImplicitMStep:
    """M-step for an implicit model: ``min_θ KL(p_θ ‖ q_φ)``, i.e. maximise ``α E_{p_θ}[f_φ(x)]``.

    At the current θ the reverse KL's gradient is ``−α ∇_θ E_{p_θ}[f_φ]`` (the entropy part of the KL to the fixed
    p_θ has zero gradient there), so the generator is trained to raise its samples' f, as a policy is trained on a
    reward.

    Args:
        pr: the constraint, α and S.
        base: the model's own objective (a GAN generator loss, an ELBO), added with weight 1.
        weight: the weight of the constraint term.
        estimator: ``pathwise`` differentiates through ``sample`` (reparameterised images); ``score`` uses the
            score-function estimator ``α E[(f(x) − b) ∇ log p_θ(x)]`` with b the mean f of the condition's S samples
            (discrete outputs such as text; needs ``log_prob``).

    Pathwise with one sample per condition, a base objective that offers ``on_samples(model, batch, fake)`` (the
    GAN generator losses do) is given the same samples instead of drawing its own: one generator pass per step
    instead of two. This needs the constraint's condition (``pr.condition``) to be the one the base samples under,
    as when both read the batch's labels or its ``condition()``; ``share_samples=False`` turns it off.
    """

    def __init__(self, pr: PosteriorRegularization, base: Objective | None = None, weight: float = 1.0,
                 estimator: Literal["pathwise", "score"] = "pathwise", share_samples: bool = True) -> None:
        if estimator not in ("pathwise", "score"):
            raise ValueError(f"estimator must be pathwise or score, got {estimator!r}")
        self.pr, self.base, self.weight, self.estimator = pr, base, weight, estimator
        self.share_samples = share_samples

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        if self.estimator == "pathwise":
            draw = self.pr.draw(model, batch, grad=True)
            f = self.pr.score(draw)  # (S, B), differentiable in θ through the samples
            loss = -self.pr.alpha * f.mean()
        else:
            draw = self.pr.draw(model, batch)
            with torch.no_grad():
                f = self.pr.score(draw)  # (S, B)
            log_p = model.log_prob(draw.x, draw.cond).view(draw.S, draw.B)  # (S, B)
            advantage = f - f.mean(0, keepdim=True)  # (S, B): the mean is the baseline
            loss = -self.pr.alpha * (advantage * log_p).mean()
        terms = {"f_p": f.mean().detach(), **self.pr.monitor_terms(draw)}
        out = None
        if self.base is not None:
            shared = (self.estimator == "pathwise" and self.share_samples and draw.S == 1 and draw.cond is not None
                      and hasattr(self.base, "on_samples"))
            out = self.base.on_samples(model, batch, draw.x) if shared else self.base(model, batch)
        return _beside(out, self.weight, loss, terms)


class SampleMaximisation:
    """The "constraint updated in the M-step" variant (Hu et al. 2018, Eq. 5): ``max_φ E_{x~q}[f_φ(x)]``.

    The slides call it problematic, "as the generated samples x ~ q can be of low quality": nothing ties f_φ to the
    data, so f rises on whatever the model samples. Kept to reproduce the table's row. ``penalty`` adds
    ``penalty · E[f²]`` so that f stays bounded.
    """

    def __init__(self, pr: PosteriorRegularization, penalty: float = 0.0) -> None:
        self.pr, self.penalty = pr, penalty

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        f = self.pr.score(self.pr.draw_for(model, batch))  # (S, B)
        w = log_weights(f.detach(), self.pr.alpha).exp()  # (S, B)
        expected = (w * f).sum(0).mean()
        loss = -expected + self.penalty * f.pow(2).mean()
        return LossOutput(loss, {"f_q": expected.detach(), "f_p": f.mean().detach()})


class BinaryDiscriminator:
    """The "binary D" variant: f_φ is the logit of a discriminator trained to tell data (1) from samples (0).

    With the optimal discriminator ``f = log p_data/p_θ``, so that ``q ∝ p_θ exp(f) = p_data`` at α = 1: the E-step
    then reweights samples toward the data distribution, as a GAN's discriminator would.
    """

    def __init__(self, pr: PosteriorRegularization) -> None:
        self.pr = pr

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        f_samples = self.pr.score(self.pr.draw_for(model, batch)).flatten()  # (S·B,)
        f_data = self.pr.score_data(batch)  # (B,)
        loss = F.binary_cross_entropy_with_logits(f_data, torch.ones_like(f_data)) + \
            F.binary_cross_entropy_with_logits(f_samples, torch.zeros_like(f_samples))
        accuracy = torch.cat([(f_data > 0).float(), (f_samples < 0).float()]).mean()
        return LossOutput(loss, {"d_loss": loss.detach(), "d_acc": accuracy.detach(),
                                 "f_data": f_data.mean().detach(), "f_p": f_samples.mean().detach()})
