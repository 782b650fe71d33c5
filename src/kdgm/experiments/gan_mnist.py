"""``gan-mnist``: the GAN family of the lectures as one table, and knowledge on an implicit model.

Lecture ``001_…txt`` (GAN, Wasserstein GAN, Progressive GAN, BigGAN) and notes ``002_…txt`` section 5 (the minimax
game, k discriminator steps per generator step, the non-saturating generator loss, mode collapse). The lectures give
no numbers for MNIST; the table compares the methods with one another, on one data set, one budget and one metric.

Rows, on MNIST padded to 32×32 (grey levels in [0, 1]):

- GAN (minimax), GAN (non-saturating): a DCGAN, the two generator losses of the notes.
- WGAN (clipping): a critic without sigmoid, 5 critic steps per generator step, weights clipped to [−c, c], RMSProp.
- WGAN-GP: the same critic with the gradient penalty instead of clipping, Adam (β₁ = 0.5, β₂ = 0.9).
- Progressive GAN (:mod:`kdgm.models.progan`): grows 4×4 → 32×32 with fade-in over the run, WGAN-GP, Adam
  (β₁ = 0, β₂ = 0.99) as Karras et al. (2018).
- BigGAN (:mod:`kdgm.models.biggan`), small: hinge loss, 2 critic steps per generator step, orthogonal
  regularisation, a moving average of the generator's weights (the samples evaluated), Adam (β₁ = 0) at lr 4e-3
  (20× DCGAN's: see the row).
- Conditional DCGAN and its knowledge rows: the constraint "a classifier recognises the requested class",
  ``f(x, y) = log p_clf(y | x)``, added to the generator through the implicit M-step of posterior regularization
  (:class:`kdgm.knowledge.ImplicitMStep`, Hu et al. 2018) — *fixed* (a classifier trained beforehand, frozen) or
  *learned* (the same classifier as initialisation, updated by the φ-step :class:`kdgm.knowledge.TeacherLikelihood`
  with real digits as data and generated ones as samples of q). All three start from the same initialisation.

Metrics (:mod:`kdgm.metrics.image_quality`): FID and KID in the feature space of a "judge" classifier trained on the
second half of the MNIST training set, class coverage and the judge's confidence; for conditional rows, class
consistency by the judge — the constraint's classifier is trained on the first half, so no row grades itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdgm.data.mnist import LabelledImages, grey_images, load_mnist
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, ExperimentData, Metric, Preset, Row, TrainConfig
from kdgm.knowledge.confidence import TeacherLikelihood
from kdgm.knowledge.constraint import Constraint
from kdgm.knowledge.regularized import ImplicitMStep, PosteriorRegularization
from kdgm.metrics.image_quality import DigitClassifier, cached_classifier, frechet_distance, sample_quality
from kdgm.models.biggan import BigGAN, GeneratorEMA, OrthogonalRegularized, biggan
from kdgm.models.gan import dcgan
from kdgm.models.progan import Growing, ProGAN, progan
from kdgm.objectives.adversarial import DiscriminatorLoss, GeneratorLoss, WeightClipping
from kdgm.report.figures import save_image_grid
from kdgm.report.paired import paired_differences
from kdgm.report.timing import seconds_per_step
from kdgm.train.updater import Phase

CLASSES = 10
HALF = 30000  # the constraint's classifier trains on MNIST train[:HALF], the judge on train[HALF:]
CONDITIONAL_BASE = "Conditional DCGAN"
KNOWLEDGE = {"fixed": "Conditional DCGAN + fixed class constraint",
             "learned": "Conditional DCGAN + learned class constraint"}


class ClassRecognised(Constraint):
    """``f_φ(x, y) = log p_φ(y | x)``: how surely a classifier recognises the requested class y in image x.

    Fixed when its classifier is frozen; learned when the φ-step updates the classifier (Hu et al. 2018): it then
    raises f on real digits of class y and lowers it on generated ones, a class-aware critic.
    """

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("ClassRecognised scores an image against its requested class: pass the (B,) labels")
        log_p = torch.log_softmax(self.classifier(x), -1)  # (B, K)
        return log_p.gather(1, cond[:, None]).squeeze(1)  # (B,)


@dataclass
class GanMnistConfig(TrainConfig):
    """Config of ``gan-mnist`` (training fields in :class:`TrainConfig`; ``lr`` is the generator's and the critic's).

    Attributes:
        model: ``dcgan`` / ``progan`` / ``biggan`` (fixed by each row). conditional: a class-conditional DCGAN.
            minibatch_std: the DCGAN discriminator's minibatch standard deviation (within each class when
            conditional; :class:`kdgm.models.minibatch_std.MinibatchStdDev`). Off in every row: on the conditional
            rows at quick it did not keep them from drawing about one image per class (within-class diversity
            39 / 14 / 16 % of the data's in seeds 0–2) and the fixed constraint then lost to the base in seed 2.
        loss: the adversarial loss. n_critic: critic steps per generator step. clip: WGAN weight clipping range
            (0: none). gradient_penalty: λ of WGAN-GP (0: none). optimizer: ``adam`` (β₁ = beta1, β₂ = beta2) or
            ``rmsprop`` (the WGAN paper's).
        z_dim, width: the networks' latent size and width: DCGAN's channels at 16×16, doubled at each coarser
            resolution; the Progressive GAN is given the same channels at every resolution it shares with DCGAN
            (``4·width`` at 4×4, halved at each finer one).
        ortho_beta, ema_decay: BigGAN's orthogonal regularisation β and the decay of its generator's moving average
            (which starts averaging after the first third of the run).
        constraint: ``none`` / ``fixed`` / ``learned`` class constraint (conditional DCGAN). alpha: its weight α in
            the generator's M-step. pr_samples: samples per label for the φ-step's normaliser. phi_lr, f_penalty:
            the φ-step's learning rate and E[f²] penalty.
        classifier_steps: training steps of the judge and constraint classifiers (each trained once, cached).
        eval_samples: generated images for the final metrics (and as many real test images); progress_samples:
            for the FID during training.
        train_examples: training digits (0: all 60,000).
    """

    model: Literal["dcgan", "progan", "biggan"] = "dcgan"
    conditional: bool = False
    minibatch_std: bool = False
    loss: Literal["minimax", "nonsaturating", "wasserstein", "hinge"] = "nonsaturating"
    n_critic: int = 1
    clip: float = 0.0
    gradient_penalty: float = 0.0
    optimizer: Literal["adam", "rmsprop"] = "adam"
    beta1: float = 0.5
    beta2: float = 0.999
    z_dim: int = 64
    width: int = 32
    ortho_beta: float = 1e-4
    ema_decay: float = 0.999
    constraint: Literal["none", "fixed", "learned"] = "none"
    alpha: float = 0.5
    pr_samples: int = 1
    phi_lr: float = 1e-4
    f_penalty: float = 0.0
    classifier_steps: int = 1000
    eval_samples: int = 5000
    progress_samples: int = 1000
    train_examples: int = 0
    batch_size: int = 64
    lr: float = 2e-4
    log_every: int = 50

    positive = TrainConfig.positive + ("n_critic", "z_dim", "width", "alpha", "pr_samples", "phi_lr",
                                       "classifier_steps", "eval_samples", "progress_samples")
    non_negative = TrainConfig.non_negative + ("ortho_beta", "ema_decay", "train_examples", "clip", "gradient_penalty", "f_penalty", "beta1", "beta2")

    def validate(self) -> None:
        super().validate()
        if self.beta1 >= 1 or self.beta2 >= 1 or self.ema_decay > 1:
            raise UserError(f"beta1 and beta2 must be below 1 and ema_decay at most 1, got {self.beta1}, {self.beta2}, "
                            f"{self.ema_decay}")
        if max(self.eval_samples, self.progress_samples) > 10000:
            raise UserError("eval_samples and progress_samples must be at most 10000 (the MNIST test set)")
        if self.constraint != "none" and not self.conditional:
            raise UserError("the class constraint needs a class-conditional generator (conditional=true)")


@dataclass
class JudgedDigits:
    """The real test digits the metrics compare samples with, and the judge classifier whose features they use."""

    real: LabelledImages
    judge: DigitClassifier


@dataclass
class _Digits(ExperimentData):
    """Training digits, the judged test digits (``test``), and the constraint's classifier."""

    constraint_classifier: DigitClassifier = None


def _half(split: slice, data_dir: str | None):
    def build() -> tuple[Tensor, Tensor]:
        images, labels = load_mnist("train", data_dir)
        return grey_images(images[split], 32), labels[split]
    return build


class GanMnist(Experiment):
    name = "gan-mnist"
    title = "The GAN family on MNIST, and a class constraint on a conditional generator"
    paper = ("Lectures 001 (GAN, WGAN, Progressive GAN, BigGAN) and 002 §5; Hu et al. (2018) for the constraint — "
             "the lectures give no numbers")
    table = "the lectures' progression (no paper numbers)"
    config_class = GanMnistConfig
    presets = {
        "smoke": Preset(dict(steps=4, batch_size=16, z_dim=16, width=8, classifier_steps=20, eval_samples=200,
                             train_examples=1000,
                             progress_samples=100, eval_every=2, log_every=2, checkpoint_every=2), 1,
                        "CI smoke run: 4 steps of tiny networks on 1,000 digits, metrics on 200 samples"),
        "quick": Preset(dict(steps=1500, width=16, eval_samples=2000, eval_every=500, checkpoint_every=500), 3,
                        "1,500 generator steps of batch 64 (1.6 epochs), networks of width 16; metrics on 2,000 "
                        "samples"),
        "full": Preset(dict(steps=10000, eval_samples=10000, eval_every=1000, checkpoint_every=1000), 3,
                       "10,000 generator steps of batch 64 (10.7 epochs); metrics on 10,000 samples"),
        "paper": Preset(dict(steps=50000, width=64, eval_samples=10000, eval_every=5000, checkpoint_every=5000), 3,
                        "for a GPU: 50,000 generator steps, networks twice as wide"),
    }
    rows = (
        Row("GAN (minimax)", {"loss": "minimax"}),
        Row("GAN (non-saturating)", {"loss": "nonsaturating"}),
        Row("WGAN (clipping)", {"loss": "wasserstein", "n_critic": 5, "clip": 0.01, "optimizer": "rmsprop",
                                "lr": 5e-5}),
        Row("WGAN-GP", {"loss": "wasserstein", "n_critic": 5, "gradient_penalty": 10.0, "beta1": 0.5,
                        "beta2": 0.9, "lr": 1e-4}),
        Row("Progressive GAN", {"model": "progan", "loss": "wasserstein", "gradient_penalty": 10.0, "lr": 1e-3,
                                "beta1": 0.0, "beta2": 0.99}),
        # BigGAN at 2e-4 (DCGAN's lr) was still drawing class-blind blobs after 1,500 steps (FID 391, class consistency
        # 12 %, seed 0); 4e-3 gave FID 57 and 97 % / 81 % in seeds 0 / 1 (FID at 1e-3: 285 / 331, 2e-3: 129 / 87,
        # 8e-3: 106 in seed 0). Spectral normalisation makes each layer invariant to its weights' scale, and Adam moves
        # each weight by about lr per step: the orthogonally initialised weights of layers this narrow are 3–10× larger
        # than BigGAN's, so the same lr turns them far more slowly
        Row("BigGAN (class-conditional)", {"model": "biggan", "loss": "hinge", "n_critic": 2, "beta1": 0.0,
                                           "beta2": 0.999, "lr": 4e-3}),
        Row(CONDITIONAL_BASE, {"conditional": True}),
        Row(KNOWLEDGE["fixed"], {"conditional": True, "constraint": "fixed"}),
        Row(KNOWLEDGE["learned"], {"conditional": True, "constraint": "learned"}),
    )
    metrics = (
        Metric("fid", "FID"),
        Metric("kid", "KID", digits=1),
        Metric("coverage", "classes covered", lower_is_better=False, digits=1),
        Metric("diversity", "within-class diversity (% of real)", lower_is_better=False, digits=1),
        Metric("confidence", "judge confidence (%)", lower_is_better=False, digits=1),
        Metric("consistency", "class consistency (%)", lower_is_better=False, digits=1),
    )
    progress_metrics = ("fid",)
    curve_terms = ("critic/d_loss", "critic/w_distance", "generator/g_loss", "generator/f_p", "phi/f_data")
    data_parallel = False  # the objectives call sample and discriminate, which DDP does not synchronise

    def differences(self, config: GanMnistConfig) -> list[str]:
        return [
            "The lectures report no MNIST numbers: rows are compared with one another (paired, same seed).",
            f"{config.steps} generator steps of batch {config.batch_size}; DCGAN width {config.width}, z {config.z_dim}.",
            f"FID and KID in the 128-d feature space of a CNN trained on MNIST train[{HALF}:] ({config.classifier_steps}"
            f" steps), not Inception: comparable between kdgm runs only; {config.eval_samples} samples against as many "
            "test digits.",
            f"Knowledge rows: α = {config.alpha}, {config.pr_samples} sample(s) per label in the φ-step's normaliser; "
            f"the constraint's classifier is trained on train[:{HALF}], the judge on train[{HALF}:].",
        ]

    # -- the flow ----------------------------------------------------------------------------------------------
    def data(self, config: GanMnistConfig, seed: int = 0) -> _Digits:
        images, labels = load_mnist("train", config.data_dir)
        test_images, test_labels = load_mnist("test", config.data_dir)
        train_args = dict(steps=config.classifier_steps)
        judge = cached_classifier(f"mnist32-train{HALF}-", _half(slice(HALF, None), config.data_dir), **train_args)
        constraint = cached_classifier(f"mnist32-train-{HALF}", _half(slice(0, HALF), config.data_dir), **train_args)
        n = config.eval_samples
        test = JudgedDigits(LabelledImages(grey_images(test_images[:n], 32), test_labels[:n]), judge)
        m = config.train_examples or len(images)
        return _Digits(LabelledImages(grey_images(images[:m], 32), labels[:m]), test, constraint_classifier=constraint)

    def build_model(self, config: GanMnistConfig, data: _Digits) -> nn.Module:
        if config.model == "biggan":
            return biggan(config.z_dim, CLASSES, config.width)
        if config.model == "progan":
            # progan's width is its 4×4 channels: 4·width gives it DCGAN's channels at 4, 8 and 16 pixels (with
            # width itself at 4×4 it had 2 channels at 32×32 and an FID of 232 at quick; 4·width: 88, one seed)
            model = progan(config.z_dim, 4 * config.width)
            model.set_progress(0.0)  # grows from 4×4 as training progresses
            return model
        return dcgan(config.z_dim, 1, 32, config.width, CLASSES if config.conditional else 0,
                     d_norm="none" if config.gradient_penalty else "batch", minibatch_std=config.minibatch_std)

    def phases(self, config: GanMnistConfig, model: nn.Module, data: _Digits) -> list[Phase]:
        critic = DiscriminatorLoss(config.loss, config.gradient_penalty)
        generator: Any = GeneratorLoss(config.loss)
        critic_opt = self._optimizer(model.discriminator.parameters(), config)
        if config.clip:
            critic_opt.register_step_post_hook(WeightClipping(model.discriminator, config.clip))
        if config.model == "progan":  # the growth schedule follows the loop's progress, in both phases
            critic, generator = Growing(critic), Growing(generator)
        if config.model == "biggan":
            generator = OrthogonalRegularized(generator, config.ortho_beta)
        phases = [Phase("critic", critic, critic_opt, repeats=config.n_critic)]
        generator_opt = self._optimizer(model.generator.parameters(), config)
        if isinstance(model, BigGAN):
            generator_opt.register_step_post_hook(GeneratorEMA(model, config.ema_decay, start=config.steps // 3))
        if config.constraint == "none":
            return phases + [Phase("generator", generator, generator_opt)]
        constraint = ClassRecognised(copy.deepcopy(data.constraint_classifier).train())  # a copy per run: φ changes it
        if config.constraint == "fixed":
            constraint.freeze()
        pr = PosteriorRegularization(constraint, config.alpha, config.pr_samples, condition=lambda batch: batch.y)
        phases.append(Phase("generator", ImplicitMStep(pr, base=generator), generator_opt,
                            modules={"constraint": constraint}))
        if config.constraint == "learned":
            phases.append(Phase("phi", TeacherLikelihood(pr, config.f_penalty),
                                torch.optim.Adam(constraint.parameters(), lr=config.phi_lr, betas=(0.5, 0.999))))
        return phases

    @staticmethod
    def _optimizer(params, config: GanMnistConfig) -> torch.optim.Optimizer:
        if config.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=config.lr)
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2))

    # -- metrics -----------------------------------------------------------------------------------------------
    def _generate(self, model: nn.Module, n: int, seed: int = 0) -> tuple[Tensor, Tensor | None]:
        """(n, 1, 32, 32) samples from fixed noise (the same for every row) and their requested classes, on the CPU."""
        generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        labels = torch.arange(n) % CLASSES if model.conditional else None
        parts = []
        with torch.no_grad():
            for index in torch.arange(n).split(500):
                cond = labels[index].to(device) if labels is not None else None
                parts.append(model.sample(len(index), cond, generator=generator).cpu())
        return torch.cat(parts), labels

    def evaluate(self, config: GanMnistConfig, model: nn.Module, test: JudgedDigits,
                 final: bool) -> dict[str, float]:
        judge, real = test.judge.to(next(model.parameters()).device), test.real.x
        was_training = model.training
        model.eval()
        try:
            if not final:
                fake, _ = self._generate(model, config.progress_samples)
                return {"fid": frechet_distance(judge, real[: config.progress_samples], fake)}
            fake, labels = self._generate(model, config.eval_samples)
            metrics = sample_quality(judge, real, fake, labels)
        finally:
            model.train(was_training)
        metrics.pop("classifier_score")  # kept by the metric; the table shows confidence and coverage
        return metrics  # without "consistency" for an unconditional row: nothing was requested

    def figures(self, config: GanMnistConfig, model: nn.Module, test: JudgedDigits, folder: Path) -> list[Path]:
        model.eval()
        images, _ = self._generate(model, 100)
        paths = [save_image_grid(images, folder / "samples.png", nrow=10)]
        if isinstance(model, ProGAN):  # the same noise at every resolution of the growth
            z = model.noise(10, torch.Generator().manual_seed(0))
            with torch.no_grad():
                grid = torch.cat([model.sample_at(10, stage, z=z, full_size=True).cpu() for stage in range(model.stages)])
            paths.append(save_image_grid(grid, folder / "resolutions.png", nrow=10))
        if isinstance(model, BigGAN):  # the truncation trick: rows of one class per column, t = 0.5, 1, 2
            labels = torch.arange(30) % CLASSES
            with torch.no_grad():
                grid = torch.cat([model.sample(30, labels.to(next(model.parameters()).device), truncation=t,
                                               generator=torch.Generator().manual_seed(0)).cpu()
                                  for t in (0.5, 1.0, 2.0)])
            paths.append(save_image_grid(grid, folder / "truncations.png", nrow=10))
        return paths

    def samples(self, model: nn.Module, n: int, generator: torch.Generator, data: Any = None) -> Tensor:
        model.eval()
        labels = torch.arange(n) % CLASSES if model.conditional else None
        device = next(model.parameters()).device
        with torch.no_grad():
            return model.sample(n, labels.to(device) if labels is not None else None, generator=generator).cpu()

    def report_sections(self, metrics: dict[str, Any], run: Any = None) -> list[str]:
        pairs = [(row, CONDITIONAL_BASE) for row in KNOWLEDGE.values()] + [("GAN (minimax)", "GAN (non-saturating)"),
                                                                            ("WGAN-GP", "GAN (minimax)")]
        lines = paired_differences(metrics, pairs, ("fid", "consistency", "coverage", "diversity"))
        if run is not None:
            lines += seconds_per_step(self, run)
        return lines
