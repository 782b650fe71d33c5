"""Rendered figure pairs for pose transfer (kdgm.data.figures): geometry, part maps, pairs, streams, cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdgm.data import figures
from kdgm.data.batch import Batch
from kdgm.data.figures import (
    COLOUR_NAMES, JOINT_LIMITS, JOINT_NAMES, KEYPOINT_NAMES, PART_NAMES, PROPORTION_NAMES, SIDED_PART_NAMES,
    SIDED_TO_PART, FigureConfig, PoseBatch, PoseCondition, joint_angles, limb_lengths, load_pose_pairs,
    pose_heatmaps, render_pairs,
)
from kdgm.data.loader import BatchLoader
from kdgm.errors import UserError
from kdgm.objectives.base import batch_condition, batch_data

SLOT = {name: i for i, name in enumerate(COLOUR_NAMES)}
# the palette entries each sided part may show
ALLOWED = {
    "head": ("skin", "hair"),
    "torso": ("shirt", "shirt_pattern"),
    "upper_arm": ("shirt", "shirt_pattern"),
    "lower_arm": ("skin",),
    "upper_leg": ("trousers", "trousers_pattern"),
    "lower_leg": ("trousers", "trousers_pattern", "shoes"),
}


@pytest.fixture(scope="module")
def small() -> dict[str, np.ndarray]:
    """200 training pairs at 32 x 32, with the backgrounds they were drawn on."""
    return render_pairs(FigureConfig(size=32, pairs=200, test_pairs=50), "train", backgrounds=True)


@pytest.fixture(scope="module")
def large() -> dict[str, np.ndarray]:
    """40 training pairs at 64 x 64 (the same figures as the first 40 of ``small``)."""
    return render_pairs(FigureConfig(size=64, pairs=40, test_pairs=10), "train", backgrounds=True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("KDGM_CACHE_DIR", str(folder))
    return folder


def test_names_and_limits():
    assert len(KEYPOINT_NAMES) == 14 and len(JOINT_NAMES) == 10 and JOINT_LIMITS.shape == (10, 2)
    assert (JOINT_LIMITS[:, 0] < 0).all() and (JOINT_LIMITS[:, 1] > 0).all()  # every joint can go both ways
    assert len(PART_NAMES) == 7 and len(SIDED_PART_NAMES) == 11
    assert [PART_NAMES[c].split("_")[-2:] for c in SIDED_TO_PART[3:]] == [
        n.split("_")[-2:] for n in SIDED_PART_NAMES[3:]]


def test_batch_shapes_and_dtypes(cache):
    config = FigureConfig(size=32, pairs=40, test_pairs=10)
    data = load_pose_pairs(config)
    assert len(data) == 40 and data.size == 32 and data.num_parts == 7
    batch = data.batch(torch.tensor([0, 3, 5]))
    assert isinstance(batch, PoseBatch) and isinstance(batch, Batch) and len(batch) == 3
    for name in ("source", "target"):
        image = getattr(batch, name)
        assert image.shape == (3, 3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
    for name in ("source_pose", "target_pose"):
        assert getattr(batch, name).shape == (3, 14, 2) and getattr(batch, name).dtype == torch.float32
    for name in ("source_heatmaps", "target_heatmaps"):
        heat = getattr(batch, name)
        assert heat.shape == (3, 14, 32, 32) and heat.dtype == torch.float32
        assert heat.min() >= 0 and heat.max() <= 1
    for name in ("source_parts", "target_parts"):
        parts = getattr(batch, name)
        assert parts.shape == (3, 32, 32) and parts.dtype == torch.long
        assert parts.min() == 0 and parts.max() < len(PART_NAMES)
    assert batch.figure.tolist() == [0, 3, 5]
    assert torch.equal(batch.target, data.images[torch.tensor([0, 3, 5]), 1].float() / 255)

    # what the objectives read: data() is the target image, condition() the model's inputs
    assert batch_data(batch) is batch.target
    cond = batch_condition(batch)
    assert isinstance(cond, PoseCondition) and isinstance(cond, Batch) and len(cond) == 3
    assert cond.source is batch.source and cond.target_heatmaps is batch.target_heatmaps
    assert cond.stacked().shape == (3, 3 + 28, 32, 32)
    assert cond.repeat(2).source.shape == (6, 3, 32, 32) and torch.equal(cond.repeat(2).source[3:], cond.source)
    moved = batch.to("cpu")
    assert isinstance(moved, PoseBatch) and torch.equal(moved.target_parts, batch.target_parts)
    assert len(batch.head(2)) == 2

    loader = BatchLoader(data, batch_size=16, drop_last=False)
    assert sum(len(b) for b in loader) == 40

    sided = load_pose_pairs(FigureConfig(size=32, pairs=40, test_pairs=10, sided_parts=True))
    assert sided.num_parts == 11
    fine = sided.batch(torch.tensor([0, 3, 5])).target_parts
    assert fine.max() < 11 and torch.equal(torch.tensor(SIDED_TO_PART)[fine], batch.target_parts)
    assert len(list(cache.glob("*.npz"))) == 1  # sided_parts and sigma do not change what is rendered


@pytest.mark.parametrize("which", ["small", "large"])
def test_figures_fit_inside_the_canvas(which, request):
    arrays = request.getfixturevalue(which)
    size = arrays["images"].shape[-1]
    kp = arrays["keypoints"]
    assert kp.min() >= 0 and kp.max() <= size - 1
    parts = arrays["parts"]  # nothing drawn touches the border
    assert not parts[..., 0, :].any() and not parts[..., -1, :].any()
    assert not parts[..., :, 0].any() and not parts[..., :, -1].any()
    # every image shows a head and a torso, and every part shows up somewhere
    flat = parts.reshape(-1, size * size)
    assert all((flat == label).any(axis=1).all() for label in (1, 2))
    assert set(np.unique(parts).tolist()) == set(range(len(SIDED_PART_NAMES)))


@pytest.mark.parametrize("which", ["small", "large"])
def test_part_maps_match_the_pixels(which, request):
    arrays = request.getfixturevalue(which)
    images = arrays["images"].astype(np.int16)  # (N, 2, 3, S, S)
    parts = arrays["parts"]  # (N, 2, S, S)
    background = arrays["background"].astype(np.int16)[:, None]  # (N, 1, 3, S, S), shared by both poses
    gap = np.abs(images - background).max(axis=2)  # (N, 2, S, S)
    # background label exactly where the pixel is the background; figure pixels clearly differ from it
    assert (gap[parts == 0] == 0).all()
    assert (gap[parts > 0] >= 38).all()  # COLOUR_MARGIN 0.25 minus the texture amplitude 0.04, in uint8 units
    # each part shows only its own palette entries (garment or garment pattern, skin, hair, shoes)
    pixels = np.moveaxis(images, 2, -1)  # (N, 2, S, S, 3)
    colours = arrays["colours"].astype(np.int16)[:, None, None, None]  # (N, 1, 1, 1, 8, 3)
    for label, name in enumerate(SIDED_PART_NAMES[1:], start=1):
        allowed = ALLOWED[PART_NAMES[SIDED_TO_PART[label]]]
        match = np.zeros(parts.shape, bool)
        for colour in allowed:
            match |= (pixels == colours[..., SLOT[colour], :]).all(axis=-1)
        assert match[parts == label].all(), name


def test_pairs_share_appearance_and_proportions(small):
    kp, props = small["keypoints"], small["proportions"]  # (N, 2, 14, 2), (N, P)
    lengths = limb_lengths(kp)  # (N, 2, 11)
    np.testing.assert_allclose(lengths[:, 0], lengths[:, 1], atol=2e-3)
    p = {name: props[:, i] for i, name in enumerate(PROPORTION_NAMES)}
    names = ("head", "shoulder", "upper_arm", "lower_arm", "shoulder", "upper_arm", "lower_arm",
             "upper_leg", "lower_leg", "upper_leg", "lower_leg")
    np.testing.assert_allclose(lengths[:, 1], np.stack([p[n] for n in names], axis=1), atol=2e-3)
    shoulders = np.linalg.norm(kp[:, :, 5] - kp[:, :, 2], axis=-1)
    np.testing.assert_allclose(shoulders, np.repeat(2 * p["shoulder"][:, None], 2, axis=1), atol=2e-3)
    hips = np.linalg.norm(kp[:, :, 11] - kp[:, :, 8], axis=-1)
    np.testing.assert_allclose(hips, np.repeat(2 * p["hip"][:, None], 2, axis=1), atol=2e-3)
    # poses differ: every pair moves most keypoints by more than a pixel and most joints by more than 5 degrees
    moved = np.linalg.norm(kp[:, 0] - kp[:, 1], axis=-1) > 1.0  # (N, 14)
    assert (moved.sum(axis=1) >= 7).all()
    turned = np.abs(small["angles"][:, 0] - small["angles"][:, 1]) > math.radians(5)
    assert (turned.sum(axis=1) >= 4).all() and turned.mean() > 0.8
    # appearance from the pixels: a figure with a plain shirt shows the same single shirt colour in both poses
    images, parts = small["images"], small["parts"]
    plain = np.flatnonzero(small["patterns"][:, 0] == 0)
    assert len(plain) > 20
    for n in plain[:30]:
        seen = [np.unique(images[n, k][:, parts[n, k] == 2].T, axis=0) for k in (0, 1)]
        assert len(seen[0]) == 1 and np.array_equal(seen[0], seen[1])
        assert np.array_equal(seen[0][0], small["colours"][n, SLOT["shirt"]])
    # different figures look different: palettes and proportions are all distinct
    assert len(np.unique(small["colours"].reshape(len(kp), -1), axis=0)) == len(kp)
    assert len(np.unique(props, axis=0)) == len(kp)


def test_joint_angles_within_limits(small):
    angles = small["angles"].astype(np.float64)  # (N, 2, 10)
    low, high = JOINT_LIMITS[:, 0], JOINT_LIMITS[:, 1]
    assert (angles >= low - 1e-6).all() and (angles <= high + 1e-6).all()
    # the limits are used: the drawn angles spread over most of each range
    spread = (angles.max(axis=(0, 1)) - angles.min(axis=(0, 1))) / (high - low)
    assert (spread > 0.9).all()
    # the keypoints are the kinematic tree's: the angles read back from them are the drawn ones
    np.testing.assert_allclose(joint_angles(small["keypoints"]), angles, atol=2e-3)


def test_sizes_draw_the_same_figures(small, large):
    np.testing.assert_array_equal(large["angles"], small["angles"][:40])
    np.testing.assert_array_equal(large["colours"], small["colours"][:40])
    ratio = limb_lengths(large["keypoints"]) / limb_lengths(small["keypoints"][:40])
    same = np.broadcast_to(ratio[..., :1], ratio.shape)
    np.testing.assert_allclose(ratio, same, rtol=1e-3)  # one scale per figure and size
    assert np.median(ratio) > 1.8


def test_pose_heatmaps_peak_at_keypoints():
    generator = torch.Generator().manual_seed(0)
    keypoints = torch.rand(5, 14, 2, generator=generator) * 31  # (5, 14, 2) in [0, 31]
    heat = pose_heatmaps(keypoints, 32, 1.5)
    assert heat.shape == (5, 14, 32, 32)
    peak = heat.flatten(2).argmax(dim=2)  # (5, 14)
    assert torch.equal(peak % 32, keypoints[..., 0].round().long())
    assert torch.equal(peak // 32, keypoints[..., 1].round().long())
    on_pixel = pose_heatmaps(torch.tensor([[[10.0, 20.0]]]), 32, 2.0)[0, 0]
    assert on_pixel[20, 10] == 1.0
    assert math.isclose(float(on_pixel[20, 12]), math.exp(-0.5), rel_tol=1e-5)  # one sigma away
    assert math.isclose(float(on_pixel[18, 12]), math.exp(-1.0), rel_tol=1e-5)
    assert pose_heatmaps(keypoints.double(), 32, 1.5).dtype == torch.float64


def test_batch_heatmaps_follow_the_keypoints(cache):
    data = load_pose_pairs(FigureConfig(size=32, pairs=20, test_pairs=5, sigma=2.0))
    batch = data.batch(torch.arange(4))
    assert torch.equal(batch.source_heatmaps, pose_heatmaps(batch.source_pose, 32, 2.0))
    assert torch.equal(batch.target_heatmaps, pose_heatmaps(batch.target_pose, 32, 2.0))
    assert FigureConfig(size=32).heatmap_sigma == 1.5 and FigureConfig(size=64).heatmap_sigma == 2.5


def test_deterministic_per_seed_and_prefix(small):
    again = render_pairs(FigureConfig(size=32, pairs=30, test_pairs=5), "train", backgrounds=True)
    for name, value in again.items():  # a smaller data set is a prefix of a larger one
        np.testing.assert_array_equal(value, small[name][:30], err_msg=name)
    other = render_pairs(FigureConfig(size=32, pairs=30, test_pairs=5, seed=1), "train")
    assert not np.array_equal(other["images"], again["images"])
    assert not np.isin(other["proportions"][:, 0], small["proportions"][:, 0]).any()


def test_train_and_test_figures_are_disjoint(small):
    test = render_pairs(FigureConfig(size=32, pairs=200, test_pairs=50), "test")
    assert len(test["images"]) == 50
    assert not np.isin(test["figure_ids"], small["figure_ids"]).any()
    assert not np.isin(test["proportions"][:, 0], small["proportions"][:, 0]).any()
    train_palettes = {c.tobytes() for c in small["colours"]}
    assert not any(c.tobytes() in train_palettes for c in test["colours"])


def test_textures_off_draws_the_same_figures_plain(small):
    plain = render_pairs(FigureConfig(size=32, pairs=30, test_pairs=5, textures=False), "train", backgrounds=True)
    np.testing.assert_array_equal(plain["keypoints"], small["keypoints"][:30])
    np.testing.assert_array_equal(plain["parts"], small["parts"][:30])
    assert (plain["patterns"] == 0).all() and (small["patterns"] > 0).any()
    background = plain["background"].reshape(30, 3, -1)
    assert (background == background[..., :1]).all()  # one flat colour per figure
    textured = small["background"].reshape(200, 3, -1)
    assert (textured != textured[..., :1]).any(axis=(1, 2)).mean() > 0.5


def test_cache_round_trip(cache, monkeypatch):
    config = FigureConfig(size=32, pairs=25, test_pairs=7)
    first = load_pose_pairs(config, "test")
    entries = list(cache.glob("*.npz"))
    assert len(entries) == 1 and entries[0].stat().st_size < 2 * 7 * 4 * 32 * 32 + 20_000

    def fail(*args, **kwargs):
        raise AssertionError("rendered again instead of read from the cache")

    monkeypatch.setattr(figures, "render_pairs", fail)
    second = load_pose_pairs(config, "test")
    for name in ("images", "parts", "keypoints", "angles", "proportions", "colours", "patterns", "figure_ids"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert second.images.dtype == torch.uint8 and second.parts.dtype == torch.uint8
    assert (second.figure_ids >= figures.FIGURE_ID_OFFSET["test"]).all()
    monkeypatch.undo()
    fresh = render_pairs(config, "test")
    assert np.array_equal(fresh["images"], second.images.numpy())


def test_config_errors():
    with pytest.raises(UserError, match="size"):
        FigureConfig(size=8)
    with pytest.raises(UserError, match="pairs"):
        FigureConfig(pairs=0)
    with pytest.raises(UserError, match="sigma"):
        FigureConfig(sigma=0.0)
    with pytest.raises(UserError, match="split"):
        render_pairs(FigureConfig(size=32, pairs=2), "dev")


def test_blocks_fill_in_order(monkeypatch):
    monkeypatch.setattr(figures, "BLOCK", 64)  # several random streams for a few pairs
    longer = render_pairs(FigureConfig(size=32, pairs=150, test_pairs=5), "train")
    shorter = render_pairs(FigureConfig(size=32, pairs=100, test_pairs=5), "train")
    for name, value in shorter.items():
        np.testing.assert_array_equal(value, longer[name][:100], err_msg=name)
    assert longer["figure_ids"].tolist() == list(range(150))
    assert len(np.unique(longer["proportions"], axis=0)) == 150  # the blocks' streams differ
    assert (longer["images"][128:].reshape(22, -1).any(axis=1)).all()  # the last, partial block is drawn
