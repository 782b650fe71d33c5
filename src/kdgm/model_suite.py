"""The model suite: every model of :mod:`kdgm.models` registered with a small example batch and an objective that
trains it, so that one shared test suite (``tests/test_models.py``) checks all of them — output shapes, gradients
reaching every parameter, one optimizer step changing the weights — and the knowledge tests can iterate over every
model.

It lives above both models and objectives (models know nothing of their losses), and is looked up like the
experiments (:class:`kdgm.registry.Registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from kdgm.data.batch import Batch, ImageBatch, SceneBatch, TextBatch
from kdgm.data.templates import BLANK_ID, EOS_ID, InfillBatch
from kdgm.models.air import AIR
from kdgm.models.biggan import biggan
from kdgm.models.gan import dcgan
from kdgm.models.flows import Glow, RealNVP, dequantize
from kdgm.models.infill import TemplateInfiller
from kdgm.models.progan import progan
from kdgm.models.sbn import SigmoidBeliefNet
from kdgm.models.text_cnn import SentenceCNN
from kdgm.models.vae import VAE
from kdgm.objectives.adversarial import DiscriminatorLoss, GeneratorLoss
from kdgm.objectives.air import AIRELBO
from kdgm.objectives.base import LossOutput, Objective
from kdgm.objectives.classification import CrossEntropy
from kdgm.objectives.elbo import ELBO, IWAE
from kdgm.objectives.likelihood import MaximumLikelihood
from kdgm.objectives.wake_sleep import ReweightedWake, ReweightedWakeQ, SleepPhase, SummedPhases, WakePhase
from kdgm.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model, a small batch it accepts, and an objective that trains it.

    ``kind`` says which interface the model has: ``latent`` (``forward(x, k)`` → named log-densities),
    ``classifier`` (``forward(*batch.inputs())`` → (B, K) logits), ``scene`` (``forward(x)`` → a structured
    posterior trajectory with a reconstruction ``canvas``), ``adversarial`` (``sample(n, cond)`` and
    ``discriminate(x, cond)``), ``sequence`` (``token_log_probs(x, cond)``, ``log_prob``, ``sample``) or ``density``
    (an exact density: ``log_prob(x)`` and ``sample(n)``, a normalizing flow).

    ``generative`` says which posterior-regularization M-step applies (:mod:`kdgm.knowledge.regularized`):
    ``explicit`` (``log_prob(x, cond)`` and ``sample(n, cond)``), ``implicit`` (a differentiable ``sample(n, cond)``)
    or ``""`` (a classifier takes rules through distillation; AIR takes structural knowledge through ASR).
    """

    build: Callable[[], nn.Module]
    example: Callable[[], Batch]
    objective: Callable[[], Objective]
    kind: str = "latent"
    generative: str = ""


def _binary_images(n: int = 4, shape: tuple[int, int, int] = (1, 28, 28)) -> ImageBatch:
    return ImageBatch(x=torch.bernoulli(torch.full((n, *shape), 0.3)))


def _labelled_images(n: int = 4, size: int = 32, classes: int = 10) -> ImageBatch:
    """Grey images with class labels (class-conditional GANs)."""
    return ImageBatch(x=torch.rand(n, 1, size, size), y=torch.arange(n) % classes)


def _grey_levels(n: int = 4) -> ImageBatch:
    """Uniformly dequantised 8-bit images, what a flow's density is defined on."""
    return ImageBatch(x=dequantize(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)))


def _sentences(n: int = 6, vocab: int = 30) -> TextBatch:
    lengths = torch.randint(1, 9, (n,))
    tokens = torch.randint(2, vocab, (n, 9)) * (torch.arange(9) < lengths[:, None])
    return TextBatch(tokens, lengths, torch.randint(0, 2, (n,)), torch.arange(n))


