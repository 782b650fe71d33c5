"""Rendered articulated figures for pose-conditional person image generation (Hu et al. 2018, slides
``000_…txt``, "Pose Conditional Person Image Generation": given a person image and a target pose, generate the
person in the new pose; the human part parser is the knowledge constraint).

DeepFashion is not available offline, so the data set is drawn here: a figure is a head, a torso and upper / lower
arms and legs (capsules, a trapezoid torso, round head, hands and feet) with per-figure proportions and widths and a
per-figure appearance — skin and hair, a shirt over the torso and upper arms, trousers over the legs (each plain,
striped or dotted, the pattern fixed to the body part so it moves with the limb), shoes, and a plain or lightly
textured background. Every example is a *pair*: the same figure (same proportions, colours, patterns, background
and pixel scale) in two independently drawn poses A (the source) and B (the target).

Conventions
-----------
* Images are RGB ``(3, S, S)`` floats in [0, 1] (stored as uint8). Pixel ``(row i, column j)`` has its centre at
  ``(x, y) = (j, i)``: keypoints are ``(x, y)`` pixel coordinates in that frame, y pointing down.
* 14 keypoints, in the order of ``KEYPOINT_NAMES``. The figure faces the viewer, so its *right* side is on the
  image's left.
* Joint angles (``JOINT_NAMES``, radians) are measured from the parent segment, positive *outwards* (away from the
  body's midline) for both sides; ``JOINT_LIMITS`` holds their ranges. Negative shoulder / elbow angles swing an
  arm across the body, negative hip / knee angles swing a leg over the other one. Torso lean and neck tilt are
  positive towards the image's +x. Angles are drawn uniformly within their limits.
* Part labels: ``PART_NAMES`` (7 classes, left and right share a label, the default) or ``SIDED_PART_NAMES``
  (11 classes, ``FigureConfig(sided_parts=True)``). Hands belong to the lower arm, feet to the lower leg, the neck
  and hair to the head. Parts are drawn back to front in a fixed order — right leg, left leg, torso, neck and
  head, right arm, left arm (each limb upper segment, then lower segment, then hand / foot) — and the label map is
  written in the same order, so a pixel's label is the part whose colour it shows.
* Drawing is exact (no anti-aliasing): a figure pixel has exactly one of the figure's uint8 colours
  (``COLOUR_NAMES``), every figure colour differs from the background colour by at least ``COLOUR_MARGIN`` in some
  channel (more than the background texture's amplitude), and a background pixel (label 0) equals the background
  image.

Data are rendered once per (config, split) and stored with :mod:`kdgm.cache`. Figures are drawn in blocks of
``BLOCK`` with one random stream per (seed, split, block), so a smaller ``pairs`` gives a prefix of a larger one
and the train and test splits draw from disjoint streams (and carry disjoint figure ids).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kdgm.cache import cache_key, cached_arrays
from kdgm.data.batch import Batch
from kdgm.errors import UserError

FIGURES_VERSION = 1  # bump when sampling or rendering changes, so stale cache entries are not reused
SPLIT_STREAMS = {"train": 0, "test": 1}
FIGURE_ID_OFFSET = {"train": 0, "test": 1_000_000_000}  # test figure ids never equal train figure ids
BLOCK = 1024  # figures per random stream (a smaller data set is a prefix of a larger one)
MIN_SIZE, MAX_SIZE = 16, 256

KEYPOINT_NAMES = (
    "head_top", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
HEAD_TOP, NECK = 0, 1
R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 2, 3, 4, 5, 6, 7
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE = 8, 9, 10, 11, 12, 13

# the kinematic tree as (parent, child) keypoint pairs; the pelvis (mid-hip) is the root
SKELETON = (
    (NECK, HEAD_TOP), (NECK, R_SHOULDER), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST),
    (NECK, L_SHOULDER), (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST),
    (R_HIP, R_KNEE), (R_KNEE, R_ANKLE), (L_HIP, L_KNEE), (L_KNEE, L_ANKLE),
)

PART_NAMES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")
SIDED_PART_NAMES = (
    "background", "head", "torso",
    "right_upper_arm", "right_lower_arm", "left_upper_arm", "left_lower_arm",
    "right_upper_leg", "right_lower_leg", "left_upper_leg", "left_lower_leg",
)
SIDED_TO_PART = (0, 1, 2, 3, 4, 3, 4, 5, 6, 5, 6)  # SIDED_PART_NAMES index -> PART_NAMES index

JOINT_NAMES = (
    "torso_lean", "neck_tilt",
    "right_shoulder", "right_elbow", "left_shoulder", "left_elbow",
    "right_hip", "right_knee", "left_hip", "left_knee",
)
_LIMITS_DEG = {
    "torso_lean": (-12.0, 12.0),
    "neck_tilt": (-20.0, 20.0),
    "shoulder": (-45.0, 175.0),  # 0: arm hangs along the torso; 90: horizontal, outwards; < 0: across the body
    "elbow": (-145.0, 90.0),  # relative to the upper arm; < 0: the forearm folds in (across the body / to the head)
    "hip": (-25.0, 60.0),  # 0: leg straight down; < 0: crosses over the other leg
    "knee": (-100.0, 25.0),  # relative to the thigh; < 0: the shin folds in towards the midline
}
JOINT_LIMITS = np.radians(np.array([_LIMITS_DEG[n.split("_", 1)[-1] if n.startswith(("right", "left")) else n]
                                    for n in JOINT_NAMES]))  # (10, 2) radians, (low, high) per joint

# Per-figure proportions: lengths and half-widths in pixels once placed (drawn in units of the standing height).
PROPORTION_NAMES = (
    "head", "torso", "shoulder", "hip", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
    "head_radius", "neck_radius", "torso_bottom", "upper_arm_radius", "lower_arm_radius", "hand_radius",
    "upper_leg_radius", "lower_leg_radius", "foot_radius", "hair",
)
_P = {name: i for i, name in enumerate(PROPORTION_NAMES)}
# (low, high) in units of the standing height for the independent proportions; "shoulder" / "hip" are half-widths
_PROPORTION_RANGES = {
    "head": (0.17, 0.21), "torso": (0.28, 0.34), "shoulder": (0.085, 0.12), "hip": (0.05, 0.075),
    "upper_arm": (0.15, 0.19), "lower_arm": (0.14, 0.18), "upper_leg": (0.23, 0.28), "lower_leg": (0.22, 0.27),
    "upper_arm_radius": (0.028, 0.042), "upper_leg_radius": (0.04, 0.06),
}
_MARGIN = 1.0  # pixels kept free at the canvas border
MIN_RADIUS = 0.75  # pixels: thinner parts could miss pixel centres (a dotted forearm at 32 x 32)
STANDING_EXTENT = 1.15  # units: a figure's largest pose extent that still gets the full canvas scale

COLOUR_NAMES = ("background", "skin", "hair", "shirt", "shirt_pattern", "trousers", "trousers_pattern", "shoes")
BG, SKIN, HAIR, SHIRT, SHIRT_PATTERN, TROUSERS, TROUSERS_PATTERN, SHOES = range(len(COLOUR_NAMES))
PATTERN_NAMES = ("plain", "stripes", "dots")  # garment patterns, per figure for the shirt and the trousers
COLOUR_MARGIN = 0.25  # least max-channel distance between any figure colour and the background colour
BG_AMPLITUDE = (0.015, 0.04)  # background texture amplitude (a luminance grating sum), when textured
MIN_PERIOD = 3.0  # pixels: the finest garment pattern period

_SKIN_TONES = np.array([[0.96, 0.80, 0.69], [0.36, 0.22, 0.15]])  # light and dark ends of the skin palette
_HAIR_TONES = np.array([[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.45, 0.30, 0.15], [0.85, 0.72, 0.45],
                        [0.60, 0.25, 0.10], [0.70, 0.70, 0.70]])


@dataclass
class FigureConfig:
    """How figure pairs are drawn.

    Attributes:
        size: canvas side ``S`` in pixels (64, or 32 for smoke and quick runs; 16..256 accepted).
        pairs: training pairs (one figure per pair).
        test_pairs: test pairs (other figures, from another random stream).
        seed: base seed; the split and the figure block select separate streams from it.
        textures: garment stripes / dots and a lightly textured background; ``False`` draws everything plain
            (the same figures, poses and colours otherwise).
        sigma: pose heatmap standard deviation in pixels; ``None`` = ``0.5 + size / 32`` (1.5 at 32, 2.5 at 64).
        sided_parts: part maps with 11 classes (left / right apart, ``SIDED_PART_NAMES``) instead of 7
            (``PART_NAMES``).

    ``sigma`` and ``sided_parts`` only change what batches hold; they do not re-render the cached data.
    """

    size: int = 64
    pairs: int = 20000
    test_pairs: int = 2000
    seed: int = 0
    textures: bool = True
    sigma: float | None = None
    sided_parts: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` for parameters no data set can be drawn from."""
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise UserError(f"FigureConfig.size must be in [{MIN_SIZE}, {MAX_SIZE}] (32 or 64), got {self.size}")
        if self.pairs < 1 or self.test_pairs < 1:
            raise UserError(f"FigureConfig.pairs and test_pairs must be at least 1, got {self.pairs}, "
                            f"{self.test_pairs}")
        if self.sigma is not None and self.sigma <= 0:
            raise UserError(f"FigureConfig.sigma must be positive (or null for the default), got {self.sigma}")

    @property
    def heatmap_sigma(self) -> float:
        """The heatmap standard deviation in pixels."""
        return float(self.sigma) if self.sigma is not None else 0.5 + self.size / 32

    @property
    def num_parts(self) -> int:
        """Part classes in the batches' part maps, background included (7, or 11 with ``sided_parts``)."""
        return len(SIDED_PART_NAMES) if self.sided_parts else len(PART_NAMES)

    def split_pairs(self, split: str) -> int:
        _check_split(split)
        return self.pairs if split == "train" else self.test_pairs


