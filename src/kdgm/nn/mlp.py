"""Multi-layer perceptrons, the building block of the papers' encoders and decoders."""

from __future__ import annotations

from typing import Sequence

from torch import nn


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.Tanh, final_activation: bool = False) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them.

    Args:
        sizes: widths from input to output, e.g. ``(784, 200, 200, 100)``.
        activation: module class put after every hidden layer.
        final_activation: also put it after the last layer.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output width, got {tuple(sizes)}")
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)
