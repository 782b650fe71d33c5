"""Data sets that yield typed batches, all available offline."""

from kdgm.data.batch import Batch, ImageBatch, SceneBatch, TextBatch
from kdgm.data.loader import BatchLoader
from kdgm.data.mnist import BinarizedMNIST, load_mnist

__all__ = ["Batch", "BatchLoader", "BinarizedMNIST", "ImageBatch", "SceneBatch", "TextBatch", "load_mnist"]
