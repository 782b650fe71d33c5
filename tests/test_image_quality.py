"""Sample-quality metrics in the space of a classifier trained on the same data: FID of a set against itself is ~0,
FID and KID grow as a real set is blurred or mixed with noise, coverage counts the classes reached, the classifier
score is K for confident uniform predictions and 1 for a single class."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdgm.data.mnist import grey_images, load_mnist
from kdgm.metrics.image_quality import (
    cached_classifier, class_coverage, classifier_score, frechet_distance, kernel_distance, sample_quality,
)


@pytest.fixture(scope="module")
def digits(kdgm_cache, monkeypatch_module):
    monkeypatch_module.setenv("KDGM_CACHE_DIR", str(kdgm_cache))
    images, labels = load_mnist("test")
    x, y = grey_images(images, 32), labels
    classifier = cached_classifier("mnist-test-first4000", lambda: (x[:4000], y[:4000]), steps=150, batch_size=64)
    return classifier, x[4000:5000], y[4000:5000], x[5000:6000]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _blur(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.avg_pool2d(x, width, stride=1, padding=width // 2, count_include_pad=False)[..., :32, :32]


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_blur_and_noise(digits):
    classifier, real, _, other = digits
    assert frechet_distance(classifier, real, real) == pytest.approx(0.0, abs=1e-2)
    blurred = [frechet_distance(classifier, real, _blur(other, w)) for w in (1, 3, 5)]
    assert blurred[0] < blurred[1] < blurred[2]
    noise = torch.rand_like(other, generator=torch.Generator().manual_seed(0))
    mixed = [frechet_distance(classifier, real, (1 - a) * other + a * noise) for a in (0.0, 0.3, 0.6)]
    assert mixed[0] < mixed[1] < mixed[2]
    kids = [kernel_distance(classifier, real, (1 - a) * other + a * noise, subset_size=500) for a in (0.0, 0.6)]
    assert abs(kids[0]) < 0.05 * kids[1]


def test_coverage_and_consistency_see_mode_collapse(digits):
    classifier, real, labels, _ = digits
    ones = real[labels == 1]
    one_class = sample_quality(classifier, real, ones, requested=torch.ones(len(ones), dtype=torch.long))
    every_class = sample_quality(classifier, real, real, requested=labels)
    assert one_class["coverage"] == 1 and every_class["coverage"] == 10
    assert one_class["consistency"] > 90 and every_class["consistency"] > 80
    assert every_class["classifier_score"] > 3 * one_class["classifier_score"]


def test_within_class_diversity_is_100_for_the_data_and_0_for_one_image_per_class(digits):
    from kdgm.metrics.image_quality import within_class_diversity

    classifier, real, labels, other = digits
    assert within_class_diversity(classifier, real, real) == pytest.approx(100.0)
    with torch.no_grad():
        right = classifier(real).argmax(1) == labels  # so that no two representatives share a predicted class
    first_of_each = torch.stack([real[(labels == c) & right][0] for c in range(10)])  # (10, 1, 32, 32)
    collapsed = first_of_each.repeat(20, 1, 1, 1)  # every class drawn as one image
    assert within_class_diversity(classifier, real, collapsed) == pytest.approx(0.0, abs=1e-3)
    assert 70 < within_class_diversity(classifier, real, other) < 130  # other real digits: about as varied
    half = torch.cat([collapsed[:100], other[:100]])
    assert 0 < within_class_diversity(classifier, real, half) < within_class_diversity(classifier, real, other)


def test_coverage_and_classifier_score_on_hand_made_predictions():
    confident = torch.eye(4).repeat(5, 1)  # (20, 4): every class equally often, with certainty
    assert classifier_score(confident) == pytest.approx(4.0)
    assert classifier_score(torch.full((6, 4), 0.25)) == pytest.approx(1.0)
    assert class_coverage(confident) == 4
    skewed = torch.cat([torch.eye(4)[[0] * 99], torch.eye(4)[[1]]])  # one stray sample of class 1 in 100
    assert class_coverage(skewed) == 1  # below a tenth of a uniform share: not a covered mode