@dataclass(frozen=True)
class PoseCondition(Batch):
    """What the model generates the target from: the source image and both poses; for the part constraint, the true
    target's part map.

    A frozen dataclass of tensors whose first dimension is B: :func:`kdgm.knowledge.sampled.tile` repeats every field
    S-major (row ``s·B + b`` is row b; a None field stays None).

    Attributes:
        source: (B, 3, S, S) float source image (pose A) in [0, 1].
        source_heatmaps: (B, 14, S, S) float pose A heatmaps in (0, 1], peak 1 at each keypoint.
        target_heatmaps: (B, 14, S, S) float pose B heatmaps.
        source_pose, target_pose: (B, 14, 2) float keypoints ``(x, y)`` in pixels (None where not needed).
        target_parts: (B, S, S) long part labels of the true target image (0 = background), what a part constraint
            scores a sample against; None where nothing reads it (e.g. at test time).
    """

    source: Tensor
    source_heatmaps: Tensor
    target_heatmaps: Tensor
    source_pose: Tensor | None = None
    target_pose: Tensor | None = None
    target_parts: Tensor | None = None

    def __post_init__(self) -> None:
        b, _, h, w = self.source.shape
        for name in ("source_heatmaps", "target_heatmaps"):
            value = getattr(self, name)
            if value.dim() != 4 or value.shape[0] != b or value.shape[2:] != (h, w):
                raise ValueError(f"PoseCondition.{name} must be ({b}, J, {h}, {w}) like the source image, "
                                 f"got {tuple(value.shape)}")
        if self.target_parts is not None and self.target_parts.shape != (b, h, w):
            raise ValueError(f"PoseCondition.target_parts must be ({b}, {h}, {w}), got {tuple(self.target_parts.shape)}")

    @property
    def size(self) -> int:
        """S, the side of the images."""
        return self.source.shape[-1]

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> PoseCondition:
        """The rows ``index`` (an int keeps its row as a batch of one)."""
        index = [index] if isinstance(index, int) else index
        return PoseCondition(*(None if t is None else t[index] for t in
                               (self.source, self.source_heatmaps, self.target_heatmaps, self.source_pose,
                                self.target_pose, self.target_parts)))

    def stacked(self) -> Tensor:
        """(B, 3 + 28, S, S): source image, source heatmaps, target heatmaps along the channels (a CNN's input)."""
        return torch.cat([self.source, self.source_heatmaps, self.target_heatmaps], dim=1)

    def repeat(self, times: int) -> PoseCondition:
        """Tiled along dimension 0, S-major (row ``s·B + b`` is row b); None fields stay None."""
        return PoseCondition(*(None if t is None else t.repeat(times, *([1] * (t.dim() - 1))) for t in
                               (self.source, self.source_heatmaps, self.target_heatmaps, self.source_pose,
                                self.target_pose, self.target_parts)))


