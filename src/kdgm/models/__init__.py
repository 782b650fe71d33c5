"""Models: ``nn.Module`` s that return named quantities, never a loss.

Public models::

    VAE                 Gaussian-latent VAE with an MLP or conv encoder and Bernoulli decoder
    SentenceCNN         Kim (2014) sentence classifier
    AIR                 Attend-Infer-Repeat (Eslami et al. 2016), fixed or learned (AIR-pPrior) prior
    GAN, dcgan          a generator and a discriminator (DCGAN networks for 28×28, 32×32, 64×64 images)

Every model is registered with an example batch and an objective in :mod:`kdgm.model_suite` (``MODELS``), which the
shared test suite iterates over.
"""

from kdgm.models.air import AIR
from kdgm.models.gan import GAN, dcgan
from kdgm.models.text_cnn import SentenceCNN
from kdgm.models.vae import VAE

__all__ = ["AIR", "GAN", "SentenceCNN", "VAE", "dcgan"]
