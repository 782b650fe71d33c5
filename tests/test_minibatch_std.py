"""Minibatch standard deviation (Karras et al. 2018, section 3): over the batch (Progressive GAN) and within each
class (the conditional DCGAN's discriminator), against a loop over the groups."""

from __future__ import annotations

import torch

from kdgm.models.gan import dcgan
from kdgm.models.minibatch_std import MinibatchStdDev


def test_minibatch_stddev_adds_one_channel_with_the_batch_std():
    x = torch.randn(8, 3, 4, 4)
    out = MinibatchStdDev()(x)
    assert out.shape == (8, 4, 4, 4)
    torch.testing.assert_close(out[:, :3], x)
    expected = x.std(0, unbiased=False).mean()  # per feature and pixel over the batch, then averaged
    torch.testing.assert_close(out[:, 3], expected.expand(8, 4, 4), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(MinibatchStdDev()(x[:1])).all()  # a batch of one
    assert MinibatchStdDev()(x.new_ones(8, 3, 4, 4))[:, 3].max() < 1e-3  # no variation: (almost) zero


def test_grouped_stddev_equals_the_batch_stddev_of_each_group():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 4, 4)
    groups = torch.tensor([0, 2, 2, 1, 0, 2, 0, 1, 2, 2, 0, 4])  # class 3 absent, class 4 alone
    out = MinibatchStdDev()(x, groups)
    assert out.shape == (12, 4, 4, 4)
    torch.testing.assert_close(out[:, :3], x)
    for g in groups.unique():
        members = groups == g
        expected = MinibatchStdDev()(x[members])[:, 3]  # the ungrouped feature of the group alone
        torch.testing.assert_close(out[members, 3], expected, rtol=1e-5, atol=1e-6)


def test_grouped_stddev_sees_copies_within_a_class_that_the_batch_stddev_misses():
    torch.manual_seed(0)
    prototypes = torch.randn(10, 3, 4, 4)
    labels = torch.arange(40) % 10
    copies = prototypes[labels]  # (40, 3, 4, 4): one image per class, repeated
    varied = copies + torch.randn_like(copies)
    assert MinibatchStdDev()(copies)[0, 3].min() > 0.5  # over the batch, ten different images look varied
    assert MinibatchStdDev()(copies, labels)[:, 3].max() < 1e-3  # within each class they are copies
    assert MinibatchStdDev()(varied, labels)[:, 3].min() > 0.5


def test_grouped_stddev_is_differentiable():
    x = torch.randn(16, 2, 4, 4, requires_grad=True)
    MinibatchStdDev()(x, torch.arange(16) % 4)[:, 2].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_conditional_dcgan_discriminator_with_class_stddev():
    model = dcgan(16, 1, 32, 8, num_classes=10, minibatch_std=True)
    x, y = torch.rand(20, 1, 32, 32), torch.arange(20) % 10
    logits = model.discriminate(x, y)
    assert logits.shape == (20,) and torch.isfinite(logits).all()
    # the within-class feature makes D's value of an image depend on the other images of its class
    shifted = x.clone()
    shifted[10] = torch.rand(1, 32, 32)  # same class as image 0 (label 0)
    model.eval()
    before, after = model.discriminate(x, y), model.discriminate(shifted, y)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[1:10], after[1:10])  # other classes unchanged (eval: no batch statistics)
