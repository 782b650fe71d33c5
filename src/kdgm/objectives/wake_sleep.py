"""Wake-sleep (Hinton et al. 1995) and reweighted wake-sleep (Bornschein & Bengio 2015) as objectives.

Lecture notes ``002_…txt``, section 3. A generative model p_θ(x, h) (a sigmoid belief net, Neal 1992) and a
recognition model q_φ(h | x) are trained in two phases, each a :class:`kdgm.train.Phase` with its own optimizer:

- **wake** (θ): ``min_θ F(θ, φ; x) = −log p(x) + KL(q_φ(h|x) ‖ p_θ(h|x))``, the free energy, whose θ-gradient is
  ``−E_{q(h|x)}[∇_θ log p_θ(x, h)]``: recognise the data, then fit the generative model to the completed (x, h)
  (:class:`WakePhase`);
- **sleep** (φ): the free energy's φ-gradient has high variance for discrete h, so the sleep phase minimises the
  *pseudo* free energy ``F'(θ, φ; x) = −log p(x) + KL(p_θ(h|x) ‖ q_φ(h|x))`` instead, in expectation over
  fantasies: ``min_φ E_{p_θ(x, h)}[−log q_φ(h | x)]`` (:class:`SleepPhase`). The reversed KL is why wake-sleep
  optimises no single objective and has no convergence guarantee (the lecture's "limitations").

Reweighted wake-sleep replaces the single recognition sample by k samples h_i ~ q(h | x) with self-normalised
importance weights ``w̃_i = w_i / Σ_j w_j``, ``w_i = p(x, h_i) / q(h_i | x)``:

- wake update of p (:class:`ReweightedWake`): ``Σ_i w̃_i ∇_θ log p(x, h_i)``, the gradient of the k-sample
  importance-sampled estimate of log p(x) (Bornschein & Bengio 2015, Eq. 6);
- wake update of q (:class:`ReweightedWakeQ`): ``Σ_i w̃_i ∇_φ log q(h_i | x)``, which estimates
  ``−∇_φ KL(p(h|x) ‖ q(h|x))`` at the *data* rather than at fantasies (Eq. 7); the paper found the average of the
  wake and sleep updates of q best, which is the default here (``sleep=True``).

Every objective is ``(model, batch) -> LossOutput`` on a model with ``forward(x, k, hs=None)`` returning
``log_lik``, ``log_prior``, ``log_q`` (k, B) (:class:`kdgm.models.sbn.SigmoidBeliefNet`) and, for the sleep phase,
``fantasy(n) -> (x, hs)``. Each loss reaches only its own parameter group (samples are drawn without a graph), so
:func:`generative_parameters` and :func:`recognition_parameters` give the two phases' optimizers, and summing the
phases (:class:`SummedPhases`) gives each group exactly its own phase's gradient.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdgm.objectives.base import LossOutput, Objective
from kdgm.objectives.elbo import iwae_bound


def generative_parameters(model: nn.Module) -> list[nn.Parameter]:
    """θ: the parameters of the generative model (prior logits and top-down conditionals) — the wake phase's."""
    return list(model.generator.parameters())


def recognition_parameters(model: nn.Module) -> list[nn.Parameter]:
    """φ: the parameters of the recognition network q(h | x) — the sleep (and wake-q) phase's."""
    return list(model.recognizer.parameters())


def importance_weights(log_weight: Tensor) -> Tensor:
    """(k, B) self-normalised importance weights ``w̃_i = softmax_i(log p(x, h_i) − log q(h_i | x))``, detached:
    they weight the gradients and are never differentiated."""
    return torch.softmax(log_weight.detach(), dim=0)


def _bound_terms(log_weight: Tensor) -> dict[str, Tensor]:
    """The batch's one-sample bound (nELBO) and, for k > 1, the k-sample importance-weighted bound, in nats."""
    k = log_weight.shape[0]
    terms = {"nelbo": -log_weight.detach().mean()}
    if k > 1:
        terms[f"niwae{k}"] = -iwae_bound(log_weight.detach()).mean()
    return terms


class WakePhase:
    """The wake phase: ``h ~ q(h | x)`` (no gradient through the sample), ``min_θ −log p_θ(x, h)``.

    Logs ``wake_nll`` (the loss, −E_q log p(x, h) per example), ``nelbo`` (−E_q[log p(x, h) − log q(h | x)]) and,
    with k > 1, ``niwae{k}``.

    Args:
        k: recognition samples per input, weighted uniformly (plain wake-sleep uses 1).
    """

    def __init__(self, k: int = 1) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        out = model(batch.x, k=self.k)
        log_joint = out.log_lik + out.log_prior  # (k, B), differentiable in θ only
        loss = -log_joint.mean()
        return LossOutput(loss, {"wake_nll": loss.detach(), **_bound_terms(out.log_weight)}, out)


class SleepPhase:
    """The sleep phase: a fantasy ``(x, h) ~ p_θ`` (no gradient), ``min_φ −log q_φ(h | x)``.

    Minimises the pseudo free energy's ``E_{p(x)} KL(p(h|x) ‖ q(h|x))`` (up to the entropy of p(h|x), constant in
    φ). The batch's data are not used, only its size. Logs ``sleep_nlq`` (the loss).

    Args:
        n: fantasies per step; None draws as many as the batch has examples.
    """

    def __init__(self, n: int | None = None) -> None:
        if n is not None and n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        n = self.n or len(batch.x)
        with torch.no_grad():
            x, hs = model.fantasy(n)  # (n, C, H, W), each (n, H_l)
        out = model(x, hs=[h.unsqueeze(0) for h in hs])  # through forward: (1, n) log-densities of the fantasy
        loss = -out.log_q.mean()
        return LossOutput(loss, {"sleep_nlq": loss.detach()}, out)


