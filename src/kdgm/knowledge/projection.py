"""The posterior-regularization E-step over an enumerable output space.

Hu et al. (2016), Eq. (3)–(4) (lecture notes ``002_…txt`` section 6.1): the teacher solves

    min_{q, ξ ≥ 0}  KL(q ‖ p_θ(Y|X)) + C Σ_l ξ_l   s.t.   λ_l (1 − E_q[r_l(X, Y)]) ≤ ξ_l,

whose closed form is ``q*(y|x) ∝ p_θ(y|x) · exp(−Σ_l C λ_l (1 − r_l(x, y)))``. It is computed in log space,
``log q = log_softmax(log p − penalty)``, which stays finite for probabilities near 0 and 1 and for large C·λ.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def rule_penalty(truths: Sequence[Tensor], confidences: Tensor, C: float) -> Tensor:
    """(B, K) ``C Σ_l λ_l (1 − r_l(x, y))`` from L truth tables of shape (B, K) and (L,) confidences λ."""
    if len(truths) != len(confidences):
        raise ValueError(f"{len(truths)} rules but {len(confidences)} confidences")
    violation = 1 - torch.stack(list(truths))  # (L, B, K)
    # λ lives with the rules (often on the CPU), the tables with the batch: follow the tables' device and dtype
    return C * torch.einsum("l,lbk->bk", confidences.to(violation), violation)  # (B, K)


def project(log_p: Tensor, penalty: Tensor) -> Tensor:
    """(B, K) log q*(y|x) = log_softmax(log p(y|x) − penalty(x, y))."""
    return torch.log_softmax(log_p - penalty, dim=-1)
