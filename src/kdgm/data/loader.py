"""Batched iteration over in-memory data sets.

Every kdgm data set holds its examples as tensors and builds a whole batch from an index tensor in one call
(``dataset.batch(index)``), so there is no per-sample Python work and no worker processes. The order is a
permutation drawn from ``seed + epoch``: a resumed run sees exactly the batches it would have seen, and under DDP
each rank takes an interleaved shard of the same permutation.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch import Tensor

from kdgm.data.batch import Batch


class IndexedDataset(Protocol):
    """A data set that builds a batch from a (B,) tensor of indices."""

    def __len__(self) -> int: ...

    def batch(self, index: Tensor) -> Batch: ...


class BatchLoader:
    """Yields batches of ``dataset`` in a seeded order.

    Args:
        dataset: the data set.
        batch_size: examples per batch on this process.
        shuffle: draw a new permutation every epoch (from ``seed + epoch``).
        seed: base seed of the permutation.
        rank, world_size: this process's shard under data parallelism.
        drop_last: drop the last incomplete batch (training); keep it for evaluation.
    """

    def __init__(
        self,
        dataset: IndexedDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)  # (N,)
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.dataset), self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, first_batch: int) -> Iterator[Batch]:
        """The epoch's batches from number ``first_batch`` on (a resumed run skips those it has seen)."""
        indices = self._indices()
        for i in range(first_batch, len(self)):
            yield self.dataset.batch(indices[i * self.batch_size : (i + 1) * self.batch_size])


class EndlessBatches:
    """The loader's batches epoch after epoch (each epoch in its own seeded order), resumable.

    Its position (epoch, batches drawn in that epoch) is a state dict, which :class:`kdgm.train.PhasedUpdater`
    checkpoints for a phase that draws its own batches: a resumed run continues the same sequence instead of
    starting it over.
    """

    def __init__(self, loader: BatchLoader) -> None:
        if len(loader) == 0:
            raise ValueError(f"the data set gives no full batch of {loader.batch_size}")
        self.loader = loader
        self.epoch = 0
        self.position = 0  # batches already drawn in this epoch
        self._batches: Iterator[Batch] | None = None

    def __iter__(self) -> "EndlessBatches":
        return self

    def __next__(self) -> Batch:
        if self.position == len(self.loader):
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        if self._batches is None:
            self.loader.set_epoch(self.epoch)
            self._batches = self.loader.iter_from(self.position)
        self.position += 1
        return next(self._batches)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._batches = int(state["epoch"]), int(state["position"]), None


def endless(loader: BatchLoader) -> EndlessBatches:
    """The loader's batches epoch after epoch, resumable (see :class:`EndlessBatches`)."""
    return EndlessBatches(loader)