class ReweightedWake:
    """Reweighted wake update of p (Bornschein & Bengio 2015): k samples ``h_i ~ q(h | x)``,
    ``min_θ −Σ_i w̃_i log p_θ(x, h_i)`` with detached self-normalised weights w̃.

    Its gradient equals that of the k-sample importance-weighted bound ``log (1/k) Σ_i p(x, h_i)/q(h_i|x)`` in θ.
    Logs ``rws_nll`` (the loss), ``niwae{k}`` (the batch's importance-sampled bound), ``nelbo`` and ``ess`` (the
    effective sample size ``1 / Σ_i w̃_i²``, between 1 and k).
    """

    def __init__(self, k: int = 5) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        out = model(batch.x, k=self.k)
        w = importance_weights(out.log_weight)  # (k, B), sums to 1 over k
        loss = -(w * (out.log_lik + out.log_prior)).sum(0).mean()
        terms = {"rws_nll": loss.detach(), **_bound_terms(out.log_weight), "ess": (1 / w.pow(2).sum(0)).mean()}
        return LossOutput(loss, terms, out)


class ReweightedWakeQ:
    """Reweighted wake update of q (Bornschein & Bengio 2015): ``min_φ −Σ_i w̃_i log q_φ(h_i | x)`` at the data,
    optionally averaged with the sleep update (``sleep=True``: ``½ (wake-q + sleep)``, the paper's best variant).

    Logs ``wake_q_nlq`` (the wake-q loss), ``sleep_nlq`` when sleeping, and ``niwae{k}``.

    Args:
        k: recognition samples per input.
        sleep: also take the sleep phase's update of q (on as many fantasies as the batch has examples).
    """

    def __init__(self, k: int = 5, sleep: bool = True) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.sleep = k, sleep
        self._sleep = SleepPhase()

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        out = model(batch.x, k=self.k)
        w = importance_weights(out.log_weight)  # (k, B)
        wake_q = -(w * out.log_q).sum(0).mean()
        terms = {"wake_q_nlq": wake_q.detach(), **_bound_terms(out.log_weight)}
        if not self.sleep:
            return LossOutput(wake_q, terms, out)
        dream = self._sleep(model, batch)
        return LossOutput(0.5 * (wake_q + dream.total), {**terms, **dream.terms}, out)


class SummedPhases:
    """Several phases' objectives summed into one loss (terms merged, the first one's outputs kept).

    The wake-sleep phases reach disjoint parameter groups, so one backward pass of the sum gives every parameter
    exactly its own phase's gradient: a single optimizer on the sum is the two phases updated simultaneously rather
    than in turn (and the model suite's check that one objective reaches every parameter).
    """

    def __init__(self, *objectives: Objective) -> None:
        if not objectives:
            raise ValueError("SummedPhases needs at least one objective")
        self.objectives = objectives

    def __call__(self, model: nn.Module, batch) -> LossOutput:
        outs = [objective(model, batch) for objective in self.objectives]
        terms: dict[str, Tensor] = {}
        for out in outs:
            terms.update(out.terms)
        return LossOutput(sum((out.total for out in outs[1:]), outs[0].total), terms, outs[0].outputs)


def wake_sleep_objectives(method: Literal["ws", "rws"] = "ws", k: int | None = None,
                          sleep: bool = True) -> dict[str, Objective]:
    """The two phases of a method, by phase name: ``ws`` → ``{"wake": WakePhase(k or 1), "sleep": SleepPhase()}``;
    ``rws`` → ``{"wake": ReweightedWake(k or 5), "wake_q": ReweightedWakeQ(k or 5, sleep)}``."""
    if method == "ws":
        return {"wake": WakePhase(k or 1), "sleep": SleepPhase()}
    if method == "rws":
        return {"wake": ReweightedWake(k or 5), "wake_q": ReweightedWakeQ(k or 5, sleep)}
    raise ValueError(f"unknown method {method!r}; use 'ws' or 'rws'")


def wake_sleep_phases(model: nn.Module, method: Literal["ws", "rws"] = "ws", k: int | None = None,
                      sleep: bool = True, lr: float = 1e-3, **adam: Any) -> list:
    """Two :class:`kdgm.train.Phase` s, generative first, each with its own Adam: the first over
    :func:`generative_parameters`, the second over :func:`recognition_parameters`."""
    from kdgm.train.updater import Phase  # objectives do not import the training package at module level

    (gen_name, gen), (rec_name, rec) = wake_sleep_objectives(method, k, sleep).items()
    return [Phase(gen_name, gen, torch.optim.Adam(generative_parameters(model), lr=lr, **adam)),
            Phase(rec_name, rec, torch.optim.Adam(recognition_parameters(model), lr=lr, **adam))]


__all__ = [
    "ReweightedWake", "ReweightedWakeQ", "SleepPhase", "SummedPhases", "WakePhase", "generative_parameters",
    "importance_weights", "recognition_parameters", "wake_sleep_objectives", "wake_sleep_phases",
]
