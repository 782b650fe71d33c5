"""Normalizing flows: RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018), their invertible layers, uniform
dequantisation and bits per dimension.

Public names::

    RealNVP, Glow              multi-scale flows for (C, H, W) images (1×28×28 MNIST by default): log_prob, sample,
                               encode, decode
    MultiScaleFlow             their shared base
    GlowStep                   actnorm → invertible 1×1 convolution → affine coupling
    AffineCoupling             channel-mask coupling (RealNVP channel-wise, Glow)
    CheckerboardCoupling       RealNVP's spatial checkerboard coupling
    ActNorm                    per-channel affine map with data-dependent initialisation
    InvConv1x1, InvConv1x1LU   invertible 1×1 convolution, plain and LU-decomposed
    Squeeze, Split             (B, C, H, W) → (B, 4C, H/2, W/2); multi-scale factor-out with a learned prior
    LogitTransform             x → logit(α + (1 − 2α) x)
    Compose, Bijection         composition; the layer contract forward(x) -> (y, logdet), inverse(y) -> x
    dequantize, bits_per_dim   8-bit levels → [0, 1) with U(0, 1/256) noise; nats of a density on [0, 1]^D → bits/dim
"""

from kdgm.models.flows.layers import (
    ActNorm, AffineCoupling, Bijection, CheckerboardCoupling, Compose, CouplingNet, InvConv1x1, InvConv1x1LU,
    LogitTransform, LogScale, Split, Squeeze,
)
from kdgm.models.flows.models import (
    Glow, GlowStep, MultiScaleFlow, RealNVP, bits_per_dim, dequantize, standard_normal_log_prob,
)

__all__ = [
    "ActNorm", "AffineCoupling", "Bijection", "CheckerboardCoupling", "Compose", "CouplingNet", "Glow", "GlowStep",
    "InvConv1x1", "InvConv1x1LU", "LogScale", "LogitTransform", "MultiScaleFlow", "RealNVP", "Split", "Squeeze",
    "bits_per_dim", "dequantize", "standard_normal_log_prob",
]
