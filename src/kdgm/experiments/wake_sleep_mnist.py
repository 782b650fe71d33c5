"""``wake-sleep-mnist``: sigmoid belief networks trained by wake-sleep and reweighted wake-sleep, beside a VAE with
the same budget — the lecture's claim "VAEs obtain much higher data log-likelihood than the wake sleep algorithm"
(notes ``002_…txt`` sections 1–4) made into numbers.

Rows, on dynamically binarised MNIST, each trained for the same number of steps of the same batch size:

- SBN wake-sleep, one and two layers of 200 binary units (Hinton et al. 1995): the wake phase fits the generative
  network to recognition samples, the sleep phase fits the recognition network to the generator's fantasies — two
  phases of the one updater, each with its own optimizer.
- SBN reweighted wake-sleep (Bornschein & Bengio 2015), k = 5 importance samples, wake-q and sleep updates of q.
- VAE: 2 × 200 tanh units and 50 Gaussian latents, the ELBO (the model of ``vae-mnist``).

Every row reports the test nELBO and the test NLL estimated by importance sampling with its own recognition network
as the proposal (the same estimator for all rows). The lecture gives no numbers: the target is the ordering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdgm.data.mnist import BinarizedMNIST
from kdgm.experiments.base import (
    Experiment,
    ExperimentData,
    Metric,
    Preset,
    Row,
)
from kdgm.experiments.likelihood_eval import (
    LikelihoodEvalConfig,
    binarized_mnist,
    test_likelihood,
)
from kdgm.models.sbn import SigmoidBeliefNet
from kdgm.models.vae import VAE
from kdgm.objectives.elbo import ELBO
from kdgm.objectives.wake_sleep import wake_sleep_phases
from kdgm.report.figures import save_image_grid
from kdgm.report.paired import paired_differences
from kdgm.train.optim import adam
from kdgm.train.updater import Phase

VAE_ROW = "VAE (ELBO)"


@dataclass
class WakeSleepConfig(LikelihoodEvalConfig):
    """Config of ``wake-sleep-mnist`` (training fields in :class:`TrainConfig`).

    Attributes:
        method: ``ws`` (wake-sleep), ``rws`` (reweighted wake-sleep) or ``vae`` (fixed by each row).
        hidden: binary units per SBN layer, top last (one entry per layer); the VAE's deterministic layers.
        k: importance samples of reweighted wake-sleep.
        z_dim: the VAE's Gaussian latents.
        eval_k, eval_examples, eval_batch: the test NLL estimate (k samples) on the first test images.
    """

    method: Literal["ws", "rws", "vae"] = "ws"
    hidden: tuple[int, ...] = (200,)
    k: int = 5
    z_dim: int = 50
    lr: float = 1e-3

    positive = LikelihoodEvalConfig.positive + ("hidden", "k", "z_dim")



class WakeSleepMnist(Experiment):
    name = "wake-sleep-mnist"
    title = "Wake-sleep for sigmoid belief nets against a VAE, same budget"
    paper = "Lecture notes 002, sections 1-4 (wake-sleep, VAEs); Bornschein & Bengio (2015) for reweighted wake-sleep"
    table = "the lecture's claim, as a table (the notes give no numbers)"
    config_class = WakeSleepConfig
    presets = {
        "smoke": Preset(dict(steps=6, batch_size=32, hidden=(16,), eval_k=4, eval_examples=64, log_every=2,
                             checkpoint_every=3), 1,
                        "CI smoke run: a few steps, 16-unit layers, NLL with k=4 on 64 test images"),
        "quick": Preset(dict(steps=6000, batch_size=100, eval_k=100, eval_examples=2000, eval_every=2000), 2,
                        "10 epochs; NLL with k=100 on 2,000 test images"),
        "full": Preset(dict(steps=60000, batch_size=100, eval_k=1000, eval_examples=10000, eval_every=10000), 3,
                       "100 epochs; NLL with k=1000 on the whole test set"),
        "paper": Preset(dict(steps=300000, batch_size=100, eval_k=1000, eval_examples=10000, eval_every=20000), 3,
                        "500 epochs, for a GPU or a long CPU run; NLL with k=1000"),
    }
    rows = (
        Row("SBN wake-sleep (1 layer)", {"method": "ws", "hidden": (200,)}),
        Row("SBN wake-sleep (2 layers)", {"method": "ws", "hidden": (200, 200)}),
        Row("SBN reweighted wake-sleep (k=5)", {"method": "rws", "hidden": (200,), "k": 5}),
        Row(VAE_ROW, {"method": "vae", "hidden": (200, 200)}),
    )
    metrics = (
        Metric("nelbo", "test nELBO (nats)"),
        Metric("nll", "test NLL (nats, IS estimate)"),
    )
    progress_metrics = ("nelbo", "nll")
    curve_terms = ("wake/wake_nll", "sleep/sleep_nlq", "wake/rws_nll")
    data_parallel = False  # the two phases update disjoint parameter groups through model methods

    def differences(self, config: WakeSleepConfig) -> list[str]:
        return [
            "The lecture states the ordering without numbers; every row has the same steps, batch and optimizer "
            f"(Adam, lr {config.lr}), {config.steps} steps of batch {config.batch_size} "
            f"({config.steps * config.batch_size / 60000:.0f} epochs).",
            f"Test NLL: importance sampling with each model's recognition network as proposal, k={config.eval_k}, on "
            f"the first {config.eval_examples} test images binarised once with a fixed seed. For an SBN the "
            "recognition network is not trained on the ELBO, so its nELBO is looser than a VAE's.",
        ]

    def data(self, config: WakeSleepConfig, seed: int = 0) -> ExperimentData:
        return binarized_mnist(config)

    def build_model(self, config: WakeSleepConfig, data: ExperimentData) -> nn.Module:
        if config.method == "vae":
            return VAE(z_dim=config.z_dim, hidden=config.hidden)
        model = SigmoidBeliefNet(hidden=config.hidden)
        model.init_visible_bias(data.train.images[:10000].float().mean(0).div(255).view(1, 28, 28))
        return model

    def phases(self, config: WakeSleepConfig, model: nn.Module, data: ExperimentData) -> list[Phase]:
        if config.method == "vae":
            return [Phase("main", ELBO(), adam(model.parameters(), config), grad_clip=config.grad_clip)]
        return wake_sleep_phases(model, config.method, k=config.k if config.method == "rws" else None, lr=config.lr)

    def evaluate(self, config: WakeSleepConfig, model: nn.Module, test: BinarizedMNIST, final: bool) -> dict[str, float]:
        return test_likelihood(config, model, test, final)

    def figures(self, config: WakeSleepConfig, model: nn.Module, test: BinarizedMNIST, folder: Path) -> list[Path]:
        return [save_image_grid(self.samples(model, 64, torch.Generator().manual_seed(0)), folder / "samples.png",
                                nrow=8)]

    def samples(self, model: nn.Module, n: int, generator: torch.Generator, data: Any = None) -> Tensor:
        with torch.no_grad():
            if isinstance(model, SigmoidBeliefNet):
                return model.sample(n, generator=generator, mean=True).cpu()  # Bernoulli means: grey, readable
            return model.sample(n, generator=generator).cpu()

    def report_sections(self, metrics: dict[str, Any], run: Any = None) -> list[str]:
        pairs = [(row.name, VAE_ROW) for row in self.rows if row.name != VAE_ROW]
        return paired_differences(metrics, pairs, ("nll",))
