"""kdgm: deep generative models with knowledge constraints."""
__version__ = "0.1.0"
