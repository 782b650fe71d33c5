"""The one training loop and its plumbing."""

from kdgm.train.fabric import make_fabric
from kdgm.train.loop import fit
from kdgm.train.updater import Phase, PhasedUpdater, Progress

__all__ = ["Phase", "PhasedUpdater", "Progress", "fit", "make_fabric"]
