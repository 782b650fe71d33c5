"""Models: ``nn.Module`` s that return named quantities, never a loss.

Public models::

    VAE                 Gaussian-latent VAE with an MLP or conv encoder and Bernoulli decoder
    SentenceCNN         Kim (2014) sentence classifier
    AIR                 Attend-Infer-Repeat (Eslami et al. 2016), fixed or learned (AIR-pPrior) prior

Every model is registered with an example batch and an objective in :mod:`kdgm.model_suite` (``MODELS``), which the
shared test suite iterates over.
"""

from kdgm.models.air import AIR
from kdgm.models.text_cnn import SentenceCNN
from kdgm.models.vae import VAE

__all__ = ["AIR", "SentenceCNN", "VAE"]
