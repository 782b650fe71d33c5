"""The pose-transfer networks (pix2pix / PG2 U-Net, PatchGAN, part parser) and their objectives: shapes, ranges,
gradients, the PatchGAN's receptive field, the part constraint against a hand computation, tiling of the condition,
and a few steps of the adversarial game and of the implicit PR M-step."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdgm.knowledge import ImplicitMStep, PosteriorRegularization
from kdgm.knowledge.sampled import rows_of, tile
from kdgm.models.pose import (
    L1Reconstruction,
    PartAgreement,
    PartParser,
    PatchDiscriminator,
    PoseCondition,
    PoseGAN,
    PoseGeneratorLoss,
    UNetGenerator,
    pose_gan,
)
from kdgm.objectives.adversarial import DiscriminatorLoss, GeneratorLoss

K = 8  # part classes, background included


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest.one_thread


def condition(b: int = 3, size: int = 32, parts: bool = True, seed: int = 0) -> PoseCondition:
    g = torch.Generator().manual_seed(seed)
    return PoseCondition(torch.rand(b, 3, size, size, generator=g), torch.rand(b, 14, size, size, generator=g),
                         torch.rand(b, 14, size, size, generator=g),
                         target_parts=torch.randint(0, K, (b, size, size), generator=g) if parts else None)


@dataclass(frozen=True)
class PoseBatch:
    """What the data will provide: the target image as data(), the rest as condition()."""

    source: Tensor
    source_heatmaps: Tensor
    target_heatmaps: Tensor
    target: Tensor
    target_parts: Tensor

    def data(self) -> Tensor:
        return self.target

    def condition(self) -> PoseCondition:
        return PoseCondition(self.source, self.source_heatmaps, self.target_heatmaps, target_parts=self.target_parts)

    @property
    def y(self) -> PoseCondition:  # what gan_condition (and so DiscriminatorLoss) reads
        return self.condition()

    def __len__(self) -> int:
        return len(self.target)


def pose_batch(b: int = 4, size: int = 32) -> PoseBatch:
    c = condition(b, size)
    return PoseBatch(c.source, c.source_heatmaps, c.target_heatmaps, torch.rand(b, 3, size, size), c.target_parts)


@pytest.mark.parametrize("size,upsample", [(32, "transpose"), (64, "resize")])
def test_shapes_and_ranges(size, upsample):
    model, cond = pose_gan(size, width=8, upsample=upsample), condition(2, size)
    x = model.sample(2, cond)
    assert x.shape == (2, 3, size, size) and 0 <= x.min() and x.max() <= 1
    assert model.discriminate(x, cond).shape == (2,)
    assert model.discriminator.patch_logits(x, cond).shape == (2, size // 8, size // 8)
    assert model.conditional and isinstance(model.generator, UNetGenerator)
    assert PartParser(classes=K, width=4)(x).shape == (2, K, size, size)


def test_default_width_networks_at_both_sizes():
    for size, depth in ((32, 4), (64, 5)):
        model = pose_gan(size)  # width 32
        assert model.generator.depth == depth  # a 2×2 bottleneck
        with torch.no_grad():
            assert model.sample(1, condition(1, size)).shape == (1, 3, size, size)


@pytest.mark.parametrize("size,with_source", [(32, False), (64, True)])
def test_gradients_reach_every_parameter(size, with_source):
    torch.manual_seed(0)
    model, cond = pose_gan(size, width=8, with_source=with_source), condition(2, size)
    x = model.sample(2, cond)
    (x * torch.randn_like(x)).sum().backward()
    missing = [n for n, p in model.generator.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"sample does not reach {missing}"
    assert all(p.grad is None for p in model.discriminator.parameters())
    model.discriminate(x.detach(), cond).sum().backward()
    missing = [n for n, p in model.discriminator.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"discriminate does not reach {missing}"


@pytest.mark.parametrize("head_kernel,field", [(1, 22), (3, 38)])
def test_patch_logits_see_a_documented_receptive_field(head_kernel, field):
    """Three 4×4 stride-2 convolutions (padding 1) and the head: patch (i, j) sees rows 8i − 7 … 8i − 7 + field − 1."""
    d = PatchDiscriminator(width=4, norm="none", head_kernel=head_kernel)
    assert d.receptive_field == field and d.map_size(64) == 8
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    logits = d.patch_logits(x, condition(1, 64))
    assert logits.shape == (1, 8, 8)
    logits[0, 4, 4].backward()
    rows = x.grad.abs().sum((0, 1, 3)).nonzero().flatten()
    cols = x.grad.abs().sum((0, 1, 2)).nonzero().flatten()
    start = 8 * 4 - 7 - head_kernel // 2 * 8
    assert rows.tolist() == cols.tolist() == list(range(start, start + field))


def test_sample_is_deterministic_without_dropout_and_seeded_with_it():
    cond = condition(2)
    plain = pose_gan(32, width=8)
    torch.testing.assert_close(plain.sample(2, cond), plain.sample(2, cond))
    noisy = pose_gan(32, width=8, dropout=0.5).eval()  # pix2pix's noise stays on in eval mode
    assert not torch.allclose(noisy.sample(2, cond), noisy.sample(2, cond))
    seeded = [noisy.sample(2, cond, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(*seeded)
    with pytest.raises(ValueError, match="n must equal"):
        plain.sample(3, cond)
    with pytest.raises(ValueError, match="no latent"):
        plain.sample(2, cond, z=torch.zeros(2, 8))


def test_condition_tiles_sample_major_and_moves():
    cond = condition(3)
    tiled = tile(cond, 4)
    assert isinstance(tiled, PoseCondition) and len(tiled) == 12 and rows_of(cond) == 3
    for s in range(4):
        for name in ("source", "source_heatmaps", "target_heatmaps", "target_parts"):
            torch.testing.assert_close(getattr(tiled, name)[3 * s: 3 * s + 3], getattr(cond, name))
    assert tile(condition(3, parts=False), 2).target_parts is None
    assert len(cond[1]) == 1 and torch.equal(cond[1:].source, cond.source[1:]) and len(cond.head(2)) == 2
    torch.testing.assert_close(cond.to("cpu").target_heatmaps, cond.target_heatmaps)
    assert cond.stacked().shape == (3, 31, 32, 32)
    with pytest.raises(ValueError, match="target_parts"):
        PoseCondition(cond.source, cond.source_heatmaps, cond.target_heatmaps, target_parts=cond.target_parts[:, :5])


def test_part_agreement_is_the_mean_log_likelihood_of_the_true_parts():
    torch.manual_seed(0)
    parser, cond = PartParser(classes=K, width=4), condition(3)
    x = torch.rand(3, 3, 32, 32)
    by_hand = F.log_softmax(parser(x), 1).gather(1, cond.target_parts[:, None]).squeeze(1).mean((1, 2))
    torch.testing.assert_close(PartAgreement(parser)(x, cond), by_hand)
    torch.testing.assert_close(PartAgreement(parser)(x, cond.target_parts), by_hand)
    with pytest.raises(ValueError, match="target_parts is missing or None"):
        PartAgreement(parser)(x, condition(3, parts=False))


def test_part_agreement_is_higher_for_an_image_whose_parse_matches_the_target():
    """A parser that reads part k from colour c_k (the corners of the RGB cube): logit_k = 10 (2 c_k·x − ‖c_k‖²)."""
    palette = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(K)], dtype=torch.float)  # (K, 3)
    parser = nn.Conv2d(3, K, 1)
    with torch.no_grad():
        parser.weight.copy_(20 * palette[:, :, None, None])
        parser.bias.copy_(-10 * palette.pow(2).sum(1))
    constraint = PartAgreement(parser).freeze()
    cond = condition(4)

    def render(parts: Tensor) -> Tensor:
        return palette[parts].permute(0, 3, 1, 2)  # (B, 3, S, S)

    matching = constraint(render(cond.target_parts), cond)
    other = constraint(render(torch.roll(cond.target_parts, 5, dims=-1)), cond)
    assert (matching > other + 1).all() and (matching > -0.01).all()


def test_adversarial_game_and_reconstruction_take_a_few_adam_steps():
    torch.manual_seed(0)
    model, batch = pose_gan(32, width=8), pose_batch()
    d_step, g_step = DiscriminatorLoss("nonsaturating"), PoseGeneratorLoss(GeneratorLoss("nonsaturating"), l1=100.0)
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    l1 = []
    for _ in range(4):
        for objective, optimizer in ((d_step, d_opt), (g_step, g_opt)):
            optimizer.zero_grad()
            out = objective(model, batch)
            out.total.backward()
            optimizer.step()
            assert torch.isfinite(out.total) and all(torch.isfinite(v) for v in out.terms.values())
        l1.append(out.terms["l1"].item())
    assert {"d_loss", "d_real", "d_fake"} <= set(d_step(model, batch).terms) and l1[-1] < l1[0]
    out = L1Reconstruction(weight=100.0)(model, batch)
    torch.testing.assert_close(out.total, 100 * (out.outputs - batch.target).abs().mean())


def test_generator_loss_samples_once_and_sums_both_terms():
    model, batch = pose_gan(32, width=8), pose_batch(2)
    calls = []
    sample = model.sample
    model.sample = lambda n, cond, **kw: calls.append(n) or sample(n, cond, **kw)
    out = PoseGeneratorLoss("hinge", l1=10.0)(model, batch)
    assert calls == [2]
    d_fake = model.discriminate(out.outputs, batch.condition())
    torch.testing.assert_close(out.total, -d_fake.mean() + 10 * (out.outputs - batch.target).abs().mean())


def test_implicit_m_step_with_a_frozen_parser_reaches_the_generator_only():
    torch.manual_seed(0)
    model, batch = pose_gan(32, width=8), pose_batch(2)
    parser = PartParser(classes=K, width=4)
    constraint = PartAgreement(parser).freeze()
    assert not constraint.learnable
    objective = ImplicitMStep(PosteriorRegularization(constraint, alpha=1.0, samples=2), base=PoseGeneratorLoss())
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    optimizer.zero_grad()
    out = objective(model, batch)
    out.total.backward()
    assert torch.isfinite(out.terms["f_p"]) and out.terms["f_p"] < 0
    assert all(p.grad is not None and p.grad.any() for p in model.generator.parameters())
    assert all(p.grad is None for p in parser.parameters())
    before = [p.detach().clone() for p in parser.parameters()]
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, parser.parameters()))
    assert isinstance(model, PoseGAN)
