"""Typed batches: every data set yields one of these, every objective reads one of these.

A batch is a frozen dataclass of tensors whose first dimension is the batch size ``B``. ``to(device)`` moves every
tensor field; non-tensor fields (for example a list of raw sentences kept for rules) are carried along unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


class Batch:
    """Mixin with the operations the training loop needs from every batch type."""

    def to(self, device: torch.device | str):
        moved = {
            f.name: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return type(self)(**moved)

    def __len__(self) -> int:
        first = getattr(self, dataclasses.fields(self)[0].name)
        return len(first)

    def head(self, n: int):
        """The first ``n`` examples (every tensor field sliced along dimension 0)."""
        return type(self)(**{f.name: (v[:n] if isinstance(v, Tensor) else v)
                             for f in dataclasses.fields(self) for v in [getattr(self, f.name)]})


@dataclass(frozen=True)
class ImageBatch(Batch):
    """Images with optional class labels.

    Attributes:
        x: (B, C, H, W) float pixels in [0, 1] (binary after dynamic binarisation).
        y: (B,) long class labels, or None for unlabelled data.
    """

    x: Tensor
    y: Tensor | None = None

    def inputs(self) -> tuple[Tensor, ...]:
        """What a classifier's ``forward`` takes."""
        return (self.x,)


@dataclass(frozen=True)
class SceneBatch(Batch):
    """Multi-object scenes with their ground truth (Xu et al. 2019, section 6).

    Attributes:
        x: (B, 1, S, S) float pixels in [0, 1].
        boxes: (B, N_max, 4) float ground-truth boxes ``(x_min, y_min, x_max, y_max)`` in pixels; rows past
            ``counts`` are zero padding.
        counts: (B,) long number of objects in each scene.
    """

    x: Tensor
    boxes: Tensor
    counts: Tensor


@dataclass(frozen=True)
class TextBatch(Batch):
    """Padded token sequences with labels (Kim 2014 format).

    Attributes:
        tokens: (B, T) long token ids, padded with 0 on the right.
        lengths: (B,) long number of real tokens.
        y: (B,) long class labels.
        index: (B,) long position of each sentence in its split, so rules can look up per-sentence features.
    """

    tokens: Tensor
    lengths: Tensor
    y: Tensor
    index: Tensor

    def inputs(self) -> tuple[Tensor, ...]:
        """What a classifier's ``forward`` takes."""
        return (self.tokens, self.lengths)
