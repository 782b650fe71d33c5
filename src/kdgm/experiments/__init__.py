"""Experiments: one module per reproduced table, registered by name for ``kdgm list`` and ``kdgm run``."""

from kdgm.experiments.asr import ASRCount, ASROverlap
from kdgm.experiments.base import Experiment
from kdgm.experiments.flows_mnist import FlowsMnist
from kdgm.experiments.gan_mnist import GanMnist
from kdgm.experiments.pose_transfer import PoseTransfer
from kdgm.experiments.sentiment_but import SentimentBut
from kdgm.experiments.template_infill import TemplateInfill
from kdgm.experiments.vae_mnist import VAEMnist
from kdgm.experiments.wake_sleep_mnist import WakeSleepMnist
from kdgm.registry import Registry

EXPERIMENTS: Registry[Experiment] = Registry("experiment")
for _experiment in (VAEMnist(), SentimentBut(), ASRCount(), ASROverlap(), TemplateInfill(), GanMnist(), FlowsMnist(), WakeSleepMnist(), PoseTransfer()):
    EXPERIMENTS.register(_experiment.name, _experiment)