@dataclass(frozen=True)
class PoseBatch(Batch):
    """Pose-transfer pairs: the same figure in pose A (source) and pose B (target).

    Attributes:
        source: (B, 3, S, S) float image in pose A, in [0, 1].
        target: (B, 3, S, S) float image in pose B (what the model must produce).
        source_pose: (B, 14, 2) float keypoints ``(x, y)`` in pixels (``KEYPOINT_NAMES`` order).
        target_pose: (B, 14, 2) float keypoints of pose B.
        source_heatmaps: (B, 14, S, S) float Gaussian heatmaps of pose A (computed in ``batch()``).
        target_heatmaps: (B, 14, S, S) float heatmaps of pose B.
        source_parts: (B, S, S) long part labels of the source image (0 = background).
        target_parts: (B, S, S) long part labels of the target image: the constraint's ground truth.
        figure: (B,) long figure ids (disjoint between the train and test splits).
    """

    source: Tensor
    target: Tensor
    source_pose: Tensor
    target_pose: Tensor
    source_heatmaps: Tensor
    target_heatmaps: Tensor
    source_parts: Tensor
    target_parts: Tensor
    figure: Tensor

    def data(self) -> Tensor:
        """The observed output: the target image (B, 3, S, S)."""
        return self.target

    def condition(self) -> PoseCondition:
        """The model's input: source image, source and target pose heatmaps (and keypoints)."""
        return PoseCondition(self.source, self.source_heatmaps, self.target_heatmaps, self.source_pose,
                             self.target_pose, self.target_parts)


@dataclass(eq=False)
class PosePairs:
    """One split of rendered pairs; ``batch(index)`` builds a :class:`PoseBatch`.

    Attributes:
        images: (N, 2, 3, S, S) uint8; ``[:, 0]`` the source (pose A), ``[:, 1]`` the target (pose B).
        parts: (N, 2, S, S) uint8 sided part labels (``SIDED_PART_NAMES``).
        keypoints: (N, 2, 14, 2) float32 ``(x, y)`` pixels.
        angles: (N, 2, 10) float32 joint angles in radians (``JOINT_NAMES``).
        proportions: (N, len(PROPORTION_NAMES)) float32 pixels, shared by both poses.
        colours: (N, len(COLOUR_NAMES), 3) uint8 figure palette (background = its base colour).
        patterns: (N, 2) long shirt and trousers pattern (index into ``PATTERN_NAMES``).
        figure_ids: (N,) long.
        sigma: heatmap standard deviation in pixels.
        sided_parts: batches hold 11-class part maps instead of 7-class ones.
    """

    images: Tensor
    parts: Tensor
    keypoints: Tensor
    angles: Tensor
    proportions: Tensor
    colours: Tensor
    patterns: Tensor
    figure_ids: Tensor
    sigma: float
    sided_parts: bool = False

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_parts(self) -> int:
        return len(SIDED_PART_NAMES) if self.sided_parts else len(PART_NAMES)

    def part_maps(self, index: Tensor) -> Tensor:
        """(B, 2, S, S) long part labels (7- or 11-class, as configured) of the given pairs."""
        parts = self.parts[index].long()
        return parts if self.sided_parts else torch.tensor(SIDED_TO_PART)[parts]

    def batch(self, index: Tensor) -> PoseBatch:
        images = self.images[index].float() / 255.0  # (B, 2, 3, S, S)
        keypoints = self.keypoints[index]  # (B, 2, 14, 2)
        parts = self.part_maps(index)  # (B, 2, S, S)
        return PoseBatch(
            source=images[:, 0], target=images[:, 1],
            source_pose=keypoints[:, 0], target_pose=keypoints[:, 1],
            source_heatmaps=pose_heatmaps(keypoints[:, 0], self.size, self.sigma),
            target_heatmaps=pose_heatmaps(keypoints[:, 1], self.size, self.sigma),
            source_parts=parts[:, 0], target_parts=parts[:, 1], figure=self.figure_ids[index],
        )


