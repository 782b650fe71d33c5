"""Experiments: one module per reproduced table, registered by name for ``kdgm list`` and ``kdgm run``."""

from kdgm.experiments.base import Experiment
from kdgm.experiments.sentiment_but import SentimentBut
from kdgm.experiments.vae_mnist import VAEMnist
from kdgm.registry import Registry

EXPERIMENTS: Registry[Experiment] = Registry("experiment")
for _experiment in (VAEMnist(), SentimentBut()):
    EXPERIMENTS.register(_experiment.name, _experiment)
