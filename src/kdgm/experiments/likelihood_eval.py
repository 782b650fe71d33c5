"""What the MNIST likelihood experiments (``vae-mnist``, ``wake-sleep-mnist``) share: dynamically binarised training
digits, a test set binarised once with a fixed seed, and the importance-sampled test NLL of a latent-variable model."""

from __future__ import annotations

from dataclasses import dataclass

from kdgm.data.loader import BatchLoader
from kdgm.data.mnist import BinarizedMNIST, load_mnist
from kdgm.errors import UserError
from kdgm.experiments.base import ExperimentData, TrainConfig
from kdgm.metrics.likelihood import likelihood_metrics


@dataclass
class LikelihoodEvalConfig(TrainConfig):
    """Attributes:
        eval_k: importance samples of the test NLL estimate.
        eval_examples: test images evaluated (the first ones of the fixed-binarised test set; 10000 = all).
        eval_batch: test images per evaluation batch.
    """

    eval_k: int = 1000
    eval_examples: int = 10000
    eval_batch: int = 100

    positive = TrainConfig.positive + ("eval_k", "eval_examples", "eval_batch")

    def validate(self) -> None:
        super().validate()
        if self.eval_examples > 10000:
            raise UserError(f"eval_examples must be at most 10000 (the MNIST test set), got {self.eval_examples}")


def binarized_mnist(config: LikelihoodEvalConfig) -> ExperimentData:
    """Dynamically binarised training digits; the first ``eval_examples`` test digits binarised once (seed 12345)."""
    train = BinarizedMNIST(*load_mnist("train", config.data_dir), binarize="dynamic")
    images, labels = load_mnist("test", config.data_dir)
    n = config.eval_examples
    return ExperimentData(train, BinarizedMNIST(images[:n], labels[:n], binarize="static", seed=12345))


def test_likelihood(config: LikelihoodEvalConfig, model, test: BinarizedMNIST, final: bool) -> dict[str, float]:
    """Test nELBO and NLL (k = ``eval_k`` at the end, at most 10 during training)."""
    batches = BatchLoader(test, config.eval_batch, shuffle=False, drop_last=False)
    return likelihood_metrics(model, batches, k=config.eval_k if final else min(config.eval_k, 10))
