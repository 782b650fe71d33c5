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

from kdgm.data.batch import Batch, ImageBatch, TextBatch
from kdgm.models.text_cnn import SentenceCNN
from kdgm.models.vae import VAE
from kdgm.objectives.base import Objective
from kdgm.objectives.classification import CrossEntropy
from kdgm.objectives.elbo import ELBO, IWAE
from kdgm.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model, a small batch it accepts, and an objective that trains it.

    ``kind`` says which interface the model has: ``latent`` (``forward(x, k)`` → named log-densities) or
    ``classifier`` (``forward(*batch.inputs())`` → (B, K) logits).
    """

    build: Callable[[], nn.Module]
    example: Callable[[], Batch]
    objective: Callable[[], Objective]
    kind: str = "latent"


def _binary_images(n: int = 4, shape: tuple[int, int, int] = (1, 28, 28)) -> ImageBatch:
    return ImageBatch(x=torch.bernoulli(torch.full((n, *shape), 0.3)))


def _sentences(n: int = 6, vocab: int = 30) -> TextBatch:
    lengths = torch.randint(1, 9, (n,))
    tokens = torch.randint(2, vocab, (n, 9)) * (torch.arange(9) < lengths[:, None])
    return TextBatch(tokens, lengths, torch.randint(0, 2, (n,)), torch.arange(n))


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register("vae-mlp", ModelSpec(lambda: VAE(arch="mlp"), _binary_images, ELBO))
MODELS.register("vae-conv", ModelSpec(lambda: VAE(arch="conv", z_dim=16), _binary_images, lambda: IWAE(k=3)))
MODELS.register("sentence-cnn", ModelSpec(lambda: SentenceCNN(30, 2, embed_dim=8, n_filters=4, dropout=0.0),
                                          _sentences, CrossEntropy, kind="classifier"))
