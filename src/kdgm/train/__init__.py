"""The one training loop and its plumbing."""

from kdgm.objectives.base import Progress
from kdgm.train.fabric import make_fabric
from kdgm.train.loop import fit
from kdgm.train.updater import Phase, PhasedUpdater

__all__ = ["Phase", "PhasedUpdater", "Progress", "fit", "make_fabric"]
