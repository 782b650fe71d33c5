"""``flows-mnist``: RealNVP and Glow on dequantised MNIST — exact likelihood, exact inference.

Lecture ``001_…txt`` (normalizing flows: invertible transforms, the change of variables, triangular Jacobians, the
Glow step of actnorm, invertible 1×1 convolution and affine coupling; training by exact log-likelihood; exact
inference z = f⁻¹(x)). Both models (:mod:`kdgm.models.flows`) are trained by maximum likelihood of uniformly
dequantised 8-bit digits and evaluated in bits per dimension on the test set (dequantised once with a fixed seed).

The lecture gives no MNIST numbers; the paper column holds the bits/dim that Grathwohl et al. (2019, FFJORD, Table 2)
report for RealNVP (1.06) and Glow (1.05) on MNIST, for calibration (not a source document; far larger models
trained far longer).

Knowledge on an explicit model (Hu et al. 2018's PR with a fixed constraint): two rows fine-tune the trained Glow
(the "Glow" row's final weights, same seed) by the explicit M-step (:class:`kdgm.knowledge.ExplicitMStep`): the data
log-likelihood plus ``w`` times the q-weighted log-likelihood of S samples of the model per step, with
``q ∝ p_θ exp(α f)``; "Glow, continued" fine-tunes it as long by the data likelihood alone, the paired base (as
template-infill's continued MLE). Fine-tuning pairs them: at the quick budget Glow is far from converged and the
constraints' values on samples move with training progress (a Glow trained less has more specks), which swamped
the constraint's own effect when the rows were trained from scratch. "Glow + thin strokes" takes f =
:func:`thin_strokes` ("strokes no thicker than 3 pixels", which MNIST's own strokes break), "Glow + no specks" f =
:func:`no_specks` ("no isolated ink pixels", which MNIST keeps and a flow's samples break). Every row reports both
constraints on 500 samples at temperature 1, so each effect is read beside its cost in bits/dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.data.mnist import DequantizedMNIST, load_mnist
from kdgm.errors import UserError
from kdgm.experiments.base import Experiment, ExperimentData, Metric, Preset, Row, TrainConfig
from kdgm.knowledge import ExplicitMStep, FunctionConstraint, PosteriorRegularization
from kdgm.models.flows import Glow, RealNVP, bits_per_dim
from kdgm.objectives.likelihood import MaximumLikelihood
from kdgm.report.figures import save_image_grid
from kdgm.report.paired import paired_differences
from kdgm.train.optim import adam, schedule
from kdgm.train.updater import Phase

DIMS = 28 * 28
CONTINUED = "Glow, continued"
THIN = "Glow + thin strokes"
SPECKS = "Glow + no specks"


def thin_strokes(x: Tensor) -> Tensor:
    """(B,) f(x) = −(share of the pixels that are ink with their whole 3×3 neighbourhood ink): 0 for strokes at most
    two pixels wide, lower the more thick ink an image has. Images (B, 1, H, W) in [0, 1]; ink is > 0.5."""
    ink = (x > 0.5).float()
    core = -F.max_pool2d(-ink, 3, stride=1, padding=1)  # (B, 1, H, W) erosion: ink whose neighbours are all ink
    return -core.flatten(1).mean(1)


def isolated_ink(x: Tensor) -> Tensor:
    """(B,) the number of ink pixels (> 0.5) of each image (B, 1, H, W) none of whose 8 neighbours is ink: specks.

    Knowledge that holds for the data (a digit is drawn in connected strokes: 0.005 specks per MNIST test digit, one
    digit in 250 has any) and that a flow breaks (17% of a quick Glow's samples have a speck, 0.25–0.32 per sample
    on average); :func:`thin_strokes` is the other kind, a constraint the data itself breaks (MNIST strokes are thicker
    than it allows)."""
    ink = (x > 0.5).float()  # (B, 1, H, W)
    neighbours = F.conv2d(ink, x.new_ones(1, 1, 3, 3), padding=1) - ink  # (B, 1, H, W) ink among the 8 neighbours
    return (ink * (neighbours == 0)).flatten(1).sum(1)


def no_specks(x: Tensor) -> Tensor:
    """(B,) f(x) = −(number of isolated ink pixels): 0 for an image drawn in connected strokes."""
    return -isolated_ink(x)


CONSTRAINTS = {"thin": thin_strokes, "specks": no_specks}
SPECKS_ALPHA = 5.0  # α of the no-specks row: f counts specks (0, 1, 2, …), so α = 5 all but drops a specky sample


@dataclass
class FlowsConfig(TrainConfig):
    """Config of ``flows-mnist`` (training fields in :class:`TrainConfig`).

    Attributes:
        model: ``realnvp`` or ``glow`` (fixed by each row).
        levels: multi-scale levels L. flow_steps: Glow steps K per level. hidden: channels of the coupling networks.
        eval_examples, eval_batch: test images for bits/dim and their batch size.
        constraint: ``none``, ``thin`` or ``specks`` (the explicit PR M-step with :func:`thin_strokes` or
            :func:`no_specks`; fixed by each row).
        pr_alpha: α of ``q ∝ p_θ exp(α f)``. pr_samples: S samples of the model per step. pr_weight: w, the weight of
            the q-weighted sample likelihood, added to the data's. pr_center: centre the weights (w_s − 1/S).
        finetune: start from the Glow row's final weights and train ``finetune_steps`` at ``finetune_lr`` without
            warm-up (fixed by the fine-tuning rows).
    """

    model: Literal["realnvp", "glow"] = "glow"
    levels: int = 2
    flow_steps: int = 4
    hidden: int = 64
    eval_examples: int = 10000
    eval_batch: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    grad_clip: float | None = 50.0
    constraint: Literal["none", "thin", "specks"] = "none"
    pr_alpha: float = 50.0
    pr_samples: int = 16
    pr_weight: float = 1.0
    pr_center: bool = True
    finetune: bool = False
    finetune_steps: int = 500
    finetune_lr: float = 1e-4

    positive = TrainConfig.positive + ("levels", "flow_steps", "hidden", "eval_examples", "eval_batch", "pr_samples",
                                       "finetune_steps", "finetune_lr")
    non_negative = TrainConfig.non_negative + ("pr_alpha", "pr_weight")

    def validate(self) -> None:
        super().validate()
        if self.eval_examples > 10000:
            raise UserError(f"eval_examples must be at most 10000 (the MNIST test set), got {self.eval_examples}")
        limit = 2 if self.model == "glow" else 3
        if self.levels > limit:
            raise UserError(f"{self.model} on 28x28 images takes at most {limit} levels (28 -> 14 -> 7), got "
                            f"{self.levels}")


class FlowsMnist(Experiment):
    name = "flows-mnist"
    title = "RealNVP and Glow on dequantised MNIST"
    paper = ("Lecture 001 (normalizing flows); bits/dim for calibration from Grathwohl et al. (2019), Table 2 "
             "(not a source document)")
    table = "MNIST bits/dim"
    config_class = FlowsConfig
    presets = {
        "smoke": Preset(dict(steps=4, finetune_steps=2, batch_size=16, hidden=8, flow_steps=1, eval_examples=64,
                             warmup_steps=2, log_every=2, checkpoint_every=2), 1,
                        "CI smoke run: 4 steps of tiny flows (2 of fine-tuning), bits/dim on 64 test images"),
        "quick": Preset(dict(steps=2000, finetune_steps=500, eval_examples=2000, eval_every=1000), 2,
                        "2,000 steps of batch 64 (2 epochs), L=2, K=4, hidden 64, then 500 steps of fine-tuning; "
                        "bits/dim on 2,000 test images"),
        "full": Preset(dict(steps=20000, finetune_steps=2000, flow_steps=8, hidden=128, eval_every=5000), 3,
                       "20,000 steps of batch 64 (21 epochs), L=2, K=8, hidden 128, then 2,000 of fine-tuning"),
        "paper": Preset(dict(steps=100000, finetune_steps=10000, flow_steps=16, hidden=256, eval_every=10000), 3,
                        "for a GPU: 100,000 steps, L=2, K=16, hidden 256, then 10,000 of fine-tuning"),
    }
    rows = (
        Row("RealNVP", {"model": "realnvp"}, {"bpd": 1.06}),
        Row("Glow", {"model": "glow"}, {"bpd": 1.05}),
        Row(CONTINUED, {"model": "glow", "finetune": True}, init_from="Glow"),
        Row(THIN, {"model": "glow", "constraint": "thin", "finetune": True}, init_from="Glow"),
        Row(SPECKS, {"model": "glow", "constraint": "specks", "finetune": True, "pr_alpha": SPECKS_ALPHA},
            init_from="Glow"),
    )
    metrics = (Metric("bpd", "test bits/dim", digits=3),
               Metric("thin", "thin strokes f ×100 (samples)", lower_is_better=False, digits=2),
               Metric("specks", "specks per sample", digits=3))
    progress_metrics = ("bpd",)
    data_parallel = False  # actnorm initialises from the first batch each process sees

    def run_config(self, config: FlowsConfig) -> FlowsConfig:
        return config.fine_tuning(config.finetune_steps, config.finetune_lr) if config.finetune else config

    def differences(self, config: FlowsConfig) -> list[str]:
        return [
            f"{config.steps} steps of batch {config.batch_size} ({config.steps * config.batch_size / 60000:.1f} "
            f"epochs); L={config.levels}, K={config.flow_steps} (Glow), coupling networks of {config.hidden} "
            "channels (plain conv nets for RealNVP, no ResNet or batch norm).",
            f"Bits/dim on the first {config.eval_examples} test digits, dequantised once with a fixed seed.",
            f"{CONTINUED}, {THIN} and {SPECKS} fine-tune the Glow row's final weights (same seed) for "
            f"{config.finetune_steps} steps at lr {config.finetune_lr}, on the same batches: compare them with one "
            "another, not with Glow, which trained fewer steps.",
            f"{THIN}: the explicit PR M-step with f = thin strokes (no 3×3 block of ink), α = {config.pr_alpha}, "
            f"{config.pr_samples} samples per step, weight {config.pr_weight} beside the data likelihood (our "
            "constraint; the lecture and Hu et al. give no flow experiment). `thin`: mean f ×100 of 500 samples, the "
            "same latents for every row (MNIST test digits: about −1.5: the data breaks this constraint).",
            f"{SPECKS}: the same M-step with f = −(isolated ink pixels), α = {SPECKS_ALPHA:g} (knowledge the data "
            "keeps: 0.005 specks per test digit); `specks`: their mean number in the same 500 samples.",
        ]

    def data(self, config: FlowsConfig, seed: int = 0) -> ExperimentData:
        images, labels = load_mnist("train", config.data_dir)
        test_images, test_labels = load_mnist("test", config.data_dir)
        n = config.eval_examples
        return ExperimentData(DequantizedMNIST(images, labels), DequantizedMNIST(test_images[:n], test_labels[:n],
                                                                                    seed=12345))

    def build_model(self, config: FlowsConfig, data: ExperimentData) -> nn.Module:
        if config.model == "realnvp":
            return RealNVP(levels=config.levels, hidden=config.hidden)
        return Glow(levels=config.levels, steps=config.flow_steps, hidden=config.hidden)

    def phases(self, config: FlowsConfig, model: nn.Module, data: ExperimentData) -> list[Phase]:
        optimizer = adam(model.parameters(), config)
        objective = MaximumLikelihood()
        if config.constraint != "none":
            pr = PosteriorRegularization(FunctionConstraint(CONSTRAINTS[config.constraint], takes_cond=False),
                                         config.pr_alpha, config.pr_samples)
            # data digits have log p ≈ +3,000 nats: a sample below −10,000 is one the inverse lost to float32
            objective = ExplicitMStep(pr, base=objective, weight=config.pr_weight, center=config.pr_center,
                                      min_log_prob=-1e4)
        return [Phase("main", objective, optimizer, schedule(optimizer, config), grad_clip=config.grad_clip)]

    def evaluate(self, config: FlowsConfig, model: nn.Module, test: DequantizedMNIST, final: bool) -> dict[str, float]:
        device = next(model.parameters()).device
        n = len(test) if final else min(len(test), 500)
        total = 0.0
        with torch.no_grad():
            for index in torch.arange(n).split(config.eval_batch):
                total += float(model.log_prob(test.batch(index).x.to(device)).sum())
        metrics = {"bpd": float(bits_per_dim(total / n, DIMS))}
        if final:  # f of the model's samples: what the constraint asks to raise
            samples = self._sample(model, 500, torch.Generator().manual_seed(1))
            metrics["thin"] = 100 * float(thin_strokes(samples).mean())
            metrics["specks"] = float(isolated_ink(samples).mean())
        return metrics

    def figures(self, config: FlowsConfig, model: nn.Module, test: DequantizedMNIST, folder: Path) -> list[Path]:
        paths = []
        for temperature in (0.7, 1.0):
            images = self._sample(model, 64, torch.Generator().manual_seed(0), temperature)
            paths.append(save_image_grid(images, folder / f"samples_t{temperature}.png", nrow=8))
        paths.append(save_image_grid(self.interpolation(model, test), folder / "interpolation.png", nrow=10))
        return paths

    @staticmethod
    def _sample(model: nn.Module, n: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            # the inverse logit reaches slightly past [0, 1]: clamp for display
            return model.sample(n, temperature=temperature, generator=generator).clamp(0, 1).cpu()

    @staticmethod
    def interpolation(model: nn.Module, test: DequantizedMNIST, pairs: int = 4, points: int = 10) -> Tensor:
        """Exact inference: encode pairs of test digits, interpolate linearly in z, decode — (pairs·points, 1, 28, 28)."""
        device = next(model.parameters()).device
        x = test.batch(torch.arange(2 * pairs)).x.to(device)  # (2P, 1, 28, 28)
        with torch.no_grad():
            z = torch.cat([part.flatten(1) for part in model.encode(x)], 1)  # (2P, D)
            t = torch.linspace(0, 1, points, device=device)[None, :, None]  # (1, T, 1)
            path = (1 - t) * z[:pairs, None] + t * z[pairs:, None]  # (P, T, D)
            return model.decode(path.flatten(0, 1)).clamp(0, 1).cpu()  # (P·T, 1, 28, 28)

    def samples(self, model: nn.Module, n: int, generator: torch.Generator, data: Any = None) -> Tensor:
        return self._sample(model, n, generator)

    def report_sections(self, metrics: dict[str, Any], run: Any = None) -> list[str]:
        return paired_differences(metrics, [("Glow", "RealNVP"), (CONTINUED, "Glow"), (THIN, CONTINUED),
                                            (SPECKS, CONTINUED)],
                                  ("bpd", "thin", "specks"), digits=3)