def _scenes(n: int = 4, size: int = 20) -> SceneBatch:
    x = torch.zeros(n, 1, size, size)
    x[:, :, 4:10, 4:10] = 1.0
    x[: n // 2, :, 12:18, 11:17] = 1.0
    counts = torch.tensor([2] * (n // 2) + [1] * (n - n // 2))
    boxes = torch.tensor([[4.0, 4.0, 10.0, 10.0], [11.0, 12.0, 17.0, 18.0]]).expand(n, 2, 4).clone()
    boxes[n // 2 :, 1] = 0
    return SceneBatch(x, boxes, counts)


def _templates(n: int = 4, vocab: int = 20) -> InfillBatch:
    """Sentences of 6 words with their second and third words blanked."""
    target = torch.randint(5, vocab, (n, 7))
    target[:, 6] = EOS_ID
    template = torch.cat([target[:, :1], torch.full((n, 1), BLANK_ID), target[:, 3:6]], 1)  # (n, 5)
    infill = torch.zeros(n, 7, dtype=torch.bool)
    infill[:, 1:3] = True
    return InfillBatch(template, torch.full((n,), 5), target, torch.full((n,), 7), infill, torch.arange(n))


def _small_air(prior: str, image_encoder: str = "mlp") -> AIR:
    return AIR(image_size=20, max_steps=2, z_what_dim=4, glimpse_size=8, hidden=16, embed_dim=16,
               encoder_hidden=(16,), decoder_hidden=(16,), baseline_hidden=8, prior=prior,
               image_encoder=image_encoder, decoder_bias=-2.0)


def _both_players(loss: str = "nonsaturating", gradient_penalty: float = 0.0) -> Objective:
    """Both sides of an adversarial game summed: one backward pass reaches the generator and the discriminator (the
    suite's gradient check; training alternates them as two phases)."""
    critic, generator = DiscriminatorLoss(loss, gradient_penalty), GeneratorLoss(loss)

    def objective(model, batch) -> LossOutput:
        d, g = critic(model, batch), generator(model, batch)
        return LossOutput(d.total + g.total, {**d.terms, **g.terms})

    return objective


def _every_stage(loss: str = "wasserstein", gradient_penalty: float = 10.0) -> Objective:
    """Both players of a Progressive GAN at every stage of its growth (one stage's pass leaves the other stages'
    toRGB / fromRGB layers unused), summed, ending at full resolution."""
    both = _both_players(loss, gradient_penalty)

    def objective(model, batch) -> LossOutput:
        outs = []
        for progress in (0.0, 0.3, 0.55, 0.8):  # stage 0, then each later stage while it fades in
            model.set_progress(progress)
            outs.append(both(model, batch))
        model.set_progress(1.0)
        return LossOutput(sum(out.total for out in outs), outs[-1].terms)

    return objective


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register("vae-mlp", ModelSpec(lambda: VAE(arch="mlp"), _binary_images, ELBO, generative="implicit"))
MODELS.register("vae-conv", ModelSpec(lambda: VAE(arch="conv", z_dim=16), _binary_images, lambda: IWAE(k=3),
                                      generative="implicit"))
MODELS.register("sentence-cnn", ModelSpec(lambda: SentenceCNN(30, 2, embed_dim=8, n_filters=4, dropout=0.0),
                                          _sentences, CrossEntropy, kind="classifier"))
MODELS.register("air", ModelSpec(lambda: _small_air("fixed"), _scenes, AIRELBO, kind="scene"))
MODELS.register("air-pprior", ModelSpec(lambda: _small_air("learned"), _scenes, AIRELBO, kind="scene"))
MODELS.register("air-pprior-conv", ModelSpec(lambda: _small_air("learned", "conv"), _scenes, AIRELBO, kind="scene"))
MODELS.register("dcgan-28", ModelSpec(lambda: dcgan(z_dim=8, image_size=28, width=8), _binary_images, _both_players,
                                      kind="adversarial", generative="implicit"))
MODELS.register("dcgan-32-wgan-gp", ModelSpec(lambda: dcgan(z_dim=8, image_size=32, width=8, d_norm="none"),
                                              lambda: _binary_images(shape=(1, 32, 32)),
                                              lambda: _both_players("wasserstein", 10.0), kind="adversarial",
                                              generative="implicit"))
MODELS.register("dcgan-32-conditional", ModelSpec(lambda: dcgan(z_dim=8, image_size=32, width=8, num_classes=10),
                                                  _labelled_images, _both_players, kind="adversarial",
                                                  generative="implicit"))
# attention_gamma > 0: with γ = 0 the attention's convolutions get exactly no gradient at the first step
MODELS.register("biggan-32", ModelSpec(lambda: biggan(z_dim=16, width=8, attention_gamma=0.1), _labelled_images,
                                       lambda: _both_players("hinge"), kind="adversarial", generative="implicit"))
MODELS.register("progan-32", ModelSpec(lambda: progan(z_dim=8, width=16), lambda: _binary_images(shape=(1, 32, 32)),
                                       _every_stage, kind="adversarial", generative="implicit"))
# a sigmoid belief net trains by two phases on two parameter groups; summed, every parameter gets a gradient
MODELS.register("sbn-wake-sleep", ModelSpec(lambda: SigmoidBeliefNet(hidden=(20, 20)), _binary_images,
                                            lambda: SummedPhases(WakePhase(), SleepPhase()), generative="explicit"))
MODELS.register("sbn-reweighted", ModelSpec(lambda: SigmoidBeliefNet(hidden=(20,)), _binary_images,
                                            lambda: SummedPhases(ReweightedWake(k=5), ReweightedWakeQ(k=5)),
                                            generative="explicit"))
# zero_init=False: a zero-initialised coupling starts as the identity, whose hidden layers get no gradient at step 0
MODELS.register("realnvp", ModelSpec(lambda: RealNVP(levels=2, hidden=16, zero_init=False), _grey_levels,
                                     MaximumLikelihood, kind="density", generative="explicit"))
MODELS.register("glow", ModelSpec(lambda: Glow(levels=2, steps=2, hidden=16, zero_init=False), _grey_levels,
                                  MaximumLikelihood, kind="density", generative="explicit"))
MODELS.register("template-infiller", ModelSpec(lambda: TemplateInfiller(20, embed_dim=8, hidden=8), _templates,
                                               lambda: MaximumLikelihood(units=lambda b: b.target_lengths),
                                               kind="sequence", generative="explicit"))
