"""Amortized structural regularization (ASR; Xu, Li, Zhu, Zhang 2019, "Multi-objects Generation with Amortized
Structural Regularization", paper ``003_…txt``).

ASR (section 3.2) constrains the amortized posterior q(Z|X; φ) to a valid set ``Q = {q : F(q) ≤ 0}`` given by
differentiable functionals F_i of q, and slackens the constraints into a penalty on the ELBO (Eq. 10):

    max_{θ, φ}  J'(θ, φ) − R(q(Z|X; φ)),    R(q) = Σ_i λ_i max{F_i(q), 0}.

:class:`StructuralPenalty` is that penalty as a wrapper of any base objective (here the negative ELBO of AIR): it
reads the posterior statistics from the base objective's ``LossOutput.outputs`` (no second forward pass), so the
functionals are plain functions ``F(outputs, batch) -> ()`` of whatever the model returns. Two families from
section 4 are provided for an AIR-style model whose outputs have

- ``z_pres`` (T, B): sampled presence in {0, 1}, once 0 stays 0;
- ``pres_prob`` (T, B): the guide's conditional ``q(z_pres_t = 1 | x, z_<t)``;
- ``z_where`` (T, B, 3): ``(s, x, y)`` with ``s`` = box side / image side (square boxes) and ``(x, y)`` the box centre
  in normalised coordinates [-1, 1] (x right, y down); see :func:`where_to_pixels`.

Number of objects (section 4.1, :func:`count_functionals`) and overlap (section 4.2, :func:`overlap_functionals`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from kdgm.objectives.base import LossOutput, Objective
from kdgm.nn.spatial import where_to_boxes, where_to_pixels  # noqa: F401  (re-exported)

Functional = Callable[[Any, Any], Tensor]  # F(outputs, batch) -> () scalar, the expectation over the batch

# Section 6.1: "we finally set λ_1^num = 10 and λ_2^num = 100".
COUNT_WEIGHTS: dict[str, float] = {"num_instance": 10.0, "num_marginal": 100.0}

# Section 4.2 names F_1 … F_7 in this order; section 6.2 sets λ_1 … λ_5 = 1, λ_6 = 20, λ_7 = 10.
OVERLAP_NAMES: tuple[str, ...] = (
    "overlap",  # F1: pairs of present boxes do not overlap
    "inside_left",  # F2: x − s/2 ≥ 0
    "inside_right",  # F3: x + s/2 ≤ S
    "inside_top",  # F4: y − s/2 ≥ 0
    "inside_bottom",  # F5: y + s/2 ≤ S
    "scale_range",  # F6: c_min ≤ s ≤ c_max
    "scale_equal",  # F7: |s_i − s_j| ≤ ε
)
OVERLAP_WEIGHTS: dict[str, float] = dict(zip(OVERLAP_NAMES, (1.0, 1.0, 1.0, 1.0, 1.0, 20.0, 10.0)))

# Box-size bounds in pixels for the 50 x 50 scenes of ``kdgm.data.scenes`` (measured on 6,000 rendered objects each):
# the smallest square that holds an object is 19–20 px for every Multi-MNIST digit (MNIST digits are normalised to
# a 20 px box) and 7–23 px for Multi-dSprites (median 13; 23 = a scale-1 square rotated by 45°).
# - C_MIN = 12: the failure F6 guards against is "bounding boxes of extremely small size" (section 4.2); 12 px is
#   about half the largest object, so a box can still hold a small sprite with room to spare (a box may be larger
#   than its object), yet a 2–5 px sliver parked at the border is penalised.
# - C_MAX = 25: every object fits (23 px + a 2 px margin), and 25 = S / 2 is the largest side at which three equal,
#   non-overlapping squares fit inside the canvas, so a larger bound could not be met together with F1–F5 for the
#   three-object scenes of section 6.2 anyway; it also rules out the "big box that covers the whole image".
# - EPS = 3: Multi-MNIST boxes within a scene differ by at most 1 px, so 3 px leaves 2 px of slack for inference.
#   Multi-dSprites objects in one scene differ by a median 6 px (at most 16), so F7 asks for boxes of about the same
#   size there, looser around the small shapes (as in the paper, which applies F7 to both data sets); raise ``eps``
#   (e.g. to 8) to let boxes stay tight around each sprite instead.
C_MIN, C_MAX, EPS = 12.0, 25.0, 3.0


class StructuralPenalty:
    """A base objective plus the ASR penalty ``R = Σ_i λ_i max{F_i, 0}`` (Xu et al. 2019, Eq. 10).

    The total minimised is ``base.total + R`` (the base total being a negative ELBO, this is −(J' − R)). Each F_i is
    any differentiable functional of the posterior's statistics that the base objective left in
    ``LossOutput.outputs``; gradients reach the posterior through the F_i.

    Args:
        base: the objective to wrap, e.g. the negative ELBO of AIR; must return the model's outputs.
        functionals: named F_i(outputs, batch) -> () scalar (the expectation over the batch).
        weights: λ_i ≥ 0 for every functional, same names.

    Example::

        objective = StructuralPenalty(air_elbo, count_functionals((1, 3)), COUNT_WEIGHTS)
    """

    def __init__(self, base: Objective, functionals: Mapping[str, Functional], weights: Mapping[str, float]):
        if not functionals:
            raise ValueError("StructuralPenalty needs at least one functional")
        missing, extra = set(functionals) - set(weights), set(weights) - set(functionals)
        if missing or extra:
            raise ValueError(
                f"weights must name exactly the functionals; missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        negative = {name: w for name, w in weights.items() if w < 0}
        if negative:
            raise ValueError(f"weights λ must be >= 0 (a penalty, not a reward), got {negative}")
        self.base = base
        self.functionals = dict(functionals)
        self.weights = {name: float(weights[name]) for name in self.functionals}

    @classmethod
    def for_counts(cls, base: Objective, allowed: Sequence[int], weights: Mapping[str, float] | None = None):
        """R^num of section 4.1 for scenes whose number of objects lies in ``allowed`` (paper: λ = 10, 100)."""
        return cls(base, count_functionals(allowed), COUNT_WEIGHTS if weights is None else weights)

    @classmethod
    def for_overlap(cls, base: Objective, size: int = 50, weights: Mapping[str, float] | None = None, **bounds):
        """R^o of section 4.2 (Eq. 11) on ``size`` x ``size`` images; ``bounds``: c_min, c_max, eps in pixels."""
        return cls(base, overlap_functionals(size, **bounds), OVERLAP_WEIGHTS if weights is None else weights)

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        out = self.base(model, batch)
        if out.outputs is None:
            raise ValueError(
                f"{type(self.base).__name__} returned LossOutput.outputs=None; StructuralPenalty reads the posterior "
                "from it, so the base objective must return the model's outputs"
            )
        penalty = out.total.new_zeros(())
        terms = dict(out.terms)
        for name, functional in self.functionals.items():
            value = functional(out.outputs, batch)
            if value.ndim != 0:
                raise ValueError(f"functional {name!r} must return a scalar, got shape {tuple(value.shape)}")
            penalty = penalty + self.weights[name] * value.clamp(min=0)  # λ_i max{F_i, 0}
            terms[f"F/{name}"] = value.detach()
        terms["penalty"] = penalty.detach()
        return LossOutput(out.total + penalty, terms, outputs=out.outputs)


# --- number of objects (section 4.1) -------------------------------------------------------------------------------


def _straight_through_clamp(p: Tensor, eps: float) -> Tensor:
    """p clamped to [eps, 1 − eps] in value with the identity gradient: a saturated sigmoid (p == 1.0 in float32)
    gives a finite log-probability and still receives a gradient that moves it back."""
    return p + (p.clamp(eps, 1 - eps) - p).detach()


def log_count_distribution(pres_prob: Tensor) -> Tensor:
    """(B, T+1) log q(n | x) for n = 0 … T from the (T, B) presence conditionals p_t = q(z_pres_t = 1 | x, z_<t).

    ``q(n | x) = Π_{t<n} p_t · (1 − p_n)`` with ``p_T := 0`` (at most T objects), summed in log space so that long
    trajectories of small probabilities neither underflow nor give −inf for counts of tiny probability.

    This is the single-trajectory estimate the conditionals allow: p_t depends on the sampled z_<t. For counts
    beyond the sampled one to get a meaningful probability, the model must report p_t as if the earlier objects were
    present (not multiplied by the sampled z_pres); a p_t forced to 0 after termination lumps all further mass onto
    the next count. :class:`kdgm.models.air.AIR` reports its guide's conditionals that way (its LSTM reads every
    earlier object as present), so one trajectory gives q(n | x) exactly for every n given the continuous latents.
    """
    eps = torch.finfo(pres_prob.dtype).eps
    p = _straight_through_clamp(pres_prob, eps)  # (T, B)
    zeros = p.new_zeros((1, p.shape[1]))
    log_survive = torch.cat([zeros, torch.cumsum(torch.log(p), dim=0)])  # (T+1, B) log Π_{t<n} p_t
    log_stop = torch.cat([torch.log1p(-p), zeros])  # (T+1, B) log(1 − p_n), with p_T = 0
    return (log_survive + log_stop).T  # (B, T+1)


def count_distribution(pres_prob: Tensor) -> Tensor:
    """(B, T+1) q(n | x) = Π_{t<n} p_t · (1 − p_n), p_T := 0; each row sums to 1 (see
    :func:`log_count_distribution`)."""
    return log_count_distribution(pres_prob).exp()


def _allowed_index(allowed: Sequence[int], T: int, device: torch.device) -> Tensor:
    if max(allowed) > T:
        raise ValueError(f"allowed counts {list(allowed)} exceed the model's T={T} steps; raise T")
    return torch.as_tensor(list(allowed), dtype=torch.long, device=device)


def count_functionals(allowed: Sequence[int]) -> dict[str, Functional]:
    """F^num of section 4.1 for images whose number of objects is in L = ``allowed``.

    - ``num_instance``: ``E_x min_{i∈L} KL(q_i ‖ q(z_pres | x))`` where q_i puts all mass on "exactly i objects";
      as q_i is one-hot, ``KL(q_i ‖ q) = −log q(n = i | x)``, so F = mean over the batch of ``−log max_{i∈L} q(i|x)``.
      It is 0 iff every image puts all its mass on one allowed count.
    - ``num_marginal``: ``KL(q_uni ‖ E_x q(n | x))`` with q_uni uniform over L (the paper's data have equally many
      images of each allowed count); the data expectation is the batch mean, a minibatch estimate.

    Both are ≥ 0, so ``max{F, 0} = F``: the constraints ``F ≤ 0`` of the paper are equalities in disguise.

    Args:
        allowed: the possible numbers of objects L, e.g. (1, 3); each at most the model's T.

    Returns:
        functionals reading ``outputs.pres_prob`` (T, B).
    """
    allowed = tuple(sorted({int(i) for i in allowed}))
    if not allowed or allowed[0] < 0:
        raise ValueError(f"allowed counts must be a non-empty set of non-negative integers, got {allowed}")

    def num_instance(outputs, batch) -> Tensor:
        log_q = log_count_distribution(outputs.pres_prob)  # (B, T+1)
        index = _allowed_index(allowed, log_q.shape[1] - 1, log_q.device)
        return -log_q[:, index].max(dim=1).values.mean()

    def num_marginal(outputs, batch) -> Tensor:
        log_q = log_count_distribution(outputs.pres_prob)  # (B, T+1)
        index = _allowed_index(allowed, log_q.shape[1] - 1, log_q.device)
        log_marginal = torch.logsumexp(log_q[:, index], dim=0) - math.log(log_q.shape[0])  # (|L|,) log E_x q(i|x)
        log_uniform = -math.log(len(allowed))
        return (math.exp(log_uniform) * (log_uniform - log_marginal)).sum()

    return {"num_instance": num_instance, "num_marginal": num_marginal}


# --- overlap (section 4.2) -----------------------------------------------------------------------------------------


def _relu(value: Tensor) -> Tensor:
    """ℓ(x) = max{x, 0} of the paper."""
    return value.clamp(min=0)


def overlap_functionals(
    size: int = 50, c_min: float = C_MIN, c_max: float = C_MAX, eps: float = EPS
) -> dict[str, Functional]:
    """F^o_1 … F^o_7 of section 4.2, in pixels, keyed by :data:`OVERLAP_NAMES`.

    With z_x, z_y the box centre and z_scale its side, all in pixels (:func:`where_to_pixels`), S = ``size``,
    ℓ(x) = max{x, 0} and sums over the present objects (i ≠ j over ordered pairs, as written, so each unordered pair
    counts twice):

    - F1 ``overlap``: ``Σ_{i≠j} ℓ((s_i + s_j)/2 − max{|x_i − x_j|, |y_i − y_j|})``, > 0 iff two squares overlap;
    - F2 … F5 ``inside_left/right/top/bottom``: ``Σ_i ℓ(s_i/2 − x_i)``, ``ℓ(x_i + s_i/2 − S)``, and the same in y;
    - F6 ``scale_range``: ``Σ_i ℓ(c_min − s_i) + ℓ(s_i − c_max)``;
    - F7 ``scale_equal``: ``Σ_{i,j} ℓ(|s_i − s_j| − ε)``.

    Each is ``E_q[·]`` estimated with the sampled trajectory: terms are masked by ``z_pres`` and averaged over the
    batch. Gradients reach ``z_where`` (reparameterised); the sampled ``z_pres`` multiplies the terms as given, so a
    hard sample passes no gradient to the presence (that would need a score-function term) while a relaxed one does.
    Defaults: :data:`C_MIN`, :data:`C_MAX`, :data:`EPS` (justified beside them) for the 50 x 50 scenes.

    Args:
        size: image side S in pixels (paper: 50).
        c_min, c_max: bounds on a box's side, pixels.
        eps: tolerated difference between the sides of two boxes, pixels.

    Returns:
        functionals reading ``outputs.z_where`` (T, B, 3) and ``outputs.z_pres`` (T, B).
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if not 0 <= c_min <= c_max:
        raise ValueError(f"need 0 <= c_min <= c_max, got c_min={c_min}, c_max={c_max}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    def boxes(outputs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cx, cy, side = where_to_pixels(outputs.z_where, size)  # each (T, B)
        return cx, cy, side, outputs.z_pres.to(side.dtype)

    def per_object(term: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Functional:
        def functional(outputs, batch) -> Tensor:
            cx, cy, side, present = boxes(outputs)
            return (present * term(cx, cy, side)).sum(0).mean()  # Σ_i over present objects, mean over the batch

        return functional

    def pairwise(term: Callable[[Tensor, Tensor, Tensor], Tensor], exclude_self: bool) -> Functional:
        def functional(outputs, batch) -> Tensor:
            cx, cy, side, present = boxes(outputs)
            both = present[:, None] * present[None, :]  # (T, T, B) objects i and j both present
            if exclude_self:
                both = both * (1 - torch.eye(len(side), dtype=both.dtype, device=both.device))[..., None]
            value = term(cx, cy, side)  # (T, T, B)
            return (both * value).sum((0, 1)).mean()

        return functional

    def overlap(cx: Tensor, cy: Tensor, side: Tensor) -> Tensor:
        gap = torch.maximum((cx[:, None] - cx[None, :]).abs(), (cy[:, None] - cy[None, :]).abs())  # (T, T, B)
        return _relu((side[:, None] + side[None, :]) / 2 - gap)

    def scale_equal(cx: Tensor, cy: Tensor, side: Tensor) -> Tensor:
        return _relu((side[:, None] - side[None, :]).abs() - eps)  # (T, T, B)

    terms = (
        pairwise(overlap, exclude_self=True),
        per_object(lambda cx, cy, side: _relu(side / 2 - cx)),
        per_object(lambda cx, cy, side: _relu(cx + side / 2 - size)),
        per_object(lambda cx, cy, side: _relu(side / 2 - cy)),
        per_object(lambda cx, cy, side: _relu(cy + side / 2 - size)),
        per_object(lambda cx, cy, side: _relu(c_min - side) + _relu(side - c_max)),
        pairwise(scale_equal, exclude_self=False),  # i = j contributes ℓ(−ε) = 0
    )
    return dict(zip(OVERLAP_NAMES, terms))
