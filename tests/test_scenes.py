"""Multi-MNIST and Multi-dSprites scenes (Xu et al. 2019, section 6): layout, ground truth, caching, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdgm.data import scenes
from kdgm.data.batch import SceneBatch
from kdgm.data.loader import BatchLoader
from kdgm.data.mnist import load_mnist
from kdgm.data.scenes import MAX_COUNT, SceneConfig, multi_dsprites, multi_mnist, render_sprite
from kdgm.errors import UserError

BUILDERS = {"mnist": multi_mnist, "dsprites": multi_dsprites}


@pytest.fixture(scope="session")
def mnist_entries(tmp_path_factory):
    """Decode MNIST once per session; every test's cache folder links to the decoded entry."""
    folder = tmp_path_factory.mktemp("mnist-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDGM_CACHE_DIR", str(folder))
        load_mnist("train")
    return sorted(folder.glob("*.npz"))


@pytest.fixture
def cache(tmp_path, monkeypatch, mnist_entries):
    folder = tmp_path / "cache"
    folder.mkdir()
    for entry in mnist_entries:
        (folder / entry.name).symlink_to(entry)
    monkeypatch.setenv("KDGM_CACHE_DIR", str(folder))
    return folder


def _ink_box(mask: np.ndarray) -> list[int]:
    """Half-open tight box (x0, y0, x1, y1) of the True pixels of a (S, S) mask."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_batch_shapes_and_dtypes(cache):
    data = multi_mnist(SceneConfig(counts=(1, 3), n_per_count=20))
    assert len(data) == 40 and data.max_objects == 3
    assert data.x.dtype == torch.uint8 and data.x.shape == (40, 50, 50)
    batch = data.batch(torch.tensor([0, 5, 7]))
    assert isinstance(batch, SceneBatch)
    assert batch.x.shape == (3, 1, 50, 50) and batch.x.dtype == torch.float32
    assert batch.boxes.shape == (3, 3, 4) and batch.boxes.dtype == torch.float32
    assert batch.counts.shape == (3,) and batch.counts.dtype == torch.long
    assert batch.x.min() >= 0 and batch.x.max() <= 1 and batch.x.max() > 0.99  # grey digits reach full ink
    assert torch.equal(batch.x[1, 0], data.x[5].float() / 255.0)
    loader = BatchLoader(data, batch_size=16, drop_last=False)
    assert sum(len(b) for b in loader) == 40


@pytest.mark.parametrize(("kind", "counts"), [("mnist", (2, 4)), ("dsprites", (0, 1, 2))])
def test_counts_allowed_and_balanced(cache, kind, counts):
    data = BUILDERS[kind](SceneConfig(counts=counts, n_per_count=30))
    values, freq = np.unique(data.counts.numpy(), return_counts=True)
    assert values.tolist() == list(counts) and freq.tolist() == [30] * len(counts)
    assert data.max_objects == max(counts)
    assert not torch.equal(data.counts, data.counts.sort().values)  # counts are mixed, not in blocks
    real = torch.arange(data.max_objects)[None, :] < data.counts[:, None]  # (N, N_max)
    assert (data.labels[real] >= 0).all() and (data.labels[~real] == -1).all()


@pytest.mark.parametrize("kind", ["mnist", "dsprites"])
def test_boxes_are_tight_ink_boxes(cache, kind):
    data = BUILDERS[kind](SceneConfig(counts=(1, 2, 3), n_per_count=25))
    x, boxes, counts = data.x.numpy(), data.boxes.numpy(), data.counts.numpy()
    for i in range(len(data)):
        n = counts[i]
        assert (boxes[i, n:] == 0).all()  # padding rows
        union = np.zeros(x.shape[1:], bool)
        for x0, y0, x1, y1 in boxes[i, :n].astype(int):
            assert 0 <= x0 < x1 <= 50 and 0 <= y0 < y1 <= 50
            union[y0:y1, x0:x1] = True
            # tight: every edge row and column of the box holds ink (max compositing keeps the object's ink)
            inside = x[i, y0:y1, x0:x1] > 0
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert not (x[i][~union] > 0).any()  # no ink outside the boxes
        if n == 1:
            assert _ink_box(x[i] > 0) == boxes[i, 0].astype(int).tolist()


@pytest.mark.parametrize("kind", ["mnist", "dsprites"])
def test_non_overlap(cache, kind):
    data = BUILDERS[kind](SceneConfig(counts=(3,), n_per_count=50, overlap=False))
    boxes = data.boxes.numpy()
    assert (data.counts == 3).all()
    for scene in boxes:
        for a in range(3):
            for b in range(a + 1, 3):
                assert not _intersect(scene[a], scene[b])
    # with overlap allowed the same layout does produce intersecting boxes, so the check above is not vacuous
    loose = BUILDERS[kind](SceneConfig(counts=(3,), n_per_count=50, overlap=True)).boxes.numpy()
    assert any(_intersect(s[a], s[b]) for s in loose for a in range(3) for b in range(a + 1, 3))


def test_uncropped_digits_keep_ink_boxes(cache):
    data = multi_mnist(SceneConfig(counts=(1,), n_per_count=30, crop_digits=False))
    widths = data.boxes[:, 0, 2] - data.boxes[:, 0, 0]  # (N,)
    assert (widths < 28).any()  # the box is the digit's ink, not the 28 x 28 patch
    for i in range(len(data)):
        assert _ink_box(data.x[i].numpy() > 0) == data.boxes[i, 0].int().tolist()


def test_deterministic_and_cached(cache, tmp_path, monkeypatch, mnist_entries):
    config = SceneConfig(counts=(1, 3), n_per_count=20, overlap=False)
    first = multi_dsprites(config)
    again = multi_dsprites(config)
    assert len(list(cache.glob("scenes-dsprites-*.npz"))) == 1
    other = tmp_path / "other-cache"  # a fresh folder renders from scratch
    other.mkdir()
    monkeypatch.setenv("KDGM_CACHE_DIR", str(other))
    fresh = multi_dsprites(config)
    for data in (again, fresh):
        assert torch.equal(first.x, data.x) and torch.equal(first.boxes, data.boxes)
        assert torch.equal(first.counts, data.counts) and torch.equal(first.labels, data.labels)
    test = multi_dsprites(config, split="test")
    reseeded = multi_dsprites(SceneConfig(counts=(1, 3), n_per_count=20, overlap=False, seed=1))
    assert not torch.equal(first.x, test.x) and not torch.equal(first.x, reseeded.x)

    # a cached entry is read back, not rendered again
    monkeypatch.setenv("KDGM_CACHE_DIR", str(cache))

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although cached")

    monkeypatch.setattr(scenes, "_render", no_render)
    assert torch.equal(multi_dsprites(config).x, first.x)


def test_mnist_splits_use_their_own_digits(cache):
    def crops(images: np.ndarray) -> set[bytes]:
        return {img[np.ix_(img.any(1), img.any(0))].tobytes() for img in images}

    train_digits = crops(load_mnist("train")[0].numpy())
    test_digits = crops(load_mnist("test")[0].numpy())
    config = SceneConfig(counts=(1,), n_per_count=30)
    for split, own in (("train", train_digits), ("test", test_digits)):
        data = multi_mnist(config, split=split)
        for i in range(len(data)):
            x0, y0, x1, y1 = data.boxes[i, 0].int().tolist()
            assert data.x[i, y0:y1, x0:x1].numpy().tobytes() in own
    assert not torch.equal(multi_mnist(config, "train").x, multi_mnist(config, "test").x)


def test_dsprites_shapes_scales_rotations(cache):
    config = SceneConfig(counts=(1,), n_per_count=300)
    data = multi_dsprites(config)
    labels = data.labels[:, 0].numpy()
    assert set(labels.tolist()) == {0, 1, 2}  # square, ellipse, heart
    assert set(np.unique(data.x.numpy()).tolist()) == {0, 255}  # binary shapes
    area = (data.x > 0).flatten(1).sum(1).numpy()  # (N,) ink of the single object
    squares = area[labels == 0]
    side = config.sprite_size
    # a square's area does not depend on its rotation, so it separates the scales 0.5 .. 1.0 (area 64 .. 256)
    assert squares.min() < 0.35 * side**2 and squares.max() > 0.85 * side**2
    assert len(np.unique(np.round(np.sqrt(squares)))) >= 5
    ellipse = data.boxes[labels == 1, 0]
    width, height = ellipse[:, 2] - ellipse[:, 0], ellipse[:, 3] - ellipse[:, 1]
    assert (width > 1.5 * height).any() and (height > 1.5 * width).any()  # ellipses lie in several orientations


def test_render_sprite_geometry():
    square = render_sprite("square", 1.0, 0.0, 16) > 0
    turned = render_sprite("square", 1.0, math.pi / 4, 16) > 0
    assert abs(int(square.sum()) - 256) <= 40 and abs(int(turned.sum()) - int(square.sum())) <= 40
    sq_box, turned_box = _ink_box(square), _ink_box(turned)
    assert turned_box[2] - turned_box[0] >= 1.3 * (sq_box[2] - sq_box[0])  # the diagonal is sqrt(2) longer
    ellipse = _ink_box(render_sprite("ellipse", 1.0, 0.0, 16) > 0)
    upright = _ink_box(render_sprite("ellipse", 1.0, math.pi / 2, 16) > 0)
    assert ellipse[2] - ellipse[0] > 1.6 * (ellipse[3] - ellipse[1])
    assert upright[3] - upright[1] > 1.6 * (upright[2] - upright[0])
    heart = render_sprite("heart", 1.0, 0.0, 16) > 0
    rows = np.nonzero(heart.any(1))[0]
    top, bottom = heart[rows[0] : rows[0] + 4], heart[rows[-1] - 3 : rows[-1] + 1]
    assert top.sum() > 2 * bottom.sum()  # lobes up, point down
    half = render_sprite("heart", 0.5, 0.0, 16) > 0
    assert 0.15 < half.sum() / heart.sum() < 0.35  # area scales with the square of the scale


def test_impossible_non_overlap_raises(cache):
    # every shape's box is at least 34 x 17 pixels, so five of them cannot tile a 50 x 50 canvas
    config = SceneConfig(
        counts=(5,), n_per_count=3, overlap=False, sprite_size=34, sprite_scales=(1.0,), max_attempts=20
    )
    with pytest.raises(UserError, match="non-overlapping.*overlap=true"):
        multi_dsprites(config)
    with pytest.raises(UserError, match="raise size"):  # objects wider than the canvas
        multi_dsprites(SceneConfig(counts=(1,), n_per_count=3, size=20))


@pytest.mark.parametrize("counts", [(1, MAX_COUNT + 1), (-1, 2), (), (1, 1)])
def test_bad_counts_raise(counts):
    with pytest.raises(UserError):
        SceneConfig(counts=counts)


def test_bad_config_after_construction_and_bad_split_raise(cache):
    config = SceneConfig(counts=(1,), n_per_count=2)
    config.counts = (MAX_COUNT + 1,)
    with pytest.raises(UserError, match="outside"):
        multi_mnist(config)
    with pytest.raises(UserError, match="split"):
        multi_dsprites(SceneConfig(counts=(1,), n_per_count=2), split="valid")


def test_draw_boxes_outlines_each_step_in_its_colour_at_any_zoom():
    from kdgm.report.figures import STEP_COLOURS, draw_boxes

    images = torch.zeros(1, 1, 10, 10)
    boxes = torch.tensor([[[2.0, 3.0, 6.0, 8.0], [0.0, 0.0, 10.0, 10.0]]])  # (1, T=2, 4) half-open pixel boxes
    for zoom in (1, 2):
        rgb = draw_boxes(images, boxes, torch.tensor([[True, False]]), zoom=zoom)  # the second box is absent
        assert rgb.shape == (1, 3, 10 * zoom, 10 * zoom)
        drawn = (rgb != 0).any(1)[0]  # (S, S) outline pixels
        x0, y0, x1, y1 = (int(v) * zoom for v in boxes[0, 0])
        expected = torch.zeros_like(drawn)
        expected[y0:y1, [x0, x1 - 1]] = True
        expected[[y0, y1 - 1], x0:x1] = True
        assert torch.equal(drawn, expected)
        assert torch.allclose(rgb[0, :, y0, x0], STEP_COLOURS[0])