def pose_heatmaps(keypoints: Tensor, size: int, sigma: float) -> Tensor:
    """Gaussian blobs at keypoints: ``exp(-|p - k|^2 / (2 sigma^2))`` over pixel centres ``p``.

    Separable (an outer product of a row and a column profile), on the keypoints' device and dtype.

    Args:
        keypoints: (..., K, 2) ``(x, y)`` pixel coordinates.
        size: canvas side ``S``.
        sigma: standard deviation in pixels.

    Returns:
        (..., K, S, S); each map peaks (at 1 when the keypoint is on a pixel centre) at the pixel nearest its
        keypoint.
    """
    if not keypoints.is_floating_point():
        keypoints = keypoints.float()
    grid = torch.arange(size, device=keypoints.device, dtype=keypoints.dtype)  # (S,)
    gx = torch.exp(-((grid - keypoints[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., K, S) over columns
    gy = torch.exp(-((grid - keypoints[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., K, S) over rows
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)  # (..., K, S, S)


# --- kinematics ------------------------------------------------------------------------------------------------


def _direction(phi: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 2) at angle ``phi`` from straight down (y down), positive towards +x."""
    return np.stack([np.sin(phi), np.cos(phi)], axis=-1)


def forward_kinematics(proportions: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Keypoints of figures with the pelvis (mid-hip) at the origin.

    Args:
        proportions: (..., len(PROPORTION_NAMES)) lengths (any unit).
        angles: (..., 10) joint angles in radians (``JOINT_NAMES``).

    Returns:
        (..., 14, 2) ``(x, y)`` keypoints in the proportions' unit, y down.
    """
    prop = lambda name: proportions[..., _P[name], None]  # (..., 1)
    tau, nu = angles[..., 0], angles[..., 1]
    down = _direction(tau)  # (..., 2) torso axis, neck -> pelvis
    perp = _direction(tau + math.pi / 2)  # (..., 2) towards +x (the figure's left) for tau = 0
    neck = -prop("torso") * down
    kp = [None] * NUM_KEYPOINTS
    kp[NECK] = neck
    kp[HEAD_TOP] = neck - prop("head") * _direction(tau + nu)
    for side, (sh, el, wr, hip, kn, an), (a_sh, a_el, a_hip, a_kn) in (
        (-1.0, (R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE), (2, 3, 6, 7)),
        (1.0, (L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE), (4, 5, 8, 9)),
    ):
        kp[sh] = neck + side * prop("shoulder") * perp
        upper = tau + side * angles[..., a_sh]
        kp[el] = kp[sh] + prop("upper_arm") * _direction(upper)
        kp[wr] = kp[el] + prop("lower_arm") * _direction(upper + side * angles[..., a_el])
        kp[hip] = side * prop("hip") * perp
        thigh = tau + side * angles[..., a_hip]
        kp[kn] = kp[hip] + prop("upper_leg") * _direction(thigh)
        kp[an] = kp[kn] + prop("lower_leg") * _direction(thigh + side * angles[..., a_kn])
    return np.stack(kp, axis=-2)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def joint_angles(keypoints: np.ndarray | Tensor) -> np.ndarray:
    """The joint angles (..., 10) radians (``JOINT_NAMES``) read back from keypoints (..., 14, 2).

    Inverse of :func:`forward_kinematics` for keypoints it produced (after any scaling and translation).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    heading = lambda a, b: np.arctan2(kp[..., b, 0] - kp[..., a, 0], kp[..., b, 1] - kp[..., a, 1])
    pelvis = 0.5 * (kp[..., R_HIP, :] + kp[..., L_HIP, :])
    d = pelvis - kp[..., NECK, :]
    tau = np.arctan2(d[..., 0], d[..., 1])
    out = [tau, _wrap(heading(HEAD_TOP, NECK) - tau)]
    arms, legs = [], []
    for side, (sh, el, wr, hip, kn, an) in ((-1.0, (R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE)),
                                             (1.0, (L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE))):
        upper, lower = heading(sh, el), heading(el, wr)
        arms += [side * _wrap(upper - tau), side * _wrap(lower - upper)]
        thigh, shin = heading(hip, kn), heading(kn, an)
        legs += [side * _wrap(thigh - tau), side * _wrap(shin - thigh)]
    return np.stack(out + arms + legs, axis=-1)


# --- sampling ---------------------------------------------------------------------------------------------------


def _quantise(colours: np.ndarray) -> np.ndarray:
    return np.clip(np.round(colours * 255.0), 0, 255).astype(np.uint8)


def _contrast(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pattern colour: the base pushed darker (light bases) or lighter (dark bases) by 0.3-0.5."""
    amount = rng.uniform(0.3, 0.5, size=base.shape[:-1] + (1,))
    light = base.mean(axis=-1, keepdims=True) > 0.5
    return np.clip(np.where(light, base - amount, base + amount), 0.0, 1.0)


def _sample_block(rng: np.random.Generator, n: int, textures: bool) -> dict[str, np.ndarray]:
    """Figures, their two poses and their appearance, in units of the standing height (size independent)."""
    props = np.zeros((n, len(PROPORTION_NAMES)))
    for name in ("head", "torso", "shoulder", "hip", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
                 "upper_arm_radius", "upper_leg_radius"):
        props[:, _P[name]] = rng.uniform(*_PROPORTION_RANGES[name], size=n)
    props[:, _P["head_radius"]] = props[:, _P["head"]] * rng.uniform(0.40, 0.46, size=n)
    props[:, _P["neck_radius"]] = props[:, _P["head_radius"]] * rng.uniform(0.30, 0.40, size=n)
    props[:, _P["lower_arm_radius"]] = props[:, _P["upper_arm_radius"]] * rng.uniform(0.75, 0.90, size=n)
    props[:, _P["hand_radius"]] = props[:, _P["lower_arm_radius"]] * rng.uniform(1.15, 1.35, size=n)
    props[:, _P["lower_leg_radius"]] = props[:, _P["upper_leg_radius"]] * rng.uniform(0.70, 0.85, size=n)
    props[:, _P["foot_radius"]] = props[:, _P["lower_leg_radius"]] * rng.uniform(1.15, 1.40, size=n)
    props[:, _P["torso_bottom"]] = props[:, _P["hip"]] + props[:, _P["upper_leg_radius"]] * rng.uniform(
        0.8, 1.1, size=n)
    props[:, _P["hair"]] = 2 * props[:, _P["head_radius"]] * rng.uniform(0.2, 0.55, size=n)

    low, high = JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1]
    angles = low + (high - low) * rng.uniform(size=(n, 2, len(JOINT_NAMES)))  # (n, 2, 10)

    skin = _SKIN_TONES[0] + (_SKIN_TONES[1] - _SKIN_TONES[0]) * rng.uniform(size=(n, 1))
    skin = skin + rng.uniform(-0.04, 0.04, size=(n, 3))
    hair = _HAIR_TONES[rng.integers(0, len(_HAIR_TONES), size=n)] + rng.uniform(-0.04, 0.04, size=(n, 3))
    shirt = rng.uniform(0.05, 0.95, size=(n, 3))
    trousers = rng.uniform(0.05, 0.95, size=(n, 3))
    shoes = rng.uniform(0.05, 0.45, size=(n, 1)) + rng.uniform(-0.05, 0.05, size=(n, 3))
    figure_colours = np.stack([skin, hair, shirt, _contrast(shirt, rng), trousers, _contrast(trousers, rng),
                               shoes], axis=1)  # (n, 7, 3) in COLOUR_NAMES[1:] order
    figure_colours = _quantise(np.clip(figure_colours, 0.0, 1.0))
    candidates = _quantise(rng.uniform(size=(n, 64, 3))).astype(np.int16)  # background colour candidates
    gap = np.abs(candidates[:, :, None, :] - figure_colours[:, None, :, :].astype(np.int16)).max(axis=3)
    margin = gap.min(axis=2)  # (n, 64) distance to the nearest figure colour
    ok = margin >= math.ceil(COLOUR_MARGIN * 255)
    pick = np.where(ok.any(axis=1), ok.argmax(axis=1), margin.argmax(axis=1))  # first that passes
    background = candidates[np.arange(n), pick].astype(np.uint8)
    colours = np.concatenate([background[:, None], figure_colours], axis=1)  # (n, 8, 3) uint8

    patterns = rng.integers(0, len(PATTERN_NAMES), size=(n, 2)) * int(textures)  # shirt, trousers
    periods = rng.uniform(0.08, 0.14, size=(n, 2))  # units of the standing height
    bg_textured = (rng.uniform(size=n) < 0.7) & textures
    bg_amplitude = rng.uniform(*BG_AMPLITUDE, size=n) * bg_textured
    bg_frequency = rng.uniform(-3.0, 3.0, size=(n, 2, 2))  # two gratings, cycles per canvas in x and y
    bg_phase = rng.uniform(0, 2 * np.pi, size=(n, 2))
    scale = rng.uniform(0.85, 1.0, size=n)  # of the largest scale that fits both poses
    place = rng.uniform(size=(n, 2, 2))  # where each pose's box sits in the free space, as fractions
    return {"props": props, "angles": angles, "colours": colours, "patterns": patterns.astype(np.uint8),
            "periods": periods, "bg_amplitude": bg_amplitude, "bg_frequency": bg_frequency, "bg_phase": bg_phase,
            "scale": scale, "place": place}


def _extent(kp: np.ndarray, props: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (lo, hi) (..., 2) of everything drawn for keypoints (..., 14, 2), proportions (..., P).

    Each shape is a capsule between keypoint circles, a circle or the torso trapezoid, so the union's box is the
    box of these circles and the trapezoid's corners.
    """
    prop = lambda name: props[..., _P[name]]
    radius = np.zeros(kp.shape[:-1])  # (..., 14)
    radius[..., NECK] = prop("neck_radius")
    for sh, el, wr, hip, kn, an in ((R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE),
                                    (L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE)):
        radius[..., sh] = prop("upper_arm_radius")
        radius[..., el] = np.maximum(prop("upper_arm_radius"), prop("lower_arm_radius"))
        radius[..., wr] = np.maximum(prop("lower_arm_radius"), prop("hand_radius"))
        radius[..., hip] = prop("upper_leg_radius")
        radius[..., kn] = np.maximum(prop("upper_leg_radius"), prop("lower_leg_radius"))
        radius[..., an] = np.maximum(prop("lower_leg_radius"), prop("foot_radius"))
    head_centre, _, corners = _head_and_torso(kp, props)
    centres = np.concatenate([kp, head_centre[..., None, :], corners], axis=-2)
    head_radius = np.broadcast_to(prop("head_radius")[..., None], radius.shape[:-1] + (1,))
    radius = np.concatenate([radius, head_radius, np.zeros(corners.shape[:-1])], axis=-1)
    return (centres - radius[..., None]).min(axis=-2), (centres + radius[..., None]).max(axis=-2)


def _head_and_torso(kp, props):
    """Head centre (..., 2), head axis (..., 2, unit, top -> neck) and torso corners (..., 4, 2).

    Works on numpy arrays or torch tensors. Corners: right shoulder, left shoulder, left bottom, right bottom.
    """
    lib = torch if isinstance(kp, Tensor) else np
    norm = (lambda v: torch.linalg.vector_norm(v, dim=-1, keepdim=True)) if lib is torch else (
        lambda v: np.linalg.norm(v, axis=-1, keepdims=True))
    prop = lambda name: props[..., _P[name], None]
    axis = kp[..., NECK, :] - kp[..., HEAD_TOP, :]
    axis = axis / norm(axis)
    centre = kp[..., HEAD_TOP, :] + prop("head_radius") * axis
    pelvis = 0.5 * (kp[..., R_HIP, :] + kp[..., L_HIP, :])
    perp = kp[..., L_SHOULDER, :] - kp[..., R_SHOULDER, :]
    perp = perp / norm(perp)
    bottom = prop("torso_bottom") * perp
    corners = lib.stack([kp[..., R_SHOULDER, :], kp[..., L_SHOULDER, :], pelvis + bottom, pelvis - bottom], -2)
    return centre, axis, corners


def _place(block: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (n, 2, 14, 2) and proportions (n, P) in pixels: one scale per figure (both poses), each pose
    translated so that everything drawn lies within ``[_MARGIN, S - 1 - _MARGIN]`` (radii raised to
    ``MIN_RADIUS`` may reach ``MIN_RADIUS`` closer to the border; pixel centres stay on the canvas)."""
    props, angles = block["props"], block["angles"]
    kp = forward_kinematics(props[:, None, :], angles)  # (n, 2, 14, 2) units
    lo, hi = _extent(kp, props[:, None, :])  # (n, 2, 2) each
    room = size - 1 - 2 * _MARGIN
    fit = room / (hi - lo).max(axis=(1, 2))  # (n,) largest scale at which both poses fit
    scale = np.minimum(fit, room / STANDING_EXTENT) * block["scale"]  # (n,) pixels per unit
    free = room - (hi - lo) * scale[:, None, None]  # (n, 2, 2) slack per pose and axis
    offset = _MARGIN + block["place"] * free - lo * scale[:, None, None]
    kp_px = kp * scale[:, None, None, None] + offset[:, :, None, :]
    props_px = props * scale[:, None]
    thin = [_P[name] for name in PROPORTION_NAMES if name.endswith("_radius")]
    props_px[:, thin] = np.maximum(props_px[:, thin], MIN_RADIUS)  # no broken limbs on small canvases
    return kp_px, props_px


# --- rendering --------------------------------------------------------------------------------------------------


def _capsule(x: Tensor, y: Tensor, a: Tensor, b: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels within ``r`` of the segment ``a b``: mask (N, H, W) and local coordinates (along from ``a``, across).

    ``x`` (N, 1, W) and ``y`` (N, H, 1) are pixel centres; ``a``, ``b`` (N, 2); ``r`` (N,).
    """
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    dx, dy = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    length2 = (dx * dx + dy * dy).clamp_min(1e-6)
    length = length2.sqrt()
    px, py = x - ax, y - ay  # (N, 1, W), (N, H, 1)
    proj = px * dx + py * dy  # (N, H, W) along * length
    t = (proj / length2).clamp_(0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    inside = ex * ex + ey * ey <= (r * r)[:, None, None]
    return inside, proj / length, (py * dx - px * dy) / length


def _disc(x: Tensor, y: Tensor, c: Tensor, r: Tensor) -> Tensor:
    ex, ey = x - c[:, 0, None, None], y - c[:, 1, None, None]
    return ex * ex + ey * ey <= (r * r)[:, None, None]


def _pattern(kind: Tensor, period: Tensor, along: Tensor, across: Tensor) -> Tensor:
    """Pixels of the pattern colour: stripes across the part's axis or a grid of dots, in the part's own frame."""
    p = period[:, None, None]
    u = torch.remainder(along, p)
    k = kind[:, None, None]
    if not bool((kind == 2).any()):
        return (k == 1) & (u < 0.5 * p)
    v = torch.remainder(across, p)
    dots = (u - 0.5 * p) ** 2 + (v - 0.5 * p) ** 2 <= (0.3 * p) ** 2
    return ((k == 1) & (u < 0.5 * p)) | ((k == 2) & dots)


class _Window:
    """The same-sized square of pixels around one part in each of N canvases (the part's box, clipped).

    Shapes are evaluated on the window only; the results are written back into the (N, S, S) maps, which
    gives exactly what the whole canvas would give (outside its box a part covers no pixel centre).
    """

    def __init__(self, lo: Tensor, hi: Tensor, size: int) -> None:
        first = lo.floor().clamp(0, size - 1).long()  # (N, 2) first pixel (x, y) that the part may cover
        last = hi.floor().clamp(0, size - 1).long()
        width = int((last - first).max().clamp_min(0)) + 1
        origin = first.clamp(max=size - width)  # (N, 2)
        steps = torch.arange(width)
        n = len(lo)
        cols = origin[:, 0, None] + steps  # (N, W)
        rows = origin[:, 1, None] + steps
        self.x = cols.float().view(n, 1, width)
        self.y = rows.float().view(n, width, 1)
        self.flat = (torch.arange(n)[:, None, None] * size + rows[:, :, None]) * size + cols[:, None, :]

    def paint(self, target: Tensor, mask: Tensor, value: int | Tensor) -> None:
        """Write ``value`` (a scalar or an (N, W, W) tensor) into ``target`` (N, S, S) where ``mask``."""
        where = self.flat[mask]
        target.view(-1)[where] = value if isinstance(value, int) else value[mask]


def _render_chunk(kp: Tensor, props: Tensor, palette: Tensor, patterns: Tensor, periods: Tensor, bg: Tensor,
                  size: int) -> tuple[Tensor, Tensor]:
    """Draw N figures: images (N, 3, S, S) uint8 and sided part labels (N, S, S) uint8.

    Vectorised over figures and pixels; the Python loop runs over the ~17 shapes, back to front.

    Args:
        kp: (N, 14, 2) float32 pixels. props: (N, P) float32 pixels. palette: (N, 8, 3) uint8.
        patterns: (N, 2) long shirt / trousers pattern. periods: (N, 2) float32 pixels.
        bg: (N, 3, S, S) uint8 background.
    """
    n = kp.shape[0]
    slot = torch.zeros(n, size, size, dtype=torch.uint8)  # palette index per pixel (0 = background)
    label = torch.zeros(n, size, size, dtype=torch.uint8)
    prop = lambda name: props[:, _P[name]]

    def paint(win: _Window, mask: Tensor, part: int, colour: int | Tensor) -> None:
        win.paint(label, mask, part)
        win.paint(slot, mask, colour)

    def capsule_window(a: Tensor, b: Tensor, r: Tensor) -> _Window:
        return _Window(torch.minimum(a, b) - r[:, None], torch.maximum(a, b) + r[:, None], size)

    def limb(a: int, b: int, radius: str, part: int, garment: int | None) -> None:
        """A capsule from keypoint a to b: skin (``garment`` None) or a garment (0 shirt, 1 trousers)."""
        win = capsule_window(kp[:, a], kp[:, b], prop(radius))
        inside, along, across = _capsule(win.x, win.y, kp[:, a], kp[:, b], prop(radius))
        if garment is None:
            paint(win, inside, part, SKIN)
        else:
            patterned = _pattern(patterns[:, garment], periods[:, garment], along, across)
            paint(win, inside, part, patterned.to(torch.uint8) + (SHIRT if garment == 0 else TROUSERS))

    def disc(c: Tensor, radius: str, part: int, colour: int) -> None:
        r = prop(radius)
        win = _Window(c - r[:, None], c + r[:, None], size)
        paint(win, _disc(win.x, win.y, c, r), part, colour)

    # back to front; sided labels follow SIDED_PART_NAMES
    for part, (hip, knee, ankle) in ((7, (R_HIP, R_KNEE, R_ANKLE)), (9, (L_HIP, L_KNEE, L_ANKLE))):
        limb(hip, knee, "upper_leg_radius", part, 1)
        limb(knee, ankle, "lower_leg_radius", part + 1, 1)
        disc(kp[:, ankle], "foot_radius", part + 1, SHOES)

    # torso: a trapezoid in its own frame (along the neck -> pelvis axis, across the shoulders)
    head_centre, head_axis, corners = _head_and_torso(kp, props)
    win = _Window(corners.amin(dim=1), corners.amax(dim=1), size)
    neck = kp[:, NECK]
    down = 0.5 * (corners[:, 2] + corners[:, 3]) - neck  # (N, 2) neck -> bottom centre
    height = torch.linalg.vector_norm(down, dim=-1)[:, None, None]
    down = down / height[:, :, 0]
    px, py = win.x - neck[:, 0, None, None], win.y - neck[:, 1, None, None]
    along = px * down[:, 0, None, None] + py * down[:, 1, None, None]
    across = py * down[:, 0, None, None] - px * down[:, 1, None, None]
    top_half, bottom_half = prop("shoulder")[:, None, None], prop("torso_bottom")[:, None, None]
    half = top_half + (bottom_half - top_half) * (along / height)
    inside = (along >= 0) & (along <= height) & (across.abs() <= half)
    patterned = _pattern(patterns[:, 0], periods[:, 0], along, across)
    paint(win, inside, 2, patterned.to(torch.uint8) + SHIRT)

    # neck, then the head with hair over its top
    win = capsule_window(neck, head_centre, prop("neck_radius"))
    paint(win, _capsule(win.x, win.y, neck, head_centre, prop("neck_radius"))[0], 1, SKIN)
    r = prop("head_radius")
    win = _Window(head_centre - r[:, None], head_centre + r[:, None], size)
    top = kp[:, HEAD_TOP]
    depth = (win.x - top[:, 0, None, None]) * head_axis[:, 0, None, None] + (
        win.y - top[:, 1, None, None]) * head_axis[:, 1, None, None]
    hair = (depth < prop("hair")[:, None, None]).to(torch.uint8)
    paint(win, _disc(win.x, win.y, head_centre, r), 1, SKIN + hair * (HAIR - SKIN))

    for part, (shoulder, elbow, wrist) in ((3, (R_SHOULDER, R_ELBOW, R_WRIST)), (5, (L_SHOULDER, L_ELBOW, L_WRIST))):
        limb(shoulder, elbow, "upper_arm_radius", part, 0)
        limb(elbow, wrist, "lower_arm_radius", part + 1, None)
        disc(kp[:, wrist], "hand_radius", part + 1, SKIN)

    colours = palette[torch.arange(n)[:, None], slot.view(n, -1).long()]  # (N, S*S, 3)
    colours = colours.permute(0, 2, 1).reshape(n, 3, size, size)
    images = torch.where((slot == BG)[:, None], bg, colours)
    return images, label


def _backgrounds(colour: np.ndarray, amplitude: np.ndarray, frequency: np.ndarray, phase: np.ndarray,
                 size: int) -> Tensor:
    """(N, 3, S, S) uint8: the base colour plus a faint luminance texture (a sum of two gratings)."""
    t = torch.arange(size, dtype=torch.float64) / size
    f = torch.from_numpy(frequency)  # (N, 2, 2) cycles per canvas (x, y)
    arg = 2 * math.pi * (f[:, :, 0, None, None] * t.view(1, 1, 1, size) + f[:, :, 1, None, None] *
                         t.view(1, 1, size, 1)) + torch.from_numpy(phase)[:, :, None, None]  # (N, 2, S, S)
    texture = 0.5 * torch.sin(arg).sum(dim=1)  # (N, S, S) in [-1, 1]
    value = torch.from_numpy(colour / 255.0)[:, :, None, None] + torch.from_numpy(amplitude)[:, None, None,
                                                                                           None] * texture[:, None]
    return (value * 255.0).round().clamp(0, 255).to(torch.uint8)


def _render_block(block: dict[str, np.ndarray], size: int, backgrounds: bool) -> dict[str, np.ndarray]:
    n = len(block["props"])
    kp, props = _place(block, size)  # (n, 2, 14, 2), (n, P) pixels
    periods = np.maximum(block["periods"] * (props[:, _P["torso"]] / block["props"][:, _P["torso"]])[:, None],
                         MIN_PERIOD)  # (n, 2) pixels
    bg = _backgrounds(block["colours"][:, BG].astype(np.float64), block["bg_amplitude"], block["bg_frequency"],
                      block["bg_phase"], size)  # (n, 3, S, S)
    kp32 = torch.from_numpy(kp.astype(np.float32))
    images, labels = _render_chunk(
        kp32.reshape(2 * n, NUM_KEYPOINTS, 2),
        torch.from_numpy(props.astype(np.float32)).repeat_interleave(2, dim=0),
        torch.from_numpy(block["colours"]).repeat_interleave(2, dim=0),
        torch.from_numpy(block["patterns"].astype(np.int64)).repeat_interleave(2, dim=0),
        torch.from_numpy(periods.astype(np.float32)).repeat_interleave(2, dim=0),
        bg.repeat_interleave(2, dim=0), size,
    )
    out = {
        "images": images.view(n, 2, 3, size, size).numpy(),
        "parts": labels.view(n, 2, size, size).numpy(),
        "keypoints": kp.astype(np.float32),
        "angles": block["angles"].astype(np.float32),
        "proportions": props.astype(np.float32),
        "colours": block["colours"],
        "patterns": block["patterns"],
    }
    if backgrounds:
        out["background"] = bg.numpy()
    return out


def _check_split(split: str) -> None:
    if split not in SPLIT_STREAMS:
        raise UserError(f"unknown figure split {split!r}; use 'train' or 'test'")


def render_pairs(config: FigureConfig, split: str = "train", backgrounds: bool = False) -> dict[str, np.ndarray]:
    """Draw the pairs of one split (uncached; :func:`load_pose_pairs` caches them).

    Returns numpy arrays: ``images`` (N, 2, 3, S, S) uint8, ``parts`` (N, 2, S, S) uint8 sided labels,
    ``keypoints`` (N, 2, 14, 2) float32, ``angles`` (N, 2, 10) float32, ``proportions`` (N, P) float32 pixels,
    ``colours`` (N, 8, 3) uint8, ``patterns`` (N, 2) uint8, ``figure_ids`` (N,) int64, and with ``backgrounds``
    also ``background`` (N, 3, S, S) uint8, the background each pair was drawn on.
    """
    config.validate()
    n = config.split_pairs(split)
    out: dict[str, np.ndarray] = {}
    # pairs per render call: bounds the (2 * pairs, W, W) float temporaries to a few tens of MB
    step = max(64, (1 << 21) // (config.size * config.size))
    for b in range(-(-n // BLOCK)):
        rng = np.random.default_rng([config.seed, SPLIT_STREAMS[split], b])
        block = _sample_block(rng, BLOCK, config.textures)
        take = min(BLOCK, n - b * BLOCK)
        for start in range(0, take, step):
            stop = min(start + step, take)
            chunk = _render_block({k: v[start:stop] for k, v in block.items()}, config.size, backgrounds)
            for name, value in chunk.items():  # filled in place: no second copy of the images at the end
                if name not in out:
                    out[name] = np.empty((n,) + value.shape[1:], value.dtype)
                out[name][b * BLOCK + start:b * BLOCK + stop] = value
    out["figure_ids"] = FIGURE_ID_OFFSET[split] + np.arange(n, dtype=np.int64)
    return out


def load_pose_pairs(config: FigureConfig, split: str = "train") -> PosePairs:
    """The pairs of one split, rendered once and cached (:mod:`kdgm.cache`).

    Args:
        config: how the figures are drawn.
        split: ``"train"`` (``config.pairs`` figures) or ``"test"`` (``config.test_pairs`` other figures).
    """
    config.validate()
    n = config.split_pairs(split)
    key = cache_key("figures", version=FIGURES_VERSION, split=split, size=config.size, pairs=n, seed=config.seed,
                    textures=config.textures)
    arrays = cached_arrays(key, lambda: render_pairs(config, split))
    return PosePairs(
        images=torch.from_numpy(arrays["images"]),
        parts=torch.from_numpy(arrays["parts"]),
        keypoints=torch.from_numpy(arrays["keypoints"]),
        angles=torch.from_numpy(arrays["angles"]),
        proportions=torch.from_numpy(arrays["proportions"]),
        colours=torch.from_numpy(arrays["colours"]),
        patterns=torch.from_numpy(arrays["patterns"].astype(np.int64)),
        figure_ids=torch.from_numpy(arrays["figure_ids"]),
        sigma=config.heatmap_sigma,
        sided_parts=config.sided_parts,
    )


def limb_lengths(keypoints: np.ndarray | Tensor, bones: Sequence[tuple[int, int]] = SKELETON) -> np.ndarray:
    """(..., len(bones)) distances between the keypoint pairs ``bones`` (default: the skeleton's 11 bones)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    idx = np.asarray(bones)
    return np.linalg.norm(kp[..., idx[:, 1], :] - kp[..., idx[:, 0], :], axis=-1)
