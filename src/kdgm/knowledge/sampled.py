"""The posterior-regularization E-step over samples, for outputs that cannot be enumerated (images, sentences).

Hu et al. (2018), slides ``000_…txt`` ("Algorithm: PR with learnable constraint"), E-step::

    q_φ(x | c) ∝ p_θ(x | c) · exp(α f_φ(x, c))

With S samples ``x_1..x_S ~ p_θ(·|c)`` per condition c, ``q`` is represented by self-normalised importance weights
``w_s = exp(α f_φ(x_s)) / Σ_s' exp(α f_φ(x_s'))`` (the proposal p_θ cancels), computed in log space. The effective
sample size ``1 / Σ_s w_s²`` (between 1 and S) says how much of the sample the weights still use. Where the outputs
can be enumerated, :func:`kdgm.knowledge.project` computes q exactly instead.

Samples are laid out S-major: row ``s·B + b`` of a batch of samples is sample s of condition b, so that a ``(S·B,)``
vector of scores reshapes to ``(S, B)`` and a condition is tiled with :func:`tile`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor


def log_weights(f: Tensor, alpha: float) -> Tensor:
    """(S, B) log of the self-normalised weights ``w ∝ exp(α f)`` over the S samples of each condition.

    Adding a constant to ``f`` (per condition) leaves them unchanged: only differences of f between samples count.
    """
    return torch.log_softmax(alpha * f, dim=0)


def effective_sample_size(log_w: Tensor) -> Tensor:
    """(B,) ``1 / Σ_s w_s²`` of (S, B) log-weights: S for uniform weights, 1 when one sample has all the weight."""
    return torch.exp(-torch.logsumexp(2 * log_w, dim=0))


def log_normaliser(f: Tensor, alpha: float) -> Tensor:
    """(B,) ``log Ẑ = log (1/S) Σ_s exp(α f(x_s))``, the importance estimate of ``log E_p[exp(α f)]`` from (S, B)
    scores of samples of p."""
    return torch.logsumexp(alpha * f, dim=0) - math.log(f.shape[0])


def tile(cond: Any, times: int) -> Any:
    """A condition repeated ``times`` times along dimension 0, S-major (row ``s·B + b`` is row b).

    Accepts ``None``, a tensor, a tuple or list of them, a dict, a dataclass of tensors, or any object with a
    ``repeat(times)`` method.
    """
    if cond is None or times == 1:
        return cond
    if isinstance(cond, Tensor):
        return cond.repeat(times, *([1] * (cond.dim() - 1)))
    if hasattr(cond, "repeat") and not isinstance(cond, (tuple, list, dict)):
        return cond.repeat(times)
    if isinstance(cond, (tuple, list)):
        return type(cond)(tile(c, times) for c in cond)
    if isinstance(cond, dict):
        return {key: tile(value, times) for key, value in cond.items()}
    if dataclasses.is_dataclass(cond):
        return dataclasses.replace(cond, **{f.name: tile(getattr(cond, f.name), times)
                                            for f in dataclasses.fields(cond) if f.init})
    raise TypeError(f"cannot tile a condition of type {type(cond).__name__}; give it a repeat(times) method")


def rows_of(cond: Any) -> int:
    """The number of conditions (rows) in ``cond``: its first tensor's first dimension."""
    if isinstance(cond, Tensor):
        return len(cond)
    if hasattr(cond, "__len__") and not isinstance(cond, (tuple, list, dict)) and not dataclasses.is_dataclass(cond):
        return len(cond)
    values = cond.values() if isinstance(cond, dict) else cond if isinstance(cond, (tuple, list)) else \
        [getattr(cond, f.name) for f in dataclasses.fields(cond)]
    for value in values:
        if isinstance(value, Tensor):
            return len(value)
    raise TypeError(f"cannot count the rows of a condition of type {type(cond).__name__}")
