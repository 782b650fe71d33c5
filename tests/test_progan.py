"""Progressive GAN (Karras et al. 2018): the growth schedule, the fade-in on both sides, the equalized-learning-rate
layers, pixel norm, the GAN interface at every stage, and training (and resuming) under
:class:`Growing`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdgm.data.batch import ImageBatch
from kdgm.knowledge.constraint import FunctionConstraint
from kdgm.knowledge.regularized import ImplicitMStep, PosteriorRegularization
from kdgm.objectives.adversarial import DiscriminatorLoss, GeneratorLoss
from kdgm.objectives.base import Progress
from kdgm.models.progan import (
    EqualizedConv2d, EqualizedLinear, Growing, PixelNorm, ProGAN, growth_schedule, progan,
    stage_widths, training_fraction,
)

STAGES = 4


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread

FADE_IN = {0: 0.0, 1: 0.25, 2: 0.5, 3: 0.75}  # the progress at which each stage starts (α = 0 after stage 0)


def small(seed: int = 0) -> ProGAN:
    torch.manual_seed(seed)
    return progan(z_dim=8, width=16)  # widths 16, 8, 4, 2


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))  # (n, 1, 32, 32)


# --- the growth schedule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("progress, expected", [
    (0.0, (0, 1.0)), (0.1, (0, 1.0)), (0.2499, (0, 1.0)),          # stage 0 has nothing to fade in over
    (0.25, (1, 0.0)), (0.3125, (1, 0.5)), (0.375, (1, 1.0)), (0.45, (1, 1.0)),  # fade over the first half
    (0.5, (2, 0.0)), (0.5625, (2, 0.5)), (0.625, (2, 1.0)),
    (0.75, (3, 0.0)), (0.78125, (3, 0.25)), (0.875, (3, 1.0)), (1.0, (3, 1.0)),
    (-0.3, (0, 1.0)), (1.7, (3, 1.0)),                              # clamped
])
def test_growth_schedule_at_hand_computed_points(progress, expected):
    stage, alpha = growth_schedule(progress, stages=4, fade=0.5)
    assert stage == expected[0]
    assert alpha == pytest.approx(expected[1], abs=1e-12)


def test_growth_schedule_fade_length_and_stage_count():
    assert growth_schedule(0.375, stages=4, fade=1.0) == (1, pytest.approx(0.5))  # fades over the whole stage
    assert growth_schedule(0.26, stages=4, fade=0.0) == (1, 1.0)  # no fade: the new block switches in at once
    assert growth_schedule(0.5, stages=2, fade=0.5) == (1, 0.0)
    assert growth_schedule(0.9, stages=1) == (0, 1.0)
    for bad in (dict(stages=0), dict(fade=1.5), dict(fade=-0.1)):
        with pytest.raises(ValueError):
            growth_schedule(0.5, **bad)
    with pytest.raises(ValueError):
        growth_schedule(math.nan)


def test_fade_in_is_monotone_within_a_stage_and_restarts_at_each_boundary():
    points = [i / 1000 for i in range(1001)]
    schedule = [growth_schedule(p) for p in points]
    stages = [s for s, _ in schedule]
    assert stages == sorted(stages) and set(stages) == {0, 1, 2, 3}
    for stage in range(1, STAGES):
        alphas = [a for s, a in schedule if s == stage]
        assert alphas[0] == 0.0 and alphas[-1] == 1.0
        assert all(a <= b for a, b in zip(alphas, alphas[1:]))
        before = growth_schedule(FADE_IN[stage] - 1e-9)
        assert before[0] == stage - 1 and before[1] == 1.0  # the previous stage ends fully faded in


def test_training_fraction_reads_the_updaters_progress():
    assert training_fraction(Progress(step=30, epoch=1.5, max_steps=120)) == 0.25
    assert training_fraction(Progress()) == 0.0  # before the loop sets one
    assert training_fraction(0.6) == 0.6


# --- the layers ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0)])
def test_equalized_conv_scales_its_weight_by_he_constant_at_run_time(kernel, padding):
    torch.manual_seed(0)
    layer = EqualizedConv2d(5, 7, kernel, padding=padding)
    with torch.no_grad():
        layer.bias.normal_()
    fan_in = 5 * kernel * kernel
    torch.testing.assert_close(layer.effective_weight, layer.weight * math.sqrt(2 / fan_in))
    assert layer.weight.std().item() == pytest.approx(1.0, abs=0.25)  # the raw weight is N(0, 1)
    x = torch.randn(3, 5, 6, 6)
    expected = F.conv2d(x, layer.weight.detach() * math.sqrt(2 / fan_in), layer.bias.detach(), padding=padding)
    torch.testing.assert_close(layer(x), expected)


def test_equalized_linear_scales_its_weight_and_matches_a_plain_linear_layer():
    torch.manual_seed(0)
    layer, head = EqualizedLinear(12, 4), EqualizedLinear(12, 1, gain=1.0)
    torch.testing.assert_close(layer.effective_weight, layer.weight * math.sqrt(2 / 12))
    torch.testing.assert_close(head.effective_weight, head.weight / math.sqrt(12))
    x = torch.randn(5, 12)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight.detach() * math.sqrt(2 / 12), layer.bias.detach()))


def test_pixel_norm_gives_unit_mean_square_per_pixel():
    x = 3.0 * torch.randn(4, 6, 5, 5) + 1.0  # (B, C, H, W)
    torch.testing.assert_close(PixelNorm()(x).pow(2).mean(1), torch.ones(4, 5, 5))
    torch.testing.assert_close(PixelNorm()(torch.randn(7, 10)).pow(2).mean(1), torch.ones(7))  # latents


def test_stage_widths_halve_from_the_coarsest_resolution():
    assert stage_widths(32, 4) == [32, 16, 8, 4]
    assert stage_widths(4, 4) == [4, 2, 1, 1]


# --- the model at every stage ----------------------------------------------------------------------------------------

def test_a_new_model_stands_at_full_resolution_and_set_progress_moves_it():
    model = small()
    assert model.conditional is False and model.z_dim == 8 and model.stages == STAGES
    assert (model.stage, model.alpha) == (3, 1.0)
    assert model.set_progress(0.3125) == (1, 0.5)
    assert (model.stage, model.alpha, model.resolution()) == (1, 0.5, 8)


@pytest.mark.parametrize("progress", [0.0, 0.3, 0.55, 0.8, 1.0])
def test_sample_and_discriminate_shapes_and_range_at_every_stage(progress):
    model = small()
    model.set_progress(progress)
    x = model.sample(5)
    assert x.shape == (5, 1, 32, 32)
    assert x.min() >= 0 and x.max() <= 1
    assert model.discriminate(images(5)).shape == (5,)
    native = model.sample_at(3, model.stage, model.alpha)
    assert native.shape == (3, 1, model.resolution(), model.resolution())
    assert model.sample_at(3, model.stage, full_size=True).shape == (3, 1, 32, 32)


def test_sample_at_each_resolution_for_a_figure():
    model = small()
    z = model.noise(4, torch.Generator().manual_seed(0))
    for stage in range(STAGES):
        x = model.sample_at(4, stage, z=z)
        assert x.shape == (4, 1, 4 * 2**stage, 4 * 2**stage) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError):
        model.sample_at(4, STAGES)


def test_interface_errors():
    model = small()
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, torch.zeros(2))
    with pytest.raises(ValueError, match="32x32"):
        model.discriminate(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError):
        progan(image_size=28)


@pytest.mark.parametrize("progress", [0.0, 0.3, 0.6, 0.8])
def test_gradients_reach_the_generator_through_sample(progress):
    model = small()
    stage, alpha = model.set_progress(progress)
    model.sample(4).mean().backward()
    used = [model.generator.blocks[s] for s in range(stage + 1)] + [model.generator.to_rgb[stage]]
    if 0 < alpha < 1:
        used.append(model.generator.to_rgb[stage - 1])  # the fading-out path
    for module in used:
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.any(p.grad != 0), name
    assert all(p.grad is None for p in model.discriminator.parameters())


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_fade_in_ends_of_the_generator(stage):
    """α = 1: the output is stage s's block output (through its toRGB) upsampled; α = 0: the previous stage's."""
    model = small()
    z = model.noise(3, torch.Generator().manual_seed(2))
    g = model.generator
    h = z
    for block in g.blocks[:stage + 1]:
        h = block(h)  # (3, W_s, R, R)
    own = F.interpolate(torch.sigmoid(g.to_rgb[stage](h)), size=32, mode="nearest")  # (3, 1, 32, 32)
    assert model.set_progress(FADE_IN[stage] + 0.5 / STAGES) == (stage, 1.0)
    torch.testing.assert_close(model.sample(3, z=z), own)
    assert model.set_progress(FADE_IN[stage]) == (stage, 0.0)
    previous = model.sample_at(3, stage - 1, z=z, full_size=True)  # stage s − 1 at α = 1
    torch.testing.assert_close(model.sample(3, z=z), previous)
    model.set_progress(FADE_IN[stage] + 0.25 / STAGES)  # α = 0.5: halfway between the two
    torch.testing.assert_close(model.sample(3, z=z), 0.5 * own + 0.5 * previous)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_fade_in_ends_of_the_discriminator(stage):
    """α = 0: the critic of stage s equals that of stage s − 1 on the 2× average-pooled input; α = 1: the new block
    alone (the previous fromRGB has no effect); discriminate pools full-size images to the current resolution."""
    model = small()
    d = model.discriminator
    r = 4 * 2**stage
    x = images(5)
    x_r = F.avg_pool2d(x, 32 // r)  # (5, 1, R, R)
    torch.testing.assert_close(d(x_r, stage, 0.0), d(F.avg_pool2d(x_r, 2), stage - 1, 1.0))
    model.set_progress(FADE_IN[stage] + 0.5 / STAGES)
    torch.testing.assert_close(model.discriminate(x), d(x_r, stage, 1.0))
    with torch.no_grad():
        d.from_rgb[stage - 1].weight.add_(1.0)
    torch.testing.assert_close(model.discriminate(x), d(x_r, stage, 1.0))


def test_the_critic_sees_samples_at_the_resolution_they_were_made():
    """Upsampling by nearest neighbour and average-pooling back are inverse: D judges the native-resolution image."""
    model = small()
    for progress in (0.3, 0.55):
        stage, alpha = model.set_progress(progress)
        z = model.noise(4)
        torch.testing.assert_close(model.discriminate(model.sample(4, z=z)),
                                   model.discriminator(model.sample_at(4, stage, alpha, z=z), stage, alpha))


def test_set_progress_is_deterministic_and_the_stage_is_checkpointed():
    a, b = small(0), small(0)
    z = a.noise(3, torch.Generator().manual_seed(0))
    a.set_progress(0.9)
    a.set_progress(0.6)  # history does not matter
    b.set_progress(0.6)
    assert (a.stage, a.alpha) == (b.stage, b.alpha) == (2, pytest.approx(0.8))
    torch.testing.assert_close(a.sample(3, z=z), b.sample(3, z=z))
    fresh = small(0)  # at full resolution
    fresh.load_state_dict(a.state_dict())  # the stage and α are buffers: a loaded model samples at 16×16
    assert (fresh.stage, fresh.alpha) == (a.stage, a.alpha)
    torch.testing.assert_close(fresh.sample(3, z=z), a.sample(3, z=z))


# --- training under Growing ------------------------------------------------------------------------------------------

def test_growing_wgan_gp_steps_through_every_stage():
    model = small()
    critic, generator = Growing(DiscriminatorLoss("wasserstein", 10.0)), Growing(GeneratorLoss("wasserstein"))
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    batch = ImageBatch(x=images(8))
    max_steps, seen = 8, []
    for step in range(max_steps):
        progress = Progress(step=step, epoch=step / 4, max_steps=max_steps)
        for objective, optimizer in ((critic, d_opt), (generator, g_opt)):
            objective.progress = progress  # as PhasedUpdater.step does
            out = objective(model, batch)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            optimizer.step()
            assert torch.isfinite(out.total)
            assert all(torch.isfinite(v) and v.shape == () for v in out.terms.values())
        seen.append((int(out.terms["stage"]), float(out.terms["alpha"])))
        assert (model.stage, model.alpha) == growth_schedule(step / max_steps)
    assert seen == [growth_schedule(s / max_steps) for s in range(max_steps)]
    assert {s for s, _ in seen} == {0, 1, 2, 3}
    assert "w_distance" in critic(model, batch).terms and "gp" in critic(model, batch).terms


def test_growing_passes_progress_on_and_wraps_the_implicit_m_step():
    class Scheduled(GeneratorLoss):
        progress = None

    inner = Scheduled("wasserstein")
    objective = Growing(inner)
    objective.progress = Progress(step=5, max_steps=10)
    model = small()
    objective(model, ImageBatch(x=images(4)))
    assert inner.progress is objective.progress
    assert (model.stage, model.alpha) == (2, 0.0)

    less_ink = FunctionConstraint(lambda x: -x.flatten(1).mean(1), takes_cond=False, name="less ink")
    m_step = Growing(ImplicitMStep(PosteriorRegularization(less_ink, alpha=1.0, samples=4),
                                   base=GeneratorLoss("wasserstein")))
    m_step.progress = 0.3
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    out = m_step(model, ImageBatch(x=images(4)))
    out.total.backward()
    optimizer.step()
    assert model.stage == 1 and "f_p" in out.terms and "g_loss" in out.terms


def test_a_resumed_growing_run_equals_the_uninterrupted_one(tmp_path):
    """The stage and α follow from ``step / max_steps`` alone: a run killed after step 4 (last saved at step 3)
    and resumed ends bit-identical to the uninterrupted one."""
    from kdgm.data.loader import BatchLoader
    from kdgm.train.checkpoint import LAST
    from kdgm.train.fabric import make_fabric
    from kdgm.train.loop import fit
    from kdgm.train.updater import Phase, PhasedUpdater

    class Data:
        x = images(24, seed=3)

        def __len__(self):
            return len(self.x)

        def batch(self, index):
            return ImageBatch(self.x[index])

    def train(folder, evaluate=None):
        model = small()
        phases = [Phase("d", Growing(DiscriminatorLoss("wasserstein", 10.0)),
                        torch.optim.Adam(model.discriminator.parameters(), lr=1e-3, betas=(0.0, 0.99))),
                  Phase("g", Growing(GeneratorLoss("wasserstein")),
                        torch.optim.Adam(model.generator.parameters(), lr=1e-3, betas=(0.0, 0.99)))]
        fit(make_fabric("cpu"), PhasedUpdater(model, phases), BatchLoader(Data(), 6, seed=1), max_steps=8,
            folder=folder, resume=True, checkpoint_every=3, log_every=1, tensorboard=False, progress_bar=False,
            evaluate=evaluate, eval_every=4 if evaluate else 0)
        return model

    straight = train(tmp_path / "a")
    ckpt = tmp_path / "b" / "checkpoints" / LAST
    saved = {}
    train(tmp_path / "b", evaluate=lambda: saved.setdefault("at step 3", ckpt.read_bytes()) and {})
    ckpt.write_bytes(saved["at step 3"])  # as if killed at step 4, before the next save
    resumed = train(tmp_path / "b")
    assert (resumed.stage, resumed.alpha) == (straight.stage, straight.alpha) == growth_schedule(7 / 8)
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
