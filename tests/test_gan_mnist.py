"""gan-mnist's pieces: the class constraint scores log p(y|x), and its phases wire the implicit M-step and the
phi-step onto a class-conditional generator."""

from __future__ import annotations

import pytest
import torch

from conftest import step_every_phase

from kdgm.data.batch import ImageBatch
from kdgm.experiments.gan_mnist import ClassRecognised, GanMnist, GanMnistConfig, JudgedDigits, _Digits
from kdgm.knowledge.confidence import TeacherLikelihood
from kdgm.knowledge.regularized import ImplicitMStep
from kdgm.metrics.image_quality import DigitClassifier
from kdgm.models.progan import Growing
from kdgm.data.mnist import LabelledImages


def test_class_recognised_is_the_log_probability_of_the_requested_class():
    torch.manual_seed(0)
    classifier = DigitClassifier(10, 1, width=4)
    x, y = torch.rand(5, 1, 32, 32), torch.tensor([0, 3, 9, 3, 1])
    f = ClassRecognised(classifier)(x, y)
    assert torch.allclose(f, torch.log_softmax(classifier(x), -1)[torch.arange(5), y])
    with pytest.raises(ValueError, match="requested class"):
        ClassRecognised(classifier)(x)


def _data() -> _Digits:
    images = LabelledImages(torch.rand(32, 1, 32, 32), torch.arange(32) % 10)
    return _Digits(images, JudgedDigits(images, DigitClassifier(10, 1, width=4)),
                   constraint_classifier=DigitClassifier(10, 1, width=4))


@pytest.mark.parametrize("constraint", ["fixed", "learned"])
def test_knowledge_rows_train_the_generator_with_the_constraint_and_phi_only_when_learned(constraint):
    experiment, data = GanMnist(), _data()
    config = GanMnistConfig(conditional=True, constraint=constraint, z_dim=8, width=8)
    torch.manual_seed(0)
    model = experiment.build_model(config, data)
    phases = experiment.phases(config, model, data)
    assert [p.name for p in phases] == ["critic", "generator"] + (["phi"] if constraint == "learned" else [])
    assert isinstance(phases[1].objective, ImplicitMStep)
    learned = phases[1].modules["constraint"]
    assert learned.learnable == (constraint == "learned")
    batch = ImageBatch(x=torch.rand(8, 1, 32, 32), y=torch.arange(8))
    before = [p.detach().clone() for p in learned.parameters()]
    step_every_phase(model, phases, batch)
    moved = any(not torch.equal(a, b) for a, b in zip(before, learned.parameters()))
    assert moved == (constraint == "learned")
    if constraint == "learned":
        assert isinstance(phases[2].objective, TeacherLikelihood)


def test_progressive_rows_grow_in_both_phases():
    experiment, data = GanMnist(), _data()
    config = GanMnistConfig(model="progan", loss="wasserstein", gradient_penalty=10.0, z_dim=8, width=8)
    model = experiment.build_model(config, data)
    assert model.stage == 0  # starts at 4x4
    assert all(isinstance(p.objective, Growing) for p in experiment.phases(config, model, data))


def test_dcgan_discriminator_has_batch_norm_except_for_gradient_penalty_rows():
    """Without batch norm in D the generator collapsed to one image (both in kdgm's loop and a plain loop); WGAN-GP's
    per-example penalty needs a critic without it."""
    from torch import nn

    experiment, data = GanMnist(), _data()
    norms = lambda m: [l for l in m.discriminator.modules() if isinstance(l, nn.BatchNorm2d)]  # noqa: E731
    assert norms(experiment.build_model(GanMnistConfig(z_dim=8, width=8), data))
    assert not norms(experiment.build_model(GanMnistConfig(z_dim=8, width=8, gradient_penalty=10.0), data))


def test_minibatch_std_setting_gives_the_dcgan_discriminator_the_within_class_stddev():
    experiment, data = GanMnist(), _data()
    for on in (False, True):
        model = experiment.build_model(GanMnistConfig(z_dim=8, width=8, conditional=True, minibatch_std=on), data)
        assert (model.discriminator.stddev is not None) == on
