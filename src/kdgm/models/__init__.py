"""Models: ``nn.Module`` s that return named quantities, never a loss.

``MODELS`` registers every model with a small example input and a base objective, so that one shared test suite
(``tests/test_models.py``) checks all of them: output shapes, gradients reaching every parameter, one optimizer step
changing the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from kdgm.data.batch import Batch, ImageBatch
from kdgm.objectives.base import Objective
from kdgm.objectives.elbo import ELBO, IWAE
from kdgm.registry import Registry
from kdgm.models.vae import VAE


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model, a small batch it accepts, and an objective that trains it."""

    build: Callable[[], nn.Module]
    example: Callable[[], Batch]
    objective: Callable[[], Objective]


def _binary_images(n: int = 4, shape: tuple[int, int, int] = (1, 28, 28)) -> ImageBatch:
    return ImageBatch(x=torch.bernoulli(torch.full((n, *shape), 0.3)))


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register("vae-mlp", ModelSpec(lambda: VAE(arch="mlp"), _binary_images, ELBO))
MODELS.register("vae-conv", ModelSpec(lambda: VAE(arch="conv", z_dim=16), _binary_images, lambda: IWAE(k=3)))
